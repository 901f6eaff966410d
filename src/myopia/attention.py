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

**Fused path (memory-linear, exact).** Split w_ij = beta + (1 - beta) 1[i-h <= j <= i]:

    o, L = FusedCausalAttention(q, k~, v~),   k~ = stop(k) + beta (k - stop(k))   (value k, k-gradient x beta)
    out  = BandGradient(o; k, v, stop(q), L, h, 1 - beta)                          (value o)

The fused kernel (PyTorch's flash attention, which also returns L) supplies the exact dq and beta times the
vanilla dk, dv. ``BandGradient`` is the identity on o in the forward pass; its backward passes g through to o
unchanged and adds (1 - beta) times the in-band terms of dk, dv above, recomputing p_ij = exp(s_ij - L_i)
for the h + 1 diagonals only: O(batch·heads·seq·head_dim·(h + 1)) extra work, no seq x seq tensor.
On CPU (the default there) the two live in one autograd node that calls the flash kernel's forward and
backward ops itself; for strict myopia (beta = 0) it drops the kernel's dk, dv and writes the band terms
into fresh buffers laid out like k, v, so peak memory equals vanilla attention's. Other devices use the
two-node form around PyTorch's own kernel autograd (tested on CPU as well).

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

import torch
import torch.nn.functional as F

from .errors import MyopiaError

__all__ = [
    "myopic_attention",
    "myopic_attention_split",
    "bigram_attention",
    "causal_attention",
    "causal_attention_lse",
    "split_linear",
]

IMPLS = ("auto", "fused", "eager")


# --------------------------------------------------------------------------------------------------------------
# Fused kernels that also return the log-sum-exp
# --------------------------------------------------------------------------------------------------------------


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Ordinary causal attention ``(B, H, T, D) -> (B, H, T, D)``.

    The same fused kernel as the myopic path, so vanilla and myopic forward passes agree bit for bit.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return causal_attention_lse(q, k, v, scale)[0]


def _math_attention_lse(q, k, v, scale):
    """Fallback with O(T^2) memory for devices without a fused kernel that returns the log-sum-exp."""
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-1, -2)).to(torch.promote_types(q.dtype, torch.float32)) * scale
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = scores.logsumexp(-1)
    out = (torch.exp(scores - lse.unsqueeze(-1)).to(v.dtype)) @ v
    return out, lse.detach()


def causal_attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused causal attention returning ``(out, lse)``.

    ``out`` (B, H, T, D) is differentiable in q, k, v; ``lse`` (B, H, T), float32 or wider, is a constant.
    Uses the flash kernels on CPU and CUDA (memory-efficient kernel on CUDA float32), math elsewhere.
    """
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
        return out, lse
    if q.device.type == "cuda":
        D = q.shape[-1]
        if q.dtype in (torch.float16, torch.bfloat16) and D % 8 == 0 and D <= 256:
            try:
                res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=scale)
                return res[0], res[1]
            except RuntimeError:
                pass
        try:
            res = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True, scale=scale)
            return res[0], res[1][..., : q.shape[-2]]
        except RuntimeError:
            pass
    return _math_attention_lse(q, k, v, scale)


# --------------------------------------------------------------------------------------------------------------
# The band gradient
# --------------------------------------------------------------------------------------------------------------


class _Stash:
    """Carries the attention output, its log-sum-exp and the gradient arriving at the output back to
    :class:`_MyopicKV`, whose backward runs after the attention kernel's."""

    out: torch.Tensor
    lse: torch.Tensor
    grad: torch.Tensor


class _CaptureOutput(torch.autograd.Function):
    """Identity on the attention output ``o``; remembers ``o`` and, in backward, g = dL/do."""

    @staticmethod
    def forward(ctx, o, stash):
        stash.out = o.detach()
        ctx.stash = stash
        return o.view_as(o)

    @staticmethod
    def backward(ctx, grad):
        ctx.stash.grad = grad
        return grad, None


class _MyopicKV(torch.autograd.Function):
    """Identity on (k, v). Backward receives the vanilla dk, dv from the attention kernel and turns them into
    the myopic ones: beta x vanilla + (1 - beta) x in-band terms. With ``inplace`` it rewrites the kernel's
    gradient buffers, so myopic attention allocates no more than vanilla attention."""

    @staticmethod
    def forward(ctx, k, v, q, stash, horizon: int, beta: float, scale: float, inplace: bool):
        ctx.save_for_backward(q, k, v)
        ctx.stash, ctx.horizon, ctx.beta, ctx.scale, ctx.inplace = stash, horizon, beta, scale, inplace
        return k.view_as(k), v.view_as(v)

    @staticmethod
    def backward(ctx, dk, dv):
        q, k, v = ctx.saved_tensors
        st, beta = ctx.stash, ctx.beta
        if ctx.inplace:
            if beta:
                dk, dv = dk.mul_(beta), dv.mul_(beta)
        else:  # the kernel's dk, dv also feed the vanilla copies: leave them alone
            dk, dv = (dk * beta, dv * beta) if beta else (torch.empty_like(k), torch.empty_like(v))
        _finish_myopic_grads(dk, dv, q, k, v, st.out, st.lse, st.grad, ctx.horizon, beta, ctx.scale)
        st.grad = None  # out and lse stay for a retained graph
        return dk, dv, None, None, None, None, None, None


def _finish_myopic_grads(dk, dv, q, k, v, o, lse, g, horizon: int, beta: float, scale: float) -> None:
    """Add (1 - beta) x the in-band terms to dk, dv in place, which hold beta x the vanilla gradient (anything
    at all when beta = 0: then they are overwritten). In low precision the band sums run in fp32 on the side."""
    work = torch.promote_types(q.dtype, torch.float32)  # softmax statistics in fp32 (or fp64)
    if dk.dtype == work and dv.dtype == work:
        _add_band_grads(dk, dv, q, k, v, o, lse, g, horizon, scale, 1.0 - beta, overwrite=beta == 0.0)
        return
    band_k = torch.empty(k.shape, dtype=work, device=k.device)
    band_v = torch.empty(v.shape, dtype=work, device=v.device)
    qw, kw, vw, ow, gw = (t.to(work) for t in (q, k, v, o, g))
    _add_band_grads(band_k, band_v, qw, kw, vw, ow, lse.to(work), gw, horizon, scale, 1.0 - beta, overwrite=True)
    if beta:
        dk.add_(band_k.to(dk.dtype))
        dv.add_(band_v.to(dv.dtype))
    else:
        dk.copy_(band_k)
        dv.copy_(band_v)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a_i, b_i> over the last dimension: (..., D) x (..., D) -> (...), without a (..., D) temporary."""
    return torch.einsum("...d,...d->...", a, b)


def _add_band_grads(dk, dv, q, k, v, o, lse, g, horizon: int, scale: float, weight: float,
                    overwrite: bool = False) -> None:
    """dk += weight s sum_{d<=h} p_{i,i-d} <g_i, v_{i-d} - o_i> q_i and dv += weight sum_{d<=h} p_{i,i-d} g_i,
    written into row i-d, in place. Recomputes p_{i,i-d} = exp(s <q_i, k_{i-d}> - L_i) one diagonal at a time.

    With ``overwrite`` the main diagonal (d = 0, which covers every row) replaces dk, dv instead of adding to
    them: their previous contents never matter (no zeroing pass), and they serve as scratch for that
    diagonal's row dots. Allocates nothing of size (..., D). The op count is kept minimal on purpose: at short
    sequences each extra elementwise pass over a (B, H, T, D) tensor costs about 1% of the attention step."""
    T = q.shape[-2]
    for d in range(min(horizon, T - 1) + 1):
        qi, gi, oi, li = q[..., d:, :], g[..., d:, :], o[..., d:, :], lse[..., d:]
        kj, vj = k[..., : T - d, :], v[..., : T - d, :]
        if overwrite and d == 0:
            p = torch.mul(qi, kj, out=dk).sum(-1)
            dp = torch.mul(gi, torch.sub(vj, oi, out=dv), out=dv).sum(-1)  # <g_i, v_i - o_i>
        else:
            p, dp = _rowdot(qi, kj), _rowdot(gi, vj).sub_(_rowdot(gi, oi))
        p = p.mul_(scale).sub_(li).exp_()  # p_{i, i-d}
        coef_k = dp.mul_(p).mul_(scale * weight).unsqueeze(-1)
        coef_v = (p.mul_(weight) if weight != 1.0 else p).unsqueeze(-1)
        if overwrite and d == 0:
            torch.mul(gi, coef_v, out=dv)
            torch.mul(qi, coef_k, out=dk)
        else:
            dv[..., : T - d, :].addcmul_(gi, coef_v)
            dk[..., : T - d, :].addcmul_(qi, coef_k)


class _MyopicFlashCPU(torch.autograd.Function):
    """The whole fused myopic attention as one autograd node on CPU (the default path there).

    Forward: PyTorch's flash kernel, ``(q, k, v) -> o`` with L kept. Backward: the kernel's own backward op
    gives dq and the vanilla dk, dv; the band correction turns those into the myopic ones. Same mathematics
    as the device-generic path (:class:`_MyopicKV` + :class:`_CaptureOutput`) with less Python per call, which
    is what costs at short sequences. With ``k_full``/``v_full`` those receive the vanilla dk, dv and k, v the
    myopic ones (hidden-state myopia). Differentiable once (a second backward raises a clear error)."""

    @staticmethod
    def forward(ctx, q, k, v, k_full, v_full, horizon: int, beta: float, scale: float):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.horizon, ctx.beta, ctx.scale, ctx.split = horizon, beta, scale, k_full is not None
        return out

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():  # (cheaper than torch.autograd.function.once_differentiable)
            raise MyopiaError("myopic attention supports one backward pass, not create_graph=True")
        q, k, v, out, lse = ctx.saved_tensors
        beta, scale = ctx.beta, ctx.scale
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            g, q, k, v, out, lse, 0.0, True, scale=scale
        )
        dk_full = dv_full = None
        if ctx.split:  # vanilla gradient to the full copies; the myopic one is built beside it
            dk_full, dv_full = dk, dv
            dk = dk * beta if beta else torch.empty_like(k)
            dv = dv * beta if beta else torch.empty_like(v)
        elif beta:
            dk, dv = dk.mul_(beta), dv.mul_(beta)
        else:  # strict: the kernel's dk, dv are not needed. Free them first (peak memory stays vanilla's), then
            # write the myopic ones in the layout of k, v, which spares a later copy (the kernel's is (B, T, H, D))
            del dk, dv
            dk, dv = torch.empty_like(k), torch.empty_like(v)
        _finish_myopic_grads(dk, dv, q, k, v, out, lse, g, ctx.horizon, beta, scale)
        return dq if ctx.needs_input_grad[0] else None, dk, dv, dk_full, dv_full, None, None, None


ONE_NODE_CPU = True  # tests switch it off to check the device-generic path on CPU


def _fused_myopic(q, k, v, horizon, beta, scale, k_full=None, v_full=None):
    """Fused attention whose k/v gradient is myopic (weights w_ij); with ``k_full``/``v_full`` (same values as
    k/v) those receive the full vanilla gradient instead of nothing (hidden-state myopia)."""
    if not (k.requires_grad or v.requires_grad):
        if k_full is None:
            return causal_attention_lse(q, k, v, scale)[0]
        k, v = k_full, v_full
        return causal_attention_lse(q, k, v, scale)[0]
    if ONE_NODE_CPU and q.device.type == "cpu":
        return _MyopicFlashCPU.apply(q, k, v, k_full, v_full, horizon, beta, scale)
    stash = _Stash()
    km, vm = _MyopicKV.apply(k, v, q.detach(), stash, horizon, beta, scale, k_full is None)
    if k_full is not None:  # value k_full exactly; gradient 1 into k_full and into the myopic conversion
        km, vm = k_full + (km - km.detach()), v_full + (vm - vm.detach())
    o, lse = causal_attention_lse(q, km, vm, scale)
    stash.lse = lse
    return _CaptureOutput.apply(o, stash)


# --------------------------------------------------------------------------------------------------------------
# Past keys/values from another source (local myopia bonus)
# --------------------------------------------------------------------------------------------------------------


def _fused_with_past(q, k, v, past_k, past_v, scale):
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
    rest = torch.sigmoid(logit).to(a.dtype) * a + torch.sigmoid(-logit).to(v.dtype) * v[..., 1:, :]
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
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise MyopiaError(
            f"q, k, v must be (batch, heads, seq, head_dim) with matching shapes; got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
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

    ``horizon``/``beta`` set the gradient weights (defaults: strict myopia). With ``past_k``/``past_v``
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
