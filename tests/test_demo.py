"""A tiny end-to-end run of ``myopia demo`` and the synthetic/arithmetic commands, plus the verdict logic."""

import json
from dataclasses import replace

import pytest

from myopia.cli import main
from myopia.errors import MyopiaError
from myopia.experiments.demo import (DEMO, FULL, SCREENED_SEEDS, criterion_checks, demo_config, interaction,
                                     meets_target, run_demo, target_checks, verdict)

TINY = dict(seq_len=8, d_model=16, n_head=2, n_layer=1, steps=3, batch_size=8, eval_sequences=32, eval_every=2,
            probe_max_lag=4, probe_fit_sequences=64, probe_test_sequences=32, device="cpu", seeds=(3, 4))


def load_demo_search():
    """The configuration search is a development script outside the package (dev/demo_search.py)."""
    import importlib
    import sys
    from pathlib import Path

    dev = str(Path(__file__).resolve().parents[1] / "dev")
    if dev not in sys.path:  # on the path, so that its spawned worker processes can import it too
        sys.path.insert(0, dev)
    return importlib.import_module("demo_search")


@pytest.mark.slow
def test_demo_smoke_writes_result_and_plots(tmp_path):
    cfg = demo_config(**TINY, gradients=["vanilla", "myopic-hidden", "myopic", "bigram"])
    result = run_demo(cfg, tmp_path / "demo", progress=False, log=lambda m: None, workers=1)
    saved = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert saved["parallel"]["processes"] == 1
    for task in ("precache", "control"):
        for key in ("trivial", "vanilla", "myopic", "myopic-hidden", "bigram"):
            assert isinstance(saved[task][key], float), (task, key)
        assert saved[task]["fraction_of_trivial"]["trivial"] == pytest.approx(1.0)
        assert set(saved[task]["gap"]) == {"myopic", "myopic-hidden", "bigram"}
        probes = saved[task]["probes"]["vanilla"]
        assert probes["lags"] == [0, 1, 2, 3, 4] and len(probes["sin"]) == 2  # embedding + 1 block
    assert saved["config"]["steps"] == 3 and saved["seeds"] == [3, 4]
    assert saved["screened_seeds"] == list(SCREENED_SEEDS) and not set(saved["seeds"]) & set(SCREENED_SEEDS)
    assert "interaction" in saved["criterion"] and saved["criterion"] == result["criterion"]
    for arm in ("myopic", "myopic-hidden"):  # the issue-30 contract
        inter = saved["interaction"][arm]
        assert inter["per_seed"] == pytest.approx([a - b for a, b in zip(saved["precache"]["gap"][arm]["per_seed"],
                                                                        saved["control"]["gap"][arm]["per_seed"])])
        assert inter["mean"] == pytest.approx(sum(inter["per_seed"]) / 2) and len(inter["ci95"]) == 2
    for task in ("precache", "control"):
        for arm in ("vanilla", "myopic-hidden", "myopic"):
            r2 = saved["probe_r2"][task][arm]
            assert len(r2) == 2 and all(v <= 1.0 for v in r2)
            assert len(saved["probe_r2_by_position"][task][arm]) == 2  # every seed probed
            assert len(saved[task]["probes_by_seed"][arm]) == 2
    assert saved["criterion_checks"]["met"] == all(v for k, v in saved["criterion_checks"].items() if k != "met")
    for task in ("precache", "control"):  # the issue-15 contract
        r = saved[task]
        assert r["n_seeds"] == 2 and len(r["per_seed"]["vanilla"]) == 2
        for arm in ("myopic", "myopic-hidden"):
            assert r["fraction_of_trivial"][arm] == pytest.approx(
                sum(v / t for v, t in zip(r["per_seed"][arm], r["per_seed"]["trivial"])) / 2)
            gap = r["gap"][arm]
            assert gap["n_seeds"] == 2 and gap["training_noise"].startswith("included")
            lo, hi = gap["ci95"]
            assert lo <= gap["mean"] <= hi and [gap["lo"], gap["hi"]] == gap["ci95"]
            assert hi - lo >= gap["ci95_eval"][1] - gap["ci95_eval"][0]  # never narrower than evaluation-only
        bp = r["probes"]["vanilla"]["by_position"]
        assert bp["last_positions"] == [7] and bp["future_positions"] == list(range(7))
        assert len(bp["sin"]) == 2 and len(bp["sin"][0]) == 8
        assert r["reproducibility"]["torch_threads"] >= 1
    assert set(saved["target"]["checks"]) == {"precache", "control"} and "2 fresh seeds (3, 4)" in saved["verdict"]
    assert saved["target_line"].startswith("Secondary") and len(saved["verdict"].splitlines()) <= 4
    assert saved["git"]["commit"] and saved["versions"]["torch"]
    assert saved["verdict"] == result["verdict"] and "myopic-hidden" in saved["table"]
    for name in ("training_curves.png", "probes_precache.png", "probes_control.png", "probes_by_position.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 1000
    for task, runs in saved["precache"]["runs"].items():
        for seed in (3, 4):
            assert (tmp_path / "demo" / "runs" / "precache" / f"precache-{task}-seed{seed}" / "metrics.jsonl").exists()
    with pytest.raises(MyopiaError):  # never overwrite a finished demo
        run_demo(cfg, tmp_path / "demo", progress=False, log=lambda m: None)


@pytest.mark.slow
def test_demo_tasks_in_parallel_processes_match_serial(tmp_path):
    """The default trains the two tasks in two processes; the numbers must not depend on that."""
    cfg = demo_config(**TINY)
    assert cfg.gradients == ("vanilla", "myopic-hidden", "myopic")
    serial = run_demo(cfg, None, progress=False, log=lambda m: None, workers=1)
    parallel = run_demo(cfg, tmp_path / "p", progress=False, log=lambda m: None, plots=False, workers=2)
    assert parallel["parallel"]["processes"] == 2
    for task in ("precache", "control"):
        assert "bigram" not in parallel[task]
        for key in ("trivial", "vanilla", "myopic-hidden", "myopic"):
            assert parallel[task][key] == pytest.approx(serial[task][key], rel=1e-4), (task, key)
    with pytest.raises(MyopiaError, match="workers"):
        run_demo(cfg, None, progress=False, log=lambda m: None, workers=0)


def test_two_runs_of_one_small_config_are_bitwise_identical():
    """Reproducibility: same config, seeds and thread count -> identical numbers, not merely close ones."""
    import torch

    cfg = demo_config(**{**TINY, "steps": 6}, gradients=["vanilla", "myopic-hidden", "myopic"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = run_demo(cfg, None, progress=False, log=lambda m: None, workers=1, plots=False)
        b = run_demo(cfg, None, progress=False, log=lambda m: None, workers=1, plots=False)
    finally:
        torch.set_num_threads(threads)
    for task in ("precache", "control"):
        assert a[task]["per_seed"] == b[task]["per_seed"]
        assert a[task]["gap"]["myopic-hidden"]["ci95"] == b[task]["gap"]["myopic-hidden"]["ci95"]
        assert a[task]["probes"]["myopic"]["by_position"]["sin"] == b[task]["probes"]["myopic"]["by_position"]["sin"]
    assert a["precache"]["per_seed"]["vanilla"] != a["control"]["per_seed"]["vanilla"]  # not a constant


def test_target_is_checked_on_every_arm():
    ok = {"precache": {"vanilla": 0.1, "myopic-hidden": 0.95, "myopic": 0.99},
          "control": {"vanilla": 0.05, "myopic-hidden": 0.12, "myopic": 0.6}}
    assert meets_target(ok)  # strict myopia on control is not part of the target
    for task, arm, bad in (("precache", "myopic", 0.85), ("precache", "vanilla", 0.2),
                           ("control", "myopic-hidden", 0.2), ("control", "vanilla", 0.16)):
        f = {t: dict(v) for t, v in ok.items()}
        f[task][arm] = bad
        checks = target_checks(f)
        assert not meets_target(f) and not checks[task][arm]
        assert sum(not c for arms in checks.values() for c in arms.values()) == 1


def test_paper_scale_config_is_the_papers():
    assert (FULL.omega, FULL.window, FULL.seq_len, FULL.d_model, FULL.n_layer) == (10.0, 10, 64, 128, 2)
    assert DEMO.seq_len * DEMO.d_model < FULL.seq_len * FULL.d_model


def test_interaction_interval_on_planted_per_seed_gaps():
    # d = precache gap − control gap = 0.8, 0.4, 0.8, 0.2: mean 0.55, sd 0.3, se 0.15; t(0.975, 3 df) = 3.18245
    # (tables), half-width 0.47737: [0.07263, 1.02737]
    r = interaction([0.9, 0.6, 0.8, 0.5], [0.1, 0.2, 0.0, 0.3])
    assert r["per_seed"] == pytest.approx([0.8, 0.4, 0.8, 0.2]) and r["mean"] == pytest.approx(0.55)
    assert r["ci95"] == pytest.approx([0.07263, 1.02737], abs=1e-5) and r["n_seeds"] == 4
    # pairing matters: the same numbers with control's seeds reordered give another interval
    assert interaction([0.9, 0.6, 0.8, 0.5], [0.3, 0.0, 0.2, 0.1])["ci95"] != pytest.approx(r["ci95"])
    assert interaction([0.5], [0.1])["ci95"] is None  # no interval from one seed
    with pytest.raises(MyopiaError):
        interaction([0.5, 0.6], [0.1])


def planted(inter_lo, vanilla_r2, hidden_r2, seeds=(10, 11, 12)):
    inter = {arm: {"mean": inter_lo + 0.2, "ci95": [inter_lo, inter_lo + 0.4], "n_seeds": len(seeds),
                   "per_seed": [inter_lo + 0.2] * len(seeds)} for arm in ("myopic", "myopic-hidden")}
    r2 = {"precache": {"vanilla": vanilla_r2, "myopic-hidden": hidden_r2, "myopic": [0.05] * len(seeds)}}
    result = {"seeds": list(seeds), "interaction": inter, "probe_r2": r2,
              "criterion_checks": criterion_checks(inter, r2)}
    return result


def test_criterion_and_verdict_follow_the_declared_rule():
    ok = planted(0.1, [0.9, 0.95, 0.7], [0.01, 0.05, 0.1])
    assert ok["criterion_checks"]["met"]
    v = verdict(ok)
    assert v.startswith("Shown on 3 fresh seeds (10, 11, 12)") and len(v.splitlines()) == 3
    assert "myopic-hidden +0.300 [+0.100, +0.500]" in v and "R² 0.70–0.95" in v and "does not" in v
    assert "use it on every seed" in v
    assert "use it on 2 of 3 seeds" in verdict(planted(0.1, [0.9, 0.49, 0.9], [0.01] * 3))
    for bad, failed in ((planted(-0.01, [0.9] * 3, [0.01] * 3), "interaction myopic above 0"),
                        (planted(0.1, [0.9, 0.49, 0.9], [0.01] * 3), "vanilla probe R²"),
                        (planted(0.1, [0.9] * 3, [0.01, 0.2, 0.01]), "myopic-hidden probe R²")):
        assert not bad["criterion_checks"]["met"]
        assert verdict(bad).startswith("Not shown on 3 fresh seeds") and failed in verdict(bad).splitlines()[0]
    assert verdict({"seeds": [10]}).startswith("No verdict")


def test_demo_refuses_screened_seeds_in_one_line(tmp_path, capsys):
    out = tmp_path / "d"
    for argv in (["--seeds", "10,2"], ["--seed", "1", "--n-seeds", "3"], ["--seeds", "11,11"], ["--seeds", "a"]):
        assert main(["demo", *argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and not out.exists()
    assert "[0, 1, 2]" in str(pytest.raises(MyopiaError, demo_config, seeds=(0, 5)).value)
    assert demo_config(seeds=[20, 21]).seeds == (20, 21)
    assert not set(DEMO.seeds) & set(SCREENED_SEEDS) and len(DEMO.seeds) >= 5
    with pytest.raises(MyopiaError, match="fresh seeds"):  # the library refuses too, not only the CLI
        run_demo(replace(demo_config(**TINY), seeds=(0, 5)), None, progress=False, log=lambda m: None)


@pytest.mark.slow
def test_cli_synthetic_and_arithmetic_tiny(tmp_path, capsys):
    code = main(["synthetic", "--task", "control", "--gradients", "vanilla,myopic", "--out", str(tmp_path / "s"),
                 "--steps", "2", "--batch-size", "4", "--seq-len", "6", "--d-model", "16", "--n-head", "2",
                 "--n-layer", "1", "--eval-sequences", "16", "--no-progress", "--device", "cpu"])
    assert code == 0
    saved = json.loads((tmp_path / "s" / "result.json").read_text())
    assert {"trivial", "vanilla", "myopic"} <= set(saved["control"]) and "gap" in saved["control"]
    code = main(["arithmetic", "--digits", "1", "--fillers", "0,1", "--gradients", "vanilla,myopic-hidden",
                 "--out", str(tmp_path / "a"), "--steps", "2", "--batch-size", "4", "--d-model", "16",
                 "--n-head", "2", "--n-layer", "1", "--heldout-pairs", "8", "--seeds", "0,1,2", "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    assert set(saved["accuracy"]) == {"filler=0", "filler=1"}
    assert saved["n_seeds"] == 3 and saved["heldout_pairs"] == 8  # the issue-15 contract
    inter = saved["interaction"]["myopic-hidden"]
    assert inter["n_seeds"] == 3 and len(inter["ci95"]) == 2 and inter["mean"] is not None
    for key in ("answer_loss", "accuracy", "accuracy_ci95"):
        assert set(saved[key]["filler=1"]) == {"vanilla", "myopic-hidden"}
    assert "filler=1" in saved["filler_masked"]["accuracy"] and "filler=0" not in saved["filler_masked"]["accuracy"]
    assert 0.0 <= saved["accuracy"]["filler=1"]["myopic-hidden"] <= 1.0
    assert (tmp_path / "a" / "accuracy.png").exists()
    assert main(["arithmetic", "--fillers", "x", "--out", str(tmp_path / "b")]) == 2
    assert main(["arithmetic", "--seeds", "0,0", "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()
    assert main(["demo", "--gradients", "vanilla,bogus"]) == 2
    assert "error:" in capsys.readouterr().err


def test_demo_search_refuses_unknown_points_and_keeps_its_ladder_and_windows_apart(tmp_path, capsys):
    demo_search = load_demo_search()
    out = tmp_path / "search"
    assert demo_search.main([str(out), "no-such-point"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown grid point") and not out.exists()
    # every ladder rung and window point is a grid point on top of the committed base; the default run of the
    # grid (no names) runs neither, and the ladder rungs only add steps to the demo's p = 1
    assert set(demo_search.LADDER) | set(demo_search.WINDOWS) | set(demo_search.SESSION3) <= set(demo_search.GRID)
    assert all(set(demo_search.GRID[n]) == {"p", "steps"} for n in demo_search.LADDER)
    assert [demo_search.GRID[n]["steps"] for n in demo_search.LADDER] == [2000, 4000, 8000]


def test_demo_search_probe_reads_every_arm_of_a_point_and_finds_no_feature_in_the_input_embedding(tmp_path, capsys,
                                                                                                     monkeypatch):
    from dataclasses import replace as dc_replace

    demo_search = load_demo_search()
    out = tmp_path / "search"
    assert demo_search.main([str(out), "--probe", "base"]) == 2  # nothing trained yet: one clear error
    assert capsys.readouterr().err.startswith("error: ")
    tiny = dc_replace(demo_search.BASE, p=1.0, window=2, seq_len=8, d_model=16, n_head=2, steps=60, batch_size=32,
                      eval_sequences=64, probe_fit_sequences=256, probe_test_sequences=128)
    monkeypatch.setattr(demo_search, "BASE", tiny)
    demo_search.run_point("base", out)
    row = demo_search.probe_point("base", out)
    assert set(row["probes"]) == {"precache", "control"}
    for task in row["probes"].values():
        assert set(task) == {"vanilla", "myopic-hidden", "myopic"}
        for arm in task.values():
            assert len(arm["sin_lag0"]) == tiny.n_layer + 1 == len(arm["sin_with_future"])
            # layer 0 is the input embedding, linear in (x_n, z_n): it cannot hold sin(ω x_n)
            assert abs(arm["sin_lag0"][0]) < 0.05 and all(v <= 1.0 for v in arm["sin_lag0"])


def test_cpu_long_preset_is_the_search_point_that_met_the_target_and_excludes_full(tmp_path, capsys):
    from dataclasses import asdict, replace as dc_replace

    from myopia.cli import main
    from myopia.experiments.demo import CPU_LONG, PRESETS, demo_config

    demo_search = load_demo_search()
    point = dc_replace(demo_search.BASE, **demo_search.GRID["p1-mlp1-window4-2000steps"])
    # the same training problem and model as the searched point; only logging cadence and notes differ
    differ = {k for k, v in asdict(CPU_LONG).items() if asdict(point)[k] != v}
    assert differ <= {"eval_every", "notes"}
    assert PRESETS["cpu-long"] == CPU_LONG and demo_config(preset="cpu-long").steps == 2000
    assert demo_config(preset="cpu-long", steps=10).steps == 10
    assert main(["demo", "--full", "--cpu-long"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    out = tmp_path / "d"
    assert main(["demo", "--cpu-long", "--steps", "3", "--n-seeds", "1", "--eval-sequences", "64", "--no-plots",
                 "--no-progress", "--workers", "1", "--out", str(out)]) == 0
    saved = json.loads((out / "result.json").read_text())
    assert saved["preset"] == "cpu-long" and saved["full"] is False
    assert (saved["config"]["window"], saved["config"]["mlp_ratio"], saved["config"]["steps"]) == (4, 1, 3)
    assert "cpu-long configuration" in capsys.readouterr().out
