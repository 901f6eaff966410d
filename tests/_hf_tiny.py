"""Tiny randomly initialised transformers models (built locally, no download) and independent brute forces."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    else:
        raise ValueError(arch)
    model = model.to(dtype).eval()
    with torch.no_grad():  # non-trivial biases and norms, so every parameter's gradient path is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln" in name.split(".")[-2]:
                p.add_(0.1 * torch.randn_like(p))
    return model


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
