"""Model-level proofs: the myopic parameter gradient equals an explicit position-by-position reference."""

import pytest
import torch
import torch.nn.functional as F

from myopia.errors import MyopiaError
from myopia.model import GPT, GPTConfig, apply_rope, flops_per_token, non_embedding_params


def tiny(gradient="vanilla", **kw):
    cfg = dict(vocab_size=11, n_layer=2, n_head=2, d_model=8, seq_len=9, gradient=gradient)
    cfg.update(kw)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfg)).double()
    with torch.no_grad():  # non-trivial LayerNorm parameters so that every path carries gradient
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _ln(x, mod):
    return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)


def reference_loss(model: GPT, idx: torch.Tensor, mode: str) -> torch.Tensor:
    """sum_i loss_i where position i's own computation is live and every earlier position is held constant.

    An independent re-implementation of the forward pass, one query position at a time.
    mode "myopic": earlier positions' keys/values are constants.
    mode "myopic-hidden": earlier positions' attention inputs (LN1 outputs) are constants; W_K, W_V act on
    them live.
    """
    cfg = model.cfg
    B, T = idx.shape
    H, hd, d = cfg.n_head, cfg.head_dim, cfg.d_model
    cos, sin = model.rope_cos[:T].double(), model.rope_sin[:T].double()

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


def model_loss(model, idx):
    logits = model(idx)
    T = idx.shape[1]
    target = idx[:, torch.arange(1, T + 1) % T]
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum")


@pytest.mark.parametrize("mode", ["myopic", "myopic-hidden"])
@pytest.mark.parametrize("impl", ["fused", "eager"])
@pytest.mark.parametrize("T", [1, 5, 9])
def test_parameter_gradient_equals_position_by_position_reference(mode, impl, T):
    model = tiny(mode, attention_impl=impl)
    idx = torch.randint(0, 11, (2, T), generator=torch.Generator().manual_seed(T))
    got = torch.autograd.grad(model_loss(model, idx), list(model.parameters()))
    want = torch.autograd.grad(reference_loss(model, idx, mode), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"{mode}: gradient of {name} differs")


def test_the_two_myopic_references_really_differ_from_each_other_and_from_vanilla():
    model = tiny("vanilla")
    idx = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(1))
    params = list(model.parameters())
    vanilla = torch.autograd.grad(model_loss(model, idx), params)
    strict = torch.autograd.grad(reference_loss(model, idx, "myopic"), params)
    hidden = torch.autograd.grad(reference_loss(model, idx, "myopic-hidden"), params)
    qkv = [n for n, _ in model.named_parameters()].index("blocks.0.attn.qkv.weight")
    assert (vanilla[qkv] - strict[qkv]).abs().max() > 1e-4
    assert (hidden[qkv] - strict[qkv]).abs().max() > 1e-4
    assert (vanilla[qkv] - hidden[qkv]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["myopic", "myopic-hidden"])
def test_no_gradient_reaches_earlier_input_embeddings(mode):
    model = tiny(mode)
    T = 7
    x = torch.randn(2, T, 8, dtype=torch.float64, requires_grad=True)
    logits = model(embeds=x)
    for i in range(T):
        (g,) = torch.autograd.grad(logits[:, i].square().sum(), x, retain_graph=True)
        assert torch.count_nonzero(g[:, :i]) == 0, f"position {i} leaks gradient into earlier embeddings"
        assert g[:, i].abs().max() > 0
        assert torch.count_nonzero(g[:, i + 1 :]) == 0


def test_vanilla_does_reach_earlier_embeddings():
    model = tiny("vanilla")
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model(embeds=x)[:, 4].square().sum(), x)
    assert g[:, :4].abs().max() > 1e-6


@pytest.mark.parametrize("mode", ["myopic", "myopic-hidden"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_equals_vanilla_bitwise(mode, dtype):
    idx = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(2))
    vanilla, myopic = tiny("vanilla").to(dtype), tiny(mode).to(dtype)
    myopic.load_state_dict(vanilla.state_dict())
    assert torch.equal(vanilla(idx), myopic(idx))
    with torch.no_grad():
        assert torch.equal(vanilla(idx), myopic(idx))


def test_gradient_setting_does_not_change_initialisation():
    a = tiny("vanilla").state_dict()
    for mode in ("myopic", "myopic-hidden", "bigram"):
        b = tiny(mode).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_bigram_cannot_read_the_past():
    model = tiny("bigram")
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    y = x.clone()
    y[:, :5] = torch.randn(1, 5, 8, dtype=torch.float64)  # change every earlier position
    torch.testing.assert_close(model(embeds=x)[:, 5], model(embeds=y)[:, 5], rtol=0, atol=0)
    assert not torch.allclose(tiny("vanilla")(embeds=x)[:, 5], tiny("vanilla")(embeds=y)[:, 5])


def test_past_kv_from_the_same_model_reproduces_its_forward():
    model = tiny("vanilla")
    idx = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(3))
    kv = []
    logits = model(idx, kv_out=kv)
    torch.testing.assert_close(model(idx, past_kv=kv), logits, rtol=1e-12, atol=1e-12)


def test_hidden_states_are_collected():
    model = tiny()
    hs = []
    model(torch.zeros(1, 4, dtype=torch.long), hidden_out=hs)
    assert len(hs) == model.cfg.n_layer + 1 and hs[0].shape == (1, 4, 8)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(n_head=3), "divide"),
        (dict(d_model=6, n_head=2), "even"),
        (dict(gradient="myopic-ish"), "gradient"),
        (dict(beta=2.0), "beta"),
        (dict(n_layer=0), "n_layer"),
        (dict(horizon=-2), "horizon"),
    ],
)
def test_config_validation(kw, match):
    cfg = dict(vocab_size=11, n_layer=2, n_head=2, d_model=8, seq_len=9)
    cfg.update(kw)
    with pytest.raises(MyopiaError, match=match):
        GPTConfig(**cfg)


def test_input_errors():
    model = tiny()
    with pytest.raises(MyopiaError, match="exceeds"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(MyopiaError, match="exactly one"):
        model()


def test_parameter_and_flop_counts_by_hand():
    cfg = GPTConfig(vocab_size=100, n_layer=2, n_head=2, d_model=16, seq_len=32)
    model = GPT(cfg)
    # per layer: qkv 3*16*16 + proj 16*16 + mlp 2*4*16*16 + two LayerNorms 2*2*16 = 3136; final LN 32
    assert non_embedding_params(cfg) == 2 * 3136 + 32 == model.num_params(non_embedding=True)
    assert model.num_params() == 2 * 3136 + 32 + 100 * 16
    # 6 (N + d*vocab) + 6 * n_layer * seq_len * d_model
    assert flops_per_token(cfg) == 6 * (6304 + 1600) + 6 * 2 * 32 * 16
