"""Tiny randomly initialised transformers models (built locally, no download) (the brute-force references live in myopia.testing)."""

from __future__ import annotations

import torch

V = 41  # vocabulary of the tiny models


def tiny(arch: str, *, n_layer: int = 2, seed: int = 0, dtype=torch.float64):
    """A tiny causal LM of the given architecture, eval mode (no dropout), in ``dtype``."""
    import transformers as tr

    tr.utils.logging.set_verbosity_error()
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = tr.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=n_layer, n_head=4, attn_pdrop=0.0,
                            resid_pdrop=0.0, embd_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        model = tr.GPT2LMHeadModel(cfg)
    elif arch == "pythia":  # GPT-NeoX as Pythia: partial rotary, parallel residual, untied head
        cfg = tr.GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=n_layer, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=32, use_parallel_residual=True,
                               rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                "partial_rotary_factor": 0.25},
                               bos_token_id=0, eos_token_id=0)
        model = tr.GPTNeoXForCausalLM(cfg)
    elif arch == "llama":  # grouped-query attention: 4 query heads share 2 key/value heads
        cfg = tr.LlamaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=n_layer, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                             bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = tr.LlamaForCausalLM(cfg)
    elif arch == "qwen2":  # Llama's attention path with q/k/v biases, GQA 4:1, tied embeddings
        cfg = tr.Qwen2Config(vocab_size=V, hidden_size=32, num_hidden_layers=n_layer, num_attention_heads=4,
                             num_key_value_heads=1, intermediate_size=64, max_position_embeddings=32,
                             tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = tr.Qwen2ForCausalLM(cfg)
    elif arch == "mistral":  # Llama's path plus a sliding window (longer than these sequences)
        cfg = tr.MistralConfig(vocab_size=V, hidden_size=32, num_hidden_layers=n_layer, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                               sliding_window=16, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = tr.MistralForCausalLM(cfg)
    elif arch in ("falcon", "falcon-alibi"):  # multi-query rotary Falcon; the ALiBi one with grouped kv heads
        alibi = arch == "falcon-alibi"
        cfg = tr.FalconConfig(vocab_size=V, hidden_size=32, num_hidden_layers=n_layer, num_attention_heads=4,
                              alibi=alibi, new_decoder_architecture=alibi, num_kv_heads=2 if alibi else None,
                              attention_dropout=0.0, hidden_dropout=0.0, bos_token_id=0, eos_token_id=0)
        model = tr.FalconForCausalLM(cfg)
    else:
        raise ValueError(arch)
    model = model.to(dtype).eval()
    with torch.no_grad():  # non-trivial biases and norms, so every parameter's gradient path is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln" in name.split(".")[-2]:
                p.add_(0.1 * torch.randn_like(p))
    return model


from myopia.testing import (  # noqa: E402,F401  (the references live in one importable module)
    attention_inputs,
    brute_force_loss,
    hidden_brute_force_loss,
    model_loss,
    position_logits_with_cache,
    token_loss,
    window_loss,
)


def tolerance(arch: str) -> dict:
    """Llama-family RMSNorm computes in float32 even in a float64 model, so results that take different but
    equivalent routes (a prefix run vs the full sequence) agree to float32 rounding there, exactly elsewhere."""
    return dict(rtol=1e-5, atol=1e-8) if arch in ("llama", "qwen2", "mistral") else dict(rtol=1e-9, atol=1e-11)


def grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def assert_grads_close(a, b, rtol=1e-9, atol=1e-11):
    for ga, gb in zip(a, b):
        ga = torch.zeros(()) if ga is None else ga
        gb = torch.zeros(()) if gb is None else gb
        torch.testing.assert_close(ga.expand_as(gb) if ga.dim() == 0 else ga,
                                   gb.expand_as(ga) if gb.dim() == 0 else gb, rtol=rtol, atol=atol)
