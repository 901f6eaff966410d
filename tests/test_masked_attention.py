"""Masked, score-modified myopic attention against a query-by-query brute force (float64).

The brute force computes each query's output on its own, over the keys the mask allows it, with its own copy of
the past whose gradient is scaled by the myopic weight w_ij (an explicitly detached past for w = 0)."""

import math

import pytest
import torch

import myopia.masked_attention as ma
from myopia.attention import myopic_attention, myopic_attention_split
from myopia.errors import MyopiaError
from myopia.masked_attention import (
    AttentionStructure,
    alibi_slopes,
    document_bigram_attention,
    masked_myopic_attention,
    masked_myopic_attention_split,
)

B, H, T, D = 2, 3, 11, 5


def _t(*shape, seed, grad=True):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=grad)


def _doc_ids():
    return torch.tensor([[0] * 4 + [1] * 5 + [2] * 2, [7] * 6 + [3] * 5])


def _valid():  # row 0 left-padded by 3, row 1 right-padded by 2
    v = torch.ones(B, T, dtype=torch.bool)
    v[0, :3] = False
    v[1, -2:] = False
    return v


def _edge(st, b, h, i, j):
    ok = j <= i
    if st.window is not None:
        ok = ok and i - j < st.window
    if st.doc_ids is not None:
        ok = ok and bool((st.doc_ids[b, j : i + 1] == st.doc_ids[b, i]).all())  # no boundary between j and i
    if st.key_valid is not None:
        ok = ok and bool(st.key_valid[b, j])
    if st.mask is not None:
        ok = ok and bool(st.mask[min(b, st.mask.shape[0] - 1), min(h, st.mask.shape[1] - 1), i, j])
    return ok


def brute_force(q, k, v, g, st, horizon, beta, scale, bias=None, k_full=None, v_full=None):
    """sum_i <g_i, o_i>, o_i from allowed keys only, each key copy k_j^(i) = stop(k_j) + w_ij (k_j - stop(k_j))
    (plus the full-gradient copy k_full_j - stop(k_full_j) for hidden-state myopia)."""
    total = 0.0
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                js = [j for j in range(i + 1) if _edge(st, b, h, i, j)]
                if not js:
                    continue
                ks, vs = [], []
                for j in js:
                    w = 1.0 if i - j <= horizon else beta
                    kd, vd = k[b, h, j].detach(), v[b, h, j].detach()
                    kj, vj = kd + w * (k[b, h, j] - kd), vd + w * (v[b, h, j] - vd)
                    if k_full is not None:
                        kj = kj + (k_full[b, h, j] - k_full[b, h, j].detach())
                        vj = vj + (v_full[b, h, j] - v_full[b, h, j].detach())
                    ks.append(kj)
                    vs.append(vj)
                K, V = torch.stack(ks), torch.stack(vs)
                a = scale * (K @ q[b, h, i])
                s = a if st.softcap is None else st.softcap * torch.tanh(a / st.softcap)
                if st.alibi is not None:
                    s = s - st.alibi[h] * torch.tensor([float(i - j) for j in js], dtype=s.dtype)
                if bias is not None:
                    s = s + bias[min(b, bias.shape[0] - 1), min(h, bias.shape[1] - 1), i, js]
                p = torch.softmax(s, -1)
                total = total + (g[b, h, i] * (p.unsqueeze(-1) * V).sum(0)).sum()
    return total


def _structures():
    dense = torch.rand(B, 1, T, T, generator=torch.Generator().manual_seed(5)) > 0.3
    return {
        "documents": AttentionStructure(doc_ids=_doc_ids()),
        "window": AttentionStructure(window=4),
        "padding": AttentionStructure(key_valid=_valid()),
        "softcap": AttentionStructure(softcap=0.7),
        "alibi": AttentionStructure(alibi=alibi_slopes(H).double()),
        "dense-mask": AttentionStructure(mask=dense),
        "all": AttentionStructure(doc_ids=_doc_ids(), window=3, key_valid=_valid(), softcap=1.3,
                                  alibi=alibi_slopes(H).double()),
    }


SETTINGS = [(0, 0.0), (2, 0.0), (0, 0.4), (1, 0.25), (0, 1.0)]


def _grads(fn, inputs, g):
    out = fn(*inputs)
    return out, torch.autograd.grad((out * g).sum(), inputs, allow_unused=True)


FLASH_OK = ("documents", "window", "alibi")  # the CPU flash path's structures (every query sees itself)


@pytest.mark.parametrize("name", list(_structures()))
@pytest.mark.parametrize("horizon,beta", SETTINGS)
@pytest.mark.parametrize("impl", ["blockwise", "eager", "flash"])
def test_strict_matches_brute_force(name, horizon, beta, impl):
    st = _structures()[name]
    q, k, v = _t(B, H, T, D, seed=1), _t(B, H, T, D, seed=2), _t(B, H, T, D, seed=3)
    g = _t(B, H, T, D, seed=4, grad=False)
    scale = 0.6
    if impl == "flash" and name not in FLASH_OK:
        with pytest.raises(MyopiaError, match="flash path"):
            masked_myopic_attention(q, k, v, st, impl="flash")
        return
    want = torch.autograd.grad(brute_force(q, k, v, g, st, horizon, beta, scale), (q, k, v))
    out, got = _grads(lambda q, k, v: masked_myopic_attention(q, k, v, st, horizon=horizon, beta=beta, scale=scale,
                                                              impl=impl, chunk_size=3), (q, k, v), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    ref = masked_myopic_attention(q, k, v, st, beta=1.0, scale=scale, impl="eager")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["documents", "window", "alibi", "all", "dense-mask"])
@pytest.mark.parametrize("horizon,beta", [(0, 0.0), (1, 0.3), (0, 1.0)])
def test_hidden_state_split_matches_brute_force(name, horizon, beta):
    st = _structures()[name]
    q, kx, vx = _t(B, H, T, D, seed=11), _t(B, H, T, D, seed=12), _t(B, H, T, D, seed=13)
    kw, vw = kx.detach().clone().requires_grad_(), vx.detach().clone().requires_grad_()
    g = _t(B, H, T, D, seed=14, grad=False)
    inputs = (q, kw, vw, kx, vx)
    want = torch.autograd.grad(brute_force(q, kx, vx, g, st, horizon, beta, 0.5, k_full=kw, v_full=vw), inputs)
    for impl in ("blockwise", "eager") + (("flash",) if name in FLASH_OK else ()):
        _, got = _grads(lambda *t: masked_myopic_attention_split(*t, st, horizon=horizon, beta=beta, scale=0.5,
                                                                 impl=impl, chunk_size=4), inputs, g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_learned_bias_gets_its_ordinary_gradient():
    st = AttentionStructure(doc_ids=_doc_ids(), softcap=2.0)
    q, k, v = _t(B, H, T, D, seed=21), _t(B, H, T, D, seed=22), _t(B, H, T, D, seed=23)
    bias = _t(1, H, T, T, seed=24)
    g = _t(B, H, T, D, seed=25, grad=False)
    want = torch.autograd.grad(brute_force(q, k, v, g, st, 0, 0.0, 0.5, bias=bias), (q, k, v, bias))
    _, got = _grads(lambda q, k, v, b: masked_myopic_attention(q, k, v, st, bias=b, scale=0.5, chunk_size=2),
                    (q, k, v, bias), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradients_really_differ_and_nothing_crosses_documents():
    """Guards against a test that cannot fail: vanilla, strict and beta=0.4 gradients differ, and under a
    document mask a loss in document 1 sends exactly nothing into document 0."""
    st = AttentionStructure(doc_ids=_doc_ids())
    q, k, v = _t(B, H, T, D, seed=31), _t(B, H, T, D, seed=32), _t(B, H, T, D, seed=33)
    g = torch.zeros(B, H, T, D, dtype=torch.float64)
    g[0, :, 6] = 1.0  # a loss at position 6 (document 1 of row 0)
    gk = {}
    for beta in (1.0, 0.0, 0.4):
        out = masked_myopic_attention(q, k, v, st, beta=beta)
        gk[beta] = torch.autograd.grad((out * g).sum(), (q, k, v))
    assert gk[1.0][1][0, :, 4:6].abs().max() > 1e-6  # vanilla: earlier positions of document 1 hear it
    assert torch.count_nonzero(gk[0.0][1][0, :, 4:6]) == 0  # strict: they do not
    for beta in gk:
        assert torch.count_nonzero(gk[beta][1][0, :, :4]) == 0 and torch.count_nonzero(gk[beta][2][0, :, :4]) == 0
    assert (gk[0.4][1] - gk[1.0][1]).abs().max() > 1e-6


def test_forward_is_the_same_number_for_every_gradient_setting():
    st = _structures()["all"]
    q, k, v = (_t(B, H, T, D, seed=s) for s in (41, 42, 43))
    outs = [masked_myopic_attention(q, k, v, st, horizon=h, beta=b, chunk_size=4) for h, b in SETTINGS]
    outs.append(masked_myopic_attention_split(q, k, v, k, v, st, chunk_size=4))
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    assert torch.isfinite(outs[0]).all()
    assert torch.count_nonzero(outs[0][0, :, :3]) == 0  # left padding: no key at all -> 0


def test_plain_causal_structure_equals_the_fused_path():
    q, k, v = (_t(B, H, T, D, seed=s) for s in (51, 52, 53))
    g = _t(B, H, T, D, seed=54, grad=False)
    for h, b in SETTINGS:
        o1, g1 = _grads(lambda q, k, v: masked_myopic_attention(q, k, v, horizon=h, beta=b, chunk_size=5), (q, k, v), g)
        o2, g2 = _grads(lambda q, k, v: myopic_attention(q, k, v, horizon=h, beta=b), (q, k, v), g)
        torch.testing.assert_close(o1, o2)
        for a, c in zip(g1, g2):
            torch.testing.assert_close(a, c)
    kw, vw = k.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    _, g1 = _grads(lambda *t: masked_myopic_attention_split(*t, chunk_size=3), (q, kw, vw, k, v), g)
    _, g2 = _grads(lambda *t: myopic_attention_split(*t), (q, kw, vw, k, v), g)
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c)


def test_low_precision_runs_in_fp32_on_the_side():
    st = AttentionStructure(doc_ids=_doc_ids(), softcap=1.0)
    q, k, v = (_t(B, H, T, 8, seed=s) for s in (61, 62, 63))
    g = _t(B, H, T, 8, seed=64, grad=False)
    _, want = _grads(lambda q, k, v: masked_myopic_attention(q, k, v, st, chunk_size=4), (q, k, v), g)
    lo = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    out, got = _grads(lambda q, k, v: masked_myopic_attention(q, k, v, st, chunk_size=4), lo, g.bfloat16())
    assert out.dtype == torch.bfloat16 and all(t.dtype == torch.bfloat16 for t in got)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=0.05, atol=0.05)


def test_flex_path_logic_with_a_reference_forward(monkeypatch):
    """The CUDA flex path's gradient bookkeeping (beta x flex's own gradient + (1 - beta) x the diagonal band
    terms), checked on CPU with the eager masked attention standing in for flex (flex has no CPU backward)."""

    def eager_forward(q, k, v, st, scale):
        out = ma._eager(q, k, v, None, None, None, st, 0, 1.0, scale)
        with torch.no_grad():
            Tq = q.shape[-2]
            s, _ = ma._scores(q.detach(), k.detach(), st, None, 0, Tq, 0, scale)
            lse = s.logsumexp(-1)
        return out, lse

    monkeypatch.setattr(ma, "_flex_forward", eager_forward)
    st = AttentionStructure(doc_ids=_doc_ids(), window=5, key_valid=_valid(), softcap=1.1,
                            alibi=alibi_slopes(H).double())
    q, k, v = (_t(B, H, T, D, seed=s) for s in (71, 72, 73))
    g = _t(B, H, T, D, seed=74, grad=False)
    for h, b in [(0, 0.0), (2, 0.3)]:
        want = torch.autograd.grad(brute_force(q, k, v, g, st, h, b, 0.5), (q, k, v))
        _, got = _grads(lambda q, k, v: masked_myopic_attention(q, k, v, st, horizon=h, beta=b, scale=0.5,
                                                                impl="flex"), (q, k, v), g)
        for a, c in zip(got, want):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_flex_forward_values_on_cpu():
    """Flex itself (forward only on CPU): same values and log-normaliser as the blockwise path."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    st = AttentionStructure(doc_ids=_doc_ids(), window=5, softcap=1.1, alibi=alibi_slopes(H).double())
    q, k, v = (_t(B, H, 16, 8, seed=s, grad=False) for s in (81, 82, 83))
    st = AttentionStructure(doc_ids=torch.tensor([[0] * 7 + [1] * 9, [2] * 16]), window=5, softcap=1.1,
                            alibi=alibi_slopes(H).double())
    try:
        out, _ = ma._flex_forward(q, k, v, st, 0.5)
    except Exception as exc:  # pragma: no cover - depends on the torch build
        pytest.skip(f"flex_attention does not run on this CPU build: {type(exc).__name__}")
    torch.testing.assert_close(out, masked_myopic_attention(q, k, v, st, scale=0.5, impl="blockwise"))


def test_document_bigram():
    doc = _doc_ids()
    q, k, v = (_t(B, H, T, D, seed=s) for s in (91, 92, 93))
    out = document_bigram_attention(q, k, v, doc, scale=0.5)
    b, i = 0, 6  # document 1 of row 0 starts at 4: two zero keys before position 6
    want = v[b, :, i] * torch.sigmoid(0.5 * (q[b, :, i] * k[b, :, i]).sum(-1) - math.log(2)).unsqueeze(-1)
    torch.testing.assert_close(out[b, :, i], want)
    torch.testing.assert_close(out[b, :, 4], v[b, :, 4])  # first of its document: itself only


def test_bad_input_is_refused():
    q = _t(B, H, T, D, seed=1)
    with pytest.raises(MyopiaError, match="doc_ids"):
        masked_myopic_attention(q, q, q, AttentionStructure(doc_ids=torch.zeros(B, T + 1, dtype=torch.long)))
    with pytest.raises(MyopiaError, match="window"):
        masked_myopic_attention(q, q, q, AttentionStructure(window=0))
    with pytest.raises(MyopiaError, match="softcap"):
        masked_myopic_attention(q, q, q, AttentionStructure(softcap=-1.0))
    with pytest.raises(MyopiaError, match="boolean"):
        masked_myopic_attention(q, q, q, AttentionStructure(mask=torch.zeros(1, 1, T, T)))
    with pytest.raises(MyopiaError, match="dense mask"):
        masked_myopic_attention(q, q, q, AttentionStructure(mask=torch.ones(1, 1, T, T, dtype=torch.bool)),
                                impl="flex")


def test_memory_linear_no_seq_by_seq_tensor():
    """At T = 1024 (8 heads) the blockwise path's largest allocation is no bigger than q itself, far below
    one (heads, T, T) score tensor."""
    Tm, Hm, Dm = 1024, 8, 64
    q, k, v = (torch.randn(1, Hm, Tm, Dm, requires_grad=True) for _ in range(3))
    st = AttentionStructure(doc_ids=torch.zeros(1, Tm, dtype=torch.long), softcap=5.0)
    biggest = []

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = masked_myopic_attention(q, k, v, st)
        out.sum().backward()
    for ev in prof.events():
        if ev.self_cpu_memory_usage > 0:  # one allocation's size (parents' totals include their children)
            biggest.append(ev.self_cpu_memory_usage)
    assert biggest and max(biggest) <= Hm * Tm * Dm * 4  # nothing bigger than q (fp32), the gradient buffers
    assert Hm * Tm * Tm * 4 >= 16 * max(biggest)  # the (H, T, T) scores would be 16 times larger


def test_auto_takes_flash_for_short_document_masks_and_blockwise_for_long():
    """The choice never depends on the gradient setting (forward values stay identical across settings)."""
    st = AttentionStructure(doc_ids=_doc_ids())
    q = _t(B, H, T, D, seed=1, grad=False)
    assert ma._flash_eligible(q, st, None)
    long_q = torch.zeros(1, 1, 4096, 4)  # a (4096 x 4096) mask would be bigger than q and than 2^22 numbers
    assert not ma._flash_eligible(long_q, AttentionStructure(doc_ids=torch.zeros(1, 4096, dtype=torch.long)), None)
    assert not ma._flash_eligible(q, AttentionStructure(doc_ids=_doc_ids(), softcap=1.0), None)
    q, k, v = (_t(B, H, T, D, seed=s) for s in (101, 102, 103))
    outs = [masked_myopic_attention(q, k, v, st, horizon=h, beta=b) for h, b in SETTINGS]
    with torch.no_grad():
        outs.append(masked_myopic_attention(q, k, v, st))
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
