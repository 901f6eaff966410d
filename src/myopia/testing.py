"""Brute-force references: every position's loss computed on its own, with an explicitly detached past.

One importable home for the references that the tests and ``benchmarks/gpu_check.py`` prove our fast paths
against (run them in float64). Nothing here is fast or used in training.

- :func:`attention_brute_force`, :func:`attention_brute_force_past`: one attention layer, query by query.
- :func:`gpt_brute_force_loss`: our GPT (:mod:`myopia.model`), one position at a time through every layer.
- :func:`brute_force_loss`, :func:`window_loss`, :func:`hidden_brute_force_loss`: Hugging Face causal LMs, with
  the past read from a no-grad key/value cache (strict myopia by definition) or spliced in as constant inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "attention_brute_force",
    "attention_brute_force_past",
    "gpt_brute_force_loss",
    "token_loss",
    "model_loss",
    "position_logits_with_cache",
    "brute_force_loss",
    "window_loss",
    "attention_inputs",
    "hidden_brute_force_loss",
]


def _shared_heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    return t.repeat_interleave(n_heads // t.shape[1], dim=1) if t.shape[1] != n_heads else t


# ------------------------------------------------------------------------------------------------------------
# One attention layer
# ------------------------------------------------------------------------------------------------------------


def _weight(i: int, j: int, horizon: int, beta: float) -> float:
    return 1.0 if j >= i - horizon else beta


def attention_brute_force(q, k, v, g, horizon, beta, scale):
    """sum_i <g_i, o_i>, where o_i is computed on its own with keys/values whose gradient is scaled by w_ij.

    Each query builds its own copy of the past: k_j^(i) = stop(k_j) + w_ij (k_j - stop(k_j)). q, g (B, H, T, D);
    k, v (B, H_kv, T, D) with H_kv dividing H (grouped-query heads are shared by consecutive query heads).
    """
    k, v = _shared_heads(k, q.shape[1]), _shared_heads(v, q.shape[1])
    T = q.shape[-2]
    total = 0.0
    for i in range(T):
        ks, vs = [], []
        for j in range(i + 1):
            w = _weight(i, j, horizon, beta)
            kd, vd = k[..., j, :].detach(), v[..., j, :].detach()
            ks.append(kd + w * (k[..., j, :] - kd))
            vs.append(vd + w * (v[..., j, :] - vd))
        K, V = torch.stack(ks, -2), torch.stack(vs, -2)
        p = torch.softmax(scale * (K @ q[..., i, :].unsqueeze(-1)).squeeze(-1), dim=-1)
        o_i = (p.unsqueeze(-1) * V).sum(-2)
        total = total + (g[..., i, :] * o_i).sum()
    return total


def attention_brute_force_past(q, k, v, pk, pv, g, scale):
    """Query i attends to constant past keys/values j < i and its own live k_i, v_i."""
    k, v, pk, pv = (_shared_heads(t, q.shape[1]) for t in (k, v, pk, pv))
    T = q.shape[-2]
    total = 0.0
    for i in range(T):
        K = torch.cat([pk[..., :i, :].detach(), k[..., i : i + 1, :]], -2)
        V = torch.cat([pv[..., :i, :].detach(), v[..., i : i + 1, :]], -2)
        p = torch.softmax(scale * (K @ q[..., i, :].unsqueeze(-1)).squeeze(-1), dim=-1)
        total = total + (g[..., i, :] * (p.unsqueeze(-1) * V).sum(-2)).sum()
    return total


# ------------------------------------------------------------------------------------------------------------
# Our GPT
# ------------------------------------------------------------------------------------------------------------


def _ln(x, mod):
    return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)


def gpt_brute_force_loss(model, idx: torch.Tensor, mode: str) -> torch.Tensor:
    """sum_i loss_i where position i's own computation is live and every earlier position is held constant.

    An independent re-implementation of the forward pass, one query position at a time.
    mode "myopic": earlier positions' keys/values are constants.
    mode "myopic-hidden": earlier positions' attention inputs (LN1 outputs) are constants; W_K, W_V act on
    them live.
    """
    from .model import apply_rope

    cfg = model.cfg
    B, T = idx.shape
    H, hd, d = cfg.n_head, cfg.head_dim, cfg.d_model
    cos, sin = model.rope_cos[:T].to(model.wte.weight.dtype), model.rope_sin[:T].to(model.wte.weight.dtype)

    # 1. A detached forward pass: every position's per-layer attention input, keys and values (constants).
    const_h, const_k, const_v = [], [], []
    with torch.no_grad():
        x = model.wte(idx)
        for blk in model.blocks:
            h = _ln(x, blk.ln1)
            q, k, v = F.linear(h, blk.attn.qkv.weight).split(d, -1)
            q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            const_h.append(h), const_k.append(k), const_v.append(v)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + blk.attn.proj(o.transpose(1, 2).reshape(B, T, d))
            x = x + blk.mlp(_ln(x, blk.ln2))

    # 2. Each position on its own, live, reading the constant past.
    total = 0.0
    for i in range(T):
        x = model.wte(idx[:, i])  # (B, d)
        for layer, blk in enumerate(model.blocks):
            h = _ln(x, blk.ln1)
            q, k, v = F.linear(h, blk.attn.qkv.weight).split(d, -1)
            q, k, v = (t.view(B, H, 1, hd) for t in (q, k, v))
            q, k = apply_rope(q, cos[i : i + 1], sin[i : i + 1]), apply_rope(k, cos[i : i + 1], sin[i : i + 1])
            if mode == "myopic":
                past_k, past_v = const_k[layer][:, :, :i], const_v[layer][:, :, :i]
            else:
                wk, wv = blk.attn.qkv.weight[d : 2 * d], blk.attn.qkv.weight[2 * d :]
                hp = const_h[layer][:, :i]
                past_k = apply_rope(F.linear(hp, wk).view(B, i, H, hd).transpose(1, 2), cos[:i], sin[:i])
                past_v = F.linear(hp, wv).view(B, i, H, hd).transpose(1, 2)
            K, V = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
            p = torch.softmax((q @ K.transpose(-1, -2)) * hd**-0.5, dim=-1)
            o = (p @ V).reshape(B, d)
            x = x + blk.attn.proj(o)
            x = x + blk.mlp(_ln(x, blk.ln2))
        logits = F.linear(_ln(x, model.ln_f), model.wte.weight)
        total = total + F.cross_entropy(logits, idx[:, (i + 1) % T], reduction="sum")
    return total


# ------------------------------------------------------------------------------------------------------------
# Hugging Face causal LMs
# ------------------------------------------------------------------------------------------------------------


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropies: logits (..., V) vs targets (...)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")


def model_loss(model, x: torch.Tensor) -> torch.Tensor:
    """Next-token loss of an (B, T+1) id tensor, summed over the first T positions."""
    return token_loss(model(x[:, :-1], use_cache=False).logits, x[:, 1:])


def position_logits_with_cache(model, x, i, cache_from=None, zero_cache=False):
    """Logits at position i computed from token i alone, every earlier key/value read from a cache.

    The cache is built by a no-grad pass of ``cache_from`` (default: ``model``) on positions < i, or filled with
    zeros (the bigram baseline). Only position i's own computation is live: this is strict myopia by definition.
    """
    if i == 0:
        return model(x[:, :1], use_cache=False).logits[:, -1]
    with torch.no_grad():
        cache = (cache_from or model)(x[:, :i], use_cache=True).past_key_values
        if zero_cache:
            for layer in cache.layers:
                layer.keys.zero_()
                layer.values.zero_()
    return model(x[:, i : i + 1], cache=cache, use_cache=True).logits[:, -1]


def brute_force_loss(model, x, **kw):
    """sum_i loss_i, each position's loss computed on its own with constant earlier keys/values."""
    T = x.shape[1] - 1
    return sum(F.cross_entropy(position_logits_with_cache(model, x, i, **kw), x[:, i + 1], reduction="sum")
               for i in range(T))


def window_loss(model, x, i, horizon):
    """Loss at position i with positions i-horizon..i live and earlier ones from a no-grad cache."""
    lo = max(0, i - horizon)
    if lo == 0:
        logits = model(x[:, : i + 1], use_cache=False).logits[:, -1]
    else:
        with torch.no_grad():
            cache = model(x[:, :lo], use_cache=True).past_key_values
        logits = model(x[:, lo : i + 1], cache=cache, use_cache=True).logits[:, -1]
    return F.cross_entropy(logits, x[:, i + 1], reduction="sum")


def attention_inputs(model):
    """The self-attention modules of a transformers model."""
    return [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]


def hidden_brute_force_loss(model, x):
    """sum_i loss_i where, for position i, every attention layer's *input* at positions < i is a constant.

    Constants come from a no-grad pass; forward pre-hooks splice them in front of the live input of position i,
    so the layers' projection weights still act live on the earlier (constant) inputs: hidden-state myopia.
    """
    layers = attention_inputs(model)
    const: dict = {}

    def record(module, args, kwargs):
        const[module] = (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).detach()

    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in layers]
    with torch.no_grad():
        model(x[:, :-1], use_cache=False)
    for h in handles:
        h.remove()
    total = 0.0
    T = x.shape[1] - 1
    for i in range(T):

        def splice(module, args, kwargs, i=i):
            live = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            mixed = torch.cat([const[module][:, :i], live[:, i : i + 1]], dim=1)
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": mixed}
            return (mixed, *args[1:]), kwargs

        handles = [m.register_forward_pre_hook(splice, with_kwargs=True) for m in layers]
        try:
            logits = model(x[:, : i + 1], use_cache=False).logits[:, -1]
        finally:
            for h in handles:
                h.remove()
        total = total + F.cross_entropy(logits, x[:, i + 1], reduction="sum")
    return total
