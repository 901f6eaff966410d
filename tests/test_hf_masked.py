"""myopia.hf.apply on masked attention variants, against independent brute forces with the unmodified model.

Gemma 2 (logit soft-capping, alternating sliding-window layers) and Mistral with a window shorter than the
sequence: the position-by-position brute forces of ``_hf_tiny`` (a no-grad key/value cache for strict myopia,
spliced constant attention inputs for hidden-state myopia) with the model's own attention. Padded and packed
batches: each document (row without its padding, piece of the packed row) run on its own through the same brute
forces; a masked batch must give exactly the sum of those gradients. Float64 throughout.
"""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from _hf_tiny import (  # noqa: E402
    V,
    assert_grads_close,
    brute_force_loss,
    grads,
    hidden_brute_force_loss,
    model_loss,
    tiny,
    window_loss,
)

import myopia.hf as mhf  # noqa: E402
from myopia.arms import GradientSetting  # noqa: E402
from myopia.errors import MyopiaError  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture(autouse=True)
def float64_throughout(monkeypatch):
    """Llama-family RMSNorm and Gemma 2's eager attention (its reference: sdpa cannot soft-cap) compute in
    float32 even in a float64 model, which would limit every comparison to float32 rounding. Here they run the
    same formulas in the model's dtype, so brute force and myopic path agree to float64 rounding."""
    import transformers.models.llama.modeling_llama as llama
    import transformers.models.mistral.modeling_mistral as mistral

    mod = pytest.importorskip("transformers.models.gemma2.modeling_gemma2")

    def rms(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def gemma_rms(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)

    monkeypatch.setattr(llama.LlamaRMSNorm, "forward", rms)
    monkeypatch.setattr(mistral.MistralRMSNorm, "forward", rms)
    monkeypatch.setattr(mod.Gemma2RMSNorm, "forward", gemma_rms)

    def eager(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None, **kwargs):
        key, value = mod.repeat_kv(key, module.num_key_value_groups), mod.repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, key.transpose(2, 3)) * scaling
        if softcap is not None:
            w = torch.tanh(w / softcap) * softcap
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, value).transpose(1, 2).contiguous(), w

    monkeypatch.setattr(mod, "eager_attention_forward", eager)


LOGIT_TOL = dict(rtol=1e-10, atol=1e-12)
GRAD_TOL = {"gemma2": TOL, "mistral": TOL}


def tiny_masked(arch: str, *, n_layer: int = 2, seed: int = 0):
    """Tiny float64 Gemma 2 (soft-cap 1.5, window 3 on even layers) or Mistral (window 3)."""
    import transformers as tr

    tr.utils.logging.set_verbosity_error()
    torch.manual_seed(seed)
    if arch == "gemma2":
        cfg = tr.Gemma2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layer,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=3,
                              attn_logit_softcapping=1.5, final_logit_softcapping=8.0, query_pre_attn_scalar=8,
                              layer_types=["sliding_attention", "full_attention"][:n_layer] * (n_layer // 2 or 1),
                              max_position_embeddings=32, attention_dropout=0.0,
                              bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = tr.Gemma2ForCausalLM(cfg)
    elif arch == "mistral":
        cfg = tr.MistralConfig(vocab_size=V, hidden_size=32, num_hidden_layers=n_layer, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                               sliding_window=3, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = tr.MistralForCausalLM(cfg)
    else:
        raise ValueError(arch)
    model = model.double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif arch == "gemma2" and p.dim() == 2 and "embed" not in name:
                p.mul_(4.0)  # larger scores, so Gemma 2's soft-cap really bends them
    return model


def _ids(B=2, T=8, seed=1):
    return torch.randint(1, V, (B, T + 1), generator=torch.Generator().manual_seed(seed))


def _diff(a, b):
    return max((u - w).abs().max().item() for u, w in zip(a, b))


@pytest.mark.parametrize("arch", ["gemma2", "mistral"])
def test_windows_and_softcap_match_brute_force(arch):
    model = tiny_masked(arch)
    x = _ids()  # 8 positions > window 3
    params = list(model.parameters())
    ref_logits = model(x[:, :-1], use_cache=False).logits
    g_vanilla = grads(model_loss(model, x), params)
    g_strict = grads(brute_force_loss(model, x), params)
    g_hidden = grads(hidden_brute_force_loss(model, x), params)
    original = model.config._attn_implementation

    for gradient, want in (("myopic", g_strict), ("myopic-hidden", g_hidden)):
        mhf.apply(model, gradient)
        torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref_logits, **LOGIT_TOL)
        assert_grads_close(grads(model_loss(model, x), params), want, **GRAD_TOL[arch])
        with torch.no_grad():  # evaluation: same values (soft-capped layers run the masked forward)
            torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref_logits, **LOGIT_TOL)
    assert _diff(g_strict, g_vanilla) > 1e-3 and _diff(g_hidden, g_vanilla) > 1e-3 and _diff(g_hidden, g_strict) > 1e-4

    mhf.apply(model, "vanilla")
    assert model.config._attn_implementation == original
    for a, b in zip(grads(model_loss(model, x), params), g_vanilla):
        assert torch.equal(a, b)  # the model's own attention again, bit for bit


def test_gemma2_softcap_really_matters():
    """Guards the test above: the soft-cap bends the scores of this tiny Gemma 2 (its logits change without it)."""
    model = tiny_masked("gemma2")
    x = _ids()[:, :-1]
    ref = model(x, use_cache=False).logits
    model.config.attn_logit_softcapping = None
    for layer in model.model.layers:
        layer.self_attn.attn_logit_softcapping = None
    assert (model(x, use_cache=False).logits - ref).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["gemma2", "mistral"])
def test_partial_myopia_one_layer_window(arch):
    """One layer: horizon h gives a live window of h earlier positions; beta mixes vanilla and band linearly."""
    model = tiny_masked(arch, n_layer=1)
    x = _ids(T=7)
    params = list(model.parameters())
    T = x.shape[1] - 1
    want_h = grads(sum(window_loss(model, x, i, 2) for i in range(T)), params)
    mhf.apply(model, "myopic", horizon=2)
    assert_grads_close(grads(model_loss(model, x), params), want_h, **GRAD_TOL[arch])
    beta = 0.3
    mhf.apply(model, "vanilla")
    g_van = grads(model_loss(model, x), params)
    g_band = grads(brute_force_loss(model, x), params)
    mhf.apply(model, "myopic", beta=beta)
    mixed = [beta * a + (1 - beta) * b for a, b in zip(g_van, g_band)]
    assert_grads_close(grads(model_loss(model, x), params), mixed, **GRAD_TOL[arch])


def _per_document_reference(model, docs, gradient):
    """Gradient of the summed loss of each document run on its own through the unmodified model's brute force."""
    params = list(model.parameters())
    total = 0.0
    for d in docs:
        d = d.unsqueeze(0)
        total = total + (brute_force_loss(model, d) if gradient == "myopic" else hidden_brute_force_loss(model, d))
    return grads(total, params)


def _masked_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("gradient", ["myopic", "myopic-hidden"])
def test_padded_batch_equals_rows_alone(arch, gradient):
    model = tiny(arch)
    params = list(model.parameters())
    T = 7
    short, full = _ids(B=1, T=4, seed=3)[0], _ids(B=1, T=T, seed=4)[0]
    pad = T - 4
    x = torch.zeros(2, T, dtype=torch.long)
    y = torch.full((2, T), -100)
    x[0, pad:], y[0, pad:] = short[:-1], short[1:]  # left padding
    x[1], y[1] = full[:-1], full[1:]
    mask = (y != -100).long()
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    ref_logits = model(x, attention_mask=mask, position_ids=pos, use_cache=False).logits
    want = _per_document_reference(model, [short, full], gradient)

    mhf.apply(model, gradient)
    logits = model(x, attention_mask=mask, position_ids=pos, use_cache=False).logits
    valid = mask.bool()
    torch.testing.assert_close(logits[valid], ref_logits[valid], rtol=1e-10, atol=1e-12)
    assert_grads_close(grads(_masked_loss(logits, y), params), want, **TOL)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("gradient", ["myopic", "myopic-hidden"])
def test_packed_batch_equals_documents_alone(arch, gradient):
    """Documents packed into one row, position_ids restarting at each (what transformers' packed-sequence
    detection turns into a block-diagonal mask)."""
    model = tiny(arch)
    params = list(model.parameters())
    docs = [_ids(B=1, T=n, seed=10 + n)[0] for n in (3, 5, 2)]
    x = torch.cat([d[:-1] for d in docs]).unsqueeze(0)
    y = torch.cat([d[1:] for d in docs]).unsqueeze(0)
    pos = torch.cat([torch.arange(len(d) - 1) for d in docs]).unsqueeze(0)
    ref_logits = torch.cat([model(d[:-1].unsqueeze(0), use_cache=False).logits for d in docs], dim=1)
    want = _per_document_reference(model, docs, gradient)
    vanilla_packed = grads(_masked_loss(model(x, position_ids=pos, use_cache=False).logits, y), params)

    mhf.apply(model, gradient)
    logits = model(x, position_ids=pos, use_cache=False).logits
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-12)
    got = grads(_masked_loss(logits, y), params)
    assert_grads_close(got, want, **TOL)
    assert _diff(got, vanilla_packed) > 1e-4  # really myopic inside each document


def test_position_bias_alibi_through_the_interface():
    """ALiBi as transformers passes an additive ``position_bias`` to the attention interface: the registered
    function matches the query-by-query brute force (no decoder-only architecture passes one today)."""
    from test_masked_attention import brute_force

    from myopia.hf.attention import MyopiaSettings, myopia_attention_forward
    from myopia.masked_attention import AttentionStructure, alibi_slopes

    B, H, T, D = 2, 4, 9, 6
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, T, D, generator=gen, dtype=torch.float64)
    slopes = alibi_slopes(H).double()
    i, j = torch.arange(T).unsqueeze(1), torch.arange(T).unsqueeze(0)
    bias = (-slopes[:, None, None] * (i - j)).unsqueeze(0)  # (1, H, T, T)
    module = torch.nn.Module()
    module.layer_idx, module._myopia, module._myopia_phase = 0, MyopiaSettings(GradientSetting("myopic")), None
    out, _ = myopia_attention_forward(module, q, k, v, None, scaling=0.5, position_bias=bias)
    got = torch.autograd.grad((out.transpose(1, 2) * g).sum(), (q, k, v))
    st = AttentionStructure(alibi=slopes)
    want = torch.autograd.grad(brute_force(q, k, v, g, st, 0, 0.0, 0.5), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", ["bloom", "mpt"])
def test_families_outside_the_attention_interface_are_refused_in_one_line(family):
    import transformers as tr

    tr.utils.logging.set_verbosity_error()
    build = {
        "bloom": lambda: tr.BloomForCausalLM(tr.BloomConfig(vocab_size=V, hidden_size=32, n_layer=1, n_head=4)),
        "mpt": lambda: tr.MptForCausalLM(tr.MptConfig(vocab_size=V, d_model=32, n_layers=1, n_heads=4,
                                                      max_seq_len=16)),
    }[family]
    with pytest.raises(MyopiaError) as exc:
        mhf.apply(build(), "myopic")
    msg = str(exc.value)
    assert "\n" not in msg and family in msg.lower() and "AttentionInterface" in msg


def _falcon_dispatches_through_the_interface() -> bool:
    """Whether the installed transformers' Falcon attention calls the registered attention functions (recent releases;
    earlier releases compute attention inside the layer)."""
    import inspect

    from transformers.models.falcon import modeling_falcon

    return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(modeling_falcon.FalconAttention.forward)


@pytest.mark.parametrize("arch", ["falcon", "falcon-alibi"])
def test_falcon_is_exact_where_transformers_dispatches_it_and_refused_in_one_line_elsewhere(arch):
    """Falcon (multi-query rotary, and ALiBi through the additive mask with grouped kv heads): where the installed
    transformers routes its attention through the interface, both myopic gradients equal the float64 brute force;
    where it does not, apply refuses in one line. Either way no silently wrong gradient."""
    model = tiny(arch)
    x = _ids(B=2, T=6, seed=3)
    if not _falcon_dispatches_through_the_interface():
        with pytest.raises(MyopiaError) as exc:
            mhf.apply(model, "myopic")
        assert "\n" not in str(exc.value) and "AttentionInterface" in str(exc.value)
        return
    params = list(model.parameters())
    ref_logits = model(x[:, :-1], use_cache=False).logits
    g_vanilla = grads(model_loss(model, x), params)
    g_strict = grads(brute_force_loss(model, x), params)
    g_hidden = grads(hidden_brute_force_loss(model, x), params)
    for gradient, want in (("myopic", g_strict), ("myopic-hidden", g_hidden)):
        mhf.apply(model, gradient)
        torch.testing.assert_close(model(x[:, :-1], use_cache=False).logits, ref_logits, rtol=1e-12, atol=1e-12)
        assert_grads_close(grads(model_loss(model, x), params), want, **TOL)
    diff = max((a - b).abs().max().item() for a, b in zip(g_strict, g_vanilla))
    assert diff > 1e-3  # the myopic gradient really differs from vanilla's (the test can fail)


def test_a_causal_mask_passed_with_is_causal_false_trains_and_a_bidirectional_one_is_refused():
    """Some transformers releases pass GPT-2's causal boolean mask with is_causal=False: the mask decides."""
    from myopia.hf.attention import MyopiaSettings, myopia_attention_forward

    from myopia.arms import GradientSetting

    q, k, v = (torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    module = torch.nn.Module()
    module.layer_idx, module._myopia, module._myopia_phase = 0, MyopiaSettings(GradientSetting("myopic")), None
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]
    want, _ = myopia_attention_forward(module, q, k, v, None)
    got, _ = myopia_attention_forward(module, q, k, v, causal, is_causal=False)
    g = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad((got * g).sum(), (q, k, v)),
                               torch.autograd.grad((want * g).sum(), (q, k, v)), rtol=1e-12, atol=1e-12)
    for mask in (None, torch.ones(1, 1, 5, 5, dtype=torch.bool)):
        with pytest.raises(MyopiaError, match="non-causal"):
            myopia_attention_forward(module, q, k, v, mask, is_causal=False)


def test_attention_sinks_and_dropout_stay_refused():
    from myopia.hf.attention import MyopiaSettings, myopia_attention_forward

    q = torch.randn(1, 2, 4, 4, requires_grad=True)
    module = torch.nn.Module()
    module.layer_idx, module._myopia, module._myopia_phase = 0, MyopiaSettings(GradientSetting("myopic")), None
    with pytest.raises(MyopiaError, match="sinks"):
        myopia_attention_forward(module, q, q, q, None, s_aux=torch.zeros(2))
    with pytest.raises(MyopiaError, match="dropout"):
        myopia_attention_forward(module, q, q, q, None, dropout=0.1)


def test_hf_wrapper_document_ids_become_a_packed_batch():
    """HFCausalLM(x, doc_ids=...) (what `myopia finetune` trains with under --document-mask): positions restart
    at each document, transformers builds the block-diagonal mask, and the myopic gradient is each document's."""
    from myopia.hf.model import HFCausalLM

    model = tiny("llama")
    params = list(model.parameters())
    docs = [_ids(B=1, T=n, seed=20 + n)[0] for n in (4, 3)]
    x = torch.cat([d[:-1] for d in docs]).unsqueeze(0)
    y = torch.cat([d[1:] for d in docs]).unsqueeze(0)
    doc_ids = torch.tensor([[0] * 4 + [1] * 3])
    ref_logits = torch.cat([model(d[:-1].unsqueeze(0), use_cache=False).logits for d in docs], dim=1)
    want = _per_document_reference(model, docs, "myopic")
    wrapped = HFCausalLM(model)
    wrapped.set_gradient("myopic", 0.0, 0)
    logits = wrapped(x, doc_ids=doc_ids)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-12)
    assert_grads_close(grads(_masked_loss(logits, y), params), want, **TOL)


def test_a_transformers_older_than_the_floor_is_refused_in_one_line(monkeypatch):
    import transformers

    from myopia.hf.attention import TRANSFORMERS_FLOOR

    monkeypatch.setattr(transformers, "__version__", "5.23.0")
    assert TRANSFORMERS_FLOOR > (5, 23)
    with pytest.raises(MyopiaError, match="needs transformers >= 5.24") as exc:
        mhf.apply(tiny("gpt2"), "myopic")
    assert "\n" not in str(exc.value)
