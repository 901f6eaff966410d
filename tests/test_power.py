"""Stated power: the minimum detectable gap is what the project's own interval detects 80% of the time."""

import math

import numpy as np
import pytest

from myopia.analysis.stats import (detection_power, min_detectable_gap, noise_of_summary, null_gap, null_interval,
                                   paired_gap, power_entry, seeds_needed)
from myopia.errors import MyopiaError


def _detection_rate(gap, seed_sd, doc_sd_unit, unit_sd, n_seeds, n_units=40, n_sims=400, seed=0):
    """Share of simulated studies whose seed-inclusive interval (stats.paired_gap) excludes 0.

    Per-unit gaps x[s, u] = gap + a_s + b_u + e_su: a seed effect a ~ N(0, seed part), a document effect b shared
    by every seed, and seed × document noise e."""
    rng = np.random.default_rng(seed)
    a_sd = math.sqrt(max(seed_sd ** 2 - unit_sd ** 2 / n_units, 0.0))
    hits = 0
    for _ in range(n_sims):
        a = rng.normal(0, a_sd, size=(n_seeds, 1))
        b = rng.normal(0, doc_sd_unit, size=(1, n_units))
        e = rng.normal(0, unit_sd, size=(n_seeds, n_units))
        s = paired_gap(gap + a + b + e, np.zeros((n_seeds, n_units)), n_boot=300,
                       seed=int(rng.integers(1 << 30)))
        lo, hi = s["ci95"]
        hits += lo > 0 or hi < 0
    return hits / n_sims


@pytest.mark.parametrize("seed_sd, doc_sd_unit, n_seeds", [
    (0.0152, 0.004, 3),  # seed noise dominates (the Brown byte pair's hidden-state gap: seed sd 0.0152)
    (0.010, 0.030, 5),  # document noise comparable to the seed part
])
def test_the_minimum_detectable_gap_is_detected_80_percent_of_the_time(seed_sd, doc_sd_unit, n_seeds):
    n_units, unit_sd = 40, 0.02
    doc_se = doc_sd_unit / math.sqrt(n_units)  # the shared document part of the mean gap
    mdg = min_detectable_gap(seed_sd, doc_se, n_seeds)
    assert detection_power(mdg, seed_sd, doc_se, n_seeds) == pytest.approx(0.8, abs=1e-6)
    rate = _detection_rate(mdg, seed_sd, doc_sd_unit, unit_sd, n_seeds, n_units)
    assert abs(rate - 0.8) <= 0.08, (mdg, rate)
    # and a gap of half that size is detected far less often
    assert _detection_rate(mdg / 2, seed_sd, doc_sd_unit, unit_sd, n_seeds, n_units, n_sims=200, seed=1) < 0.5


def test_power_matches_a_noncentral_t_without_document_noise():
    from scipy import stats

    S, sd = 5, 0.01
    mdg = min_detectable_gap(sd, 0.0, S)
    ncp, crit = mdg / (sd / math.sqrt(S)), stats.t.ppf(0.975, S - 1)
    exact = stats.nct.sf(crit, S - 1, ncp) + stats.nct.cdf(-crit, S - 1, ncp)
    assert exact == pytest.approx(0.8, abs=2e-3)


def test_more_seeds_detect_smaller_gaps_and_seeds_for_a_target():
    sd, doc = 0.0152, 0.001
    gaps = [min_detectable_gap(sd, doc, S) for S in (3, 5, 10)]
    assert gaps[0] > gaps[1] > gaps[2]
    n = seeds_needed(0.02, sd, doc)
    assert min_detectable_gap(sd, doc, n) <= 0.02 < min_detectable_gap(sd, doc, n - 1)
    # never 2 seeds, whose bootstrap-only interval under-covers and so looks more powerful than 3 seeds
    assert min_detectable_gap(0.0133, 0.0007, 2) < min_detectable_gap(0.0133, 0.0007, 3)
    assert seeds_needed(1.1 * min_detectable_gap(0.0133, 0.0007, 2), 0.0133, 0.0007) >= 3
    # documents alone set a floor that seeds cannot lower
    assert seeds_needed(0.5 * min_detectable_gap(0.0, 0.01, 2), 0.001, 0.01) is None
    with pytest.raises(MyopiaError):
        detection_power(0.1, sd, doc, 1)


def test_power_entry_from_a_gap_summary():
    rng = np.random.default_rng(2)
    x = 0.01 + rng.normal(0, 0.015, size=(3, 1)) + rng.normal(0, 0.02, size=(3, 60))
    s = paired_gap(x, np.zeros_like(x), n_boot=500)
    seed_sd, doc_se = noise_of_summary(s)
    assert seed_sd == pytest.approx(np.std(s["per_seed"], ddof=1))
    assert doc_se == pytest.approx((s["ci95_eval"][1] - s["ci95_eval"][0]) / 2 / 1.959964, rel=1e-5)
    e = power_entry(s, 0.4)
    assert e["min_detectable_gap"] == pytest.approx(min_detectable_gap(seed_sd, doc_se, 3))
    assert e["min_detectable_fraction_of_context_value"] == pytest.approx(e["min_detectable_gap"] / 0.4)
    assert min_detectable_gap(seed_sd, doc_se, e["seeds_for_5pct"]) <= 0.02
    one = power_entry(paired_gap(x[:1], np.zeros_like(x[:1]), n_boot=100), 0.4)
    assert one["min_detectable_gap"] is None and "not measured" in one["note"]


def test_null_interval_of_the_same_seed_count():
    rng = np.random.default_rng(4)
    v = 2.0 + rng.normal(0, 0.01, size=(4, 1)) + rng.normal(0, 0.1, size=(1, 300))  # 4 vanilla seeds
    null = null_gap(v, np.arange(300), n_boot=200)
    ni = null_interval(null, 3)
    per_seed = v.mean(1)
    assert ni["per_pair_rms"] == pytest.approx(math.sqrt(2) * np.std(per_seed, ddof=1))
    assert ni["sd"] == pytest.approx(ni["per_pair_rms"] / math.sqrt(3))
    assert ni["df"] == 3 and ni["ci95"][1] == pytest.approx(-ni["ci95"][0])
    assert null_interval(None, 3) is None
