"""Scaling-law fits, the compute multiplier and FLOP counting, against planted truths and hand counts."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from myopia.errors import MyopiaError
from myopia.model import GPT, GPTConfig, flops_per_token, non_embedding_params
from myopia.scaling import (
    PowerLawFit,
    compute_multiplier,
    fit_chinchilla,
    fit_power_law,
    frontier_mask,
    multiplier_curve,
    multiplier_interval,
)

E0, A0, ALPHA0 = 1.7, 2.0e3, 0.25  # planted: L(C) = 1.7 + 2000 C^-0.25 (C in FLOPs, 1e12 .. 1e18)


def planted(c):
    return E0 + A0 * np.asarray(c, dtype=float) ** -ALPHA0


def noisy_points(n=24, noise=0.003, seed=0):
    rng = np.random.default_rng(seed)
    c = np.logspace(12, 18, n)
    return c, planted(c) * np.exp(rng.normal(0.0, noise, n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_planted_parameters_from_noisy_points(seed):
    """0.05% noise: E, A, alpha within 3%. (A in raw FLOP units moves by ln(C) * d(alpha): ill-conditioned.)"""
    c, loss = noisy_points(noise=0.0005, seed=seed)
    fit = fit_power_law(c, loss, bootstrap=0)
    assert fit.E == pytest.approx(E0, rel=0.03)
    assert fit.A == pytest.approx(A0, rel=0.03)
    assert fit.alpha == pytest.approx(ALPHA0, rel=0.03)


def test_fit_with_realistic_noise():
    """0.3% noise (seed-to-seed noise of small LMs): E and alpha within 3%, the reducible loss at 1e15 FLOPs
    within 3%; A itself only within 20% because it trades off against alpha over ln(1e15) = 35 e-folds."""
    c, loss = noisy_points(noise=0.003, seed=5)
    fit = fit_power_law(c, loss, bootstrap=0)
    assert fit.E == pytest.approx(E0, rel=0.03)
    assert fit.alpha == pytest.approx(ALPHA0, rel=0.03)
    assert fit.predict(1e15) - fit.E == pytest.approx(planted(1e15) - E0, rel=0.03)
    assert fit.A == pytest.approx(A0, rel=0.2)


def test_fit_is_robust_to_an_outlier():
    c, loss = noisy_points(seed=1)
    loss[5] *= 1.25  # one diverged run
    fit = fit_power_law(c, loss, bootstrap=0)
    assert fit.E == pytest.approx(E0, rel=0.03)
    assert fit.alpha == pytest.approx(ALPHA0, rel=0.03)
    # plain least squares in log space would be pulled off by the outlier; the Huber fit is not
    assert abs(fit.predict(c[5]) - planted(c[5])) < 0.01 * planted(c[5])


def test_bootstrap_intervals_bracket_the_estimate_and_the_truth():
    c, loss = noisy_points(n=16, noise=0.005, seed=2)
    fit = fit_power_law(c, loss, bootstrap=60, seed=0)
    assert fit.samples.shape == (60, 3)
    for name, truth in (("E", E0), ("A", A0), ("alpha", ALPHA0)):
        lo, hi = fit.intervals[name]
        assert lo <= getattr(fit, name) <= hi
        assert lo < hi
        assert lo <= truth <= hi, (name, lo, truth, hi)
    lo, hi = fit.band(c)
    assert np.all(lo <= hi)


def test_inverse_inverts_predict():
    fit = PowerLawFit(E=1.3, A=57.0, alpha=0.31, n_points=5)
    c = np.logspace(8, 20, 13)
    np.testing.assert_allclose(fit.inverse(fit.predict(c)), c, rtol=1e-10)
    for loss in (1.31, 2.0, 5.5):
        assert fit.predict(fit.inverse(loss)) == pytest.approx(loss, rel=1e-12)
    assert isinstance(fit.inverse(2.0), float)
    with pytest.raises(MyopiaError, match="irreducible loss E"):
        fit.inverse(1.3)
    with pytest.raises(MyopiaError, match="irreducible"):
        fit.inverse([2.0, 1.0])


def test_compute_multiplier_recovers_a_planted_multiplier():
    c, loss = noisy_points(seed=3)
    vanilla = fit_power_law(c, loss, bootstrap=30)
    k0 = 0.3  # a myopic model trained with C is as good as vanilla trained with 0.3 C
    c_m = np.array([1e13, 1e14, 1e15, 1e16])
    myopic_loss = planted(k0 * c_m)
    k = compute_multiplier(vanilla, c_m, myopic_loss)
    np.testing.assert_allclose(k, k0, rtol=0.06)
    k_scalar = compute_multiplier(vanilla, 1e15, float(planted(k0 * 1e15)))
    assert isinstance(k_scalar, float) and k_scalar == pytest.approx(k0, rel=0.06)
    lo, hi = multiplier_interval(vanilla, 1e15, float(planted(k0 * 1e15)))
    assert lo <= k_scalar <= hi
    # exact on the fitted curve itself
    assert compute_multiplier(vanilla, 2e14, vanilla.predict(5e13)) == pytest.approx(0.25, rel=1e-9)
    # a myopic model better than vanilla: k > 1
    assert compute_multiplier(vanilla, 1e14, vanilla.predict(3e14)) == pytest.approx(3.0, rel=1e-9)


def test_multiplier_curve_is_constant_for_a_shifted_curve():
    vanilla = PowerLawFit(E=1.5, A=300.0, alpha=0.2, n_points=6)
    k0 = 0.4  # L_m(C) = L_v(k0 C) = E + (A k0^-alpha) C^-alpha
    myopic = PowerLawFit(E=1.5, A=300.0 * k0 ** -0.2, alpha=0.2, n_points=6)
    curve = multiplier_curve(vanilla, myopic, np.logspace(10, 20, 7))
    np.testing.assert_allclose(curve["k"], k0, rtol=1e-9)
    # a myopic asymptote above vanilla's: k falls towards 0 with compute
    worse = PowerLawFit(E=1.6, A=300.0, alpha=0.2, n_points=6)
    k = multiplier_curve(vanilla, worse, np.logspace(10, 20, 7))["k"]
    assert np.all(np.diff(k) < 0) and k[-1] < 0.05


def test_fit_input_errors_are_clear():
    with pytest.raises(MyopiaError, match="at least 3 points"):
        fit_power_law([1e12, 1e13], [3.0, 2.5])
    with pytest.raises(MyopiaError, match="positive"):
        fit_power_law([1e12, -1e13, 1e14], [3.0, 2.5, 2.0])
    with pytest.raises(MyopiaError, match="NaN"):
        fit_power_law([1e12, 1e13, 1e14], [3.0, float("nan"), 2.0])


def test_frontier_mask_keeps_compute_efficient_points():
    c = [1, 2, 3, 4, 5]
    loss = [3.0, 2.5, 2.7, 2.4, 2.4]
    assert frontier_mask(c, loss).tolist() == [True, True, False, True, False]


def test_chinchilla_fit_recovers_planted_exponents():
    rng = np.random.default_rng(4)
    n = np.repeat(np.logspace(5, 8, 5), 5)
    d = np.tile(np.logspace(7, 10, 5), 5)
    truth = dict(E=1.7, A=400.0, a=0.34, B=1000.0, b=0.28)
    loss = (truth["E"] + truth["A"] / n ** truth["a"] + truth["B"] / d ** truth["b"]) * np.exp(
        rng.normal(0, 0.002, len(n)))
    fit = fit_chinchilla(n, d, loss, bootstrap=0)
    assert fit.a == pytest.approx(truth["a"], rel=0.06)
    assert fit.b == pytest.approx(truth["b"], rel=0.06)
    assert fit.E == pytest.approx(truth["E"], rel=0.06)
    np.testing.assert_allclose(fit.predict(n, d), loss, rtol=0.01)
    with pytest.raises(MyopiaError, match="3 model sizes and 3 token budgets"):
        fit_chinchilla([1e5, 1e6] * 3, np.logspace(7, 9, 6), np.linspace(3, 2, 6))


# ------------------------------------------------------------------------------------------------------------
# FLOPs
# ------------------------------------------------------------------------------------------------------------


def test_flops_per_token_matches_a_hand_count():
    """Hand count for L=2, d=16, T=8, V=50, MLP ratio 4, training = forward + backward = 3 x forward.

    Matmuls per token forward: per layer qkv 2*d*3d + proj 2*d*d + MLP 2*(2*d*4d) = 2*12*d^2 = 6144, so 12288
    for 2 layers, plus the tied unembedding 2*d*V = 1600. Causal attention: query i reads i keys (1..T), so per
    token on average (T+1)/2 keys, 2*d FLOPs each for q.k and again for p.v: 2*2*d*(T+1)/2 = 288 per layer.
    flops_per_token uses 6*N (N including LayerNorm gains/biases: 6*(4d*L + 2d) = 960) and 6*L*T*d for
    attention (T instead of T+1: 6*L*d = 192 less than the exact causal count).
    """
    L, d, T, V = 2, 16, 8, 50
    cfg = GPTConfig(vocab_size=V, n_layer=L, n_head=2, d_model=d, seq_len=T)
    matmul_forward = L * 2 * 12 * d * d + 2 * d * V
    assert matmul_forward == 13888
    attention_forward = L * 2 * 2 * d * (T + 1) / 2
    assert attention_forward == 576
    hand = 3 * (matmul_forward + attention_forward)
    layer_norm_params = 4 * d * L + 2 * d
    assert flops_per_token(cfg) == hand + 6 * layer_norm_params - 6 * L * d
    assert abs(flops_per_token(cfg) - hand) / hand < 0.02
    # and the parameter count behind it
    model = GPT(cfg)
    assert non_embedding_params(cfg) == model.num_params(non_embedding=True)
    assert non_embedding_params(cfg) == L * 12 * d * d + layer_norm_params


def test_matmul_flops_agree_with_torch_flop_counter():
    """torch's FLOP counter (matmuls only; it does not see the fused attention kernel) on a training step."""
    from torch.utils.flop_counter import FlopCounterMode

    L, d, T, V, B = 2, 16, 8, 50, 3
    cfg = GPTConfig(vocab_size=V, n_layer=L, n_head=2, d_model=d, seq_len=T)
    model = GPT(cfg)
    x = torch.randint(0, V, (B, T))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    counted = counter.get_total_flops() / (B * T)
    attention = 6 * L * T * d
    layer_norm = 6 * (4 * d * L + 2 * d)
    assert counted == 6 * (L * 12 * d * d + d * V)
    assert flops_per_token(cfg) == counted + attention + layer_norm
    assert math.isclose(counted, 3 * 13888)
