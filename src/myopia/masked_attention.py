r"""Myopic attention for any causal mask structure and score modification: packed documents, sliding windows,
padding, soft-capping and additive position biases (ALiBi). Exact, memory-linear on CPU.

Notation as in :mod:`myopia.attention` (tensors ``(batch, heads, seq, head_dim)``, score scale ``s``), with the
scores modified and restricted to an *allowed* edge set M:

    a_ij = s <q_i, k_j>,     s_ij = f(a_ij) + b_ij  for (i, j) in M,   -inf otherwise,
    f(a) = c tanh(a / c)     (logit soft-capping, Gemma 2; f(a) = a without a cap),
    b_ij                     an additive bias (ALiBi: b_ij = -m_h (i - j) with per-head slope m_h),
    L_i = logsumexp_{j:(i,j) in M} s_ij,    p_ij = exp(s_ij - L_i),    o_i = sum_j p_ij v_j.

M is causality (j <= i) intersected with every structure given: the same document (no document boundary
between j and i), the sliding window (i - j < W: W keys, the query's own included, as in transformers), key j
not padding, and an explicit boolean mask. A query with no allowed key at all (a padding position under left
padding) outputs 0 and passes no gradient.

**Myopic weights on the allowed edges.** Query i's loss reaches key/value j with weight w_ij 1[(i, j) in M],
w_ij = 1 in the band i - h <= j <= i and beta before it (positions, not document offsets: inside one document
they are the same distance). With g_i = dL/do_i and delta_i = <g_i, o_i>:

    dS_ij = p_ij (<g_i, v_j> - delta_i),     dA_ij = dS_ij f'(a_ij),     f'(a) = 1 - tanh^2(a / c)
    dL/dq_i = s sum_j dA_ij k_j                                   (ordinary)
    dL/dk_j = s sum_i w_ij dA_ij q_i,     dL/dv_j = sum_i w_ij p_ij g_i     (myopic)
    dL/db_ij = dS_ij                                              (a learned bias: ordinary)

A bias does not carry position j's computation (it depends on positions, not on hidden states), so its
gradient stays ordinary; edges outside M have p_ij = 0 and carry nothing. **Hidden-state myopia** (the
``_split`` form): ``k_w``/``v_w`` (values equal to ``k_x``/``v_x``) receive the w = 1 gradient, ``k_x``/``v_x``
the weighted one. The weights enter the backward pass only, so the forward value is the same number for
every gradient setting (vanilla included, bit for bit) and equals the model's own masked attention.

**Flash path (short sequences on CPU).** Documents, windows and ALiBi only, with a (B, H|1, T, T) additive mask
no bigger than q or 2^22 numbers: PyTorch's CPU flash kernel runs forward and backward under that mask (value, L, dq and the
vanilla dk, dv), and the myopic dk, dv are beta x vanilla + (1 - beta) x the in-band terms, recomputed on the
h + 1 diagonals as :mod:`myopia.attention` does for the causal case. This is what our GPT's document masks
take at ordinary context lengths; longer sequences and every other structure take the blockwise path.

**Blockwise path (exact on any device; memory-linear).** Queries are processed in chunks of C rows. Chunk
[r0, r1) needs keys [lo, r1) only, where lo is the earliest key any of its rows may see (the window start, the
document start). The forward pass keeps o and L (B, H, T); the backward pass recomputes a, s, p one chunk at a
time from q, k and L and accumulates dq (rows), dk, dv (columns) with the formulas above. Memory: the inputs,
o, L, the gradients and O(B·H·C·T) scratch; C is chosen so one chunk's scores hold about a quarter as many
numbers as q, so no (T × T) tensor ever exists. For strict myopia (beta = 0) the weighted dk, dv touch only
the columns [r0 - h, r1) of each chunk.

**FlexAttention path (CUDA, opt-in: ``impl="flex"``).** ``torch.nn.attention.flex_attention`` (compiled on
CUDA) computes the forward value, L, the exact dq and beta times the vanilla dk, dv (score_mod = soft-cap +
ALiBi, block mask = M); the (1 - beta) in-band terms are then added by recomputing p_{i,i-d} on the h + 1
diagonals only, as :mod:`myopia.attention` does for the causal case. Documents, windows, padding, soft-caps
and ALiBi slopes only (no dense mask or bias tensor). It has not run on a GPU yet (flex has no CPU backward; the
tests check its gradient bookkeeping on CPU with a reference forward in flex's place, and flex's CPU forward
values), so ``impl="auto"`` takes the blockwise path on every device until it has.

**Eager reference.** ``impl="eager"`` materialises the (T × T) scores and applies the weights with
stop-gradient algebra (values unchanged, gradients scaled); readable, O(T^2) memory; the tests' second witness.

**Past from elsewhere** (:func:`masked_attention_with_past`, the local myopia bonus under document masks):
query i reads its allowed j < i from constant past keys/values and itself from the live ones; computed per
query chunk with ordinary autograd under activation checkpointing (memory-linear, recomputed in backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import MyopiaError

__all__ = [
    "AttentionStructure",
    "masked_myopic_attention",
    "masked_myopic_attention_split",
    "document_bigram_attention",
    "masked_attention_with_past",
    "segment_ids",
    "document_positions",
    "alibi_slopes",
]

IMPLS = ("auto", "flash", "blockwise", "flex", "eager")
FLASH_MASK_NUMBERS = 1 << 22  # the CPU flash path's dense mask stays below this many numbers (16 MB in fp32)


# --------------------------------------------------------------------------------------------------------------
# The mask structure
# --------------------------------------------------------------------------------------------------------------


def segment_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> (B, T) int64 segment numbers 0, 1, ...: a new segment starts wherever the id
    changes, so equal ids in two separate runs are two documents (packed-sequence semantics)."""
    change = torch.zeros(doc_ids.shape, dtype=torch.int64, device=doc_ids.device)
    change[:, 1:] = (doc_ids[:, 1:] != doc_ids[:, :-1]).to(torch.int64)
    return change.cumsum(1)


def _segment_starts(seg: torch.Tensor) -> torch.Tensor:
    """(B, T) segment numbers -> (B, T) index of the first position of each position's segment."""
    T = seg.shape[1]
    idx = torch.arange(T, device=seg.device).expand_as(seg)
    first = torch.ones(seg.shape, dtype=torch.bool, device=seg.device)
    first[:, 1:] = seg[:, 1:] != seg[:, :-1]
    return torch.where(first, idx, torch.zeros_like(idx)).cummax(1).values


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> (B, T) position of each token inside its document (0 at each document start):
    the ``position_ids`` of a packed batch, from which transformers builds its block-diagonal mask."""
    seg = segment_ids(doc_ids)
    return torch.arange(seg.shape[1], device=seg.device) - _segment_starts(seg)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """The ALiBi head slopes m_h (Press et al. 2022): 2^(-8 h / n) for a power-of-two n, interleaved otherwise."""
    def powers(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if n_heads & (n_heads - 1) == 0:
        return torch.tensor(powers(n_heads))
    base = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(powers(base) + powers(2 * base)[0::2][: n_heads - base])


@dataclass
class AttentionStructure:
    """Which edges (i, j) a query may use and how its scores are modified (see the module docstring).

    ``doc_ids`` (B, T): documents of a packed batch (equal neighbouring ids = one document). ``window``: each
    query sees its own and the ``window - 1`` previous positions. ``key_valid`` (B, T) bool: False marks
    padding keys. ``mask`` (B|1, H|1, T, T) bool: further allowed edges (intersected with causality).
    ``softcap`` c: scores become c tanh(a / c). ``alibi`` (H,): slopes m_h of the bias -m_h (i - j).
    ``bias`` (B|1, H|1, T, T) is passed to the attention functions separately (it may carry a gradient).
    """

    doc_ids: torch.Tensor | None = None
    window: int | None = None
    key_valid: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    softcap: float | None = None
    alibi: torch.Tensor | None = None

    def __post_init__(self):
        self._seg = None if self.doc_ids is None else segment_ids(self.doc_ids)
        self._row_lo = None

    def check(self, q: torch.Tensor, bias: torch.Tensor | None) -> None:
        B, H, T, _ = q.shape
        for name in ("doc_ids", "key_valid"):
            t = getattr(self, name)
            if t is not None and (t.dim() != 2 or tuple(t.shape) != (B, T)):
                raise MyopiaError(f"{name} must have shape (batch, seq) = {(B, T)}, got {tuple(t.shape)}")
        for name, t in (("mask", self.mask), ("bias", bias)):
            if t is None:
                continue
            if t.dim() != 4 or t.shape[-2:] != (T, T) or t.shape[0] not in (1, B) or t.shape[1] not in (1, H):
                raise MyopiaError(f"{name} must have shape (batch or 1, heads or 1, seq, seq) with seq = {T}; "
                                  f"got {tuple(t.shape)}")
        if self.mask is not None and self.mask.dtype != torch.bool:
            raise MyopiaError(f"mask must be boolean (True = may attend), got {self.mask.dtype}")
        if self.key_valid is not None and self.key_valid.dtype != torch.bool:
            raise MyopiaError(f"key_valid must be boolean (True = a real token), got {self.key_valid.dtype}")
        if self.window is not None and (isinstance(self.window, bool) or int(self.window) != self.window
                                        or self.window < 1):
            raise MyopiaError(f"window must be a positive integer, got {self.window!r}")
        if self.softcap is not None and not (float(self.softcap) > 0 and math.isfinite(float(self.softcap))):
            raise MyopiaError(f"softcap must be a positive number, got {self.softcap!r}")
        if self.alibi is not None and tuple(self.alibi.shape) != (H,):
            raise MyopiaError(f"alibi slopes must have shape (heads,) = ({H},), got {tuple(self.alibi.shape)}")

    def key_start(self, r0: int) -> int:
        """The earliest key any query at position >= r0 may see (so chunks start their keys there)."""
        lo = 0 if self.window is None else max(0, r0 - int(self.window) + 1)
        if self._seg is not None:
            if self._row_lo is None:  # one transfer per call, not one per chunk
                self._row_lo = _segment_starts(self._seg).min(0).values.cpu().tolist()
            lo = max(lo, self._row_lo[r0])
        return lo

    def allowed(self, r0: int, r1: int, c0: int, c1: int, device) -> torch.Tensor:
        """Allowed edges of rows [r0, r1) x columns [c0, c1): bool (B|1, H|1, r1 - r0, c1 - c0)."""
        i = torch.arange(r0, r1, device=device).unsqueeze(1)
        j = torch.arange(c0, c1, device=device).unsqueeze(0)
        m = j <= i
        if self.window is not None:
            m = m & (i - j < int(self.window))
        m = m[None, None]
        if self._seg is not None:
            m = m & (self._seg[:, None, r0:r1, None] == self._seg[:, None, None, c0:c1])
        if self.key_valid is not None:
            m = m & self.key_valid[:, None, None, c0:c1]
        if self.mask is not None:
            m = m & self.mask[..., r0:r1, c0:c1]
        return m

    def bias_block(self, bias, r0, r1, c0, c1, dtype, device) -> torch.Tensor | None:
        """The additive score bias of the block (B|1, H|1, C, S), or None."""
        out = None
        if self.alibi is not None:
            dist = (torch.arange(r0, r1, device=device).unsqueeze(1) - torch.arange(c0, c1, device=device)).to(dtype)
            out = -self.alibi.to(device=device, dtype=dtype)[None, :, None, None] * dist
        if bias is not None:
            b = bias[..., r0:r1, c0:c1].to(dtype)
            out = b if out is None else out + b
        return out

    @property
    def trivial(self) -> bool:
        """True when this is plain causal attention (the fused kernels of :mod:`myopia.attention` apply)."""
        return all(x is None for x in (self.doc_ids, self.window, self.key_valid, self.mask, self.softcap,
                                       self.alibi))


def _band_weights(r0, r1, c0, c1, horizon, beta, dtype, device) -> torch.Tensor:
    """w_ij for rows [r0, r1) x columns [c0, c1): 1 where i - j <= horizon, beta elsewhere (C, S)."""
    i = torch.arange(r0, r1, device=device).unsqueeze(1)
    j = torch.arange(c0, c1, device=device).unsqueeze(0)
    one = torch.ones((), dtype=dtype, device=device)
    return torch.where(i - j <= horizon, one, one * beta)


def _scores(q_c, k_b, st: AttentionStructure, bias, r0, r1, c0, scale):
    """Scores s (B, H, C, S) with -inf off M, and tanh(a / c) (for f') when soft-capped, else None."""
    s = torch.matmul(q_c, k_b.transpose(-1, -2)).mul_(scale)
    t = None
    if st.softcap is not None:
        c = float(st.softcap)
        t = s.div_(c).tanh_()
        s = t * c
    b = st.bias_block(bias, r0, r1, c0, r1, s.dtype, s.device)
    if b is not None:
        s = s.add_(b)
    allowed = st.allowed(r0, r1, c0, r1, s.device)
    return s.masked_fill_(~allowed, float("-inf")), t


def _finite_lse(lse: torch.Tensor) -> torch.Tensor:
    """L with -inf (a row with no allowed key) replaced by 0, so exp(s - L) = 0 there."""
    return lse.masked_fill(torch.isinf(lse), 0.0)


def default_chunk(B: int, H: int, T: int, D: int) -> int:
    """Query rows per chunk: one chunk's (B, H, C, T) scores hold about a quarter of q's B·H·T·D numbers
    (at least 2^18 numbers, so short sequences are not cut into many tiny chunks)."""
    budget = max(B * H * T * D // 4, 1 << 18)
    return max(1, min(T, budget // (B * H * T)))


@torch.no_grad()
def _blockwise_forward(q, k, v, bias, st: AttentionStructure, scale: float, chunk: int):
    """o (B, H, T, Dv) in q's dtype and L (B, H, T) in fp32 or wider, one query chunk at a time."""
    B, H, T, _ = q.shape
    work = torch.promote_types(q.dtype, torch.float32)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, T), dtype=work, device=q.device)
    for r0 in range(0, T, chunk):
        r1 = min(T, r0 + chunk)
        c0 = st.key_start(r0)
        s, _ = _scores(q[..., r0:r1, :].to(work), k[..., c0:r1, :].to(work), st, bias, r0, r1, c0, scale)
        L = s.logsumexp(-1)
        lse[..., r0:r1] = L
        p = s.sub_(_finite_lse(L).unsqueeze(-1)).exp_()
        out[..., r0:r1, :] = torch.matmul(p, v[..., c0:r1, :].to(work)).to(q.dtype)
    return out, lse


class _Blockwise(torch.autograd.Function):
    """The whole masked myopic attention as one autograd node, chunked over queries (see the module doc)."""

    @staticmethod
    def forward(ctx, q, k, v, k_full, v_full, bias, st, horizon, beta, scale, chunk):
        out, lse = _blockwise_forward(q, k, v, bias, st, scale, chunk)
        ctx.save_for_backward(q, k, v, out, lse, bias)
        ctx.st, ctx.horizon, ctx.beta, ctx.scale, ctx.chunk = st, horizon, beta, scale, chunk
        ctx.split = k_full is not None
        return out

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise MyopiaError("masked myopic attention supports one backward pass, not create_graph=True")
        q, k, v, out, lse, bias = ctx.saved_tensors
        st, horizon, beta, scale, chunk = ctx.st, ctx.horizon, ctx.beta, ctx.scale, ctx.chunk
        B, H, T, D = q.shape
        work = lse.dtype
        vanilla = beta == 1.0 or horizon >= T - 1
        need_full = ctx.split or vanilla  # the w = 1 gradient: into k_full/v_full, or into k/v when vanilla
        need_weighted = not vanilla  # the w-weighted gradient into k/v
        z = lambda t: torch.zeros(t.shape, dtype=work, device=t.device)  # noqa: E731
        dq = z(q)
        dk_f, dv_f = (z(k), z(v)) if need_full else (None, None)
        dk_m, dv_m = (z(k), z(v)) if need_weighted else (None, None)
        dbias = z(bias) if bias is not None and ctx.needs_input_grad[5] else None
        gw = g.to(work)
        delta = torch.einsum("...d,...d->...", gw, out.to(work))  # <g_i, o_i>
        for r0 in range(0, T, chunk):
            r1 = min(T, r0 + chunk)
            c0 = st.key_start(r0)
            q_c, k_b, v_b, g_c = q[..., r0:r1, :].to(work), k[..., c0:r1, :].to(work), v[..., c0:r1, :].to(work), \
                gw[..., r0:r1, :]
            s, t = _scores(q_c, k_b, st, bias, r0, r1, c0, scale)
            p = s.sub_(_finite_lse(lse[..., r0:r1]).unsqueeze(-1)).exp_()
            dA = torch.matmul(g_c, v_b.transpose(-1, -2)).sub_(delta[..., r0:r1].unsqueeze(-1)).mul_(p)  # dS
            if dbias is not None:
                _accumulate_bias(dbias, dA, r0, r1, c0)
            if t is not None:
                dA.mul_(t.square_().neg_().add_(1.0))  # f'(a) = 1 - tanh^2(a / c)
            dq[..., r0:r1, :] = torch.matmul(dA, k_b).mul_(scale)
            if need_full:
                dk_f[..., c0:r1, :] += torch.matmul(dA.transpose(-1, -2), q_c).mul_(scale)
                dv_f[..., c0:r1, :] += torch.matmul(p.transpose(-1, -2), g_c)
            if need_weighted:
                b0 = max(c0, r0 - horizon) if beta == 0.0 else c0  # strict: only the band has weight
                w = _band_weights(r0, r1, b0, r1, horizon, beta, work, q.device)
                dk_m[..., b0:r1, :] += torch.matmul((dA[..., b0 - c0:] * w).transpose(-1, -2), q_c).mul_(scale)
                dv_m[..., b0:r1, :] += torch.matmul((p[..., b0 - c0:] * w).transpose(-1, -2), g_c)
            del s, t, p, dA
        dk, dv = (dk_f, dv_f) if vanilla else (dk_m, dv_m)
        dk_full = dv_full = None
        if ctx.split:
            dk_full, dv_full = dk_f.to(k.dtype), dv_f.to(v.dtype)
        return (dq.to(q.dtype) if ctx.needs_input_grad[0] else None, dk.to(k.dtype), dv.to(v.dtype),
                dk_full, dv_full, None if dbias is None else dbias.to(bias.dtype),
                None, None, None, None, None)


def _accumulate_bias(dbias, dS, r0, r1, c0):
    """Add dS (B, H, C, S) to dbias[..., r0:r1, c0:r1], summing over the dimensions the bias broadcasts."""
    if dbias.shape[0] == 1 and dS.shape[0] != 1:
        dS = dS.sum(0, keepdim=True)
    if dbias.shape[1] == 1 and dS.shape[1] != 1:
        dS = dS.sum(1, keepdim=True)
    dbias[..., r0:r1, c0:r1] += dS


# --------------------------------------------------------------------------------------------------------------
# Short sequences on CPU: PyTorch's flash kernel with an additive mask, plus the band on the diagonals
# --------------------------------------------------------------------------------------------------------------


def _flash_eligible(q, st: AttentionStructure, bias, check_size: bool = True) -> bool:
    """CPU, structure made of documents / window / ALiBi only (every query sees itself, so no empty row), and a
    (B, H|1, T, T) mask no bigger than q or 2^22 numbers (short sequences; long ones stay memory-linear)."""
    if q.device.type != "cpu" or bias is not None or st.softcap is not None or st.mask is not None \
            or st.key_valid is not None:
        return False
    B, H, T, D = q.shape
    heads = H if st.alibi is not None else 1
    return not check_size or B * heads * T * T <= max(q.numel(), FLASH_MASK_NUMBERS)


def _flash_mask(st: AttentionStructure, T: int, dtype, device) -> torch.Tensor:
    """The additive (B|1, H|1, T, T) mask: ALiBi bias on the allowed edges, -inf elsewhere."""
    allowed = st.allowed(0, T, 0, T, device)
    b = st.bias_block(None, 0, T, 0, T, dtype, device)
    zero = torch.zeros((), dtype=dtype, device=device)
    add = zero if b is None else b
    return torch.where(allowed, add, torch.full((), float("-inf"), dtype=dtype, device=device)).contiguous()


def _flash_forward(q, k, v, mask, scale):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask,
                                                                        scale=scale)


class _FlashMasked(torch.autograd.Function):
    """CPU flash attention under the structure's additive mask, as one autograd node: the kernel's backward gives
    dq and the vanilla dk, dv; the myopic dk, dv are beta x those + (1 - beta) x the in-band terms
    (:func:`_band_grads`, the h + 1 diagonals). With ``k_full``/``v_full`` those get the vanilla gradient."""

    @staticmethod
    def forward(ctx, q, k, v, k_full, v_full, st, horizon, beta, scale):
        mask = _flash_mask(st, q.shape[-2], q.dtype, q.device)
        out, lse = _flash_forward(q, k, v, mask, scale)
        ctx.save_for_backward(q, k, v, out, lse, mask)
        ctx.st, ctx.horizon, ctx.beta, ctx.scale, ctx.split = st, horizon, beta, scale, k_full is not None
        return out

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise MyopiaError("masked myopic attention supports one backward pass, not create_graph=True")
        q, k, v, out, lse, mask = ctx.saved_tensors
        beta, T = ctx.beta, q.shape[-2]
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            g.contiguous(), q, k, v, out, lse, 0.0, False, attn_mask=mask, scale=ctx.scale)
        if beta == 1.0 or ctx.horizon >= T - 1:
            return dq, dk, dv, (dk if ctx.split else None), (dv if ctx.split else None), None, None, None, None
        band_k, band_v = _band_grads(q, k, v, out, lse, g, ctx.st, ctx.horizon, ctx.scale)
        mk = (1.0 - beta) * band_k.to(k.dtype) + (beta * dk if beta else 0.0)
        mv = (1.0 - beta) * band_v.to(v.dtype) + (beta * dv if beta else 0.0)
        if ctx.split:
            return dq, mk, mv, dk, dv, None, None, None, None
        return dq, mk, mv, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------------------------
# FlexAttention (CUDA): forward, dq and beta x vanilla dk/dv by flex; the in-band remainder by diagonals
# --------------------------------------------------------------------------------------------------------------


def _flex_mods(st: AttentionStructure):
    """(score_mod, mask_mod) for flex_attention from the structure (no dense mask or tensor bias here)."""
    seg, window, valid, cap, slopes = st._seg, st.window, st.key_valid, st.softcap, st.alibi

    def mask_mod(b, h, i, j):
        m = j <= i
        if window is not None:
            m = m & (i - j < window)
        if seg is not None:
            m = m & (seg[b, i] == seg[b, j])
        if valid is not None:
            m = m & valid[b, j]
        return m

    def score_mod(score, b, h, i, j):
        if cap is not None:
            score = cap * torch.tanh(score / cap)
        if slopes is not None:
            score = score - slopes[h] * (i - j)
        return score

    return score_mod, mask_mod


def _flex_forward(q, k, v, st: AttentionStructure, scale: float):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, H, T, _ = q.shape
    score_mod, mask_mod = _flex_mods(st)
    block = create_block_mask(mask_mod, B if st._seg is not None or st.key_valid is not None else None, None, T, T,
                              device=q.device)
    flex = _compiled_flex() if q.device.type == "cuda" else flex_attention  # fused kernels need compile
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # older torch
        out, lse = flex(q, k, v, score_mod=score_mod, block_mask=block, scale=scale, return_lse=True)
    else:
        out, aux = flex(q, k, v, score_mod=score_mod, block_mask=block, scale=scale, return_aux=AuxRequest(lse=True))
        lse = aux.lse
    return out, lse.detach()


_COMPILED_FLEX = None


def _compiled_flex():
    """``torch.compile(flex_attention)``, built once (uncompiled flex materialises the T x T scores)."""
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


class _FlexBand(torch.autograd.Function):
    """Identity on (k, v). Backward receives flex's vanilla dk, dv and returns beta x those plus (1 - beta) x
    the in-band terms of the masked, modified scores (recomputed on h + 1 diagonals)."""

    @staticmethod
    def forward(ctx, k, v, q, stash, st, horizon, beta, scale):
        ctx.save_for_backward(q, k, v)
        ctx.stash, ctx.st, ctx.horizon, ctx.beta, ctx.scale = stash, st, horizon, beta, scale
        return k.view_as(k), v.view_as(v)

    @staticmethod
    def backward(ctx, dk, dv):
        q, k, v = ctx.saved_tensors
        stash, beta = ctx.stash, ctx.beta
        band_k, band_v = _band_grads(q, k, v, stash["out"], stash["lse"], stash["grad"], ctx.st, ctx.horizon,
                                     ctx.scale)
        stash["grad"] = None
        dk = beta * dk + (1.0 - beta) * band_k.to(dk.dtype)
        dv = beta * dv + (1.0 - beta) * band_v.to(dv.dtype)
        return dk, dv, None, None, None, None, None, None


class _FlexCapture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, stash):
        stash["out"] = o.detach()
        ctx.stash = stash
        return o.view_as(o)

    @staticmethod
    def backward(ctx, grad):
        ctx.stash["grad"] = grad
        return grad, None


def _band_grads(q, k, v, o, lse, g, st: AttentionStructure, horizon: int, scale: float):
    """The in-band (i - h <= j <= i) dk, dv of the masked, modified scores, one diagonal at a time (no bias
    tensor, no dense mask: the flex path's structures). O(B·H·T·D·(h + 1))."""
    work = torch.promote_types(q.dtype, torch.float32)
    q, k, v, o, g, lse = (t.to(work) for t in (q, k, v, o, g, lse))
    T = q.shape[-2]
    band_k, band_v = torch.zeros_like(k), torch.zeros_like(v)
    dlt = torch.einsum("...d,...d->...", g, o)
    L = _finite_lse(lse)
    for d in range(min(horizon, T - 1) + 1):
        a = scale * torch.einsum("...d,...d->...", q[..., d:, :], k[..., : T - d, :])
        t = None
        if st.softcap is not None:
            t = torch.tanh(a / st.softcap)
            a = st.softcap * t
        if st.alibi is not None:
            a = a - st.alibi.to(work)[None, :, None] * d
        ok = torch.ones(T - d, dtype=torch.bool, device=q.device)[None, None]
        if st.window is not None and d >= st.window:
            ok = ok & False
        if st._seg is not None:
            ok = ok & (st._seg[:, None, d:] == st._seg[:, None, : T - d])
        if st.key_valid is not None:
            ok = ok & st.key_valid[:, None, : T - d]
        p = torch.exp(a - L[..., d:]) * ok
        dS = p * (torch.einsum("...d,...d->...", g[..., d:, :], v[..., : T - d, :]) - dlt[..., d:])
        if t is not None:
            dS = dS * (1 - t * t)
        band_v[..., : T - d, :] += p.unsqueeze(-1) * g[..., d:, :]
        band_k[..., : T - d, :] += scale * dS.unsqueeze(-1) * q[..., d:, :]
    return band_k, band_v


def _flex_myopic(q, k, v, k_full, v_full, st, horizon, beta, scale):
    """Flex attention whose k/v gradient is myopic; ``k_full``/``v_full`` (equal values) get the vanilla one."""
    if beta == 1.0 or horizon >= q.shape[-2] - 1:
        if k_full is not None:
            k, v = k_full + (k - k.detach()), v_full + (v - v.detach())
        return _flex_forward(q, k, v, st, scale)[0]
    stash: dict = {}
    km, vm = _FlexBand.apply(k, v, q.detach(), stash, st, horizon, beta, scale)
    if k_full is not None:  # value k_full exactly; flex's vanilla gradient reaches k_full and the conversion
        km, vm = k_full + (km - km.detach()), v_full + (vm - vm.detach())
    o, lse = _flex_forward(q, km, vm, st, scale)
    stash["lse"] = lse
    return _FlexCapture.apply(o, stash)


# --------------------------------------------------------------------------------------------------------------
# Eager reference: materialises the (T x T) scores
# --------------------------------------------------------------------------------------------------------------


def _eager(q, k, v, k_full, v_full, bias, st: AttentionStructure, horizon, beta, scale):
    T = q.shape[-2]
    w = _band_weights(0, T, 0, T, horizon, beta, q.dtype, q.device)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    # a: value s q k^T; dq ordinary; dk_j = s sum_i w_ij dA_ij q_i (and unweighted into k_full).
    qk = qd @ k.transpose(-1, -2)
    a = scale * (q @ kd.transpose(-1, -2)) + scale * w * (qk - qk.detach())
    if k_full is not None:
        qkf = qd @ k_full.transpose(-1, -2)
        a = a + scale * (qkf - qkf.detach())
    s = a if st.softcap is None else st.softcap * torch.tanh(a / st.softcap)
    b = st.bias_block(bias, 0, T, 0, T, s.dtype, s.device)
    if b is not None:
        s = s + b
    allowed = st.allowed(0, T, 0, T, q.device)
    s = s.masked_fill(~allowed, float("-inf"))
    any_key = allowed.any(-1, keepdim=True)
    p = torch.softmax(torch.where(any_key, s, torch.zeros_like(s)), dim=-1) * any_key
    out = p @ vd + (w * p.detach()) @ (v - vd)
    if v_full is not None:
        out = out + p.detach() @ (v_full - v_full.detach())
    return out


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def _check(q, k, v, horizon, beta, impl, chunk_size):
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        raise MyopiaError("q, k and v must be tensors of shape (batch, heads, seq, head_dim)")
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise MyopiaError(f"q, k, v must be (batch, heads, seq, head_dim) with matching shapes; got "
                          f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise MyopiaError(f"horizon must be an integer >= 0, got {horizon!r}")
    if not (0.0 <= float(beta) <= 1.0):
        raise MyopiaError(f"beta must lie in [0, 1], got {beta!r}")
    if impl not in IMPLS:
        raise MyopiaError(f"impl must be one of {IMPLS}, got {impl!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise MyopiaError(f"chunk_size must be a positive integer, got {chunk_size!r}")


@torch.compiler.disable  # Python-level chunking: runs eagerly inside a compiled model (a graph break, not an error)
def _run(q, k, v, k_full, v_full, structure, bias, horizon, beta, scale, impl, chunk_size):
    st = structure if structure is not None else AttentionStructure()
    st.check(q, bias)
    if st.alibi is not None and st.alibi.device != q.device:
        st.alibi = st.alibi.to(q.device)
    beta = float(beta)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if impl == "eager":
        return _eager(q, k, v, k_full, v_full, bias, st, horizon, beta, scale)
    if impl == "flex":  # opt-in until it has run on a GPU (see the module docstring)
        if st.mask is not None or bias is not None:
            raise MyopiaError("the flex path takes documents, windows, padding, soft-caps and ALiBi slopes, not a "
                              "dense mask or bias tensor; use impl='blockwise'")
        return _flex_myopic(q, k, v, k_full, v_full, st, horizon, beta, scale)
    B, H, T, D = q.shape
    live = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, k_full, v_full, bias))
    if impl == "flash" or (impl == "auto" and _flash_eligible(q, st, bias)):
        if not _flash_eligible(q, st, bias, check_size=False):
            raise MyopiaError("the flash path takes documents, windows and ALiBi slopes on CPU, nothing else; "
                              "use impl='blockwise'")
        if not live:
            return _flash_forward(q, k, v, _flash_mask(st, T, q.dtype, q.device), scale)[0]
        return _FlashMasked.apply(q, k, v, k_full, v_full, st, horizon, beta, scale)
    chunk = chunk_size or default_chunk(B, H, T, D)
    if not live:  # evaluation: no graph, nothing saved
        return _blockwise_forward(q, k, v, bias, st, scale, chunk)[0]
    return _Blockwise.apply(q, k, v, k_full, v_full, bias, st, horizon, beta, scale, chunk)


def masked_myopic_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    structure: AttentionStructure | None = None,
    *,
    bias: torch.Tensor | None = None,
    horizon: int = 0,
    beta: float = 0.0,
    scale: float | None = None,
    impl: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Masked, score-modified attention ``(B, H, T, D) -> (B, H, T, Dv)`` with the myopic gradient.

    ``structure`` (:class:`AttentionStructure`) gives documents, window, padding, explicit mask, soft-cap and
    ALiBi slopes; ``bias`` (B|1, H|1, T, T) an additive score bias (its gradient, if any, is ordinary).
    ``horizon``/``beta`` as in :func:`myopia.attention.myopic_attention` (``beta=1``: vanilla). ``impl``:
    "auto"/"blockwise" (memory-linear, any device), "flex" (CUDA FlexAttention, opt-in) or "eager" (T x T
    reference).
    """
    _check(q, k, v, horizon, beta, impl, chunk_size)
    return _run(q, k, v, None, None, structure, bias, horizon, beta, scale, impl, chunk_size)


def masked_myopic_attention_split(
    q: torch.Tensor,
    k_w: torch.Tensor,
    v_w: torch.Tensor,
    k_x: torch.Tensor,
    v_x: torch.Tensor,
    structure: AttentionStructure | None = None,
    *,
    bias: torch.Tensor | None = None,
    horizon: int = 0,
    beta: float = 0.0,
    scale: float | None = None,
    impl: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Hidden-state myopia under a mask structure: ``k_w``/``v_w`` get the full gradient, ``k_x``/``v_x`` (equal
    values) the myopic one; see :func:`myopia.attention.myopic_attention_split` for the two copies."""
    _check(q, k_x, v_x, horizon, beta, impl, chunk_size)
    if k_w.shape != k_x.shape or v_w.shape != v_x.shape:
        raise MyopiaError("k_w/v_w must have the shapes of k_x/v_x")
    return _run(q, k_x, v_x, k_w, v_w, structure, bias, horizon, beta, scale, impl, chunk_size)


def _with_past_chunk(q_c, k_c, v_c, pk_b, pv_b, allowed, r0, c0, scale):
    """Rows [r0, r0 + C) of attention to a constant past (columns [c0, r0 + C)) and the live own position."""
    C, S = q_c.shape[-2], pk_b.shape[-2]
    eye = (torch.arange(r0, r0 + C, device=q_c.device).unsqueeze(1)
           == torch.arange(c0, c0 + S, device=q_c.device).unsqueeze(0))
    own = scale * (q_c * k_c).sum(-1, keepdim=True)
    s = torch.where(eye, own, scale * (q_c @ pk_b.transpose(-1, -2)))
    s = s.masked_fill(~allowed, float("-inf"))
    any_key = allowed.any(-1, keepdim=True)
    p = torch.softmax(torch.where(any_key, s, torch.zeros_like(s)), dim=-1) * any_key
    return (p * ~eye) @ pv_b + (p * eye).sum(-1, keepdim=True) * v_c


@torch.compiler.disable
def masked_attention_with_past(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor,
                               past_v: torch.Tensor, structure: AttentionStructure | None = None, *,
                               scale: float | None = None, chunk_size: int | None = None) -> torch.Tensor:
    """Query i reads its allowed positions j < i from ``past_k``/``past_v`` (constants) and itself from k, v:
    the masked form of ``myopic_attention(..., past_k=, past_v=)``. ``(B, H, T, D)``; soft-caps and biases
    are not supported here."""
    from torch.utils.checkpoint import checkpoint

    _check(q, k, v, 0, 0.0, "auto", chunk_size)
    if past_k.shape != k.shape or past_v.shape != v.shape:
        raise MyopiaError(f"past_k/past_v must have the shapes of k/v {tuple(k.shape)}/{tuple(v.shape)}; got "
                          f"{tuple(past_k.shape)}/{tuple(past_v.shape)}")
    st = structure if structure is not None else AttentionStructure()
    st.check(q, None)
    if st.softcap is not None or st.alibi is not None:
        raise MyopiaError("attention to a given past supports masks only, not soft-caps or ALiBi")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    B, H, T, D = q.shape
    chunk = chunk_size or default_chunk(B, H, T, D)
    pk, pv = past_k.detach(), past_v.detach()
    live = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs = []
    for r0 in range(0, T, chunk):
        r1 = min(T, r0 + chunk)
        c0 = st.key_start(r0)
        args = (q[..., r0:r1, :], k[..., r0:r1, :], v[..., r0:r1, :], pk[..., c0:r1, :], pv[..., c0:r1, :],
                st.allowed(r0, r1, c0, r1, q.device), r0, c0, scale)
        outs.append(checkpoint(_with_past_chunk, *args, use_reentrant=False) if live else _with_past_chunk(*args))
    return torch.cat(outs, dim=-2)


def document_bigram_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, doc_ids: torch.Tensor,
                              scale: float | None = None) -> torch.Tensor:
    """The transformer-bigram baseline inside documents: query i sees n_i zero keys (its earlier positions in
    the same document) and itself, o_i = v_i sigmoid(s_ii - log n_i), o_i = v_i when n_i = 0.
    ``(B, H, T, D)``, ``doc_ids`` (B, T); fully differentiable."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    T = q.shape[-2]
    seg = segment_ids(doc_ids)
    n_prev = torch.arange(T, device=q.device) - _segment_starts(seg)  # (B, T)
    diag = scale * (q * k).sum(-1)
    log_n = torch.log(n_prev.clamp_min(1).to(diag.dtype))[:, None, :]
    gate = torch.where(n_prev[:, None, :] == 0, torch.ones_like(diag), torch.sigmoid(diag - log_n))
    return v * gate.unsqueeze(-1)
