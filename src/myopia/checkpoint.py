"""Checkpoints in safetensors: model, optimizer and RNG state with a content checksum, written atomically."""

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


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` and JSON-able ``meta`` to one safetensors file, atomically, with a checksum.

    Tied tensors (one tensor under several names, e.g. an embedding shared with the output head) are stored
    once; :func:`load_tensors` restores every name.
    """
    tensors, aliases = _dedupe({k: v.detach() for k, v in tensors.items()})
    tensors = {k: _to_cpu(v) for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta), "sha256": _digest(tensors)}
    if aliases:
        header["aliases"] = json.dumps(aliases)
    atomic_write_bytes(path, st_save(tensors, metadata=header))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`; refuse it with a clear message if corrupted."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MyopiaError(f"checkpoint {path} does not exist") from None
    try:
        tensors = st_load(data)
        from safetensors import safe_open  # header metadata

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise MyopiaError(f"checkpoint {path} is corrupted or not a safetensors file ({exc})") from None
    if header.get("format") != FORMAT:
        raise MyopiaError(f"{path} is not a myopia checkpoint (format {header.get('format')!r})")
    if header.get("sha256") != _digest(tensors):
        raise MyopiaError(f"checkpoint {path} failed its checksum: the file is corrupted")
    for name, target in json.loads(header.get("aliases", "{}")).items():
        tensors[name] = tensors[target]
    return tensors, json.loads(header.get("meta", "{}"))


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


def save_checkpoint(path, model, optimizer, meta: dict) -> None:
    """Model parameters (``model.*``), optimizer state (``optim.*``) and the torch RNG state in one file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    save_tensors(path, tensors, {**meta, "optimizer": opt_meta})


def load_checkpoint(path, model, optimizer) -> dict:
    """Restore model, optimizer and RNG state in place; returns the checkpoint's metadata."""
    tensors, meta = load_tensors(path)
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MyopiaError(f"checkpoint {path} does not match this model ({first})") from None
    opt_meta = meta.pop("optimizer")
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
    except (ValueError, KeyError) as exc:
        raise MyopiaError(f"checkpoint {path}: optimizer state does not match ({exc})") from None
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return meta


def save_model(path, model, meta: dict) -> None:
    """Just the weights (``model.safetensors``), loadable with :func:`load_model_state`."""
    save_tensors(path, dict(model.state_dict()), meta)


def load_model_state(path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_tensors(path)
