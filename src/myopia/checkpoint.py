"""Checkpoints: distributed checkpoints (``torch.distributed.checkpoint``) of a run, its final weights, one writer.

**Training checkpoints** are folders ``<run>/checkpoints/step_XXXXXXX/`` written by DCP: every rank writes its
own shards of the model and AdamW state (``__<rank>_<i>.distcp``) and rank 0 the DCP ``.metadata``; rank 0 adds
``rng.safetensors`` (every rank's generator states) and, last, ``meta.json`` (step, run config, world size and a
sha256 of every file). The folder is written under a temporary name and renamed when complete, and the
previous one is kept, so a crash leaves a complete checkpoint whatever happens to the newest. Loading reshards:
a run saved by N processes resumes on M (``set_state_dict`` on the sharded or replicated model). A one-process
run uses the same format (DCP without a process group). The final ``model.safetensors`` is exported from a full
state dict gathered with CPU offload. A run folder written by myopia < 0.2.0 (a single-file
``checkpoint.safetensors``, or a config without ``document_mask``) is refused with one line naming the version
(:func:`refuse_old_run`).

**One writer per run directory**: :class:`RunLock` holds ``fcntl.flock`` on ``<run>/.lock`` (holder's pid, host
and start time written in it). The kernel releases it when the holder dies, however it dies; a second writer is
refused with one line naming the holder.

**Single files** (weights, snapshots) are safetensors. A file holds tensors ``model.*`` (the state dict),
``optim.*`` (AdamW moments) and ``rng.*`` (random-number
generator states), plus a JSON header with the format tag, a sha256 over every tensor, and free-form metadata
(the trainer stores the step, the run config and the optimizer's scalar state there). A file that was cut
short, edited or written by another program is refused with a one-line :class:`MyopiaError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import MyopiaError, first_line
from .io import fsync_dir, atomic_write_bytes, read_json, write_json
from .runfiles import CHECKPOINT, CHECKPOINTS, CONFIG, LOCK, METRICS, PREVIOUS_CHECKPOINT, RESULT

FORMAT = "myopia-checkpoint-v1"


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _to_cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def _dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that are the same view of the same memory as an earlier one (tied weights).

    Returns the kept tensors and ``{dropped name: kept name}``. Tensors that only partly overlap are copied,
    since safetensors refuses shared memory.
    """
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in tensors.items():
        if t.numel() == 0:
            kept[name] = t
            continue
        ptr = t.untyped_storage().data_ptr()
        key = (ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = t.clone() if ptr in storages else t
        storages.add(ptr)
    return kept, aliases


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint replaced by the latest save is kept: ``checkpoint.prev.safetensors``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict, *, keep_previous: bool = False
) -> None:
    """Write ``tensors`` and JSON-able ``meta`` to one safetensors file, atomically, with a checksum.

    Tied tensors (one tensor under several names, e.g. an embedding shared with the output head) are stored
    once; :func:`load_tensors` restores every name. With ``keep_previous`` the file it replaces stays complete
    at :func:`previous_path`.
    """
    tensors, aliases = _dedupe({k: v.detach() for k, v in tensors.items()})
    tensors = {k: _to_cpu(v) for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta), "sha256": _digest(tensors)}
    if aliases:
        header["aliases"] = json.dumps(aliases)
    atomic_write_bytes(path, st_save(tensors, metadata=header), backup=previous_path(path) if keep_previous else None)


def _header_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors byte string (8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise ValueError(f"only {len(data)} bytes")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header runs past the end of the file")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header.get("__metadata__") or {}


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`; refuse it with a clear message if corrupted."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MyopiaError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise MyopiaError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    try:
        header = _header_metadata(data)
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise MyopiaError(f"checkpoint {path} is corrupted or not a safetensors file ({first_line(exc)})") from None
    if header.get("format") != FORMAT:
        raise MyopiaError(f"{path} is not a myopia checkpoint (format {header.get('format')!r})")
    if header.get("sha256") != _digest(tensors):
        raise MyopiaError(f"checkpoint {path} failed its checksum: the file is corrupted")
    try:
        for name, target in json.loads(header.get("aliases", "{}")).items():
            tensors[name] = tensors[target]
        meta = json.loads(header.get("meta", "{}"))
    except json.JSONDecodeError:
        raise MyopiaError(f"checkpoint {path} has unreadable metadata") from None
    return tensors, meta


def state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """Why ``found`` cannot be loaded into a model whose state dict is ``expected`` ('' when it can)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"it lacks {missing[0]}{more}"
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        return f"it holds {extra[0]}{more}, which this model lacks"
    for name, t in expected.items():
        if tuple(found[name].shape) != tuple(t.shape):
            msg = f"{name} has shape {tuple(found[name].shape)} there but {tuple(t.shape)} in this model"
            if name.endswith(("wte.weight", "embed_tokens.weight", "wte", "embed_in.weight")) or "lm_head" in name:
                msg += " (a different vocabulary: was the data tokenized with another tokenizer?)"
            return msg
    return ""


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict(state)``, refusing a mismatch with a message that names the first difference."""
    why = state_mismatch(model.state_dict(), state)
    if why:
        raise MyopiaError(f"{source} does not match this model: {why}")
    model.load_state_dict(state, strict=True)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    path,
    model,
    optimizer,
    meta: dict,
    *,
    rng_states: dict[str, torch.Tensor] | None = None,
    keep_previous: bool = False,
) -> None:
    """Model parameters (``model.*``), optimizer state (``optim.*``) and RNG states (``rng.*``) in one file.

    ``rng.torch`` is this process's CPU generator; ``rng_states`` adds more (the trainer stores every rank's
    CPU and CUDA generators as ``torch.r<rank>`` / ``cuda.r<rank>``). ``keep_previous`` keeps the replaced
    checkpoint at :func:`previous_path`, so one complete older checkpoint survives whatever happens to the new one.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    for name, state in (rng_states or {}).items():
        tensors[f"rng.{name}"] = state
    save_tensors(path, tensors, {**meta, "optimizer": opt_meta}, keep_previous=keep_previous)


def load_checkpoint(path, model, optimizer, *, rank: int = 0, device: torch.device | None = None) -> dict:
    """Restore model, optimizer and RNG state in place; returns the checkpoint's metadata.

    ``rank`` selects that process's saved generators (``rng.torch.r<rank>``, ``rng.cuda.r<rank>``) when present;
    the CUDA generator is restored on ``device`` when it is a CUDA device.
    """
    tensors, meta = load_tensors(path)
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_into(model, model_sd, f"checkpoint {path}")
    opt_meta = meta.pop("optimizer", None)
    if opt_meta is None:
        raise MyopiaError(f"checkpoint {path} holds no optimizer state (is it a model.safetensors file?)")
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for k, v in opt_meta["scalars"].items():
        idx, key = k.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    try:
        optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise MyopiaError(f"checkpoint {path}: optimizer state does not match ({exc})") from None
    cpu_state = tensors.get(f"rng.torch.r{rank}", tensors.get("rng.torch"))
    if cpu_state is not None:
        torch.set_rng_state(cpu_state)
    cuda_state = tensors.get(f"rng.cuda.r{rank}")
    if cuda_state is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda_state, device)
    return meta


def save_model(path, model, meta: dict) -> None:
    """Just the weights (``model.safetensors``), loadable with :func:`load_model_state`."""
    save_tensors(path, dict(model.state_dict()), meta)


def load_model_state(path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_tensors(path)


# ------------------------------------------------------------------------------------------------------------
# Distributed checkpoints (DCP): one folder per checkpointed step
# ------------------------------------------------------------------------------------------------------------

DCP_FORMAT = "myopia-dcp-v1"
META = "meta.json"  # inside a checkpoint folder, written last
RNG = "rng.safetensors"  # inside a checkpoint folder
KEEP = 2  # complete checkpoints kept: the newest and the one before


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


# A one-process run uses DCP without a process group on purpose: DCP's warning about it is noise here.
warnings.filterwarnings("ignore", message=r"torch\.distributed is (disabled, )?unavailable or uninitialized",
                        category=UserWarning)


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:07d}"


BRANCHES = "branches"  # stable-phase states a cooldown branch starts from (myopia.train's branch_at)


def branch_state_dir(run_dir: str | Path, step: int) -> Path:
    """Folder of the stable-phase state a run saved at ``step`` for cooldown branches."""
    return step_dir(Path(run_dir) / BRANCHES, step)


def checkpoint_steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The run's checkpoint folders (complete or not, temporary ones excluded), newest first."""
    folder = Path(run_dir) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit():
                found.append((int(p.name[5:]), p))
    return sorted(found, reverse=True)


def old_version_error(where, why: str) -> MyopiaError:
    """The one error for run folders and configs written before version 0.2.0 (what they lack in ``why``)."""
    return MyopiaError(f"{where} was written by myopia < 0.2.0 ({why}); retrain or use myopia 0.1.x")


def refuse_old_run(run_dir: str | Path) -> None:
    """Refuse a run folder written by myopia < 0.2.0: one holding a single-file checkpoint
    (``checkpoint.safetensors``) or a config.json whose training config lacks ``document_mask``."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        if (run_dir / name).exists():
            raise old_version_error(run_dir, f"a single-file {name}")
    if (run_dir / CONFIG).is_file():
        try:
            train = read_json(run_dir / CONFIG).get("train")
        except (MyopiaError, AttributeError):
            return  # not a config of ours: whoever reads it says so
        if isinstance(train, dict) and "document_mask" not in train:
            raise old_version_error(run_dir, f"its {CONFIG} has no document_mask")


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run directory holds a training checkpoint (a run to continue); an old folder is refused."""
    refuse_old_run(run_dir)
    return bool(checkpoint_steps(run_dir))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _state(model, optimizer):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


class PendingSave:
    """A checkpoint being written in the background (``--async-checkpoint``); :meth:`finish` completes it."""

    def __init__(self, future, finish):
        self.future, self._finish = future, finish

    def finish(self) -> None:
        self.future.result()
        self._finish()


def save_distributed(
    run_dir: str | Path,
    step: int,
    model,
    optimizer,
    meta: dict,
    *,
    rng_states: dict[str, torch.Tensor],
    keep: int = KEEP,
    async_save: bool = False,
    async_group=None,
) -> PendingSave | None:
    """Write the checkpoint of ``step`` (collective: every rank calls it). See the module docstring.

    Returns a :class:`PendingSave` with ``async_save`` (the state is staged to CPU memory before it returns,
    training may continue; call ``finish()`` before the next save and at the end), else None.
    """
    import torch.distributed.checkpoint as dcp

    from .distributed import gather, on_all_ranks

    dist = _dist()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    final = step_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")

    def prepare():
        if rank == 0:
            for stale in final.parent.glob(".step_*.tmp") if final.parent.is_dir() else []:
                shutil.rmtree(stale, ignore_errors=True)  # left by a run killed while saving
            tmp.mkdir(parents=True, exist_ok=False)

    on_all_ranks(prepare, world)
    state = _state(model, optimizer)

    def complete():
        mine = {p.name: _sha256_file(p) for p in sorted(tmp.glob(f"__{rank}_*.distcp"))}
        files = {k: v for part in gather(mine, world) for k, v in part.items()}

        def publish():
            if rank != 0:
                return
            save_tensors(tmp / RNG, rng_states, {"step": step})
            for name in (".metadata", RNG):
                files[name] = _sha256_file(tmp / name)
            write_json(tmp / META, {"format": DCP_FORMAT, **meta, "step": step, "files": files})
            fsync_dir(tmp)
            old = final.with_name(f".{final.name}.old")
            if final.exists():  # the same step written again (a run resumed from an earlier checkpoint)
                os.replace(final, old)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            shutil.rmtree(old, ignore_errors=True)
            for s, p in checkpoint_steps(run_dir)[keep:]:
                shutil.rmtree(p, ignore_errors=True)

        try:
            on_all_ranks(publish, world)
        except BaseException:
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
            raise

    try:
        if async_save:
            future = dcp.async_save(state, checkpoint_id=str(tmp), process_group=async_group, no_dist=dist is None)
            return PendingSave(future, complete)
        dcp.save(state, checkpoint_id=str(tmp), no_dist=dist is None)
    except OSError as exc:
        raise MyopiaError(f"could not write checkpoint {final}: {exc.strerror or exc}") from exc
    complete()
    return None


def remove_checkpoints_after(run_dir: str | Path, step: int) -> None:
    """Delete checkpoint folders of steps after ``step`` (the abandoned future of a run resumed earlier)."""
    for s, p in checkpoint_steps(run_dir):
        if s > step:
            shutil.rmtree(p, ignore_errors=True)


def read_checkpoint_meta(path: str | Path, *, verify: bool = True) -> dict:
    """``meta.json`` of a checkpoint folder; with ``verify``, every file's sha256 is checked. Raises
    :class:`MyopiaError` with a one-line reason when the folder is incomplete, corrupted or foreign."""
    path = Path(path)
    if not (path / META).exists():
        raise MyopiaError(f"checkpoint {path} is incomplete (no {META})")
    try:
        meta = read_json(path / META)
    except MyopiaError as exc:
        raise MyopiaError(f"checkpoint {path} is corrupted ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != DCP_FORMAT:
        raise MyopiaError(f"{path} is not a myopia checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if verify:
        for name, digest in (meta.get("files") or {}).items():
            f = path / name
            if not f.exists():
                raise MyopiaError(f"checkpoint {path} is incomplete ({name} is missing)")
            if _sha256_file(f) != digest:
                raise MyopiaError(f"checkpoint {path} failed its checksum ({name}): the file is corrupted")
    return meta


def load_distributed(path: str | Path, model, optimizer, *, rank: int = 0, device: torch.device | None = None) -> dict:
    """Restore model, optimizer and this rank's generators from a checkpoint folder (collective), resharding
    to the current world size and engine. Returns its metadata (checked by the caller)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    path = Path(path)
    meta = read_json(path / META)
    state = _state(model, optimizer)
    try:
        dcp.load(state, checkpoint_id=str(path), no_dist=_dist() is None)
    except Exception as exc:  # DCP raises CheckpointException (a BaseException subclass) and others
        first = first_line(exc)[:300]
        raise MyopiaError(f"checkpoint {path} does not match this model or is damaged ({first})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rng, _ = load_tensors(path / RNG)
    cpu_state = rng.get(f"torch.r{rank}")
    if cpu_state is not None:
        torch.set_rng_state(cpu_state)
    cuda_state = rng.get(f"cuda.r{rank}")
    if cuda_state is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda_state, device)
    return meta


def full_model_state(model) -> dict[str, torch.Tensor]:
    """The model's full (unsharded) state dict on CPU: on rank 0 only (collective; other ranks get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if _dist() is None:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_model(path, model, meta: dict) -> None:
    """``model.safetensors`` from a full state dict gathered with CPU offload (collective; rank 0 writes)."""
    state = full_model_state(model)
    dist = _dist()
    if dist is None or dist.get_rank() == 0:
        save_tensors(path, state, meta)


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The model weights and metadata of a weights file (safetensors, either format) or a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

        meta = read_checkpoint_meta(path)
        state = _load_state_dict_from_keys(checkpoint_id=str(path))
        model = state.get("model", {})
        return {k: v for k, v in model.items() if isinstance(v, torch.Tensor)}, meta
    tensors, meta = load_tensors(path)
    if any(k.startswith("optim.") for k in tensors):  # a full training checkpoint of the single-file format
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return tensors, meta


# ------------------------------------------------------------------------------------------------------------
# One writer per run directory
# ------------------------------------------------------------------------------------------------------------


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run>/.lock`` for as long as a run writes there.

    The holder writes its pid, host and start time into the file. The kernel drops the lock when the process
    ends, so a crashed or killed run never leaves it stuck. Where ``fcntl`` does not exist the lock is a no-op.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise MyopiaError(f"--out {self.path.parent} exists and is not a folder")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except (ValueError, OSError):
                holder = {}
            os.close(fd)
            who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
                   if holder else "another process")
            raise MyopiaError(f"{self.path.parent} is in use by another run ({who}): one writer per run "
                              "directory; wait for it to end or stop it") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                import fcntl

                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


# ------------------------------------------------------------------------------------------------------------
# Resume planning: a new run, or a continuation from which checkpoint
# ------------------------------------------------------------------------------------------------------------

# Config keys that may change when a run is resumed (they do not affect the numbers beyond summation order).
RESUMABLE_KEYS = ("resume", "progress", "tensorboard", "world_size", "debug", "shard", "activation_checkpointing",
                  "async_checkpoint", "device_memory_gb")
RUN_FILES = (CONFIG, METRICS, RESULT)
# Records added later (data identity): compared when both configs have them, skipped when one predates them.
ADDED_RECORDS = ("data_fingerprint", "duplicates_removed", "near_duplicates_excluded")


def config_mismatch(saved: dict, current: dict) -> str:
    """First differing key between two configs (ignoring keys that may change on resume), or ''."""

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k in RESUMABLE_KEYS:
                    continue
                if k in ADDED_RECORDS and (k in a) != (k in b):
                    continue
                if k not in a or k not in b:
                    return f"{path}{k} present in only one"
                d = walk(a[k], b[k], f"{path}{k}.")
                if d:
                    return d
            return ""
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            if len(a) != len(b):
                return f"{path.rstrip('.')} differs"
            for x, y in zip(a, b):
                d = walk(x, y, path)
                if d:
                    return d
            return ""
        return "" if a == b else f"{path.rstrip('.')}: {a!r} vs {b!r}"

    return walk(json.loads(json.dumps(saved, default=str)), json.loads(json.dumps(current, default=str)), "")


def mismatch_message(what: str, mismatch: str) -> str:
    if "data_fingerprint" in mismatch:
        return (f"cannot resume {what}: its training data changed ({mismatch}): the training split's content "
                "differs from the one it was trained on; give the same data or use another --out")
    if "vocab_size" in mismatch or "tokenizer" in mismatch:
        return (f"cannot resume {what}: the data's vocabulary differs from the one it was trained with "
                f"({mismatch}); was the data tokenized with another tokenizer?")
    return f"cannot resume {what}: its config differs from this run ({mismatch})"



def plan_resume(out: Path, full_config: dict, resume: bool) -> dict:
    """Rank 0: ``{"checkpoint", "step", "fresh", "notes"}`` for the run in ``out``. Reads, writes nothing.

    The newest checkpoint that is complete, passes its checksums and was written by this run's config is
    chosen; each one skipped is named in a note. Nothing usable left is refused with one line.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MyopiaError(f"--out {out} exists and is not a folder")
    refuse_old_run(out)
    folders = checkpoint_steps(out)
    existing = [p for p in (out / name for name in RUN_FILES) if p.exists()] + [p for _, p in folders]
    started = folders or (out / RESULT).exists()  # anything beyond an attempt with no checkpoint
    if not resume:
        if existing:
            hint = "" if started else " (it never reached a checkpoint: --resume starts it over)"
            raise MyopiaError(f"{out} already holds a run{hint}; use --resume to continue it or choose another --out")
        return {"checkpoint": None, "step": 0, "fresh": True, "notes": []}
    if not existing:
        note = f"nothing to resume in {out}: starting a new run"
        return {"checkpoint": None, "step": 0, "fresh": True, "notes": [note]}
    if not started:  # nothing to continue: start over with this run's config, whatever the earlier one was
        note = f"{out} holds no checkpoint yet: restarting at step 0"
        return {"checkpoint": None, "step": 0, "fresh": False, "restart": True, "notes": [note]}
    if (out / CONFIG).exists():
        mismatch = config_mismatch(read_json(out / CONFIG), full_config)
        if mismatch:
            raise MyopiaError(mismatch_message(str(out), mismatch))
    failures: list[str] = []
    for _, path in folders:
        try:
            meta = read_checkpoint_meta(path)
            step = int(meta["step"])
        except MyopiaError as exc:
            failures.append(str(exc))
            continue
        except (KeyError, TypeError, ValueError):
            failures.append(f"checkpoint {path} records no step")
            continue
        mismatch = config_mismatch(meta.get("config", {}), full_config)
        if mismatch:
            raise MyopiaError(mismatch_message(f"from checkpoint {path} (written by a different run)", mismatch))
        notes = [f"{f}; resuming from the previous checkpoint {path.name} (step {step}) instead" for f in failures]
        return {"checkpoint": str(path), "step": step, "fresh": False, "notes": notes,
                "saved_world_size": meta.get("world_size")}
    if failures:
        failed = "; ".join(failures)
        raise MyopiaError(f"{failed}; no usable checkpoint is left in {out} (move it away and start again)")
    note = f"{out} holds no checkpoint yet: restarting at step 0"
    return {"checkpoint": None, "step": 0, "fresh": False, "notes": [note]}
