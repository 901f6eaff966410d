"""Export our :class:`myopia.model.GPT` as a standard transformers GPT-NeoX model.

The GPT's layout maps one-to-one onto ``GPTNeoXForCausalLM`` with: LayerNorm with bias, rotary embedding over
the whole head (``partial_rotary_factor=1``) in the rotate-half layout, exact GELU (``hidden_act="gelu"``),
sequential residual (``use_parallel_residual=False``), tied input/output embeddings and zero biases where the
GPT has none. The only rearrangement: our fused ``qkv`` projection stacks [all q heads; all k heads; all v
heads], GPT-NeoX's ``query_key_value`` stacks per head [q_h; k_h; v_h].

The exported directory loads with ``AutoModelForCausalLM.from_pretrained`` (and so lm-evaluation-harness's
``hf`` model type); byte-level runs also get a matching tokenizer (:func:`myopia.hf.tokenizer.bytes_tokenizer`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..errors import MyopiaError, first_line
from ..io import provenance, read_json, write_json
from ..rundir import CONFIG, MODEL, load_run_model, run_kind

__all__ = ["gpt_to_neox", "neox_config", "export_run"]


def neox_config(cfg):
    """The ``GPTNeoXConfig`` equivalent to a :class:`myopia.model.GPTConfig`."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        intermediate_size=cfg.mlp_ratio * cfg.d_model,
        hidden_act="gelu",
        max_position_embeddings=cfg.seq_len,
        layer_norm_eps=cfg.norm_eps,
        use_parallel_residual=False,
        tie_word_embeddings=True,
        attention_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_base), "partial_rotary_factor": 1.0},
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        architectures=["GPTNeoXForCausalLM"],
    )


def _per_head_qkv(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """[q (H*hd); k; v] rows -> per head [q_h; k_h; v_h] rows (works for weights (3d, d) and biases (3d,))."""
    three_d = w.shape[0]
    hd = three_d // (3 * n_head)
    parts = w.reshape(3, n_head, hd, *w.shape[1:])  # (qkv, head, hd, ...)
    return parts.transpose(0, 1).reshape(three_d, *w.shape[1:])


def gpt_to_neox(model):
    """A ``GPTNeoXForCausalLM`` (float32, eval mode) with the weights of our ``GPT`` ``model``."""
    from transformers import GPTNeoXForCausalLM

    cfg = model.cfg
    neox = GPTNeoXForCausalLM(neox_config(cfg)).float().eval()
    src = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    d = cfg.d_model

    def bias(name, n):
        return src[name] if name in src else torch.zeros(n)

    sd = {"gpt_neox.embed_in.weight": src["wte.weight"], "lm_head.weight": src["wte.weight"]}
    for i in range(cfg.n_layer):
        p, q = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        sd[q + "input_layernorm.weight"] = src[p + "ln1.weight"]
        sd[q + "input_layernorm.bias"] = src[p + "ln1.bias"]
        sd[q + "post_attention_layernorm.weight"] = src[p + "ln2.weight"]
        sd[q + "post_attention_layernorm.bias"] = src[p + "ln2.bias"]
        sd[q + "attention.query_key_value.weight"] = _per_head_qkv(src[p + "attn.qkv.weight"], cfg.n_head)
        sd[q + "attention.query_key_value.bias"] = _per_head_qkv(bias(p + "attn.qkv.bias", 3 * d), cfg.n_head)
        sd[q + "attention.dense.weight"] = src[p + "attn.proj.weight"]
        sd[q + "attention.dense.bias"] = bias(p + "attn.proj.bias", d)
        sd[q + "mlp.dense_h_to_4h.weight"] = src[p + "mlp.up.weight"]
        sd[q + "mlp.dense_h_to_4h.bias"] = bias(p + "mlp.up.bias", cfg.mlp_ratio * d)
        sd[q + "mlp.dense_4h_to_h.weight"] = src[p + "mlp.down.weight"]
        sd[q + "mlp.dense_4h_to_h.bias"] = bias(p + "mlp.down.bias", d)
    sd["gpt_neox.final_layer_norm.weight"] = src["ln_f.weight"]
    sd["gpt_neox.final_layer_norm.bias"] = src["ln_f.bias"]
    missing, unexpected = neox.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k and k != "lm_head.weight"]
    if missing or unexpected:
        raise MyopiaError(f"export mapping is incomplete: missing {missing}, unexpected {unexpected}")
    if neox.get_output_embeddings().weight.data_ptr() != neox.get_input_embeddings().weight.data_ptr():
        neox.get_output_embeddings().weight = neox.get_input_embeddings().weight
    return neox


def export_run(run_dir: str | Path, out_dir: str | Path, *, weights: str | Path | None = None) -> dict:
    """Write the run's model as a transformers directory ``out_dir`` (config, safetensors weights, tokenizer).

    Atomic: everything is written into a temporary folder beside ``out_dir`` that is renamed into place only
    when complete, so a failed export (a full disk) leaves no ``out_dir`` and no weights-less config; an I/O
    error is one MyopiaError line. Files are made mode 0666 minus the umask (0644 usually), folders 0777 minus
    it. Returns a summary (also written to ``out_dir/myopia_export.json``).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if run_kind(run_dir) != "gpt":
        raise MyopiaError(f"{run_dir} is a Hugging Face fine-tune; its transformers model is already in "
                          f"{run_dir / 'hf'}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MyopiaError(f"{out_dir} exists and is not empty; choose another --out")
    model = load_run_model(run_dir, weights=weights)
    neox = gpt_to_neox(model)
    cfg = read_json(run_dir / CONFIG)
    tok_kind = cfg.get("task", {}).get("corpus", {}).get("tokenizer", {}).get("kind")
    tokenizer = "bytes" if tok_kind in (None, "bytes") and model.cfg.vocab_size == 257 else None
    summary = {
        "source_run": str(run_dir),
        "weights": str(weights) if weights else MODEL,
        "architecture": "GPTNeoXForCausalLM",
        "tokenizer": tokenizer,
        "trained_gradient": model.cfg.gradient,
        "model": model.cfg.to_dict(),
        **provenance(),
    }
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        neox.save_pretrained(tmp)
        if tokenizer == "bytes":
            from .tokenizer import bytes_tokenizer

            bytes_tokenizer().save_pretrained(tmp)
        write_json(tmp / "myopia_export.json", summary)
        _usual_modes(tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _io_error(exc):
            raise MyopiaError(f"could not write {out_dir}: {first_line(exc)}; nothing was exported") from None
        raise
    return summary


def _io_error(exc: BaseException) -> bool:
    """An OSError, or safetensors' error for a failed write (it wraps the OS error), or ours for a write."""
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, MyopiaError):
        return str(exc).startswith("could not write")
    return type(exc).__name__ == "SafetensorError"


def _usual_modes(folder: Path) -> None:
    """Files 0666 and folders 0777, minus the umask (some writers create files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
