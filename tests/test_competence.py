"""The competence gate flips on a model worse than its 4-gram, and a null on it never reads "no gap"."""

import numpy as np
import pytest

from myopia.analysis.competence import NOT_TESTABLE, competence, read_null, vanilla_vs_4gram
from myopia.analysis.stats import paired_gap
from myopia.errors import MyopiaError

RNG = np.random.default_rng(0)
N, DOCS = 3000, 30
DOC = np.repeat(np.arange(DOCS), N // DOCS)
FOUR = 2.0 + RNG.normal(0, 0.5, size=N)  # the 4-gram's per-token losses
COPIES = {"mean": 0.8, "ci95": [0.6, 1.0]}  # induction: the second occurrence is much easier
NULL_GAP = {"mean": 0.001, "ci95": [-0.01, 0.012], "n_seeds": 3}


def _vanilla(shift):
    """3 seeds of vanilla losses ``shift`` nats/token from the 4-gram, with seed and token noise."""
    return FOUR[None, :] + shift + RNG.normal(0, 0.01, size=(3, 1)) + RNG.normal(0, 0.3, size=(3, N))


def test_the_gate_flips_on_a_model_worse_than_its_4gram():
    good = competence(vanilla_vs_4gram(_vanilla(-0.3), FOUR, DOC, n_boot=300), COPIES)
    assert good["beats_4gram"] is True and good["competent"] is True
    assert good["induction_value_ci95"] == [0.6, 1.0] and good["vanilla_minus_4gram"]["ci95"][1] < 0
    bad = competence(vanilla_vs_4gram(_vanilla(+0.05), FOUR, DOC, n_boot=300), COPIES)
    assert bad["beats_4gram"] is False and bad["competent"] is False
    assert "does not beat the count 4-gram" in bad["reason"]
    # a vanilla whose interval reaches 0 (tied with the 4-gram) does not pass either
    tied = competence({"mean": -0.01, "ci95": [-0.03, 0.01]}, COPIES)
    assert tied["beats_4gram"] is False and tied["competent"] is False


def test_induction_must_show_a_positive_value_of_context():
    vs = {"mean": -0.3, "ci95": [-0.35, -0.25]}
    assert competence(vs, {"mean": -0.0005, "ci95": [-0.015, 0.014]})["competent"] is False
    assert competence(vs, None)["competent"] is None
    assert competence(None, COPIES)["beats_4gram"] is None


def test_a_null_reads_not_testable_unless_competent():
    vs_bad = vanilla_vs_4gram(_vanilla(+0.05), FOUR, DOC, n_boot=300)
    text = read_null(NULL_GAP, competence(vs_bad, COPIES))
    assert text.startswith(NOT_TESTABLE) and "no gap" not in text
    assert read_null(NULL_GAP, competence(None, COPIES)).startswith(NOT_TESTABLE)
    ok = competence({"mean": -0.3, "ci95": [-0.35, -0.25]}, COPIES)
    power = {"min_detectable_gap": 0.047, "min_detectable_fraction_of_context_value": 0.12}
    assert read_null(NULL_GAP, ok, power) == ("no gap detected; the smallest gap detectable at 80% power is "
                                              "0.047 nats/token (12% of the value of context)")
    # a gap whose interval excludes 0 is a detection whatever the gate says
    x = 0.1 + RNG.normal(0, 0.01, size=(3, 40))
    assert read_null(paired_gap(x, np.zeros_like(x), n_boot=200), None).startswith("detected")


def test_mismatched_inputs_are_refused():
    with pytest.raises(MyopiaError):
        vanilla_vs_4gram(np.zeros((2, 5)), np.zeros(4), np.zeros(4))


def test_tasks_competence_reads_the_pairs_gap_json_of_the_same_seeds_and_split(tmp_path):
    """tasks.json's competence takes vanilla-vs-4-gram from the pair directory's gap.json (wherever tasks.json is
    written), only when it scored the same seeds and split; otherwise that half is "not measured"."""
    from myopia.experiments.tasks import tasks_competence
    from myopia.io import write_json

    vs = {"mean": -0.3, "ci95": [-0.35, -0.25]}
    write_json(tmp_path / "gap.json", {"seeds": [10, 11], "split": "test", "competence": {"vanilla_minus_4gram": vs}})
    results = {"induction": {"value_of_context": COPIES}}
    assert tasks_competence(tmp_path, results, [10, 11], "test")["competent"] is True
    for seeds, split, where in (([10, 12], "test", tmp_path), ([10, 11], "val", tmp_path), ([10, 11], "test", None)):
        c = tasks_competence(where, results, seeds, split)
        assert c["beats_4gram"] is None and c["competent"] is None, (seeds, split, where)
