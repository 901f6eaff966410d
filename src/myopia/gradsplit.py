r"""The gradient of a language model split into its myopic (diagonal) and future (off-diagonal) parts.

With one weight copy θ_i per position, the ordinary gradient of the loss is

    total = Σ_j Σ_{i<=j} ∂ℓ_j/∂θ_i,    myopic = Σ_j ∂ℓ_j/∂θ_j  (the diagonal terms),
    future = total − myopic.

``myopic`` is computed exactly by the model's own ``gradient="myopic"`` setting (strict: earlier keys/values are
constants), and ``myopic-hidden`` by ``gradient="myopic-hidden"`` (earlier attention *inputs* are constants; the
key/value projections still learn through them), so the future part is what a position's computation receives
only from later positions' losses. Works for any model with ``set_gradient`` and ``model(idx) -> logits``:
our :class:`myopia.model.GPT` and :class:`myopia.hf.model.HFCausalLM`.

Statistics per parameter group (float64): the three norms, the cosines myopic·future, myopic·total and
future·total, and the shares ``<part, total> / |total|^2`` (myopic share + future share = 1 exactly), i.e. the
fraction of the total gradient's squared length that lies along each part.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from .arms import MYOPIC_ARMS as PARTS  # the myopic part of the gradient under each myopic setting
from .errors import MyopiaError

_LAYER = re.compile(r"(?:^|\.)(?:h|layers|blocks|layer)\.(\d+)\.")


def loss_gradient(model, x: torch.Tensor, y: torch.Tensor, gradient: str, *, beta: float = 0.0, horizon: int = 0,
                  micro_batch: int = 16, float64: bool = False) -> dict[str, torch.Tensor]:
    """Gradient of the mean next-token loss over (x, y) (both (N, T)) under ``gradient``, on the CPU.

    Returns ``{parameter name: gradient}`` for every trainable parameter (tied parameters once), in the
    parameters' dtype, or float64 with ``float64=True``.
    """
    model.set_gradient(gradient, beta, horizon)
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    n = y.numel()
    for i in range(0, len(x), micro_batch):
        xb, yb = x[i : i + micro_batch].to(device), y[i : i + micro_batch].to(device)
        logits = model(xb)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32, fp64 stays
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum") / n
        if not torch.isfinite(loss):
            raise MyopiaError("the loss is not finite on this data sample")
        loss.backward()
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            out[name] = g.detach().to("cpu", torch.float64 if float64 else g.dtype).clone()
    model.zero_grad(set_to_none=True)
    return out


def decompose(model, x, y, parts=PARTS, *, micro_batch: int = 16) -> dict:
    """``{"total": grads, part: {"myopic": grads, "future": grads} | {"error": message}}`` for each part.

    ``future`` is ``total - myopic`` per tensor. The model's own gradient setting is restored afterwards.
    """
    saved = model.cfg.setting
    try:
        total = loss_gradient(model, x, y, "vanilla", micro_batch=micro_batch, float64=True)
        out: dict = {"total": total}
        for part in parts:
            try:
                mine = loss_gradient(model, x, y, part, micro_batch=micro_batch, float64=True)
            except MyopiaError as exc:
                out[part] = {"error": str(exc)}
                continue
            out[part] = {"myopic": mine, "future": {k: total[k] - mine[k] for k in total}}
    finally:
        model.set_gradient(saved)
    return out


def parameter_groups(names: list[str]) -> dict[str, list[str]]:
    """Groups of parameter names: ``all``, ``layer.<i>``, ``kind.<k>``, ``layer.<i>.<k>``.

    Kinds: attention, mlp, norm, embedding (token/position embeddings and the output head), other. The layer
    index is read from names such as ``blocks.3.``, ``h.3.``, ``layers.3.``.
    """
    groups: dict[str, list[str]] = {"all": list(names)}
    for name in names:
        kind = parameter_kind(name)
        groups.setdefault(f"kind.{kind}", []).append(name)
        m = _LAYER.search(name)
        if m:
            groups.setdefault(f"layer.{int(m.group(1))}", []).append(name)
            groups.setdefault(f"layer.{int(m.group(1))}.{kind}", []).append(name)
    return groups


def parameter_kind(name: str) -> str:
    """The kind of a parameter from its name: embedding, norm, attention, mlp or other."""
    leaf = name.lower()
    if re.search(r"(wte|wpe|embed|lm_head)", leaf):
        return "embedding"
    if re.search(r"(^|\.)(ln_?\w*|\w*norm\w*)\.", leaf + "."):
        return "norm"
    if re.search(r"(attn|attention)", leaf):
        return "attention"
    if re.search(r"(mlp|feed_forward|ffn)", leaf):
        return "mlp"
    return "other"


def _dots(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> in float64."""
    return float((a.reshape(-1) * b.reshape(-1)).sum())


def _cos(ab: float, aa: float, bb: float) -> float | None:
    return ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else None


def split_stats(total: dict, myopic: dict, groups: dict[str, list[str]]) -> dict[str, dict]:
    """Norms, cosines and shares of ``myopic``, ``future = total - myopic`` and ``total`` for each group."""
    per: dict[str, tuple] = {}
    for name, t in total.items():
        t, m = t.double(), myopic[name].double()  # float32 gradients: t - m is exact in float64
        f = t - m
        per[name] = (_dots(t, t), _dots(m, m), _dots(f, f), _dots(m, f), _dots(m, t), _dots(f, t), t.numel())
    out = {}
    for group, names in groups.items():
        tt, mm, ff, mf, mt, ft, n = (sum(per[k][i] for k in names) for i in range(7))
        out[group] = {
            "params": int(n),
            "norm_total": math.sqrt(tt),
            "norm_myopic": math.sqrt(mm),
            "norm_future": math.sqrt(ff),
            "cos_myopic_future": _cos(mf, mm, ff),
            "cos_myopic_total": _cos(mt, mm, tt),
            "cos_future_total": _cos(ft, ff, tt),
            "myopic_share": mt / tt if tt > 0 else None,
            "future_share": ft / tt if tt > 0 else None,
        }
    return out


def decomposition_stats(model, x, y, parts=PARTS, *, micro_batch: int = 16) -> dict:
    """``{part: {group: split_stats}}`` (or ``{part: {"error": ...}}``) without keeping float64 copies.

    Memory: two gradients in the parameters' dtype at a time. The model's gradient setting is restored.
    """
    saved = model.cfg.setting
    try:
        total = loss_gradient(model, x, y, "vanilla", micro_batch=micro_batch)
        groups = parameter_groups(list(total))
        out: dict = {}
        for part in parts:
            try:
                mine = loss_gradient(model, x, y, part, micro_batch=micro_batch)
            except MyopiaError as exc:
                out[part] = {"error": str(exc)}
                continue
            out[part] = split_stats(total, mine, groups)
            del mine
    finally:
        model.set_gradient(saved)
    return out
