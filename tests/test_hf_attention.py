"""myopia.hf.apply on tiny random transformers models against independent position-by-position brute forces.

The brute forces use the *unmodified* model (its own sdpa attention): strict myopia through HF's key/value
cache filled by a no-grad pass (only the last token live), hidden-state myopia by splicing constant attention
inputs in front of the live position. Float64 throughout.
"""

import pytest
import torch

pytest.importorskip("transformers")

from _hf_tiny import (  # noqa: E402
    V,
    assert_grads_close,
    brute_force_loss,
    grads,
    hidden_brute_force_loss,
    model_loss,
    tiny,
    tolerance,
    token_loss,
    window_loss,
)

import myopia.hf as mhf  # noqa: E402
from myopia.errors import MyopiaError  # noqa: E402

ARCHS = ["gpt2", "pythia", "llama", "qwen2", "mistral"]


def _ids(B=2, T=6, seed=1):
    return torch.randint(0, V, (B, T + 1), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_and_gradients_match_brute_force(arch):
    model = tiny(arch)
    x = _ids()
    params = list(model.parameters())
    ref_logits = model(x[:, :-1], use_cache=False).logits
    g_vanilla = grads(model_loss(model, x), params)
    g_strict = grads(brute_force_loss(model, x), params)
    g_hidden = grads(hidden_brute_force_loss(model, x), params)

    mhf.apply(model, "myopic")
    assert mhf.current_gradient(model) == "myopic"
    torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref_logits, rtol=1e-12, atol=1e-12)
    assert_grads_close(grads(model_loss(model, x), params), g_strict, **tolerance(arch))

    mhf.apply(model, "myopic-hidden")
    torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref_logits, rtol=1e-12, atol=1e-12)
    assert_grads_close(grads(model_loss(model, x), params), g_hidden, **tolerance(arch))

    # The three gradients really differ (guards against tests that cannot fail).
    diff = lambda a, b: max((u - w).abs().max().item() for u, w in zip(a, b))  # noqa: E731
    assert diff(g_strict, g_vanilla) > 1e-3 and diff(g_hidden, g_vanilla) > 1e-3 and diff(g_hidden, g_strict) > 1e-4

    mhf.apply(model, "vanilla")
    assert model.config._attn_implementation == "sdpa" and mhf.current_gradient(model) == "vanilla"
    for a, b in zip(grads(model_loss(model, x), params), g_vanilla):
        assert torch.equal(a, b)  # bit for bit


@pytest.mark.parametrize("arch", ["gpt2", "pythia", "llama"])
@pytest.mark.parametrize("gradient", ["myopic", "myopic-hidden"])
def test_no_gradient_reaches_earlier_input_embeddings(arch, gradient):
    model = tiny(arch)
    x = _ids(B=1, T=5)
    emb = model.get_input_embeddings()(x[:, :-1]).detach().requires_grad_()
    logits = model(inputs_embeds=emb, use_cache=False).logits
    i = 3
    vanilla = torch.autograd.grad(token_loss(logits[:, i], x[:, i + 1]), emb)[0]
    assert vanilla[:, :i].abs().max() > 1e-6  # vanilla: earlier positions do hear from position i's loss

    mhf.apply(model, gradient)
    logits = model(inputs_embeds=emb, use_cache=False).logits
    g = torch.autograd.grad(token_loss(logits[:, i], x[:, i + 1]), emb)[0]
    assert torch.count_nonzero(g[:, :i]) == 0  # exactly zero
    assert g[:, i].abs().max() > 1e-6
    assert torch.count_nonzero(g[:, i + 1:]) == 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bigram_matches_zero_past_cache(arch):
    model = tiny(arch)
    x = _ids()
    params = list(model.parameters())
    ref = brute_force_loss(model, x, zero_cache=True)
    want = grads(ref, params)
    mhf.apply(model, "bigram")
    loss = model_loss(model, x)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    assert_grads_close(grads(loss, params), want, **tolerance(arch))


@pytest.mark.parametrize("arch", ["pythia", "llama"])
def test_partial_myopia_one_layer(arch):
    """With one attention layer every path is a single hop, so horizon h is a live window of h earlier positions
    and beta mixes the vanilla and band gradients linearly."""
    model = tiny(arch, n_layer=1)
    x = _ids(T=7)
    params = list(model.parameters())
    T = x.shape[1] - 1
    h = 2
    want_h = grads(sum(window_loss(model, x, i, h) for i in range(T)), params)
    mhf.apply(model, "myopic", horizon=h)
    assert_grads_close(grads(model_loss(model, x), params), want_h, **tolerance(arch))

    beta = 0.3
    mhf.apply(model, "vanilla")
    g_van = grads(model_loss(model, x), params)
    g_band = grads(brute_force_loss(model, x), params)
    mhf.apply(model, "myopic", beta=beta)
    mixed = [beta * a + (1 - beta) * b for a, b in zip(g_van, g_band)]
    assert_grads_close(grads(model_loss(model, x), params), mixed, **tolerance(arch))


def test_save_pretrained_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny("llama")
    x = _ids()
    mhf.apply(model, "myopic-hidden")
    before = model(x[:, :-1], use_cache=False).logits.detach()
    model.save_pretrained(tmp_path)
    cfg = (tmp_path / "config.json").read_text()
    assert "myopia" not in cfg  # the saved model is an ordinary transformers model
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    assert loaded.config._attn_implementation != "myopia"
    torch.testing.assert_close(loaded(x[:, :-1], use_cache=False).logits, before, rtol=0, atol=0)
    mhf.apply(loaded, "myopic")
    torch.testing.assert_close(loaded(x[:, :-1], use_cache=False).logits, before, rtol=1e-12, atol=1e-12)


def test_padding_trains_in_the_masked_path_and_matches_without_gradient():
    """Padded batches train (exactness: tests/test_hf_masked.py); without a gradient the values are the same."""
    model = tiny("llama")
    x = _ids()[:, :-1]
    mask = torch.ones_like(x)
    mask[0, :2] = 0  # left padding
    ref = model(x, attention_mask=mask, use_cache=False).logits
    mhf.apply(model, "myopic")
    with torch.no_grad():
        torch.testing.assert_close(model(x, attention_mask=mask, use_cache=False).logits, ref)
    out = model(x, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()])
    # an all-ones mask is an unpadded batch
    out = model(x, attention_mask=torch.ones_like(x), use_cache=False).logits
    torch.testing.assert_close(out, model(x, use_cache=False).logits)


def test_generation_with_cache_still_works_and_training_with_cache_is_refused():
    model = tiny("gpt2")
    x = _ids()[:, :4]
    want = model.generate(x, max_new_tokens=3, do_sample=False, pad_token_id=0)
    mhf.apply(model, "myopic-hidden")
    got = model.generate(x, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(got, want)
    with torch.no_grad():
        cache = model(x[:, :2], use_cache=True).past_key_values
    with pytest.raises(MyopiaError, match="use_cache=False"):
        model(x[:, 2:], cache=cache, use_cache=True)


def test_sequences_longer_than_a_sliding_window_train():
    model = tiny("mistral")  # window 16; exactness with a short window: tests/test_hf_masked.py
    x = torch.randint(0, V, (1, 21))
    ref = model(x[:, :-1], use_cache=False).logits
    mhf.apply(model, "myopic")
    torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref)


def test_attention_dropout_is_refused_in_training():
    model = tiny("gpt2")
    model.train()
    for m in model.modules():
        if hasattr(m, "attn_dropout"):
            m.attn_dropout.p = 0.1
    mhf.apply(model, "myopic")
    with pytest.raises(MyopiaError, match="dropout"):
        model(_ids()[:, :-1], use_cache=False)


def test_bad_arguments():
    model = tiny("gpt2")
    with pytest.raises(MyopiaError, match="gradient"):
        mhf.apply(model, "sideways")
    with pytest.raises(MyopiaError, match="beta"):
        mhf.apply(model, "myopic", beta=2.0)
    with pytest.raises(MyopiaError, match="horizon"):
        mhf.apply(model, "myopic", horizon=-1)
    with pytest.raises(MyopiaError, match="PreTrainedModel"):
        mhf.apply(torch.nn.Linear(2, 2), "myopic")


def test_bf16_autocast_runs_fused_path():
    model = tiny("llama", dtype=torch.float32)
    x = _ids(T=16)
    params = list(model.parameters())
    g32 = grads(model_loss(model, x), params)
    for gradient in ("myopic", "myopic-hidden"):
        mhf.apply(model, gradient)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model_loss(model, x)
        g = grads(loss, params)
        assert all(torch.isfinite(t).all() for t in g)
        assert sum((a.float() - b).norm() for a, b in zip(g, g32)) > 0  # really myopic (differs from vanilla)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_models_loaded_with_eager_attention(arch):
    """Without a gradient the myopia function runs ordinary attention on its (sdpa) masks: same logits as the
    model's eager attention (Llama's eager softmax runs in float32, hence its tolerance); vanilla restores eager."""
    model = tiny(arch)
    model.set_attn_implementation("eager")
    x = _ids()
    ref = model(x[:, :-1], use_cache=False).logits
    g_ref = grads(model_loss(model, x), list(model.parameters()))
    mhf.apply(model, "myopic-hidden")
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref, **tolerance(arch))
    torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref, **tolerance(arch))
    mhf.apply(model, "vanilla")
    assert model.config._attn_implementation == "eager"
    for a, b in zip(grads(model_loss(model, x), list(model.parameters())), g_ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("gradient", ["myopic", "myopic-hidden"])
def test_a_peft_lora_model_trains_its_adapters_with_the_exact_myopic_gradient(gradient):
    """apply() takes a PEFT wrapper as it is: the LoRA adapters (inside the base model's q/v projections) get the
    brute-force gradient of the setting, and they really differ from vanilla's."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny("gpt2"), peft.LoraConfig(r=4, target_modules=["c_attn"], lora_dropout=0.0,
                                                              init_lora_weights=False, fan_in_fan_out=True)).eval()
    x = _ids()
    adapters = [p for p in model.parameters() if p.requires_grad]
    assert adapters and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    reference = brute_force_loss if gradient == "myopic" else hidden_brute_force_loss
    want, vanilla = grads(reference(model, x), adapters), grads(model_loss(model, x), adapters)
    assert mhf.apply(model, gradient) is model and mhf.current_gradient(model) == gradient
    assert_grads_close(grads(model_loss(model, x), adapters), want, **tolerance("gpt2"))
    assert max((a - b).abs().max().item() for a, b in zip(want, vanilla)) > 1e-4
    mhf.apply(model, "vanilla")
    assert mhf.current_gradient(model) == "vanilla"
