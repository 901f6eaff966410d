"""Model-level proofs: the myopic parameter gradient equals an explicit position-by-position reference."""

import pytest
import torch
import torch.nn.functional as F

from myopia.errors import MyopiaError
from myopia.model import GPT, GPTConfig, flops_per_token, non_embedding_params
from myopia.testing import gpt_brute_force_loss as reference_loss


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
