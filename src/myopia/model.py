"""A small GPT (pre-LayerNorm decoder, RoPE, tied embeddings) whose attention gradient can be made myopic.

Gradient settings (``GPTConfig.gradient``):

- ``vanilla``: ordinary training.
- ``myopic``: strict myopia. Query i reads the keys/values of positions j < i as constants (weights
  ``horizon``/``beta`` as in :mod:`myopia.attention`), so position i's loss never reaches earlier positions.
- ``myopic-hidden``: the paper's code's variant. The *attention input* (the normalised residual stream) of
  positions j < i is constant for query i, but the key/value projection weights are applied live to it, so
  W_K and W_V still learn from every query. Implemented with :func:`myopia.attention.split_linear`.
- ``bigram``: earlier positions' keys/values replaced by zeros; the model cannot read the past at all
  (its forward pass differs from vanilla by design).

``doc_ids`` (B, T) in the forward pass masks attention to documents (no position attends across a document
boundary; :mod:`myopia.masked_attention`), for every gradient setting.

The forward value is identical (bit for bit) under ``vanilla``, ``myopic`` and ``myopic-hidden``. The layout
(LayerNorm with bias, bias-free linear layers, exact GELU, rotate-half RoPE over the whole head, tied
embeddings, sequential residual) maps one-to-one onto a Hugging Face GPT-NeoX config for export.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .arms import GRADIENTS, GradientSetting
from .attention import attend, split_linear
from .config import option
from .errors import MyopiaError
from .masked_attention import AttentionStructure


@dataclass
class GPTConfig:
    """Architecture and gradient setting. Sizes: ``d_model`` width, ``n_head`` heads of ``d_model // n_head``.

    Each field's ``metadata["help"]`` is its command-line help (:mod:`myopia.cli.common` builds the options).
    """

    vocab_size: int = option(256, "token ids the model embeds (set from the data)")
    n_layer: int = option(4, "transformer blocks")
    n_head: int = option(4, "attention heads")
    d_model: int = option(128, "residual width")
    seq_len: int = option(128, "context length in tokens")
    gradient: str = option("vanilla", "gradient setting", choices=GRADIENTS)
    beta: float = option(0.0, "weight of the off-band past gradient (0 = myopic, 1 = vanilla)")
    horizon: int = option(0, "earlier positions that get the full gradient")
    mlp_ratio: int = option(4, "MLP width / d_model")
    rope_base: float = option(10000.0, "RoPE base frequency")
    norm_eps: float = option(1e-5, "LayerNorm epsilon")
    dropout: float = option(0.0, "dropout probability on the attention and MLP outputs")
    bias: bool = option(False, "biases in the linear layers")
    init_std: float = option(0.02, "standard deviation of the initial weights")
    attention_impl: str = option("auto", "attention implementation (eager: the readable T x T reference)",
                                 choices=("auto", "fused", "eager"))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse impossible sizes and settings with a one-line :class:`MyopiaError` naming the field."""
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MyopiaError(f"{name} must be a positive integer, got {value!r}")

        for name in ("vocab_size", "n_layer", "n_head", "d_model", "seq_len", "mlp_ratio"):
            positive_int(name)
        if self.d_model % self.n_head:
            raise MyopiaError(f"n_head ({self.n_head}) must divide d_model ({self.d_model})")
        if (self.d_model // self.n_head) % 2:
            raise MyopiaError(f"head size d_model/n_head = {self.d_model // self.n_head} must be even for RoPE")
        GradientSetting(self.gradient, self.beta, self.horizon)  # validates
        if not (0.0 <= float(self.dropout) < 1.0):
            raise MyopiaError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.attention_impl not in ("auto", "fused", "eager"):
            raise MyopiaError(f"attention_impl must be auto, fused or eager; got {self.attention_impl!r}")

    def to_dict(self) -> dict:
        """The config as a plain dict (what config.json stores under run.model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """The config of a stored dict; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise MyopiaError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    @property
    def setting(self) -> GradientSetting:
        """The gradient setting of the flat fields ``gradient``, ``beta``, ``horizon``."""
        return GradientSetting(self.gradient, self.beta, self.horizon)

    def with_setting(self, setting: GradientSetting) -> "GPTConfig":
        """A copy of this config with ``setting``'s gradient, beta and horizon."""
        return replace(self, gradient=setting.kind, beta=setting.beta, horizon=setting.horizon)

    @property
    def head_dim(self) -> int:
        """Width of one attention head, d_model // n_head."""
        return self.d_model // self.n_head


def rope_tables(seq_len: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables ``(seq_len, head_dim)`` for rotate-half RoPE (the Hugging Face / GPT-NeoX layout)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, T, D) by position: x cos + rotate_half(x) sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    """Multi-head causal self-attention with the configured gradient. ``(B, T, d) -> (B, T, d)``; the kernel is
    chosen by :func:`myopia.attention.attend` from ``cfg.setting``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def _heads(self, t: torch.Tensor, B: int, T: int) -> torch.Tensor:
        return t.view(B, T, self.cfg.n_head, self.cfg.head_dim).transpose(1, 2)

    def _split_qkv(self, y, B, T, cos, sin):
        q, k, v = (self._heads(t, B, T) for t in y.split(self.cfg.d_model, dim=-1))
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin, past_kv=None, kv_out=None, docs=None):
        """x (B, T, d); ``past_kv`` (k, v) each (B, H, T, hd) replaces the past; ``kv_out`` list collects (k, v);
        ``docs`` (an :class:`AttentionStructure` of document ids) keeps attention inside documents."""
        cfg = self.cfg
        B, T, _ = x.shape
        setting = cfg.setting
        split = None
        if setting.hidden and past_kv is None and torch.is_grad_enabled():
            y_w, y_x = split_linear(x, self.qkv.weight, self.qkv.bias)
            q, k, v = self._split_qkv(y_w, B, T, cos, sin)
            q_x, k_x, v_x = self._split_qkv(y_x, B, T, cos, sin)
            q = q + (q_x - q_x.detach())  # the query is ordinary: gradient into both W and x
            split = (k_x, v_x)
        else:
            q, k, v = self._split_qkv(self.qkv(x), B, T, cos, sin)
        if kv_out is not None:
            kv_out.append((k.detach(), v.detach()))
        o = attend(q, k, v, setting, structure=docs, past=past_kv, split=split, impl=cfg.attention_impl)
        o = o.transpose(1, 2).reshape(B, T, cfg.d_model)
        return F.dropout(self.proj(o), cfg.dropout, self.training)


class MLP(nn.Module):
    """The feed-forward block: Linear(d, r·d) → exact GELU → Linear(r·d, d) → dropout; (B, T, d) → (B, T, d)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=cfg.bias)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x):
        """(B, T, d) → (B, T, d)."""
        return F.dropout(self.down(F.gelu(self.up(x))), self.dropout, self.training)


class Block(nn.Module):
    """One pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, past_kv=None, kv_out=None, docs=None):
        x = x + self.attn(self.ln1(x), cos, sin, past_kv, kv_out, docs)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer. ``model(idx)`` -> logits ``(B, T, vocab)``; ``model(embeds=x)`` takes (B, T, d)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, init_std) weights, output projections scaled by 1/sqrt(2 n_layer), zero biases."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif "ln" in name.split(".")[-2]:
                nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def set_gradient(self, gradient: str | GradientSetting, beta: float | None = None,
                     horizon: int | None = None) -> None:
        """Switch the gradient setting in place (parameters untouched); ``gradient`` a kind or a
        :class:`GradientSetting` (see :meth:`GradientSetting.switch`)."""
        s = self.cfg.setting.switch(gradient, beta, horizon)
        self.cfg.gradient, self.cfg.beta, self.cfg.horizon = s.kind, s.beta, s.horizon

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; with ``non_embedding`` the token embedding (tied to the output head) is left out."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def trunk(
        self,
        idx: torch.Tensor | None = None,
        *,
        embeds: torch.Tensor | None = None,
        past_kv: list | None = None,
        hidden_out: list | None = None,
        kv_out: list | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final normalised hidden states ``(B, T, d)``.

        ``doc_ids`` (B, T) int: document of each position; attention never crosses a change of id.
        ``hidden_out`` (a list) collects the residual stream after the embedding and after each block
        (n_layer + 1 tensors); ``kv_out`` collects each layer's post-RoPE (k, v); ``past_kv`` (one (k, v) per
        layer, e.g. from a frozen model's ``kv_out``) makes every query read positions j < i from it.
        """
        if (idx is None) == (embeds is None):
            raise MyopiaError("give exactly one of idx (token ids) or embeds (input embeddings)")
        if idx is not None:
            if idx.dim() != 2:
                raise MyopiaError(f"idx must be (batch, seq) token ids, got shape {tuple(idx.shape)}")
            x = self.wte(idx)
        else:
            if embeds.dim() != 3 or embeds.shape[-1] != self.cfg.d_model:
                raise MyopiaError(f"embeds must be (batch, seq, {self.cfg.d_model}), got {tuple(embeds.shape)}")
            x = embeds
        T = x.shape[1]
        if T > self.cfg.seq_len:
            raise MyopiaError(f"sequence length {T} exceeds the model's context seq_len={self.cfg.seq_len}")
        if past_kv is not None and len(past_kv) != self.cfg.n_layer:
            raise MyopiaError(f"past_kv needs one (k, v) per layer ({self.cfg.n_layer}), got {len(past_kv)}")
        docs = None
        if doc_ids is not None:
            if doc_ids.shape != x.shape[:2]:
                raise MyopiaError(f"doc_ids must have shape (batch, seq) = {tuple(x.shape[:2])}, "
                                  f"got {tuple(doc_ids.shape)}")
            docs = AttentionStructure(doc_ids=doc_ids)  # one per forward pass: every layer shares its segments
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = F.dropout(x, self.cfg.dropout, self.training)
        if hidden_out is not None:
            hidden_out.append(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, None if past_kv is None else past_kv[layer], kv_out, docs)
            if hidden_out is not None:
                hidden_out.append(x)
        return self.ln_f(x)

    def forward(self, idx=None, *, embeds=None, past_kv=None, hidden_out=None, kv_out=None,
                doc_ids=None) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` (head tied to the token embedding); ``doc_ids`` (B, T) masks documents."""
        h = self.trunk(idx, embeds=embeds, past_kv=past_kv, hidden_out=hidden_out, kv_out=kv_out,
                       doc_ids=doc_ids)
        return F.linear(h, self.wte.weight)


def flops_per_token(cfg: GPTConfig, n_params_non_embedding: int | None = None) -> int:
    """Training FLOPs per token (forward + backward): 6 N + 6 n_layer seq_len d_model (Kaplan et al. 2020).

    N counts non-embedding parameters plus the tied output projection (2 d vocab FLOPs per token forward).
    The attention term counts the full (unmasked) score and value products, as is customary.
    """
    if n_params_non_embedding is None:
        n_params_non_embedding = non_embedding_params(cfg)
    n = n_params_non_embedding + cfg.d_model * cfg.vocab_size
    return 6 * n + 6 * cfg.n_layer * cfg.seq_len * cfg.d_model


def non_embedding_params(cfg: GPTConfig) -> int:
    """Parameter count without the token embedding (LayerNorms and biases included)."""
    d, r = cfg.d_model, cfg.mlp_ratio
    per_layer = 3 * d * d + d * d + 2 * r * d * d + 4 * d  # qkv, proj, mlp, two LayerNorms
    if cfg.bias:
        per_layer += 3 * d + d + r * d + d
    return cfg.n_layer * per_layer + 2 * d  # + final LayerNorm
