"""Writing results safely: atomic writes, JSON and metrics logs, and the provenance every result file carries.

The names of the files in a run folder live in :mod:`myopia.rundir`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import MyopiaError


def _jsonable(x: Any) -> Any:
    """Make numbers, paths, tuples and numpy/torch scalars JSON-safe (NaN/inf become strings)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def atomic_write_bytes(path: str | Path, data: bytes, *, backup: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename.

    A crash or a full disk leaves either the old file or the new one, never a partial file. With ``backup``,
    the file being replaced is kept under that name (hard link, else rename), so two complete versions exist.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if backup is not None and path.exists():
            _keep_backup(path, Path(backup))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise MyopiaError(f"could not write {path}: {exc.strerror or exc}") from exc
        raise


def _keep_backup(path: Path, backup: Path) -> None:
    """Make ``backup`` a complete copy of ``path`` without ever leaving ``path`` missing (when links work)."""
    staged = backup.with_name(f".{backup.name}.link")
    try:
        if staged.exists():
            staged.unlink()
        os.link(path, staged)
        os.replace(staged, backup)
    except OSError:  # no hard links here: a rename leaves a short window where only the backup exists
        os.replace(path, backup)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


RESULTS_LOCK = ".results.lock"  # held while a study writes its result files into a folder (gap, tasks, bonus)


@contextmanager
def exclusive_writer(folder: str | Path, what: str = "results", name: str = RESULTS_LOCK) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``folder/name`` for the ``with`` block: a second process asking for
    the same folder is refused at once with one MyopiaError line (its pid), before it computes or writes
    anything. The kernel drops the lock when the holder ends, so a killed process never leaves it stuck; the
    file itself stays (empty of meaning). A no-op where ``fcntl`` does not exist. Yields the folder."""
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield folder
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise MyopiaError(f"could not write {folder / name}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise MyopiaError(f"{folder} is being written by another process ({holder}): one writer of its "
                              f"{what} at a time; wait for it to end") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing releases the lock


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """The parsed JSON file; a one-line :class:`MyopiaError` when it is missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MyopiaError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise MyopiaError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, flushed as written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict) -> None:
        """Append one record as a JSON line and flush it (a clear error when the disk is full)."""
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(_jsonable(record)) + "\n")
                f.flush()
        except OSError as exc:
            raise MyopiaError(f"could not write {self.path}: {exc.strerror or exc}") from exc

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step`` greater than ``step`` (after resuming from that checkpoint)."""
        if not self.path.exists():
            return
        keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in keep).encode())


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (a killed writer) is ignored."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def git_revision() -> dict:
    """The git commit of the myopia source tree (and whether it had uncommitted changes), if known."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return {"commit": rev, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    """Versions of Python and the libraries a result depends on."""
    import numpy
    import torch

    from . import __version__

    out = {"myopia": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__}
    from importlib import metadata

    for name in ("transformers", "tokenizers", "datasets"):  # installed versions, without importing them (slow)
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    """Platform, processor, CPU count, torch threads and CUDA device of this machine (for provenance)."""
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_device_count"] = torch.cuda.device_count()
    return info


def provenance() -> dict:
    """What every result file records besides its config and seed: versions, git revision, machine, time."""
    return {
        "versions": versions(),
        "git": git_revision(),
        "machine": machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
