"""Claims of the statistics module: seed-inclusive intervals cover at their nominal rate, are never narrower than
evaluation-only ones, the null and Holm are computed as defined, and one seed is flagged."""

import numpy as np
import pytest

from myopia.analysis.stats import (TRAINING_NOISE_ONE_SEED, Estimate, HierarchicalBootstrap, against_null,
                                   format_interval, holm, null_gap, paired_gap, t_interval)
from myopia.errors import MyopiaError


def _planted(rng, n_seeds, n_units, mu, seed_sd, unit_sd, noise_sd, tokens_per_unit=20):
    """Per-token gaps: mu + seed effect + unit effect (shared by seeds) + token noise; returns values (S, N), unit (N,)."""
    unit = np.repeat(np.arange(n_units), tokens_per_unit)
    a = rng.normal(0, seed_sd, size=(n_seeds, 1))
    b = rng.normal(0, unit_sd, size=n_units)[unit]
    e = rng.normal(0, noise_sd, size=(n_seeds, unit.size))
    return mu + a + b + e, unit


@pytest.mark.parametrize("n_seeds", [3, 6])
def test_seed_inclusive_interval_covers_planted_gap(n_seeds):
    """Over 300 planted experiments with a known seed variance, the reported ci95 covers the true gap >= 90%."""
    rng = np.random.default_rng(0)
    hits = 0
    R = 300
    for r in range(R):
        values, unit = _planted(rng, n_seeds, 30, 0.05, seed_sd=0.02, unit_sd=0.01, noise_sd=0.2)
        s = HierarchicalBootstrap(30, n_seeds, 400, seed=r).means(values, unit).summary()
        hits += s["ci95"][0] <= 0.05 <= s["ci95"][1]
    assert hits / R >= 0.90


def test_evaluation_only_interval_undercovers_when_seeds_vary():
    """The claim behind the whole module: with real seed noise, an evaluation-only interval is far too narrow."""
    rng = np.random.default_rng(1)
    hits = 0
    for r in range(200):
        values, unit = _planted(rng, 3, 30, 0.05, seed_sd=0.02, unit_sd=0.002, noise_sd=0.05)
        s = HierarchicalBootstrap(30, 3, 300, seed=r).means(values, unit).summary()
        hits += s["ci95_eval"][0] <= 0.05 <= s["ci95_eval"][1]
    assert hits / 200 < 0.6


def test_seed_inclusive_never_narrower_than_evaluation_only():
    rng = np.random.default_rng(2)
    for r in range(50):
        values, unit = _planted(rng, 1 + r % 4, 12, 0.0, seed_sd=rng.uniform(0, 0.05), unit_sd=0.02, noise_sd=0.1)
        s = HierarchicalBootstrap(12, values.shape[0], 200, seed=r).means(values, unit).summary()
        assert s["ci95"][1] - s["ci95"][0] >= s["ci95_eval"][1] - s["ci95_eval"][0] - 1e-12


def test_t_interval_reported_with_three_seeds_and_is_textbook():
    per_seed = np.array([-0.019, 0.003, -0.020])
    lo, hi = t_interval(per_seed)
    half = 4.302652729911275 * per_seed.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert np.isclose(lo, per_seed.mean() - half) and np.isclose(hi, per_seed.mean() + half)
    # per-seed gaps with no evaluation noise at all: ci95 is the t-interval, and it contains 0 (sign not determined)
    unit = np.arange(40)
    values = np.repeat(per_seed[:, None], 40, axis=1)
    s = HierarchicalBootstrap(40, 3, 500).means(values, unit).summary()
    assert s["ci95_t"] == pytest.approx([lo, hi])
    assert s["ci95"] == s["ci95_t"] and s["ci95"][0] < 0 < s["ci95"][1]
    assert s["per_seed"] == pytest.approx(list(per_seed)) and s["n_seeds"] == 3


def test_one_seed_is_flagged_everywhere():
    rng = np.random.default_rng(3)
    s = paired_gap(rng.normal(1, 0.1, 50), rng.normal(0.9, 0.1, 50), n_boot=200)
    assert s["training_noise"] == TRAINING_NOISE_ONE_SEED and s["n_seeds"] == 1
    assert s["ci95"] == s["ci95_eval"] and s["ci95_t"] is None
    assert "training noise not measured" in format_interval(s)
    s3 = paired_gap(rng.normal(1, 0.1, (3, 50)), rng.normal(0.9, 0.1, (3, 50)), n_boot=200)
    assert "not measured" not in s3["training_noise"] and "not measured" not in format_interval(s3)


def test_an_estimate_reads_and_writes_the_result_keys_unchanged():
    rng = np.random.default_rng(4)
    s = paired_gap(rng.normal(1, 0.1, (3, 50)), rng.normal(0.9, 0.1, (3, 50)), n_boot=200)
    est = Estimate.from_dict(s)
    assert (est.mean, list(est.ci95), est.n_seeds) == (s["mean"], s["ci95"], 3)
    assert est.to_dict() == {"mean": s["mean"], "ci95": s["ci95"], "n_seeds": 3}
    assert Estimate.from_dict(est.to_dict()) == est
    short = Estimate(s["mean"], s["ci95"])  # the short form quoted beside a main number: no n_seeds key
    assert short.to_dict() == {"mean": s["mean"], "ci95": s["ci95"]} and short.ci95 == tuple(s["ci95"])
    assert Estimate.from_dict({"mean": None}).to_dict() == {"mean": None, "ci95": [None, None]}
    with pytest.raises(AttributeError):  # frozen: a value, not a record to fill in
        est.mean = 0.0


def test_the_one_formatter():
    three = Estimate(0.04412, (0.04196, -0.0001), 3)
    assert three.format() == "+0.044 [+0.042, -0.000]"
    assert three.format(2, signed=False) == "0.04 [0.04, -0.00]"
    one = Estimate(0.5, (None, 0.75), 1)
    assert one.format(1) == "+0.5 [–, +0.8]" + " (training noise not measured: 1 seed)"
    assert one.format(1, missing="n/a", seed_note=None) == "+0.5 [n/a, +0.8]"
    assert Estimate(0.5, (0.25, 0.75)).format(1) == "+0.5 [+0.2, +0.8] (training noise not measured: 1 seed)"
    assert Estimate(0.123, (0.1, 0.15), 2).format(1, scale=100, unit="%") == "+12.3% [+10.0, +15.0]"
    assert Estimate(0.123).format(1, scale=100, unit="%", seed_note=None) == "+12.3%"
    assert three.interval(4) == "[+0.0420, -0.0001]" and not one.bounded and three.bounded
    assert not Estimate(None).known
    s = {"mean": 0.01, "ci95": [0.005, 0.02], "n_seeds": 1, "p": 0.01}
    assert format_interval(s, 4) == Estimate.from_dict(s).format(4)


def test_means_are_token_weighted_within_seed_and_averaged_over_seeds():
    values = np.array([[1.0, 1.0, 4.0], [2.0, 2.0, 2.0]])
    unit = np.array([0, 0, 1])
    res = HierarchicalBootstrap(2, 2, 10).means(values, unit)
    assert res.per_seed[:, 0] == pytest.approx([2.0, 2.0])
    assert res.point[0] == pytest.approx(2.0)
    with pytest.raises(MyopiaError):
        HierarchicalBootstrap(2, 3, 10).means(values, unit)


def test_replicate_arithmetic_gives_ratio_intervals():
    rng = np.random.default_rng(4)
    unit = np.repeat(np.arange(20), 10)
    boot = HierarchicalBootstrap(20, 2, 300)
    gap = boot.means(rng.normal(0.1, 0.05, (2, 200)), unit)
    ctx = boot.means(rng.normal(1.0, 0.05, (2, 200)), unit)
    frac = (gap / ctx).summary()
    assert frac["mean"] == pytest.approx(gap.point[0] / ctx.point[0])
    assert frac["ci95"][0] < frac["mean"] < frac["ci95"][1]


def test_null_gap_is_the_vanilla_seed_difference():
    rng = np.random.default_rng(5)
    unit = np.repeat(np.arange(10), 5)
    v = rng.normal(2.0, 0.1, (3, 50)) + np.array([[0.0], [0.01], [0.03]])
    null = null_gap(v, unit, n_boot=200)
    assert null["n_pairs"] == 3 and null["pairs"] == [[0, 1], [0, 2], [1, 2]]
    expected = [v[0].mean() - v[1].mean(), v[0].mean() - v[2].mean(), v[1].mean() - v[2].mean()]
    assert null["per_pair"] == pytest.approx(expected)
    assert null["sd"] == pytest.approx(np.sqrt(np.mean(np.square(expected))))
    assert null_gap(v[:1], unit) is None
    assert against_null(0.1, null) == pytest.approx(0.1 / null["sd"])


def test_holm_against_hand_computed_case():
    # sorted p: 0.01*4 = 0.04, 0.02*3 = 0.06, 0.03*2 = 0.06, 0.5*1 = 0.5 (monotone), original order restored
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.9, None, 0.6]) == [1.0, None, 1.0]  # m = 2: min(1, 2*0.6) = 1, then max(1, 0.9)
    assert holm([0.4, 0.4]) == pytest.approx([0.8, 0.8])


def test_overlap_refusal_on_a_resplit_corpus():
    """A corpus of the same documents split with another seed is refused, naming how many documents overlap."""
    from myopia.data.corpus import corpus_from_documents
    from myopia.data.overlap import overlapping_documents, refuse_overlap
    from myopia.data.text import Document

    docs = [Document(text=f"document number {i} " * (3 + i % 5), slice="s") for i in range(40)]
    a = corpus_from_documents(docs, val_frac=0.1, test_frac=0.2, split_seed=0)
    b = corpus_from_documents(docs, val_frac=0.1, test_frac=0.2, split_seed=1)
    assert len(overlapping_documents(a, a, a.split_docs("test"))) == 0  # the pair's own test split is clean
    bad = overlapping_documents(a, b, b.split_docs("test"))
    assert len(bad) > 0
    with pytest.raises(MyopiaError, match=rf"{len(bad)} of {len(b.split_docs('test'))} documents overlap"):
        refuse_overlap(a, b, b.split_docs("test"))
    refuse_overlap(a, a, a.split_docs("test"))  # no error


# --- CellBootstrap (IsoFLOP cells with their own seed sets) ------------------------------------------------------


def test_cell_bootstrap_pairs_cells_on_units_and_seed_positions():
    from myopia.analysis.stats import CellBootstrap

    rng = np.random.default_rng(0)
    cb = CellBootstrap(n_units=15, n_boot=300, seed=3)
    a = rng.normal(3.0, 0.5, (2, 15))
    w = rng.uniform(50, 150, 15)
    pa, ra, sa = cb.cell(a, w)
    pb, rb, sb = cb.cell(a + 0.07, w)  # another arm: the same seeds and documents, shifted
    np.testing.assert_allclose(rb - ra, 0.07, atol=1e-12)  # paired: the shift has no spread
    assert pb - pa == pytest.approx(0.07)
    np.testing.assert_allclose(sa, (a * w).sum(1) / w.sum())
    assert ra.std() > 0.01 and abs(ra.mean() - pa) < 3 * ra.std() / np.sqrt(len(ra)) + 0.02
    # a cell with 3 seeds draws from its own seed-count stream; the same count always gets the same draw
    assert cb.seed_weights(3).shape == (300, 3) and np.allclose(cb.seed_weights(3).sum(1), 1)
    assert cb.seed_weights(2) is cb.seed_weights(2)
    assert CellBootstrap(15, 300, seed=3).cell(a, w)[1] == pytest.approx(ra)  # deterministic given the seed
    # plain losses (no units): the seeds alone are resampled
    plain = CellBootstrap(0, 400, seed=1)
    point, reps, per_seed = plain.cell([2.0, 2.2, 2.4])
    assert point == pytest.approx(2.2) and reps.min() >= 2.0 and reps.max() <= 2.4 and reps.std() > 0.05
    with pytest.raises(MyopiaError, match="units"):
        cb.cell(np.ones((2, 14)))
