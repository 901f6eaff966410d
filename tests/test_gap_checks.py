"""What gap and tasks check before they score, and what gap.json/tasks.json say a number means: runs trained on
other data are refused, every arm's training split is checked for overlap, one writer at a time, and the count
n-gram baselines, the competence gate and stated power sit beside every gap."""

import random
import shutil

import numpy as np
import pytest

from myopia.cli import main
from myopia.experiments.gap import run_gap
from myopia.experiments.pair import run_pair
from myopia.io import exclusive_writer, read_json
from myopia.model import GPTConfig
from myopia.train import TrainConfig

WORDS = "the cat sat on a mat and dog ran far away home with big red hat".split()
MODEL = GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=16, seq_len=16)


def _corpus(folder, seed):
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) for _ in range(30)]
    (folder / "text.txt").write_text("\n\n".join(docs) + "\n")
    return folder


def _pair(data, out, seeds="0,1"):
    cfg = TrainConfig(steps=4, batch_size=4, lr=1e-2, eval_every=2, ckpt_every=2, log_every=1, progress=False)
    return run_pair(data, out, MODEL, cfg, seeds=seeds, eval_tokens=256, data_opts={"val_frac": 0.2,
                                                                                    "test_frac": 0.2},
                    progress=False)


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    a, b = _corpus(root / "a", 0), _corpus(root / "b", 1)
    _pair(a, root / "pa")
    _pair(b, root / "pb", seeds="0")
    return root


def test_gap_json_holds_baselines_competence_and_power(two_pairs):
    g = run_gap(two_pairs / "pa", n_boot=100, top_k=0, progress=False)
    for name in ("unigram", "bigram", "4gram"):
        assert np.isfinite(g["baselines"][name]["loss"])
    assert g["baselines"]["unigram"]["loss"] > g["baselines"]["bigram"]["loss"]  # more context, less loss here
    comp = g["competence"]
    assert set(comp) >= {"beats_4gram", "induction_value_ci95", "competent"}
    assert comp["induction_value_ci95"] is None and comp["competent"] in (False, None)  # tasks not scored yet
    for arm in ("myopic", "myopic-hidden"):
        assert set(g["power"][arm]) >= {"min_detectable_gap", "min_detectable_fraction_of_context_value",
                                        "seeds_for_5pct"}
        assert g["power"][arm]["min_detectable_gap"] > 0  # two seeds: training noise measured, power stated
        if g["gap"][arm]["ci95"][0] <= 0 <= g["gap"][arm]["ci95"][1]:  # a null on these 4-step models ...
            assert g["reading"][arm].startswith("not testable at this scale")  # ... is never "no gap"
    assert g["null_same_seeds"]["n_seeds"] == 2


def test_tasks_json_holds_competence_and_gap_reads_the_induction_value(two_pairs):
    pair = two_pairs / "pa"
    assert main(["tasks", str(pair), "--no-progress", "--bootstrap", "50"]) == 0
    t = read_json(pair / "tasks.json")
    assert t["competence"]["induction_value_ci95"] is not None
    assert t["competence"]["beats_4gram"] is not None  # from gap.json of the same seeds
    g = run_gap(pair, n_boot=100, top_k=0, progress=False, reuse_scores=True)
    assert g["competence"]["induction_value_ci95"] == t["competence"]["induction_value_ci95"]
    assert g["competence"]["competent"] is not None


def test_gap_refuses_an_arm_trained_on_other_data_naming_both_runs(two_pairs, capsys):
    mixed = two_pairs / "mixed"
    shutil.copytree(two_pairs / "pa", mixed)
    shutil.rmtree(mixed / "runs" / "myopic" / "seed0")
    shutil.copytree(two_pairs / "pb" / "runs" / "myopic" / "seed0", mixed / "runs" / "myopic" / "seed0")
    before = read_json(mixed / "gap.json") if (mixed / "gap.json").exists() else None
    capsys.readouterr()
    assert main(["gap", str(mixed), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "trained on different data" in err and "myopic/seed0" in err
    assert (read_json(mixed / "gap.json") if (mixed / "gap.json").exists() else None) == before


def test_tasks_runs_checks_every_arms_training_split(two_pairs, capsys):
    """The baseline trained on corpus a; the other arm on corpus b, which is the scored data: refused."""
    runs = [f"base={two_pairs}/pa/runs/vanilla/seed0", f"other={two_pairs}/pb/runs/vanilla/seed0"]
    capsys.readouterr()
    assert main(["tasks", "--runs", *runs, "--data", str(two_pairs / "b"), "--out", str(two_pairs / "t"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "overlap training text" in err and "other[0]" in err and not (two_pairs / "t").exists()


def test_a_second_gap_on_the_same_pair_is_refused_while_one_writes(two_pairs, capsys):
    pair = two_pairs / "pa"
    stamp = (pair / "gap.json").stat().st_mtime_ns
    with exclusive_writer(pair, "gap results"):
        capsys.readouterr()
        assert main(["gap", str(pair), "--no-progress", "--reuse-scores"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error:") and "being written by another process" in err
    assert (pair / "gap.json").stat().st_mtime_ns == stamp


def test_pair_rerun_restarts_a_run_stopped_before_its_first_checkpoint(tmp_path):
    """What a kill before the first checkpoint leaves (config, metrics, the lock) does not block the pair: a rerun
    of the same command trains that run from step 0 and finishes it (before: 'already holds a run ... use
    --resume', a flag `pair` does not have)."""
    data = _corpus(tmp_path / "c", 3)
    _pair(data, tmp_path / "p", seeds="0")
    rd = tmp_path / "p" / "runs" / "myopic-hidden" / "seed0"
    for q in list(rd.iterdir()):
        if q.name not in ("config.json", "metrics.jsonl", ".lock"):
            q.unlink() if q.is_file() else shutil.rmtree(q)
    assert not (rd / "result.json").exists()
    _pair(data, tmp_path / "p", seeds="0")
    assert (rd / "result.json").is_file() and read_json(rd / "result.json")["steps"] == 4
