"""Hugging Face causal LMs behind :class:`myopia.model.GPT`'s interface, and loading them from the hub or a folder.

:class:`HFCausalLM` wraps a transformers model so that the trainer, the tasks and the analyses treat it like our
own GPT: ``model(idx)`` -> logits ``(B, T, vocab)``, ``model(embeds=x)``, ``hidden_out=[]`` (HF's hidden states:
the embedding output and each layer's output, the last one after the final norm), ``kv_out=[]`` (each layer's
post-RoPE (k, v), shaped (B, H_kv, T, D)), ``past_kv=[...]`` (queries read positions j < i from it) and
``set_gradient(gradient, beta, horizon)``. Its state dict is the HF model's under the prefix ``hf.``.

:func:`load_hf_model` loads a transformers model (hub name or directory); a run folder of either kind (ours or
``myopia finetune``) is loaded by :func:`myopia.rundir.load_run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import MyopiaError, first_line
from ..arms import GradientSetting
from .attention import MyopiaSettings, install

__all__ = ["HFCausalLM", "HFModelInfo", "load_hf_model"]


@dataclass
class HFModelInfo:
    """The fields of :class:`myopia.model.GPTConfig` that analyses read, for a Hugging Face model."""

    vocab_size: int
    n_layer: int
    n_head: int
    d_model: int
    seq_len: int
    model_type: str
    gradient: str = "vanilla"
    beta: float = 0.0
    horizon: int = 0

    @property
    def setting(self) -> GradientSetting:
        """The gradient setting of the flat fields ``gradient``, ``beta``, ``horizon``."""
        return GradientSetting(self.gradient, self.beta, self.horizon)

    def to_dict(self) -> dict:
        """The fields as a plain dict."""
        return dict(self.__dict__)


def _context_length(config) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


class HFCausalLM(nn.Module):
    """A transformers causal LM with the interface of :class:`myopia.model.GPT` (see the module docstring)."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model
        c = hf_model.config
        self.cfg = HFModelInfo(
            vocab_size=int(hf_model.get_output_embeddings().weight.shape[0]),
            n_layer=int(c.num_hidden_layers),
            n_head=int(c.num_attention_heads),
            d_model=int(c.hidden_size),
            seq_len=_context_length(c),
            model_type=str(c.model_type),
        )
        self._settings = install(hf_model, MyopiaSettings(GradientSetting()))

    def set_gradient(self, gradient: str | GradientSetting, beta: float | None = None,
                     horizon: int | None = None) -> None:
        """Switch the gradient setting in place (vanilla, myopic, myopic-hidden, bigram); ``gradient`` a kind or
        a :class:`GradientSetting` (see :meth:`GradientSetting.switch`)."""
        s = self.cfg.setting.switch(gradient, beta, horizon)
        self.cfg.gradient, self.cfg.beta, self.cfg.horizon = s.kind, s.beta, s.horizon
        self._settings.setting = s

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; with ``non_embedding`` the input embedding is left out."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.hf.get_input_embeddings().weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token, 6 N + 6 n_layer seq_len d_model (N: non-embedding params + output head)."""
        n = self.num_params(non_embedding=True)
        head = self.hf.get_output_embeddings().weight
        if head is self.hf.get_input_embeddings().weight:
            n += head.numel()
        return 6 * n + 6 * self.cfg.n_layer * seq_len * self.cfg.d_model

    def _run(self, idx, embeds, past_kv, hidden_out, kv_out, doc_ids=None):
        if (idx is None) == (embeds is None):
            raise MyopiaError("give exactly one of idx (token ids) or embeds (input embeddings)")
        x = idx if idx is not None else embeds
        if x.shape[1] > self.cfg.seq_len:
            raise MyopiaError(f"sequence length {x.shape[1]} exceeds the model's context {self.cfg.seq_len}")
        if past_kv is not None and len(past_kv) != self.cfg.n_layer:
            raise MyopiaError(f"past_kv needs one (k, v) per layer ({self.cfg.n_layer}), got {len(past_kv)}")
        extra = {}
        if doc_ids is not None:  # packed documents as transformers takes them: positions restart at each one
            from ..masked_attention import document_positions

            extra["position_ids"] = document_positions(doc_ids)
        self._settings.past_kv, self._settings.kv_out = past_kv, kv_out
        try:
            out = self.hf(
                input_ids=idx, inputs_embeds=embeds, use_cache=False, output_hidden_states=hidden_out is not None,
                **extra,
            )
        finally:
            self._settings.past_kv, self._settings.kv_out = None, None
        if hidden_out is not None:
            hidden_out.extend(out.hidden_states)
        return out

    def forward(self, idx=None, *, embeds=None, past_kv=None, hidden_out=None, kv_out=None,
                doc_ids=None) -> torch.Tensor:
        """Logits ``(B, T, vocab)``; ``doc_ids`` (B, T) keeps attention inside documents (packed sequences)."""
        return self._run(idx, embeds, past_kv, hidden_out, kv_out, doc_ids).logits

    def trunk(self, idx=None, *, embeds=None, past_kv=None, hidden_out=None, kv_out=None) -> torch.Tensor:
        """Final normalised hidden states ``(B, T, d)``."""
        hs: list = []
        self._run(idx, embeds, past_kv, hs, kv_out)
        if hidden_out is not None:
            hidden_out.extend(hs)
        return hs[-1]


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load_hf_model(name_or_path: str | Path, *, dtype: torch.dtype = torch.float32, attention_dropout: float = 0.0):
    """``AutoModelForCausalLM.from_pretrained`` (hub name when online, local directory always), in ``dtype``.

    Attention dropout is set to ``attention_dropout`` (0 by default: myopic attention has no dropout, and a
    vanilla/myopic pair must differ only in the gradient).
    """
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype, output_loading_info=True)
    except (OSError, ValueError, KeyError) as exc:
        raise MyopiaError(f"cannot load a causal language model from {name_or_path}: {first_line(exc)}") from None
    check_loading_info(info, name_or_path)
    set_attention_dropout(model, attention_dropout)
    return model


def check_loading_info(info: dict, where) -> None:
    """Refuse weights that do not cover the model exactly: transformers' ``output_loading_info`` lists tensors
    the model has but the files lack (they would stay randomly initialised), tensors the files hold that the
    model has no place for, and tensors of the wrong shape. One MyopiaError line naming them (at most 5 each)."""
    problems = []
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                      ("mismatched_keys", "of the wrong shape")):
        names = sorted(str(k[0] if isinstance(k, (tuple, list)) else k) for k in (info.get(key) or ()))
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            problems.append(f"{len(names)} {what} ({shown})")
    if problems:
        raise MyopiaError(f"the weights in {where} do not match the model: tensors {'; '.join(problems)}; "
                          "refusing to use randomly initialised weights")


def set_attention_dropout(model, p: float) -> None:
    """Set the attention-probability dropout of a transformers model (config and the layers' copies) to ``p``."""
    for name in ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob"):
        if hasattr(model.config, name):
            setattr(model.config, name, p)
    for m in model.modules():
        if hasattr(m, "attention_dropout") and isinstance(m.attention_dropout, (int, float)):
            m.attention_dropout = p
        if hasattr(m, "attn_dropout") and isinstance(m.attn_dropout, nn.Dropout):
            m.attn_dropout.p = p


def hf_model_from_config(config_dict: dict):
    """A freshly built (randomly initialised) transformers causal LM from a saved ``config.to_dict()``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    d = dict(config_dict)
    model_type = d.pop("model_type", None)
    if not model_type:
        raise MyopiaError("the saved Hugging Face config has no model_type")
    try:
        config = AutoConfig.for_model(model_type, **d)
    except (ValueError, KeyError) as exc:
        raise MyopiaError(f"cannot rebuild a {model_type} config: {exc}") from None
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


__all__ += ["hf_model_from_config", "set_attention_dropout", "check_loading_info"]
