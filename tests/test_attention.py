"""Myopic attention against a position-by-position brute force (float64, random shapes)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from myopia.attention import (
    bigram_attention,
    myopic_attention,
    myopic_attention_split,
    split_linear,
)
from myopia.errors import MyopiaError
from myopia.testing import attention_brute_force as brute_force
from myopia.testing import attention_brute_force_past as brute_force_past

SHAPES = [(1, 1, 1, 4), (2, 3, 7, 5), (1, 2, 13, 3), (3, 1, 9, 8), (2, 2, 16, 7)]


def _inputs(shape, seed, n=3):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(n)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("horizon,beta", [(0, 0.0), (1, 0.0), (3, 0.0), (0, 0.3), (1, 0.3), (3, 0.3), (0, 1.0), (2, 1.0)])
@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_gradient_matches_brute_force(shape, horizon, beta, impl):
    q, k, v = _inputs(shape, seed=hash((shape, horizon, beta)) % 1000)
    g = torch.randn(shape, dtype=torch.float64)
    scale = 0.7 / shape[-1] ** 0.5
    out = myopic_attention(q, k, v, horizon=horizon, beta=beta, scale=scale, impl=impl)
    ref_out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad((out * g).sum(), (q, k, v))
    want = torch.autograd.grad(brute_force(q, k, v, g, horizon, beta, scale), (q, k, v))
    for name, a, b in zip("qkv", got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"d{name} differs")


def _path_grads(monkeypatch, path, shape, horizon, beta, split, kv_heads=None, dtype=torch.float64, seed=7):
    """Gradients of fused myopic attention with the backward path pinned, and the brute force's."""
    import myopia.attention as attention

    monkeypatch.setattr(attention, "FORCE_PATH", path)
    B, H, T, D = shape
    kv_shape = (B, kv_heads or H, T, D)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(shape, generator=gen, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(kv_shape, generator=gen, dtype=dtype, requires_grad=True) for _ in range(2))
    g = torch.randn(shape, generator=gen, dtype=dtype)
    scale = D**-0.5
    if split:
        k_w, v_w = k.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
        out = myopic_attention_split(q, k_w, v_w, k, v, horizon=horizon, beta=beta, impl="fused")
        got = torch.autograd.grad((out * g).sum(), (q, k, v, k_w, v_w))
        kf, vf = (t.detach().clone().requires_grad_() for t in (k, v))
        full = torch.autograd.grad(brute_force(q, kf, vf, g, T, 1.0, scale), (kf, vf))
    else:
        out = myopic_attention(q, k, v, horizon=horizon, beta=beta, impl="fused")
        got = torch.autograd.grad((out * g).sum(), (q, k, v))
        full = ()
    monkeypatch.setattr(attention, "FORCE_PATH", None)
    want = torch.autograd.grad(brute_force(q, k, v, g, horizon, beta, scale), (q, k, v)) + full
    return got, want


@pytest.mark.parametrize("path", ["band", "near", "complement"])
@pytest.mark.parametrize("horizon,beta", [(0, 0.0), (1, 0.0), (5, 0.0), (5, 0.3), (16, 0.0), (17, 0.5)])
@pytest.mark.parametrize("split", [False, True])
def test_every_backward_path_matches_brute_force(monkeypatch, path, horizon, beta, split):
    """The three exact backward paths (band loop, blocked band + far triangle, vanilla minus far triangle)."""
    got, want = _path_grads(monkeypatch, path, (1, 2, 37, 4), horizon, beta, split)
    for name, a, b in zip(["q", "k", "v", "k_w", "v_w"], got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"{path}: d{name} differs")


@pytest.mark.parametrize("path", ["band", "near", "complement"])
@pytest.mark.parametrize("split", [False, True])
def test_grouped_query_heads_match_brute_force(monkeypatch, path, split):
    """k/v with fewer heads than q (grouped-query attention) go to the kernels unrepeated; the gradient of a
    shared key/value head is the sum over its query heads."""
    got, want = _path_grads(monkeypatch, path, (2, 4, 21, 6), 3, 0.25, split, kv_heads=2)
    for name, a, b in zip(["q", "k", "v", "k_w", "v_w"], got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"{path}: d{name} differs")


@pytest.mark.parametrize("n,width", [(1, 1), (7, 2), (37, 4), (37, 8), (40, 8), (16, 16)])
@pytest.mark.parametrize("kv_heads", [3, 1])
def test_column_strips_equal_one_kernel_call(monkeypatch, n, width, kv_heads):
    """The CPU kernel's causal backward by column strips (fewer wasted products) returns the one call's
    gradients: the strips tile the triangle exactly (n not a multiple of the width, and n < 2 x width, which
    keeps one call, included)."""
    import myopia.attention as attention

    monkeypatch.setattr(attention, "STRIP_KEYS", width)
    gen = torch.Generator().manual_seed(n + width)
    q, g = (torch.randn(2, 3, n, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(2, kv_heads, n, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    out, lse = attention._kernel_forward("cpu_flash", q, k, v, 0.4)
    want = attention._kernel_backward("cpu_flash", g, q, k, v, out, lse, 0.4)
    got = attention._strip_backward("cpu_flash", g, q, k, v, out, lse, 0.4)
    for name, a, b in zip("qkv", got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"d{name} differs")


def test_column_strips_in_bf16_are_as_accurate_as_one_call(monkeypatch):
    """bf16: the strips' dq is summed in fp32, so against float64 it is no worse than the one call's (which
    rounds once); summing 64 bf16 partials would be."""
    import myopia.attention as attention

    monkeypatch.setattr(attention, "STRIP_KEYS", 4)
    gen = torch.Generator().manual_seed(0)
    q, k, v, g = (torch.randn(1, 2, 256, 16, generator=gen, dtype=torch.float64) for _ in range(4))
    out, lse = attention._kernel_forward("cpu_flash", q, k, v, 0.25)
    ref = attention._kernel_backward("cpu_flash", g, q, k, v, out, lse, 0.25)
    low = [t.bfloat16() for t in (q, k, v, g)]
    out_b, lse_b = attention._kernel_forward("cpu_flash", *low[:3], 0.25)
    one = attention._kernel_backward("cpu_flash", low[3], *low[:3], out_b, lse_b, 0.25)
    strips = attention._strip_backward("cpu_flash", low[3], *low[:3], out_b, lse_b, 0.25)
    for name, a, b, r in zip("qkv", strips, one, ref):
        err_strips, err_one = ((t.double() - r).abs().max() / r.abs().max() for t in (a, b))
        assert err_strips <= 1.05 * err_one, f"d{name}: strips {err_strips:.3g} vs one call {err_one:.3g}"


@pytest.mark.parametrize("path", ["near", "complement"])
@pytest.mark.parametrize("width", [2, 5])
@pytest.mark.parametrize("horizon,beta,split", [(5, 0.0, False), (6, 0.3, True), (16, 0.0, True), (1, 0.5, False)])
def test_paths_with_column_strips_match_brute_force(monkeypatch, path, width, horizon, beta, split):
    """The near and complement paths with every kernel call of theirs split into narrow column strips (the
    CPU default only splits calls of 256 positions or more) against the float64 brute force, also with
    grouped-query heads."""
    import myopia.attention as attention

    monkeypatch.setattr(attention, "STRIP_KEYS", width)
    for shape, kv_heads in (((1, 2, 37, 4), None), ((2, 4, 23, 3), 2)):
        got, want = _path_grads(monkeypatch, path, shape, horizon, beta, split, kv_heads=kv_heads)
        for name, a, b in zip(["q", "k", "v", "k_w", "v_w"], got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"{path}: d{name} differs")


def test_switch_rule_and_its_neighbourhood(monkeypatch):
    """choose_path picks by horizon, length and dtype; at and around each switch point the automatic choice
    matches the brute force, and the choice really changes there (a rule that never switches fails)."""
    import myopia.attention as attention

    T = 512
    chosen = {h: attention.choose_path(T, h, torch.float32) for h in range(T - 1)}
    assert chosen[0] == chosen[attention.BAND_MAX_HORIZON] == "band"
    assert chosen[attention.BAND_MAX_HORIZON + 1] == "near"
    switches = [h for h in range(1, T - 1) if chosen[h] != chosen[h - 1]]
    assert len(switches) == 2 and chosen[T - 2] == "complement"
    # low precision never takes the complement while the far triangle holds more than a quarter of the pairs
    assert all(attention.choose_path(T, h, torch.bfloat16) != "complement" for h in range(T // 2 - 1))
    # the float64 brute force at the switch points of a short sequence (the rule scales with T)
    T = 48
    chosen = [attention.choose_path(T, h, torch.float64) for h in range(T - 1)]
    points = [h for h in range(1, T - 1) if chosen[h] != chosen[h - 1]]
    assert points, chosen
    for h0 in points:
        for h in (h0 - 1, h0, h0 + 1):
            if 0 <= h < T - 1:
                got, want = _path_grads(monkeypatch, None, (1, 2, T, 4), h, 0.0, False, seed=h)
                for a, b in zip(got, want):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"h={h} ({chosen[h]})")


@pytest.mark.parametrize("path", ["band", "near", "complement"])
@pytest.mark.parametrize("strip_keys", [None, 4])
def test_low_precision_paths_track_float64(monkeypatch, path, strip_keys):
    """bf16 inputs: each path's error against the float64 brute force stays within a few bf16 ulps of the
    gradient's scale (the near path accumulates in fp32; the complement only where its rule allows), also with
    the kernel calls split into many column strips."""
    import myopia.attention as attention

    monkeypatch.setattr(attention, "FORCE_PATH", path)
    if strip_keys:
        monkeypatch.setattr(attention, "STRIP_KEYS", strip_keys)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 2, 64, 16, generator=gen, dtype=torch.float64)
    k, v, g = (torch.randn(1, 2, 64, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    low = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    out = myopic_attention(*low, horizon=40, impl="fused")
    got = torch.autograd.grad((out * g.bfloat16()).sum(), low)
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    want = torch.autograd.grad(brute_force(*ref, g, 40, 0.0, 0.25), ref)
    for a, b in zip(got, want):
        assert a.dtype == torch.bfloat16
        err = (a.double() - b).abs().max() / b.abs().max()
        assert err < 0.03, f"{path}: relative error {err:.3g}"


def test_gradients_keep_the_layout_of_k_and_v():
    """Strict myopic dk, dv come back in k's and v's own memory layout (no copy needed downstream), and a
    (B, T, H, D)-strided input, as a model produces it, gets the same exact gradient."""
    shape = (2, 6, 3, 5)  # (B, T, H, D) storage
    q, k, v = (t.detach().transpose(1, 2).requires_grad_() for t in _inputs(shape, seed=2))
    g = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    out = myopic_attention(q, k, v)
    dq, dk, dv = torch.autograd.grad((out * g).sum(), (q, k, v))
    assert dk.stride() == k.stride() and dv.stride() == v.stride()
    want = torch.autograd.grad(brute_force(q, k, v, g, 0, 0.0, 5 ** -0.5), (q, k, v))
    for a, b in zip((dq, dk, dv), want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_myopic_gradient_differs_from_vanilla():
    """Guard against a test that cannot fail: strict myopic dk/dv really differ from vanilla's, dq does not."""
    q, k, v = _inputs((2, 2, 8, 4), seed=0)
    g = torch.randn(2, 2, 8, 4, dtype=torch.float64)
    my = torch.autograd.grad((myopic_attention(q, k, v) * g).sum(), (q, k, v))
    va = torch.autograd.grad((myopic_attention(q, k, v, beta=1.0) * g).sum(), (q, k, v))
    torch.testing.assert_close(my[0], va[0])
    assert (my[1] - va[1]).abs().max() > 1e-3
    assert (my[2] - va[2]).abs().max() > 1e-3


def test_default_scale_and_horizon_beyond_sequence():
    q, k, v = _inputs((1, 2, 6, 4), seed=1)
    g = torch.randn(1, 2, 6, 4, dtype=torch.float64)
    out = myopic_attention(q, k, v, horizon=100)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref)
    a = torch.autograd.grad((out * g).sum(), (q, k, v))
    b = torch.autograd.grad((ref * g).sum(), (q, k, v))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_past_keys_values(shape, impl):
    q, k, v, pk, pv = _inputs(shape, seed=7, n=5)
    g = torch.randn(shape, dtype=torch.float64)
    scale = shape[-1] ** -0.5
    out = myopic_attention(q, k, v, past_k=pk, past_v=pv, impl=impl)
    ref = brute_force_past(q, k, v, pk, pv, g, scale)
    torch.testing.assert_close((out * g).sum(), ref, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad((out * g).sum(), (q, k, v, pk, pv), allow_unused=True)
    want = torch.autograd.grad(ref, (q, k, v), allow_unused=True)
    for name, a, b in zip("qkv", got[:3], want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"d{name} differs")
    for a in got[3:]:  # the past is a constant
        assert a is None or torch.count_nonzero(a) == 0


def test_past_equal_to_live_is_vanilla_forward():
    q, k, v = _inputs((2, 2, 9, 4), seed=3)
    out = myopic_attention(q, k, v, past_k=k, past_v=v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("horizon,beta", [(0, 0.0), (2, 0.0), (0, 0.5), (1, 1.0)])
@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_split_variant(shape, horizon, beta, impl):
    """k_w/v_w get the vanilla gradient, k_x/v_x the myopic one, q the ordinary one."""
    q, k, v = _inputs(shape, seed=11)
    g = torch.randn(shape, dtype=torch.float64)
    k_w, k_x = k.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    v_w, v_x = v.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    out = myopic_attention_split(q, k_w, v_w, k_x, v_x, horizon=horizon, beta=beta, impl=impl)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad((out * g).sum(), (q, k_w, v_w, k_x, v_x))
    scale = shape[-1] ** -0.5
    vanilla = torch.autograd.grad(brute_force(q, k, v, g, shape[-2], 1.0, scale), (q, k, v))
    myopic = torch.autograd.grad(brute_force(q, k, v, g, horizon, beta, scale), (k, v))
    for a, b in zip(got, [vanilla[0], vanilla[1], vanilla[2], myopic[0], myopic[1]]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_split_linear():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    gw, gx = torch.randn(3, 5, 6, dtype=torch.float64), torch.randn(3, 5, 6, dtype=torch.float64)
    y_w, y_x = split_linear(x, w, b)
    torch.testing.assert_close(y_w, F.linear(x, w, b), rtol=0, atol=0)
    torch.testing.assert_close(y_x, y_w, rtol=0, atol=0)
    dx, dw, db = torch.autograd.grad((y_w * gw).sum() + (y_x * gx).sum(), (x, w, b))
    ex = torch.autograd.grad((F.linear(x, w, b) * gx).sum(), x)[0]
    ew, eb = torch.autograd.grad((F.linear(x, w, b) * gw).sum(), (w, b))
    torch.testing.assert_close(dx, ex)
    torch.testing.assert_close(dw, ew)
    torch.testing.assert_close(db, eb)


@pytest.mark.parametrize("shape", SHAPES)
def test_bigram_is_attention_to_zero_past(shape):
    q, k, v = _inputs(shape, seed=5)
    zeros = torch.zeros(shape, dtype=torch.float64)
    out = bigram_attention(q, k, v)
    ref = myopic_attention(q, k, v, past_k=zeros, past_v=zeros, impl="eager")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn(shape, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((out * g).sum(), (q, k, v)), torch.autograd.grad((ref * g).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_float32_fused_matches_eager():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 16, generator=gen, requires_grad=True) for _ in range(3))
    g = torch.randn(2, 4, 64, 16, generator=gen)
    for horizon, beta in itertools.product([0, 4], [0.0, 0.25]):
        a = torch.autograd.grad((myopic_attention(q, k, v, horizon=horizon, beta=beta) * g).sum(), (q, k, v))
        b = torch.autograd.grad(
            (myopic_attention(q, k, v, horizon=horizon, beta=beta, impl="eager") * g).sum(), (q, k, v)
        )
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(horizon=-1), "horizon"),
        (dict(horizon=1.5), "horizon"),
        (dict(beta=1.5), "beta"),
        (dict(impl="cuda-magic"), "impl"),
        (dict(past_k=torch.zeros(1, 1, 3, 2)), "together"),
        (dict(past_k=torch.zeros(1, 1, 3, 2), past_v=torch.zeros(1, 1, 3, 2), horizon=1), "horizon"),
        (dict(past_k=torch.zeros(1, 1, 4, 2), past_v=torch.zeros(1, 1, 4, 2)), "shapes"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    q = torch.zeros(1, 1, 3, 2)
    with pytest.raises(MyopiaError, match=match):
        myopic_attention(q, q, q, **kwargs)


def test_bad_shapes():
    with pytest.raises(MyopiaError, match="batch, heads, seq, head_dim"):
        myopic_attention(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2))


def test_math_fallback_matches_fused_kernel():
    """The O(T^2) fallback used on devices without a fused kernel returns the same output and log-sum-exp."""
    from myopia.attention import _math_attention_lse, causal_attention_lse

    q, k, v = _inputs((2, 3, 7, 5), seed=9)
    out, lse = causal_attention_lse(q, k, v, 0.4)
    out2, lse2 = _math_attention_lse(q, k, v, 0.4)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(lse.double(), lse2.double())


def test_bfloat16_gradients_track_float32():
    """Low precision takes the out-of-place path with fp32 softmax statistics; it must agree with fp32."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 32, 16, generator=gen) for _ in range(3))
    g = torch.randn(1, 2, 32, 16, generator=gen)
    for horizon, beta in [(0, 0.0), (2, 0.5)]:
        ref = [t.clone().requires_grad_() for t in (q, k, v)]
        low = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
        a = torch.autograd.grad((myopic_attention(*ref, horizon=horizon, beta=beta) * g).sum(), ref)
        b = torch.autograd.grad((myopic_attention(*low, horizon=horizon, beta=beta) * g.bfloat16()).sum(), low)
        for x, y in zip(a, b):
            assert y.dtype == torch.bfloat16
            torch.testing.assert_close(y.float(), x, rtol=0.05, atol=0.05)


def test_second_backward_is_refused_clearly():
    q, k, v = _inputs((1, 2, 5, 3), seed=0)
    out = myopic_attention(q, k, v)
    with pytest.raises(MyopiaError, match="one backward"):
        torch.autograd.grad(out.sum(), (q, k, v), create_graph=True)
