r"""Causal softmax attention whose forward value is ordinary but whose gradient is myopic.

Notation (all tensors ``(batch, heads, seq, head_dim)``; ``s`` is the score scale):

    s_ij = s <q_i, k_j>,   L_i = logsumexp_{j<=i} s_ij,   p_ij = exp(s_ij - L_i),   o_i = sum_j p_ij v_j.

**Myopic weights.** Query i's loss reaches key/value j with weight

    w_ij = 1      if i - h <= j <= i          (the "band": the position itself and h earlier ones)
    w_ij = beta   if j < i - h                (the off-band past)

so ``h = 0, beta = 0`` is strict myopia (earlier keys/values are constants for query i) and ``beta = 1``
or ``h >= seq - 1`` is vanilla. The gradient into q is always the ordinary one. With g_i = dL/do_i the
vector-Jacobian products are (softmax Jacobian: do_i/ds_ij = p_ij (v_j - o_i))

    dL/dq_i = s sum_j p_ij <g_i, v_j - o_i> k_j                        (unweighted)
    dL/dv_j =   sum_i w_ij p_ij g_i
    dL/dk_j = s sum_i w_ij p_ij <g_i, v_j - o_i> q_i.

**Fused path (memory-linear, exact).** Split w_ij = beta + (1 - beta) 1[i-h <= j <= i]. The forward is the
fused kernel (PyTorch's flash attention, which also returns L); the backward is the kernel's backward plus the
band. Both run inside one custom op (``myopia::myopic_attention`` with its backward op, registered for
autograd and with fake implementations), so every device and ``torch.compile`` see one opaque node. Three
exact backward paths (section "The myopic backward"): ``band`` adds the in-band terms of dk, dv one diagonal
at a time after the vanilla backward, recomputing p_ij = exp(s_ij - L_i) (O(B H T D (h + 1)) extra work; for
beta = 0 the kernel's dk, dv are dropped and the band written into buffers laid out like k, v, so peak memory
equals vanilla's); ``near`` tiles the triangle into the band (kernel calls on h x h blocks) and the far
triangle j < i - h (the kernel's backward on the shifted triangle, fed the full o and L); ``complement``
subtracts that far part from the vanilla gradient. On CPU the last two split each kernel call into column strips
(fewer wasted products in the kernel's diagonal blocks). No seq x seq tensor anywhere.

**Past from elsewhere** (``past_k``/``past_v``, the local myopia bonus). Query i reads keys/values j < i from
the (constant) past tensors and its own position from the live k, v. With a_i, Lp_i the attention output and
log-normaliser over the past alone (a fused strictly-causal call) and d_i = s <q_i, k_i>:

    o_i = sigmoid(Lp_i - d_i) a_i + sigmoid(d_i - Lp_i) v_i,    o_0 = v_0.

Lp_i is made differentiable in q exactly by dLp_i/dq_i = s sum_j p^past_ij pk_j (the softmax-mean past key,
one more fused call without gradient).

**Eager path.** ``impl="eager"`` materialises the seq x seq score matrix and applies the weights with
stop-gradient algebra; it is the readable reference (and what the paper's code does), O(seq^2) memory.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .arms import GradientSetting
from .errors import MyopiaError
from .masked_attention import (
    document_bigram_attention,
    masked_attention_with_past,
    masked_myopic_attention,
    masked_myopic_attention_split,
)

__all__ = [
    "myopic_attention",
    "myopic_attention_split",
    "bigram_attention",
    "causal_attention",
    "causal_attention_lse",
    "split_linear",
    "kernel_for",
    "choose_path",
    "myopic_backward",
]

IMPLS = ("auto", "fused", "eager")


# --------------------------------------------------------------------------------------------------------------
# Kernels: one place that picks the fused kernel for given inputs and calls its forward and backward
# --------------------------------------------------------------------------------------------------------------
#
# Every call here is square and causal: (B, H, T, D) queries against (B, H_kv, T, D) keys/values, H_kv dividing
# H (grouped-query attention). The log-sum-exp ``lse`` is always (B, H, T), contiguous, float32 (float64 for
# float64 inputs); outputs and gradients are laid out like the tensors they belong to (``torch.empty_like``),
# which is also what the fake implementations of the custom ops below promise.

KERNELS = ("cpu_flash", "cuda_flash", "cuda_efficient", "math")
_warned: set = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _expand_heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, H_kv, T, D) -> (B, n_heads, T, D) as a view: query head h reads key/value head h // (n_heads / H_kv)."""
    b, h_kv, T, d = t.shape
    if h_kv == n_heads:
        return t
    return t.unsqueeze(2).expand(b, h_kv, n_heads // h_kv, T, d).reshape(b, n_heads, T, d)


def _sum_groups(t: torch.Tensor, h_kv: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H_kv, T, D): the gradient of :func:`_expand_heads`."""
    b, h, T, d = t.shape
    return t if h == h_kv else t.view(b, h_kv, h // h_kv, T, d).sum(2)


def kernel_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The fused kernel our attention uses for these inputs (one of :data:`KERNELS`).

    CPU: PyTorch's flash kernel (every floating dtype, grouped-query heads). CUDA: the flash kernel where PyTorch
    says it supports the inputs, else the memory-efficient kernel, else (with one warning) the O(T^2) math path.
    Only "this kernel does not support these inputs" leads to another kernel; errors inside a kernel propagate.
    """
    dev = q.device.type
    if dev == "cpu":
        return "cpu_flash"
    if dev == "cuda":
        gqa = k.shape[1] != q.shape[1]
        if torch.backends.cuda.can_use_flash_attention(
            torch.backends.cuda.SDPAParams(q, k, v, None, 0.0, True, gqa), False
        ):
            return "cuda_flash"
        ke, ve = _expand_heads(k, q.shape[1]), _expand_heads(v, q.shape[1])
        if torch.backends.cuda.can_use_efficient_attention(
            torch.backends.cuda.SDPAParams(q, ke, ve, None, 0.0, True, False), False
        ):
            return "cuda_efficient"
    _warn_once(
        f"math:{dev}:{q.dtype}:{q.shape[-1]}",
        f"myopia: no fused attention kernel supports {dev} {q.dtype} head_dim {q.shape[-1]}; using the O(T^2) "
        "math path (same values, quadratic memory)",
    )
    return "math"


def _fixed_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides ``torch.empty_like(like)`` would have (the custom ops' fake implementations promise
    them); a copy only where a kernel chose another layout."""
    want = torch.empty_like(like, device="meta").stride()
    if t.stride() == want:
        return t
    if like.is_contiguous():
        return _contiguous(t)
    out = torch.empty_like(like, dtype=t.dtype)
    out.copy_(t)
    return out


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t.contiguous()`` by ``clone`` (which fake CUDA tensors support on a machine without CUDA)."""
    return t if t.is_contiguous() else t.clone(memory_format=torch.contiguous_format)


def _math_attention_lse(q, k, v, scale):
    """Fallback with O(T^2) memory for devices without a fused kernel that returns the log-sum-exp."""
    k, v = _expand_heads(k, q.shape[1]), _expand_heads(v, q.shape[1])
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-1, -2)).to(torch.promote_types(q.dtype, torch.float32)) * scale
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = scores.logsumexp(-1)
    out = (torch.exp(scores - lse.unsqueeze(-1)).to(v.dtype)) @ v
    return out, lse.detach()


def _math_backward(g, q, k, v, out, lse, scale):
    """The flash backward's formulas with O(T^2) memory, from a given ``out`` and ``lse`` (which need not be this
    call's own: the off-band pass feeds the whole sequence's)."""
    h_kv, work = k.shape[1], torch.promote_types(q.dtype, torch.float32)
    qw, kw, vw = q.to(work), _expand_heads(k, q.shape[1]).to(work), _expand_heads(v, q.shape[1]).to(work)
    gw = g.to(work)
    T = q.shape[-2]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    p = torch.exp((qw @ kw.transpose(-1, -2)) * scale - lse.to(work).unsqueeze(-1)).masked_fill(~causal, 0.0)
    delta = (gw * out.to(work)).sum(-1, keepdim=True)
    ds = p * (gw @ vw.transpose(-1, -2) - delta)
    dq, dk, dv = scale * ds @ kw, scale * ds.transpose(-1, -2) @ qw, p.transpose(-1, -2) @ gw
    return dq.to(q.dtype), _sum_groups(dk, h_kv).to(k.dtype), _sum_groups(dv, h_kv).to(v.dtype)


def _kernel_forward(kind: str, q, k, v, scale: float):
    """(out, lse) of causal attention with the given kernel; see the section comment for layouts."""
    T = q.shape[-2]
    if kind == "cpu_flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
    elif kind == "cuda_flash":
        res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=scale)
        out, lse = res[0], res[1]
    elif kind == "cuda_efficient":
        ke, ve = _expand_heads(k, q.shape[1]), _expand_heads(v, q.shape[1])
        res = torch.ops.aten._scaled_dot_product_efficient_attention(q, ke, ve, None, True, 0.0, True, scale=scale)
        out, lse = res[0], res[1].narrow(-1, 0, T)
    elif kind == "math":
        out, lse = _math_attention_lse(q, k, v, scale)
    else:
        raise MyopiaError(f"unknown attention kernel {kind!r}")
    return _fixed_layout(out, q), _contiguous(lse.to(_lse_dtype(q.dtype)))


def _kernel_backward(kind: str, g, q, k, v, out, lse, scale: float):
    """(dq, dk, dv) of causal attention from ``out``/``lse`` with the given kernel (dk, dv at k's head count)."""
    T, dev = q.shape[-2], q.device
    if kind == "cpu_flash":
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            g, q, k, v, out, lse, 0.0, True, scale=scale
        )
    elif kind == "cuda_flash":
        seed = torch.empty(2, dtype=torch.uint64, device=dev)  # no dropout: the kernel does not read them
        offset = torch.empty((), dtype=torch.uint64, device=dev)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            g, q, k, v, out, _contiguous(lse), None, None, T, T, 0.0, True, seed, offset, scale=scale
        )
    elif kind == "cuda_efficient":
        h_kv = k.shape[1]
        ke, ve = _expand_heads(k, q.shape[1]), _expand_heads(v, q.shape[1])
        padded = F.pad(lse.float(), (0, -T % 32))  # the kernel's log-sum-exp is padded to a multiple of 32
        seed = torch.empty((), dtype=torch.long, device=dev)
        offset = torch.empty((), dtype=torch.long, device=dev)
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            g, q, ke, ve, None, out, padded, seed, offset, 0.0, [True, True, True, False], True, scale=scale
        )
        dk, dv = _sum_groups(dk, h_kv), _sum_groups(dv, h_kv)
    elif kind == "math":
        dq, dk, dv = _math_backward(g, q, k, v, out, lse, scale)
    else:
        raise MyopiaError(f"unknown attention kernel {kind!r}")
    return dq, dk, dv


STRIP_KEYS = 128  # key width of the column strips in the myopic paths' CPU kernel calls; 0 = one call each


def _strip_backward(kind: str, g, q, k, v, out, lse, scale: float):
    """:func:`_kernel_backward` (same arguments, same pairs, same sums) by column strips where that saves work.

    The CPU kernel's causal backward walks each block of query rows over blocks of min(512, n) keys and evaluates
    every block up to the one holding the diagonal in full, masking afterwards: a length-n call evaluates n^2
    (query, key) products for n <= 512, twice the triangle's n^2 / 2, and about 256 extra per query row beyond.
    Column strip b, keys [b w, b w + w) against queries [b w, n), is itself a causal call (query b w + x sees the
    strip's keys up to x, all w of them once x >= w), and the strips tile the triangle exactly: each strip's
    dk, dv are its keys' whole gradients, dq is the sum of the strips' dq. About n (n + w) / 2 products, plus a
    pass over each strip's query rows (the kernel's zeroed dq and copy of g, the sum; dq is summed in fp32 or
    wider, so low precision rounds once per strip, not once per sum). Used by the myopic paths only (vanilla and
    the band path keep the plain call); other kernels keep one call."""
    n, w = q.shape[-2], STRIP_KEYS
    if kind != "cpu_flash" or not w or n < 2 * w:
        return _kernel_backward(kind, g, q, k, v, out, lse, scale)
    work = torch.promote_types(q.dtype, torch.float32)
    dq = dk = dv = None
    for start in range(0, n, w):
        def late(t):  # the strip's queries: start..n-1
            return t.narrow(-2, start, n - start)

        width = min(w, n - start)
        dq_s, dk_s, dv_s = _kernel_backward(kind, late(g), late(q), k.narrow(-2, start, width),
                                            v.narrow(-2, start, width), late(out),
                                            _contiguous(lse.narrow(-1, start, n - start)), scale)
        if dq is None:  # the first strip's dq covers every query; dk, dv are written strip by strip (no cat)
            dq = dq_s.to(work)
            dk, dv = k.new_empty(k.shape), v.new_empty(v.shape)
        else:
            late(dq).add_(dq_s)
        del dq_s
        dk.narrow(-2, start, width).copy_(dk_s)
        dv.narrow(-2, start, width).copy_(dv_s)
        del dk_s, dv_s
    return dq, dk, dv


# --------------------------------------------------------------------------------------------------------------
# The custom ops: what autograd, torch.compile and every device see
# --------------------------------------------------------------------------------------------------------------
#
# ``myopia::causal_attention``  (q, k, v) -> (out, lse), vanilla gradient (``..._backward``)
# ``myopia::myopic_attention``  (q, k, v, k_full?, v_full?) -> (out, lse), myopic gradient (``..._backward``)
#
# Both forwards are the same fused kernel (so myopic and vanilla values agree bit for bit); the backward ops call
# the kernels' backward ops and the myopic passes below directly. No Python side channel, no tensor state outside
# the saved inputs/outputs: Dynamo traces a model through them without a graph break, and the fake
# implementations give every device's shapes, dtypes and layouts without running a kernel.


def _fake_forward(q, k, v):
    return torch.empty_like(q), q.new_empty(q.shape[:-1], dtype=_lse_dtype(q.dtype))


@torch.library.custom_op("myopia::causal_attention", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, float scale) -> (Tensor, Tensor)")
def _causal_op(q, k, v, scale):
    return _kernel_forward(kernel_for(q, k, v), q, k, v, scale)


@_causal_op.register_fake
def _(q, k, v, scale):
    return _fake_forward(q, k, v)


@torch.library.custom_op("myopia::causal_attention_backward", mutates_args=(),
                         schema="(Tensor g, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, float scale)"
                                " -> (Tensor, Tensor, Tensor)")
def _causal_backward_op(g, q, k, v, out, lse, scale):
    grads = list(_kernel_backward(kernel_for(q, k, v), g, q, k, v, out, lse, scale))
    return _fixed_layouts(grads, (q, k, v))


def _fixed_layouts(grads: list, likes) -> tuple:
    """:func:`_fixed_layout` of each gradient in turn, dropping the old one before the next copy: at most one
    gradient exists twice at any moment (a tuple of copies would hold every original until the last copy)."""
    for i, like in enumerate(likes):
        grads[i] = _fixed_layout(grads[i], like)
    return tuple(grads)


@_causal_backward_op.register_fake
def _(g, q, k, v, out, lse, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _save(ctx, inputs, output):
    q, k, v = inputs[:3]
    ctx.save_for_backward(q, k, v, *output)
    ctx.mark_non_differentiable(output[1])
    ctx.args = inputs[3:]


def _refuse_double_backward():
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        raise MyopiaError("myopic attention supports one backward pass, not create_graph=True")


def _causal_grad(ctx, g, _g_lse):
    _refuse_double_backward()
    q, k, v, out, lse = ctx.saved_tensors
    (scale,) = ctx.args
    return (*torch.ops.myopia.causal_attention_backward(g, q, k, v, out, lse, scale), None)


_causal_op.register_autograd(_causal_grad, setup_context=_save)


@torch.library.custom_op(
    "myopia::myopic_attention", mutates_args=(),
    schema="(Tensor q, Tensor k, Tensor v, Tensor? k_full, Tensor? v_full, int horizon, float beta, float scale)"
           " -> (Tensor, Tensor)")
def _myopic_op(q, k, v, k_full, v_full, horizon, beta, scale):
    return _kernel_forward(kernel_for(q, k, v), q, k, v, scale)


@_myopic_op.register_fake
def _(q, k, v, k_full, v_full, horizon, beta, scale):
    return _fake_forward(q, k, v)


@torch.library.custom_op(
    "myopia::myopic_attention_backward", mutates_args=(),
    schema="(Tensor g, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int horizon, float beta, float scale,"
           " bool split) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")
def _myopic_backward_op(g, q, k, v, out, lse, horizon, beta, scale, split):
    grads = list(myopic_backward(g, q, k, v, out, lse, horizon, beta, scale, split))
    if not split:
        del grads[3:]
        return *_fixed_layouts(grads, (q, k, v)), q.new_empty(0), q.new_empty(0)
    return _fixed_layouts(grads, (q, k, v, k, v))


@_myopic_backward_op.register_fake
def _(g, q, k, v, out, lse, horizon, beta, scale, split):
    if not split:
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), q.new_empty(0), q.new_empty(0)
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(k),
            torch.empty_like(v))


def _myopic_grad(ctx, g, _g_lse):
    _refuse_double_backward()
    q, k, v, out, lse = ctx.saved_tensors
    k_full, v_full, horizon, beta, scale = ctx.args
    split = k_full is not None
    dq, dk, dv, dk_full, dv_full = torch.ops.myopia.myopic_attention_backward(
        g, q, k, v, out, lse, horizon, beta, scale, split
    )
    if not split:
        dk_full = dv_full = None
    return dq, dk, dv, dk_full, dv_full, None, None, None


_myopic_op.register_autograd(_myopic_grad, setup_context=_save)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Ordinary causal attention ``(B, H, T, D), (B, H_kv, T, D) x 2 -> (B, H, T, D)``.

    The same fused kernel as the myopic path, so vanilla and myopic forward passes agree bit for bit.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return torch.ops.myopia.causal_attention(q, k, v, scale)[0]


def causal_attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused causal attention returning ``(out, lse)``.

    ``out`` (B, H, T, D) is differentiable in q, k, v; ``lse`` (B, H, T), float32 or wider, is a constant.
    The kernel is :func:`kernel_for`'s choice (flash on CPU; flash, memory-efficient or math on CUDA).
    """
    return torch.ops.myopia.causal_attention(q, k, v, float(scale))


# --------------------------------------------------------------------------------------------------------------
# The myopic backward: three exact paths, chosen by horizon, length and dtype
# --------------------------------------------------------------------------------------------------------------
#
# With W_band = {(i, j): i - h <= j <= i} and W_far = {(i, j): j < i - h} the vanilla gradients split as
# dk = dk_band + dk_far (same for dv, dq). The far part is itself causal attention's backward on a shifted
# triangle: queries h+1..T-1 against keys 0..T-h-2 (query h+1+r sees keys <= r), fed the FULL sequence's output o
# and log-sum-exp L, so that p_ij = exp(s_ij - L_i) and Delta_i = <g_i, o_i> are the full softmax's. Then
#
#   "band"        vanilla kernel backward (dq, dk, dv) + the band terms one diagonal at a time (small h)
#                 dk = beta dk + (1 - beta) dk_band
#   "near"        dk_band, dv_band, dq_band from the kernel's backward on h x h blocks (the diagonal blocks and
#                 the reversed blocks below them, each batch a causal call) + the far part by the kernel's
#                 backward on the shifted triangle: dq = dq_band + dq_far, dk = dk_band + beta dk_far. The
#                 regions tile the triangle: about one vanilla backward in three kernel calls, no subtraction.
#   "complement"  vanilla kernel backward + the far part: dk = dk - (1 - beta) dk_far (large h, where the far
#                 triangle is small). The subtraction loses precision in bf16 when the far part dominates, so
#                 low precision takes it only when the band holds most of the triangle.
#
# On the CPU kernel, the near and complement paths make each of their causal kernel calls by column strips of
# STRIP_KEYS keys (:func:`_strip_backward`): the same pairs and sums, without the kernel's whole 512-key blocks
# at the diagonal (the measured effect is in benchmarks/README.md, horizon rows).
#
# Memory: vanilla's fwd+bwd peak is out, dq, dk, dv and the kernel's own buffer (one query-sized tensor on CPU).
# The near and complement paths hold partial gradients, flipped blocks and strip results beside the outputs, so
# they run on chunks of (batch, key/value head) pairs (:func:`_head_chunks`, about 1/16 of the pairs each) and
# copy each chunk's gradients into the outputs: what lives beside out, dq, dk, dv is a fraction of one tensor.
# The band path needs no chunks; the gradients' layouts are fixed one tensor at a time (:func:`_fixed_layouts`).
# Measured and tested in a fresh process per path: benchmarks/bench_attention_memory.py,
# tests/test_attention_memory.py.

PATHS = ("band", "near", "complement")
FORCE_PATH: str | None = None  # tests and benchmarks pin a path; None = the rule in choose_path
BAND_MAX_HORIZON = 2  # "band" up to this horizon
NEAR_COST = 1.5  # cost per (query, key) pair of the band's h x h block calls relative to a full backward's:
# near up to h = T / 3. Measured on the 2-core CPU, T = 1024, fp32, fwd+bwd paired against vanilla
# (bench_attention.py --paths, 2026-12-01, quiet machine, column strips): near 1.25x / complement 1.50x at
# h = 64, near 1.23x / complement 1.31x at h = 256, so near wins well past the T / 8 that pair counts with a 4x
# small-block penalty predicted.


def choose_path(T: int, horizon: int, dtype: torch.dtype) -> str:
    """The myopic backward path for sequence length T, horizon h < T - 1 and dtype (see the section comment).

    Costs in (query, key) pairs the kernel visits beyond the far triangle: "near" NEAR_COST x T x max(h, 1)
    (the band's blocks, at the lower efficiency of small blocks), "complement" the whole triangle T^2 / 2;
    "band" up to BAND_MAX_HORIZON (a few elementwise passes per diagonal)."""
    if FORCE_PATH is not None:
        if FORCE_PATH not in PATHS:
            raise MyopiaError(f"FORCE_PATH must be one of {PATHS} or None, got {FORCE_PATH!r}")
        return FORCE_PATH
    if horizon <= BAND_MAX_HORIZON:
        return "band"
    far = (T - horizon - 1) ** 2 / 2
    if dtype in (torch.float16, torch.bfloat16) and far > T * T / 8:
        return "near"  # the complement's subtraction would cancel: the band is under ~3/4 of the triangle
    return "near" if NEAR_COST * T * horizon <= T * T / 2 else "complement"


def myopic_backward(g, q, k, v, out, lse, horizon: int, beta: float, scale: float, split: bool = False,
                    path: str | None = None):
    """Myopic gradients ``(dq, dk, dv, dk_full, dv_full)`` of fused causal attention from its output and
    log-sum-exp; dk, dv are myopic (weights w_ij), dk_full, dv_full the vanilla ones when ``split`` (else None).
    q, out, g: (B, H, T, D); k, v: (B, H_kv, T, D); lse: (B, H, T)."""
    kind = kernel_for(q, k, v)
    T = q.shape[-2]
    path = path or choose_path(T, horizon, q.dtype)
    if path == "band":
        dq, dk, dv = _kernel_backward(kind, g, q, k, v, out, lse, scale)
        dk_full = dv_full = None
        if split:  # vanilla gradient to the full copies; the myopic one is built beside it
            dk_full, dv_full = dk, dv
            dk = dk * beta if beta else torch.empty_like(k)
            dv = dv * beta if beta else torch.empty_like(v)
        elif beta:
            dk, dv = dk.mul_(beta), dv.mul_(beta)
        else:  # strict: the kernel's dk, dv are not needed. Free them first (peak memory stays vanilla's), then
            # write the myopic ones in the layout of k, v, which spares a later copy (the kernel's is (B, T, H, D))
            del dk, dv
            dk, dv = torch.empty_like(k), torch.empty_like(v)
        dk, dv = _finish_band(dk, dv, q, k, v, out, lse, g, horizon, beta, scale)
        return dq, dk, dv, dk_full, dv_full
    if path not in ("near", "complement"):
        raise MyopiaError(f"unknown myopic backward path {path!r}")
    chunks = _head_chunks(q, k)
    if len(chunks) == 1:
        return _tiled_backward(kind, g, q, k, v, out, lse, horizon, beta, scale, split, path)
    # Bounded memory: the paths' kernel calls, flips and partial sums run on a few (batch, key/value head) pairs
    # at a time and land in the outputs, so what lives beside the outputs is a fraction of one (B, H, T, D) tensor.
    G = q.shape[1] // k.shape[1]
    res = [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)]
    res += [torch.empty_like(k), torch.empty_like(v)] if split else [None, None]
    for b0, b1, h0, h1 in chunks:
        def at_q(t):  # narrow (views on every device, fake tensors included)
            return t.narrow(0, b0, b1 - b0).narrow(1, h0 * G, (h1 - h0) * G)

        def at_kv(t):
            return t.narrow(0, b0, b1 - b0).narrow(1, h0, h1 - h0)

        part = _tiled_backward(kind, at_q(g), at_q(q), at_kv(k), at_kv(v), at_q(out), at_q(lse), horizon, beta,
                               scale, split, path)
        for i, (dst, src) in enumerate(zip(res, part)):
            if dst is not None:
                _copy_into((at_q if i == 0 else at_kv)(dst), src)
        del part
    return tuple(res)


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    dst.copy_(src)  # one name for the chunks' copies (a CPU-only build cannot copy_ fake CUDA tensors; tests swap it)


CHUNK_PARTS = 16  # the near/complement paths run on at most 1/CHUNK_PARTS of the (batch, kv-head) pairs at once
CHUNK_MIN_ELEMENTS = 2**19  # ... but on at least this many query elements per chunk (fewer, longer kernel calls;
# B 1 x H 8 x T 1024 x D 64, the horizon rows of bench_attention.py, stays one chunk)
CHUNK_MIN_ELEMENTS_CUDA = 2**22  # the same on a GPU, where every chunk's dozen kernel launches cost more (not yet
# measured on a GPU: benchmarks/gpu_check.py reports each path's peak memory beside its time)


def _head_chunks(q, k) -> list[tuple[int, int, int, int]]:
    """(b0, b1, h0, h1) ranges of batch rows and key/value heads (query heads h0 G..h1 G) that tile (B, H_kv):
    each about 1/CHUNK_PARTS of the pairs (whole batch rows where a chunk spans several), none smaller than
    CHUNK_MIN_ELEMENTS (on CUDA CHUNK_MIN_ELEMENTS_CUDA) query elements unless the whole problem is."""
    B, H, T, D = q.shape
    h_kv = k.shape[1]
    pairs, per_pair = B * h_kv, max((H // h_kv) * T * D, 1)
    least = CHUNK_MIN_ELEMENTS_CUDA if q.device.type == "cuda" else CHUNK_MIN_ELEMENTS
    m = min(pairs, max(1, -(-pairs // CHUNK_PARTS), -(-least // per_pair)))
    if m >= h_kv:
        rows = m // h_kv
        return [(b, min(b + rows, B), 0, h_kv) for b in range(0, B, rows)]
    return [(b, b + 1, h, min(h + m, h_kv)) for b in range(B) for h in range(0, h_kv, m)]


def _tiled_backward(kind, g, q, k, v, out, lse, horizon: int, beta: float, scale: float, split: bool, path: str):
    """The near and complement paths (see the section comment) on all of q, k, v at once."""
    T = q.shape[-2]
    work = torch.promote_types(q.dtype, torch.float32)
    s = horizon + 1  # the far triangle: queries s.., keys ..T-s-1
    if path == "near":
        dq, dk_band, dv_band = _near_grads(kind, q, k, v, out, lse, g, horizon, scale)
    else:
        dq, dk_van, dv_van = (t.to(work) for t in _strip_backward(kind, g, q, k, v, out, lse, scale))

    def late(t):  # queries s..T-1 (narrow, not indexing: the fake-tensor test runs this on fake CUDA tensors)
        return t.narrow(-2, s, T - s)

    def early(t):  # keys 0..T-s-1
        return t.narrow(-2, 0, T - s)

    dq_far, dk_far, dv_far = _strip_backward(
        kind, late(g), late(q), early(k), early(v), late(out), _contiguous(lse.narrow(-1, s, T - s)), scale
    )
    if path == "near":
        late(dq).add_(dq_far)
        if split:
            dk_van, dv_van = dk_band.clone(), dv_band.clone()
            early(dk_van).add_(dk_far)
            early(dv_van).add_(dv_far)
        if beta:
            early(dk_band).add_(dk_far, alpha=beta)
            early(dv_band).add_(dv_far, alpha=beta)
        dk, dv = dk_band, dv_band
    else:
        dk, dv = (dk_van.clone(), dv_van.clone()) if split else (dk_van, dv_van)
        early(dk).sub_(dk_far, alpha=1.0 - beta)
        early(dv).sub_(dv_far, alpha=1.0 - beta)
    full = (dk_van.to(k.dtype), dv_van.to(v.dtype)) if split else (None, None)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), *full


def _near_grads(kind: str, q, k, v, out, lse, g, horizon: int, scale: float):
    """dq, dk, dv of the band alone (weights 1 for i - h <= j <= i, 0 elsewhere), in fp32 or wider, by two
    batched calls of the kernel's backward on c x c blocks, c = max(h, 1), fed the full o and L.

    Chunk the sequence into blocks of c = h positions. Query a + r's band keys are its own block up to itself
    (key offset t <= r: a causal c x c block) and the previous block from offset r on (t >= r). Reversing both
    the queries and the previous block's keys turns t >= r into t' <= r': causal again. So the band is
    exactly the diagonal blocks (one causal call, blocks as batch) plus the reversed off-diagonal blocks (a
    second one): T (h + 1) pairs in all, nothing wasted, every multiply in the fused kernel."""
    B, H, T, D = q.shape
    h_kv, work = k.shape[1], torch.promote_types(q.dtype, torch.float32)
    c = max(horizon, 1)
    N = -(-T // c)
    back = N * c - T

    def blocks(t):  # (B, H, T, X) -> (B, H, N, c, X); positions after T are zero (their terms vanish)
        t = F.pad(t, (0, 0, 0, back)) if back else t
        return t.reshape(B, H, N, c, t.shape[-1])

    qb, kb, vb, gb, ob = (blocks(t) for t in (q, _expand_heads(k, H), _expand_heads(v, H), g, out))
    lb = (F.pad(lse, (0, back), value=1e30) if back else lse).reshape(B, H, N, c)  # p = 0 for padded queries

    def heads(t):  # blocks as heads: (B, H, n, c, X) -> (B, H n, c, X)
        return t.reshape(B, -1, *t.shape[3:])

    grads = _strip_backward(kind, heads(gb), heads(qb), heads(kb), heads(vb), heads(ob), heads(lb), scale)
    dq, dk, dv = (t.to(work).reshape(B, H, N, c, t.shape[-1]) for t in grads)
    if horizon >= 1 and N > 1:
        def later(t):  # blocks 1..N-1, reversed within the block
            return heads(t.narrow(2, 1, N - 1).flip(3))

        def earlier(t):  # blocks 0..N-2, reversed
            return heads(t.narrow(2, 0, N - 1).flip(3))

        pq, pk, pv = _strip_backward(kind, later(gb), later(qb), earlier(kb), earlier(vb), later(ob),
                                      _contiguous(later(lb)), scale)
        dq.narrow(2, 1, N - 1).add_(pq.reshape(B, H, N - 1, c, D).flip(3))
        dk.narrow(2, 0, N - 1).add_(pk.reshape(B, H, N - 1, c, D).flip(3))
        dv.narrow(2, 0, N - 1).add_(pv.reshape(B, H, N - 1, c, -1).flip(3))
    dq, dk, dv = (t.reshape(B, H, N * c, t.shape[-1]).narrow(-2, 0, T) for t in (dq, dk, dv))
    return dq, _sum_groups(dk, h_kv), _sum_groups(dv, h_kv)


def _finish_band(dk, dv, q, k, v, o, lse, g, horizon: int, beta: float, scale: float):
    """dk, dv + (1 - beta) x the in-band terms, where dk, dv hold beta x the vanilla gradient (anything at all
    when beta = 0: then they are overwritten); returns the result (dk, dv themselves, except on the fused
    path). In low precision, or with grouped-query heads, the band sums run in fp32 at the query heads on
    the side and are added afterwards."""
    work = torch.promote_types(q.dtype, torch.float32)  # softmax statistics in fp32 (or fp64)
    grouped = k.shape[1] != q.shape[1]
    H = q.shape[1]
    if _compiled_band_for(q.device):  # one fused kernel: band, group sum, combine and cast
        return _compiled_band(horizon)(q, _expand_heads(k, H), _expand_heads(v, H), o, lse, g, scale, 1.0 - beta,
                                       dk if beta else None, dv if beta else None, k.shape[1], dk.dtype)
    if dk.dtype == work and dv.dtype == work and not grouped:
        _add_band_grads(dk, dv, q, k, v, o, lse, g, horizon, scale, 1.0 - beta, overwrite=beta == 0.0)
        return dk, dv
    band_k = torch.empty(q.shape, dtype=work, device=k.device)
    band_v = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=work, device=v.device)
    qw, ow, gw = (t.to(work) for t in (q, o, g))
    kw, vw = _expand_heads(k, H).to(work), _expand_heads(v, H).to(work)
    _add_band_grads(band_k, band_v, qw, kw, vw, ow, lse.to(work), gw, horizon, scale, 1.0 - beta, overwrite=True)
    band_k, band_v = _sum_groups(band_k, k.shape[1]), _sum_groups(band_v, v.shape[1])
    if beta:
        dk.add_(band_k.to(dk.dtype))
        dv.add_(band_v.to(dv.dtype))
    else:
        dk.copy_(band_k)
        dv.copy_(band_v)
    return dk, dv


def _flat_view(buf: torch.Tensor, shape) -> torch.Tensor:
    return buf.narrow(0, 0, math.prod(shape)).view(shape)


def _add_band_grads(dk, dv, q, k, v, o, lse, g, horizon: int, scale: float, weight: float,
                    overwrite: bool = False) -> None:
    """dk += weight s sum_{d<=h} p_{i,i-d} (<g_i, v_{i-d}> - Delta_i) q_i and dv += weight sum_{d<=h}
    p_{i,i-d} g_i, written into row i-d, in place (Delta_i = <g_i, o_i>). Recomputes p_{i,i-d} = exp(s <q_i,
    k_{i-d}> - L_i) one diagonal at a time. All tensors share one head count.

    With ``overwrite`` the main diagonal (d = 0, which covers every row) replaces dk, dv instead of adding to
    them: their previous contents never matter (no zeroing pass), and they serve as scratch for that
    diagonal's row dots. Later diagonals take their products in one contiguous scratch buffer (no batched
    matmul, no copies of the slices). Per diagonal: two products, two row sums, four small (B, H, T) ops and
    two fused multiply-adds over (B, H, T, D)."""
    T = q.shape[-2]
    delta = scratch = None
    for d in range(min(horizon, T - 1) + 1):
        (qi, gi, oi), li = (t.narrow(-2, d, T - d) for t in (q, g, o)), lse.narrow(-1, d, T - d)
        kj, vj = k.narrow(-2, 0, T - d), v.narrow(-2, 0, T - d)
        if overwrite and d == 0:
            p = torch.mul(qi, kj, out=dk).sum(-1)
            dp = torch.mul(gi, torch.sub(vj, oi, out=dv), out=dv).sum(-1)  # <g_i, v_i - o_i>
        else:
            if scratch is None:
                scratch = torch.empty(max(q.numel(), g.numel()), dtype=q.dtype, device=q.device)
                delta = torch.mul(g, o, out=_flat_view(scratch, g.shape)).sum(-1)
            p = torch.mul(qi, kj, out=_flat_view(scratch, qi.shape)).sum(-1)
            dp = torch.mul(gi, vj, out=_flat_view(scratch, gi.shape)).sum(-1).sub_(delta.narrow(-1, d, T - d))
        p = p.mul_(scale).sub_(li).exp_()  # p_{i, i-d}
        coef_k = dp.mul_(p).mul_(scale * weight).unsqueeze(-1)
        coef_v = (p.mul_(weight) if weight != 1.0 else p).unsqueeze(-1)
        if overwrite and d == 0:
            torch.mul(gi, coef_v, out=dv)
            torch.mul(qi, coef_k, out=dk)
        else:
            dv.narrow(-2, 0, T - d).addcmul_(gi, coef_v)
            dk.narrow(-2, 0, T - d).addcmul_(qi, coef_k)


BAND_COMPILE: bool | None = None  # the Inductor-fused band pass: None = on CUDA where Triton is installed


def _compiled_band_for(device: torch.device) -> bool:
    if BAND_COMPILE is not None:
        return BAND_COMPILE
    if device.type != "cuda":
        return False
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def band_grads(q, k, v, o, lse, g, horizon: int, scale: float, weight: float, base_k=None, base_v=None,
               h_kv: int | None = None, out_dtype: torch.dtype | None = None):
    """``base + weight`` x the in-band dk, dv as one pure function, written for Inductor to fuse. q, k, v, o, g
    (B, H, T, D) (k, v already expanded to the query heads), lse (B, H, T); the band terms are summed over
    each group of ``H / h_kv`` query heads, added to ``base_k``/``base_v`` (B, h_kv, T, D) if given and cast to
    ``out_dtype``. Per diagonal it reads q, k, v, g once; fused, the whole correction reads q, k, v, o, g once
    and writes dk, dv once (14 B per element in bf16 at h = 0; the plain loop :func:`_add_band_grads` moves
    ~100). Same formulas as the plain loop, which stays the fallback."""
    work = torch.promote_types(q.dtype, torch.float32)
    out_dtype = out_dtype or k.dtype
    q, k, v, o, g, lse = (t.to(work) for t in (q, k, v, o, g, lse))
    B, H, T, D = q.shape
    delta = (g * o).sum(-1)
    dk, dv = torch.zeros_like(q), torch.zeros_like(g)
    for d in range(min(horizon, T - 1) + 1):
        qi, gi, li, di = q[..., d:, :], g[..., d:, :], lse[..., d:], delta[..., d:]
        kj, vj = k[..., : T - d, :], v[..., : T - d, :]
        p = torch.exp(scale * (qi * kj).sum(-1) - li) * weight
        coef_k = (scale * p * ((gi * vj).sum(-1) - di)).unsqueeze(-1)
        dv = dv + F.pad(gi * p.unsqueeze(-1), (0, 0, 0, d))
        dk = dk + F.pad(qi * coef_k, (0, 0, 0, d))
    h_kv = h_kv or H
    if h_kv != H:
        dk, dv = dk.view(B, h_kv, H // h_kv, T, D).sum(2), dv.view(B, h_kv, H // h_kv, T, -1).sum(2)
    if base_k is not None:
        dk, dv = dk + base_k.to(work), dv + base_v.to(work)
    return dk.to(out_dtype), dv.to(out_dtype)


_compiled_bands: dict = {}


def _compiled_band(horizon: int):
    """:func:`band_grads` compiled by Inductor for one horizon (dynamic in the sizes), cached."""
    fn = _compiled_bands.get(horizon)
    if fn is None:
        def band(q, k, v, o, lse, g, scale, weight, base_k, base_v, h_kv, out_dtype):
            return band_grads(q, k, v, o, lse, g, horizon, scale, weight, base_k, base_v, h_kv, out_dtype)

        fn = torch.compile(band, dynamic=True, fullgraph=True)
        _compiled_bands[horizon] = fn
    return fn


def _fused_myopic(q, k, v, horizon, beta, scale, k_full=None, v_full=None):
    """Fused attention whose k/v gradient is myopic (weights w_ij); with ``k_full``/``v_full`` (same values as
    k/v) those receive the full vanilla gradient instead of nothing (hidden-state myopia)."""
    if not (k.requires_grad or v.requires_grad):
        if k_full is not None:
            k, v = k_full, v_full
        return causal_attention(q, k, v, scale)
    return torch.ops.myopia.myopic_attention(q, k, v, k_full, v_full, horizon, beta, scale)[0]


# --------------------------------------------------------------------------------------------------------------
# Past keys/values from another source (local myopia bonus)
# --------------------------------------------------------------------------------------------------------------


def _fused_with_past(q, k, v, past_k, past_v, scale):
    k, v, past_k, past_v = (_expand_heads(t, q.shape[1]) for t in (k, v, past_k, past_v))
    T = q.shape[-2]
    diag = scale * (q * k).sum(-1, keepdim=True)  # (B, H, T, 1)
    if T == 1:
        return v + 0.0 * diag  # the only key is the query's own: o_0 = v_0
    qn, pk, pv = q[..., 1:, :], past_k[..., :-1, :], past_v[..., :-1, :]
    a, lse = causal_attention_lse(qn, pk, pv, scale)
    with torch.no_grad():
        mean_key = causal_attention(qn, pk, pk, scale)
    # Gate in fp32 (or wider): lse is exact, its q-gradient is s * mean_key.
    work = torch.promote_types(q.dtype, torch.float32)
    lse_live = lse.unsqueeze(-1).to(work) + scale * ((qn - qn.detach()) * mean_key).sum(-1, keepdim=True).to(work)
    logit = lse_live - diag[..., 1:, :].to(work)
    rest = (torch.sigmoid(logit) * a.to(work) + torch.sigmoid(-logit) * v[..., 1:, :].to(work)).to(v.dtype)
    first = v[..., :1, :] + 0.0 * diag[..., :1, :]
    return torch.cat([first, rest], dim=-2)


# --------------------------------------------------------------------------------------------------------------
# Eager reference: materialises the seq x seq scores
# --------------------------------------------------------------------------------------------------------------


def myopic_weights(T: int, horizon: int, beta: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """The (T, T) gradient weights w_ij (1 in the band, beta before it, 0 above the diagonal)."""
    i = torch.arange(T, device=device).unsqueeze(1)
    j = torch.arange(T, device=device).unsqueeze(0)
    w = torch.full((T, T), float(beta), device=device, dtype=dtype)
    return w.masked_fill(j >= i - horizon, 1.0).masked_fill(j > i, 0.0)


def _eager_myopic(q, k, v, horizon, beta, scale):
    k, v = _expand_heads(k, q.shape[1]), _expand_heads(v, q.shape[1])
    T = q.shape[-2]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    w = myopic_weights(T, horizon, beta, q.device, q.dtype)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    # Scores: value s q k^T; dq ordinary; dk_j = s sum_i w_ij dS_ij q_i.
    qk = qd @ k.transpose(-1, -2)
    scores = scale * (q @ kd.transpose(-1, -2)) + scale * w * (qk - qk.detach())
    p = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    # Output: value p v; dp ordinary; dv_j = sum_i w_ij p_ij g_i.
    return p @ vd + (w * p.detach()) @ (v - vd)


def _eager_with_past(q, k, v, past_k, past_v, scale):
    k, v, past_k, past_v = (_expand_heads(t, q.shape[1]) for t in (k, v, past_k, past_v))
    T = q.shape[-2]
    eye = torch.eye(T, dtype=torch.bool, device=q.device)
    strict = torch.ones(T, T, dtype=torch.bool, device=q.device).tril(-1)
    scores = scale * (q @ past_k.transpose(-1, -2))
    scores = torch.where(eye, scale * (q * k).sum(-1).unsqueeze(-1), scores)
    p = torch.softmax(scores.masked_fill(~(strict | eye), float("-inf")), dim=-1)
    return (p * strict) @ past_v + p.diagonal(dim1=-2, dim2=-1).unsqueeze(-1) * v


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def _check(q, k, v, horizon, beta, impl):
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        raise MyopiaError("q, k and v must be tensors of shape (batch, heads, seq, head_dim)")
    ok = q.dim() == 4 and k.dim() == 4 and v.dim() == 4
    ok = ok and k.shape[0] == q.shape[0] and k.shape[2:] == q.shape[2:] and v.shape[:-1] == k.shape[:-1]
    if not ok or k.shape[1] < 1 or q.shape[1] % k.shape[1]:
        raise MyopiaError(
            f"q, k, v must be (batch, heads, seq, head_dim) with matching shapes (k/v may have fewer heads, a "
            f"divisor of q's: grouped-query attention); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise MyopiaError(f"horizon must be an integer >= 0, got {horizon!r}")
    if not (0.0 <= float(beta) <= 1.0):
        raise MyopiaError(f"beta must lie in [0, 1], got {beta!r}")
    if impl not in IMPLS:
        raise MyopiaError(f"impl must be one of {IMPLS}, got {impl!r}")


def myopic_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    horizon: int = 0,
    beta: float = 0.0,
    past_k: torch.Tensor | None = None,
    past_v: torch.Tensor | None = None,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Causal attention ``(B, H, T, D) -> (B, H, T, Dv)`` with the myopic gradient described in the module doc.

    k, v are (B, H_kv, T, D) with H_kv dividing H (grouped-query attention: the kernels share each key/value
    head among H / H_kv query heads). ``horizon``/``beta`` set the gradient weights (defaults: strict myopia). With ``past_k``/``past_v``
    (shaped like k/v) query i reads positions j < i from them, as constants, and itself from k/v; the
    forward value then differs from vanilla by design. ``impl``: "auto"/"fused" (memory-linear) or
    "eager" (seq x seq reference).
    """
    _check(q, k, v, horizon, beta, impl)
    beta = float(beta)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    T = q.shape[-2]
    if past_k is not None or past_v is not None:
        if past_k is None or past_v is None:
            raise MyopiaError("past_k and past_v must be given together")
        if past_k.shape != k.shape or past_v.shape != v.shape:
            raise MyopiaError(
                f"past_k/past_v must have the shapes of k/v {tuple(k.shape)}/{tuple(v.shape)}; got "
                f"{tuple(past_k.shape)}/{tuple(past_v.shape)}"
            )
        if horizon != 0 or beta != 0.0:
            raise MyopiaError("horizon and beta do not apply when past_k/past_v are given (the past is constant)")
        past_k, past_v = past_k.detach(), past_v.detach()
        if impl == "eager":
            return _eager_with_past(q, k, v, past_k, past_v, scale)
        return _fused_with_past(q, k, v, past_k, past_v, scale)
    if beta == 1.0 or horizon >= T - 1:
        if impl == "eager":
            return _eager_myopic(q, k, v, T, 1.0, scale)
        return causal_attention(q, k, v, scale)
    if impl == "eager":
        return _eager_myopic(q, k, v, horizon, beta, scale)
    return _fused_myopic(q, k, v, horizon, beta, scale)


def myopic_attention_split(
    q: torch.Tensor,
    k_w: torch.Tensor,
    v_w: torch.Tensor,
    k_x: torch.Tensor,
    v_x: torch.Tensor,
    *,
    horizon: int = 0,
    beta: float = 0.0,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Attention over keys/values given in two copies of equal value (see :func:`split_linear`).

    ``k_w``/``v_w`` receive the full (vanilla) gradient, ``k_x``/``v_x`` the myopic one (weights w_ij).
    With k_w = W_K stop(x), k_x = stop(W_K) x this is hidden-state myopia: the projection weights learn from
    every query while the residual stream x of position j only hears from queries in its band.
    """
    _check(q, k_x, v_x, horizon, beta, impl)
    beta = float(beta)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    T = q.shape[-2]
    if beta == 1.0 or horizon >= T - 1:
        k, v = k_w + (k_x - k_x.detach()), v_w + (v_x - v_x.detach())
        return myopic_attention(q, k, v, beta=1.0, scale=scale, impl=impl)
    if impl == "eager":
        # Weighted eager reference on k_x/v_x, plus full gradient into k_w/v_w through a zero-valued term.
        o = _eager_myopic(q, k_x, v_x, horizon, beta, scale)
        kd, vd = k_x.detach(), v_x.detach()
        extra = _eager_myopic(q.detach(), kd + (k_w - k_w.detach()), vd + (v_w - v_w.detach()), T, 1.0, scale)
        return o + (extra - extra.detach())
    return _fused_myopic(q, k_x, v_x, horizon, beta, scale, k_full=k_w, v_full=v_w)


def bigram_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The transformer-bigram baseline: earlier keys/values replaced by zeros.

    Query i sees i zero keys (score 0, value 0) and its own (k_i, v_i), so o_i = v_i sigmoid(s_ii - log i)
    and o_0 = v_0. ``(B, H, T, D) -> (B, H, T, D)``; an ordinary, fully differentiable function.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    T = q.shape[-2]
    diag = scale * (q * k).sum(-1)
    log_n = torch.log(torch.arange(T, device=q.device, dtype=diag.dtype).clamp_min(1))
    gate = torch.where(torch.arange(T, device=q.device) == 0, torch.ones_like(diag), torch.sigmoid(diag - log_n))
    return v * gate.unsqueeze(-1)


class _SplitLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = F.linear(x, weight, bias)
        ctx.compute_dtype = y.dtype  # bf16 under autocast: the backward products run in it too, as for F.linear
        return y, y.detach().clone()

    @staticmethod
    def backward(ctx, grad_w, grad_x):
        x, weight = ctx.saved_tensors
        ct = ctx.compute_dtype
        dx = (grad_x.to(ct) @ weight.to(ct)).to(x.dtype) if ctx.needs_input_grad[0] else None
        g2 = grad_w.reshape(-1, grad_w.shape[-1]).to(ct)
        dw = (g2.t() @ x.reshape(-1, x.shape[-1]).to(ct)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        db = g2.sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def split_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.linear(x, weight, bias)`` twice over at the cost of once: returns ``(y_w, y_x)`` of equal value.

    Gradient arriving at ``y_w`` reaches only ``weight``/``bias``; gradient at ``y_x`` reaches only ``x``.
    """
    return _SplitLinear.apply(x, weight, bias)


# --------------------------------------------------------------------------------------------------------------
# One entry point: a gradient setting (plus documents/masks, a given past, hidden-state copies) to one kernel call
# --------------------------------------------------------------------------------------------------------------

__all__ += ["attend"]


def _repeat_kv(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, H_kv, T, D) -> (B, n_heads, T, D), each key/value head shared by n_heads / H_kv query heads (for the
    kernels that take equal head counts: the given past, the bigram baseline and the masked ones)."""
    b, h_kv, T, d = t.shape
    if h_kv == n_heads:
        return t
    if n_heads % h_kv:
        raise MyopiaError(f"query heads ({n_heads}) are not a multiple of key/value heads ({h_kv})")
    return t[:, :, None].expand(b, h_kv, n_heads // h_kv, T, d).reshape(b, n_heads, T, d)


def _weights(setting: GradientSetting) -> dict:
    """The kernels' ``horizon``/``beta`` for a setting: vanilla is beta = 1."""
    if setting.kind == "vanilla":
        return {"beta": 1.0}
    return {"horizon": setting.horizon, "beta": setting.beta}


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, setting: GradientSetting, *, structure=None,
           bias: torch.Tensor | None = None, past: tuple | None = None, split: tuple | None = None,
           scale: float | None = None, impl: str = "auto") -> torch.Tensor:
    """Causal attention ``(B, H, T, D), (B, H_kv, T, D) x 2 -> (B, H, T, D)`` with the gradient of ``setting``
    (a :class:`myopia.arms.GradientSetting`): the one place a setting becomes a kernel call.

    - ``structure`` (:class:`myopia.masked_attention.AttentionStructure`: documents, padding, windows, soft-caps,
      ALiBi) and an additive score ``bias`` (B|1, H|1, T, T) select the masked kernels;
    - ``past`` = (past_k, past_v), shaped like k, v: query i reads positions j < i from these constants and
      itself from k, v (the local myopia bonus; the setting's weights do not apply);
    - ``split`` = (k_x, v_x): the hidden-state copies of ``myopic-hidden`` (:func:`split_linear`); k, v are then
      the copies that get the full gradient. Without it ``myopic-hidden`` has ``myopic``'s value and gradient
      into k, v (what evaluation needs).

    ``impl``: "auto"/"fused" or "eager" (the masked kernels run "eager" or "auto"). Grouped-query heads reach
    the fused myopic kernels unrepeated; the others get them repeated.
    """
    if split is not None and (not setting.hidden or past is not None):
        raise MyopiaError("hidden-state copies (split) apply to myopic-hidden without a given past only")
    if bias is not None and structure is None:
        raise MyopiaError("an additive score bias needs a mask structure (the masked kernels)")
    if structure is not None:
        return _attend_masked(q, k, v, setting, structure, bias, past, split, scale, impl)
    n = q.shape[1]
    if past is not None:
        return myopic_attention(q, _repeat_kv(k, n), _repeat_kv(v, n), past_k=_repeat_kv(past[0], n),
                                past_v=_repeat_kv(past[1], n), scale=scale, impl=impl)
    if setting.kind == "bigram":
        return bigram_attention(q, _repeat_kv(k, n), _repeat_kv(v, n), scale=scale)
    if split is not None:
        return myopic_attention_split(q, k, v, *split, **_weights(setting), scale=scale, impl=impl)
    return myopic_attention(q, k, v, **_weights(setting), scale=scale, impl=impl)


def _attend_masked(q, k, v, setting, structure, bias, past, split, scale, impl):
    """:func:`attend` under a mask structure (:mod:`myopia.masked_attention`'s kernels)."""
    n = q.shape[1]
    k, v = _repeat_kv(k, n), _repeat_kv(v, n)
    impl = "eager" if impl == "eager" else "auto"
    if past is not None:
        if bias is not None:
            raise MyopiaError("attention to a given past takes masks only, not a score bias")
        return masked_attention_with_past(q, k, v, _repeat_kv(past[0], n), _repeat_kv(past[1], n), structure,
                                          scale=scale)
    if setting.kind == "bigram":
        if structure.doc_ids is None:
            raise MyopiaError("the bigram baseline under masks takes document ids only")
        return document_bigram_attention(q, k, v, structure.doc_ids, scale=scale)
    if split is not None:
        k_x, v_x = _repeat_kv(split[0], n), _repeat_kv(split[1], n)
        return masked_myopic_attention_split(q, k, v, k_x, v_x, structure, bias=bias, **_weights(setting),
                                             scale=scale, impl=impl)
    return masked_myopic_attention(q, k, v, structure, bias=bias, **_weights(setting), scale=scale, impl=impl)
