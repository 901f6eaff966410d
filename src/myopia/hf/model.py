"""Hugging Face causal LMs behind :class:`myopia.model.GPT`'s interface, and loading runs of either kind.

:class:`HFCausalLM` wraps a transformers model so that the trainer, the tasks and the analyses treat it like our
own GPT: ``model(idx)`` -> logits ``(B, T, vocab)``, ``model(embeds=x)``, ``hidden_out=[]`` (HF's hidden states:
the embedding output and each layer's output, the last one after the final norm), ``kv_out=[]`` (each layer's
post-RoPE (k, v), shaped (B, H_kv, T, D)), ``past_kv=[...]`` (queries read positions j < i from it) and
``set_gradient(gradient, beta, horizon)``. Its state dict is the HF model's under the prefix ``hf.``.

:func:`load_run_model` returns the trained model of a run directory of either kind (ours: :class:`GPT`;
``myopia finetune``: :class:`HFCausalLM`); :func:`load_model` also takes a Hugging Face directory or hub name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import load_tensors
from ..errors import MyopiaError
from ..io import read_json
from .attention import GRADIENTS, MyopiaSettings, _check_args, install

__all__ = ["HFCausalLM", "HFModelInfo", "load_hf_model", "load_run_model", "load_model", "run_kind"]


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

    def to_dict(self) -> dict:
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
        self._settings = install(hf_model, MyopiaSettings(gradient="vanilla"))

    def set_gradient(self, gradient: str, beta: float | None = None, horizon: int | None = None) -> None:
        """Switch the gradient setting in place (vanilla, myopic, myopic-hidden, bigram)."""
        beta = self.cfg.beta if beta is None else beta
        horizon = self.cfg.horizon if horizon is None else horizon
        _check_args(gradient, beta, horizon)
        self.cfg.gradient, self.cfg.beta, self.cfg.horizon = gradient, float(beta), int(horizon)
        self._settings.gradient, self._settings.beta, self._settings.horizon = gradient, float(beta), int(horizon)

    def num_params(self, non_embedding: bool = False) -> int:
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
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MyopiaError(f"cannot load a causal language model from {name_or_path}: {first}") from None
    set_attention_dropout(model, attention_dropout)
    return model


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


def run_kind(run_dir: str | Path) -> str:
    """``"hf"`` for a ``myopia finetune`` run, ``"gpt"`` for our own model, from the run's config.json."""
    run = read_json(Path(run_dir) / "config.json").get("run", {})
    return "hf" if run.get("model_kind") == "hf" else "gpt"


def _weights_file(run_dir: Path, weights) -> Path:
    if weights is not None:
        return Path(weights)
    for name in ("model.safetensors", "checkpoint.safetensors"):
        if (run_dir / name).exists():
            return run_dir / name
    raise MyopiaError(f"{run_dir} holds no model.safetensors or checkpoint.safetensors (is it a run directory?)")


def load_run_model(run_dir: str | Path, weights: str | Path | None = None, device="cpu") -> nn.Module:
    """The model of a run directory of either kind, in eval mode, with its trained weights.

    Our runs (``myopia train`` / pair runs) give a :class:`myopia.model.GPT`; ``myopia finetune`` runs give a
    :class:`HFCausalLM`. Both map ``model(idx)`` to logits and have ``set_gradient``. ``weights`` picks another
    weights file of the run (a snapshot, ``checkpoint.safetensors``); default: the final ``model.safetensors``.
    The gradient setting is the run's own (it only affects training).
    """
    return _load_run(run_dir, weights, device)[0]


def _load_run(run_dir, weights, device) -> tuple[nn.Module, dict]:
    """(model, weights-file metadata) of a run directory; see :func:`load_run_model`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise MyopiaError(f"{run_dir} is not a run directory (no config.json)")
    run = read_json(run_dir / "config.json").get("run", {})
    tensors, meta = load_tensors(_weights_file(run_dir, weights))
    if any(k.startswith("optim.") for k in tensors):  # a full training checkpoint
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if run.get("model_kind") == "hf":
        if "hf_config" not in run:
            raise MyopiaError(f"{run_dir}/config.json lacks the Hugging Face config (hf_config)")
        model = HFCausalLM(hf_model_from_config(run["hf_config"]))
        model.set_gradient(run.get("gradient", "vanilla"), run.get("beta", 0.0), run.get("horizon", 0))
    else:
        from ..model import GPT, GPTConfig

        if "model" not in run:
            raise MyopiaError(f"{run_dir}/config.json has no model config (run.model)")
        model = GPT(GPTConfig.from_dict(run["model"]))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MyopiaError(f"weights in {run_dir} do not match its model ({first})") from None
    return model.to(device).eval(), meta


def run_tokenizer(run_dir: str | Path):
    """The tokenizer a run was trained with: bytes for our runs, the saved HF tokenizer for finetune runs."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    if cfg.get("run", {}).get("model_kind") == "hf":
        from .tokenizer import load_hf_tokenizer

        return load_hf_tokenizer(run_dir / "tokenizer")
    kind = cfg.get("task", {}).get("corpus", {}).get("tokenizer", {}).get("kind")
    if kind in (None, "bytes"):
        from ..data import ByteTokenizer

        return ByteTokenizer()
    raise MyopiaError(f"{run_dir} was trained with a {kind!r} tokenizer, which this command cannot rebuild")


def load_model(spec: str | Path, device="cpu"):
    """``(model, tokenizer, info)`` for a run directory, a weights file inside one, or a Hugging Face model.

    A Hugging Face directory or hub name is wrapped in :class:`HFCausalLM` with its own tokenizer.
    ``info`` records what was loaded (kind, path, training step when known).
    """
    path = Path(spec)
    if path.is_file() and path.suffix == ".safetensors":
        run_dir = path.parent if (path.parent / "config.json").exists() else path.parent.parent
        model, meta = _load_run(run_dir, path, device)
        return model, run_tokenizer(run_dir), {"kind": run_kind(run_dir), "path": str(path),
                                               "step": meta.get("step")}
    if path.is_dir() and (path / "config.json").exists() and "run" in read_json(path / "config.json"):
        model, meta = _load_run(path, None, device)
        return model, run_tokenizer(path), {"kind": run_kind(path), "path": str(path), "step": meta.get("step")}
    from .tokenizer import load_hf_tokenizer

    hf = load_hf_model(spec)
    model = HFCausalLM(hf).to(device).eval()
    return model, load_hf_tokenizer(spec), {"kind": "hf-pretrained", "path": str(spec), "step": _step_from_name(spec)}


def _step_from_name(spec) -> int | None:
    import re

    m = re.search(r"step[-_]?(\d+)", str(spec))
    return int(m.group(1)) if m else None


__all__ += ["run_tokenizer", "hf_model_from_config", "GRADIENTS"]
