"""Checkpoints in safetensors: model, optimizer and RNG state with a content checksum, written atomically.

A file holds tensors ``model.*`` (the state dict), ``optim.*`` (AdamW moments) and ``rng.*`` (random-number
generator states), plus a JSON header with the format tag, a sha256 over every tensor, and free-form metadata
(the trainer stores the step, the run config and the optimizer's scalar state there). A file that was cut
short, edited or written by another program is refused with a one-line :class:`MyopiaError`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import MyopiaError
from .io import atomic_write_bytes

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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MyopiaError(f"checkpoint {path} is corrupted or not a safetensors file ({first})") from None
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
