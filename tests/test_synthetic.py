"""Synthetic regression tasks: generators against explicit loops, determinism, trivial baseline, probes."""

import math

import numpy as np
import pytest
import torch

from myopia.errors import MyopiaError
from myopia.analysis.stats import paired_gap
from myopia.synthetic.probes import lookback_probes, probe_r2, r2_score, ridge_fit
from myopia.synthetic.regression import (
    Regressor,
    RegressionSpec,
    SequenceRegressionTask,
    best_constant,
    regressor_config,
)
from myopia.synthetic.sampling import BASELINE_FIT, EVAL, TRAIN


def brute_targets(x, z, task, omega, window):
    """y by explicit loops over positions and lags (x before the start counts as 0)."""
    n_seq, T = x.shape
    lags = range(1, window + 1) if task == "precache" else range(0, window)
    y = np.empty_like(x)
    for s in range(n_seq):
        for n in range(T):
            total = 0.0
            for i in lags:
                past = x[s, n - i] if n - i >= 0 else 0.0
                total += math.sin(omega * past)
            y[s, n] = total if z[s, n] else x[s, n]
    return y


@pytest.mark.parametrize("task,window,p", [("precache", 3, 0.6), ("control", 3, 0.6), ("precache", 1, 1.0),
                                           ("control", 12, 0.3)])
def test_targets_match_explicit_loops(task, window, p):
    spec = RegressionSpec(task=task, omega=2.5, window=window, p=p, seq_len=10)
    t = SequenceRegressionTask(spec, seed=5, eval_sequences=8)
    d = t.arrays(TRAIN, np.arange(40))
    np.testing.assert_allclose(d["y"], brute_targets(d["x"], d["z"], task, 2.5, window), atol=1e-12)
    if p < 1:
        assert 0 < d["z"].mean() < 1  # both branches exercised
    batch = t.examples(np.arange(40))
    assert batch["inputs"].shape == (40, 10, 2)
    torch.testing.assert_close(batch["inputs"][..., 0], torch.tensor(d["x"], dtype=torch.float32))
    torch.testing.assert_close(batch["inputs"][..., 1], torch.tensor(d["z"], dtype=torch.float32))


def test_precache_target_never_uses_the_current_sin_feature():
    spec = RegressionSpec(task="precache", omega=3.0, window=2, p=1.0, seq_len=6)
    t = SequenceRegressionTask(spec, seed=0)
    d = t.arrays(TRAIN, np.arange(4))
    # y_n = sin(3 x_{n-1}) + sin(3 x_{n-2}); y_0 = 0 and y_1 = sin(3 x_0)
    np.testing.assert_allclose(d["y"][:, 0], 0.0)
    np.testing.assert_allclose(d["y"][:, 1], np.sin(3 * d["x"][:, 0]))
    np.testing.assert_allclose(d["y"][:, 4], np.sin(3 * d["x"][:, 3]) + np.sin(3 * d["x"][:, 2]))


def test_examples_depend_only_on_seed_stream_and_index():
    spec = RegressionSpec(task="precache", omega=3.0, window=2, p=0.5, seq_len=8)
    a = SequenceRegressionTask(spec, seed=1)
    b = SequenceRegressionTask(spec, seed=1)
    idx = np.array([3000, 5, 1023, 1024, 77])  # crosses sampling blocks, any order
    full = a.arrays(TRAIN, np.arange(3001))
    part = b.arrays(TRAIN, idx)
    np.testing.assert_array_equal(part["x"], full["x"][idx])
    np.testing.assert_array_equal(part["z"], full["z"][idx])
    # other streams and seeds are different draws
    assert not np.allclose(a.arrays(EVAL, np.arange(4))["x"], full["x"][:4])
    assert not np.allclose(SequenceRegressionTask(spec, seed=2).arrays(TRAIN, np.arange(4))["x"], full["x"][:4])
    # control and precache with one seed share the inputs (the tasks are paired too)
    c = SequenceRegressionTask(RegressionSpec(task="control", omega=3.0, window=2, p=0.5, seq_len=8), seed=1)
    np.testing.assert_array_equal(c.arrays(TRAIN, idx)["x"], part["x"])


def test_best_constant_minimises_huber_like_a_grid_search():
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0.3, 1.5, 500), rng.exponential(2.0, 200)])
    c = best_constant(y)
    huber = lambda r: np.where(np.abs(r) <= 1, 0.5 * r**2, np.abs(r) - 0.5).sum()
    grid = np.linspace(y.min(), y.max(), 20001)
    best_grid = grid[np.argmin([huber(y - g) for g in grid])]
    assert abs(c - best_grid) < 2e-3
    assert huber(y - c) <= huber(y - best_grid) + 1e-9


class TrivialModel(torch.nn.Module):
    """Outputs x_n where z_n = 0 and a constant where z_n = 1, from the (x, z) inputs."""

    def __init__(self, constant):
        super().__init__()
        self.constant = constant
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, inputs):
        x, z = inputs[..., 0], inputs[..., 1]
        return torch.where(z > 0, torch.full_like(x, self.constant), x) + 0 * self.dummy


def test_trivial_baseline_loss_is_computed_independently():
    spec = RegressionSpec(task="control", omega=3.0, window=2, p=0.4, seq_len=12)
    t = SequenceRegressionTask(spec, seed=3, eval_sequences=300)
    d = t.arrays(EVAL, np.arange(300))
    c = t.constant
    fit = t.arrays(BASELINE_FIT, np.arange(1024))
    assert c == pytest.approx(best_constant(fit["y"][fit["z"]]))
    pred = np.where(d["z"], c, d["x"])
    r = d["y"] - pred
    expected = np.where(np.abs(r) <= 1, 0.5 * r**2, np.abs(r) - 0.5).mean()
    assert t.sequence_losses(None).mean() == pytest.approx(expected, rel=1e-6)
    ev = t.evaluate(TrivialModel(c))
    assert ev["fraction_of_trivial"] == pytest.approx(1.0, abs=1e-6)
    assert ev["loss_over_p"] == pytest.approx(expected / 0.4, rel=1e-5)
    # where z = 0 the trivial predictor is exact: those positions contribute nothing
    assert np.all(r[~d["z"]] == 0)


def test_regressor_shapes_and_gradient_modes_share_forward():
    torch.manual_seed(0)
    spec = RegressionSpec(task="precache", omega=3.0, window=2, p=1.0, seq_len=8)
    t = SequenceRegressionTask(spec, seed=0)
    batch = t.examples(np.arange(4))
    model = Regressor(regressor_config(n_layer=2, n_head=2, d_model=16, seq_len=8))
    hid = []
    out = model(batch["inputs"], hidden_out=hid)
    assert out.shape == (4, 8) and len(hid) == 3 and hid[1].shape == (4, 8, 16)
    for g in ("myopic", "myopic-hidden"):
        model.set_gradient(g)
        torch.testing.assert_close(model(batch["inputs"]), out, rtol=0, atol=0)
    loss = t.loss(model, batch)
    assert loss.item() == pytest.approx(torch.nn.functional.huber_loss(out, batch["y"], reduction="sum").item(),
                                        rel=1e-6)


def test_spec_validation():
    with pytest.raises(MyopiaError):
        RegressionSpec(task="nope")
    with pytest.raises(MyopiaError):
        RegressionSpec(p=0.0)
    with pytest.raises(MyopiaError):
        RegressionSpec(window=0)


# ---- probes ----------------------------------------------------------------------------------------------------


def test_ridge_matches_least_squares_and_recovers_a_planted_feature():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(4000, 12, generator=g, dtype=torch.float64)
    w = torch.randn(12, 1, generator=g, dtype=torch.float64)
    y = X @ w + 0.7 + 0.1 * torch.randn(4000, 1, generator=g, dtype=torch.float64)
    W, b = ridge_fit(X, y, alpha=1e-12)
    A = torch.cat([X, torch.ones(4000, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(A, y).solution
    torch.testing.assert_close(W, sol[:12], atol=1e-8, rtol=0)
    torch.testing.assert_close(b, sol[12], atol=1e-8, rtol=0)
    # held-out R²: planted linear feature ~ 1 - noise share; an independent target ~ 0
    Xt = torch.randn(2000, 12, generator=g, dtype=torch.float64)
    yt = Xt @ w + 0.7 + 0.1 * torch.randn(2000, 1, generator=g, dtype=torch.float64)
    noise_share = 0.01 / float((w**2).sum() + 0.01)
    assert probe_r2(X, y, Xt, yt).item() == pytest.approx(1 - noise_share, abs=0.01)
    unrelated = torch.randn(4000, 1, generator=g, dtype=torch.float64)
    assert abs(probe_r2(X, unrelated, Xt, torch.randn(2000, 1, generator=g, dtype=torch.float64)).item()) < 0.02
    # r2_score by its definition
    pred = yt + 0.05
    expected = 1 - ((yt - pred) ** 2).sum() / ((yt - yt.mean()) ** 2).sum()
    assert r2_score(yt, pred).item() == pytest.approx(expected.item())


class PlantedModel(torch.nn.Module):
    """A fake regressor whose 'layer 1' hidden state holds x_{n-2} and sin(ω x_{n-2}) linearly, plus noise dims."""

    def __init__(self, omega):
        super().__init__()
        self.omega = omega
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, inputs, hidden_out=None):
        x = inputs[..., 0]
        shifted = torch.nn.functional.pad(x, (2, 0))[:, : x.shape[1]]  # x_{n-2}, 0 before the start
        noise = torch.randn(x.shape + (6,), generator=torch.Generator().manual_seed(int(x.shape[0])))
        layer0 = torch.cat([x.unsqueeze(-1), noise], -1)
        layer1 = torch.cat([torch.stack([shifted, torch.sin(self.omega * shifted)], -1), noise[..., :5]], -1)
        if hidden_out is not None:
            hidden_out += [layer0, layer1]
        return x


def test_lookback_probe_aligns_lags_with_positions():
    spec = RegressionSpec(task="precache", omega=3.0, window=2, p=1.0, seq_len=10)
    t = SequenceRegressionTask(spec, seed=0)
    r = lookback_probes(PlantedModel(3.0), t, max_lag=20, fit_sequences=300, test_sequences=200)
    assert r["lags"] == list(range(10))  # lookbacks beyond the sequence have no rows
    sin, x = np.array(r["sin"]), np.array(r["x"])
    assert x[0, 0] > 0.999 and sin[0, 0] < 0.05  # the embedding holds x_n linearly, not sin(3 x_n)
    assert x[1, 2] > 0.999 and sin[1, 2] > 0.999  # layer 1 holds both at lookback 2
    assert np.all(np.abs(np.delete(x[1], 2)) < 0.1)  # and nothing at other lookbacks (few rows at large ones)
    assert np.all(np.abs(np.delete(sin[1], 2)) < 0.1)


def test_paired_gap_on_sequence_losses_is_seed_inclusive():
    """The regression comparisons' gap: per-sequence losses of seeds × the same held-out sequences."""
    rng = np.random.default_rng(1)
    a = rng.normal(1.0, 1.0, 4000)
    b = a - 0.25 + rng.normal(0, 0.1, 4000)
    gap = paired_gap(a, b, n_boot=500)
    assert gap["ci95"][0] < 0.25 < gap["ci95"][1] and gap["ci95"][1] - gap["ci95"][0] < 0.02
    assert gap["mean"] == pytest.approx(float((a - b).mean())) and gap["n_seeds"] == 1
    # three seeds whose gaps differ by much more than the evaluation noise: the interval must widen
    seeds = np.stack([a, a + 0.1, a - 0.1]) - np.stack([b, b, b])
    wide = paired_gap(seeds, np.zeros_like(seeds), n_boot=500)
    assert wide["ci95"][1] - wide["ci95"][0] > 0.2 and wide["n_seeds"] == 3


def test_all_training_seeds_score_the_same_heldout_sequences():
    spec = RegressionSpec(task="precache", omega=3.0, window=3, p=0.5, seq_len=8)
    t1 = SequenceRegressionTask(spec, seed=1, eval_sequences=16, eval_seed=0)
    t2 = SequenceRegressionTask(spec, seed=2, eval_sequences=16, eval_seed=0)
    np.testing.assert_array_equal(t1.eval_batch()["x"].numpy(), t2.eval_batch()["x"].numpy())
    assert t1.constant == t2.constant
    assert not np.array_equal(t1.examples(np.arange(4))["x"], t2.examples(np.arange(4))["x"])  # training differs
    # training never reads the held-out streams: seed-0's TRAIN stream is not the eval stream of eval_seed 0
    t0 = SequenceRegressionTask(spec, seed=0, eval_sequences=16, eval_seed=0)
    assert not np.array_equal(t0.examples(np.arange(16))["x"], t0.eval_batch()["x"])


def test_position_probes_find_the_feature_where_it_is_planted():
    """A planted model writes sin(ω x_n) into its residual stream: per-position R² ≈ 1 at every position."""
    from myopia.synthetic.probes import future_positions, position_probes

    spec = RegressionSpec(task="precache", omega=3.0, window=2, p=1.0, seq_len=6)
    task = SequenceRegressionTask(spec, seed=0)

    class Planted(torch.nn.Module):
        def forward(self, inputs, hidden_out=None):
            x = inputs[..., 0]
            h = torch.stack([torch.sin(3.0 * x), torch.randn_like(x)], dim=-1)
            if hidden_out is not None:
                hidden_out.extend([inputs, h])
            return x

    out = position_probes(Planted(), task, fit_sequences=256, test_sequences=128)
    assert out["future_positions"] == [0, 1, 2, 3, 4] and out["last_positions"] == [5]
    assert min(out["sin"][1]) > 0.99 and out["sin_with_future"][1] > 0.99 and out["sin_last"][1] > 0.99
    assert max(out["sin"][0]) < 0.05  # the raw input holds x, not sin(3x) (nearly uncorrelated)
    assert future_positions(RegressionSpec(task="control", window=1, seq_len=4)) == ([], [0, 1, 2, 3])
