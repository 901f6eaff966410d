"""myopia sweep / horizon-sweep on tiny models: the grid, skipping finished runs, resuming partial ones, reports."""

import json
import random
import re

import numpy as np
import pytest

from myopia.cli import main
from myopia.data import LMTask, load_corpus
from myopia.errors import MyopiaError
from myopia import sweep_grid as sweep_mod
from myopia.experiments.horizon_sweep import default_horizons, horizon_arms, run_horizon_sweep
from myopia.scaling_presets import PRESETS
from myopia.sweep_grid import (
    SweepSettings,
    ladder,
    parse_sizes,
    parse_tokens,
    run_status,
)
from myopia.model import non_embedding_params


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(80)]
    path = tmp_path_factory.mktemp("corpus") / "toy.txt"
    path.write_text("\n\n".join(docs) + "\n")
    return path


def markdown_table(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the Markdown table whose header row starts with ``| first_header |``."""
    def split(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split(" | ")]

    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(split(line))
    return split(lines[start]), rows


def assert_report_files(d, figures: list[str]) -> str:
    """report.md links every figure (a PNG in report_files/) and report.html embeds them; returns report.md."""
    md = (d / "report.md").read_text()
    html = (d / "report.html").read_text()
    for name in figures:
        png = (d / "report_files" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 1000
        assert f"](report_files/{name}.png)" in md
    assert html.count("data:image/png;base64,") == len(figures)
    return md


def tiny_settings(**kw):
    base = dict(sizes=parse_sizes("1x16,1x32,2x32", head_dim=16), tokens=parse_tokens("384"), seq_len=16,
                batch_size=4, lr=3e-3, eval_tokens=256, ckpt_every=2, device="cpu")
    base.update(kw)
    return SweepSettings(**base)


# ------------------------------------------------------------------------------------------------------------
# Shapes, ladders (the horizon sweep's) and the retired ladder design
# ------------------------------------------------------------------------------------------------------------


def test_ladder_rules_and_parsing():
    sizes = ladder((32, 48, 64, 96, 128), aspect=32, head_dim=32)
    assert [s.name for s in sizes] == ["1x32h1", "2x48h1", "2x64h2", "3x96h3", "4x128h4"]
    assert [s.name for s in parse_sizes("2x64, 4x128h8", head_dim=32)] == ["2x64h2", "4x128h8"]
    with pytest.raises(MyopiaError, match="LAYERSxWIDTH"):
        parse_sizes("2-64", head_dim=32)
    with pytest.raises(MyopiaError, match="divide"):
        parse_sizes("2x64h3", head_dim=32)
    budgets = parse_tokens("2M,500k,1.5e3,20N")
    assert [b.label for b in budgets] == ["2M", "500k", "1.5k", "20N"]
    assert budgets[3].resolve(1000) == 20000 and budgets[0].resolve(1) == 2_000_000
    with pytest.raises(MyopiaError, match="token budget"):
        parse_tokens("lots")


def test_presets_span_the_required_range():
    cpu = SweepSettings.from_preset("cpu")
    n = [non_embedding_params(sweep_mod.model_config_for(cpu, size, 257)) for size in cpu.sizes]
    assert len(n) >= 5 and max(n) / min(n) >= 30
    gpt2 = SweepSettings.from_preset("gpu-64").sizes[-1]
    assert (gpt2.n_layer, gpt2.d_model, gpt2.n_head) == (12, 768, 12)  # GPT-2 small
    assert PRESETS["gpu-64"].seq_len == 64 and PRESETS["gpu-256"].seq_len == 256
    # GPT-2 small with its 50257-token vocabulary: 124M parameters
    top = SweepSettings.from_preset("gpu-64")
    cfg = sweep_mod.model_config_for(top, top.sizes[-1], 50257)
    assert non_embedding_params(cfg) + 50257 * cfg.d_model == pytest.approx(124.4e6, rel=0.01)


# ------------------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------------------


def test_the_retired_ladder_design_gets_one_clear_error(corpus_file, tmp_path, capsys):
    base = ["sweep", "--data", str(corpus_file), "--out", str(tmp_path / "s")]
    for extra in (["--design", "ladder"], ["--preset", "cpu"]):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "retired in myopia 0.2.0" in err
    assert not (tmp_path / "s").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "sweep.json").write_text(json.dumps({"kind": "myopia-sweep", "settings": {"tokens": ["2M"]}}))
    assert main(["report", str(tmp_path / "old")]) == 0
    assert "retired in myopia 0.2.0" in (tmp_path / "old" / "report.md").read_text()


@pytest.mark.slow
def test_horizon_sweep(corpus_file, tmp_path, monkeypatch):
    assert default_horizons(16) == [0, 1, 2, 4, 8]
    assert default_horizons(128)[-1] == 64
    with pytest.raises(MyopiaError, match="horizon"):
        horizon_arms(16, horizons=[15])
    with pytest.raises(MyopiaError, match="beta"):
        horizon_arms(16, betas=[1.0])
    corpus = load_corpus(corpus_file)
    settings = tiny_settings(sizes=parse_sizes("1x16", 16), tokens=parse_tokens("256"))
    s = run_horizon_sweep(corpus_file, tmp_path / "h", settings, horizons=[0, 4], betas=[0.5], corpus=corpus,
                          bootstrap=20, log=lambda m: None)
    assert s["complete"] and len(s["runs"]) == 1 + 2 * 3
    assert s["split"] == "test" and "test split" in s["units"]["loss"]  # no grid: one lr for every arm, said so
    assert s["lr"]["grid"] is None and s["lr"]["seeds"] == [] and set(s["lr"]["choice"].values()) == {3e-3}
    assert s["lr"]["val_loss"] == {} and s["lr"]["diverged"] == [] and not (tmp_path / "h" / "tune-vanilla-lr0.003-s100").exists()
    for key in ("kind", "complete", "pending", "data", "size", "params_non_embedding", "budget", "steps", "tokens",
                "settings", "units", "vanilla", "n_seeds", "training_noise", "null_gap", "holm_family_size",
                "horizon", "beta", "runs", "provenance"):
        assert key in s, key
    assert set(s["provenance"]["git"]) == {"commit", "dirty"}
    for v in ("myopic", "myopic-hidden"):
        assert [p["horizon"] for p in s["horizon"][v]] == [0, 4]
        assert [p["beta"] for p in s["beta"][v]] == [0.0, 0.5]
        assert all(p["loss"] is not None and p["gap_ci"] is not None for p in s["horizon"][v])
        assert s["beta"][v][0]["loss"] == s["horizon"][v][0]["loss"]  # beta 0 is the h = 0 run
    cfg = json.loads((tmp_path / "h" / "myopic-hidden-h4-s0" / "config.json").read_text())["run"]["model"]
    assert cfg["gradient"] == "myopic-hidden" and cfg["horizon"] == 4 and cfg["beta"] == 0.0

    # `horizon-sweep --report` (the finished sweep itself stubbed out) writes the report of `myopia report`
    import myopia.experiments.horizon_sweep as horizon_mod

    monkeypatch.setattr(horizon_mod, "run_horizon_sweep", lambda *a, **kw: s)
    assert main(["horizon-sweep", "--data", str(corpus_file), "--out", str(tmp_path / "h"), "--sizes", "1x16",
                 "--tokens", "256", "--seq-len", "16", "--horizons", "0,4", "--betas", "0.5", "--report"]) == 0
    md = assert_report_files(tmp_path / "h", ["horizon_sweep"])
    header, rows = markdown_table(md, "horizon h")
    assert header == ["horizon h", "myopic loss", "myopic gap", "myopic-hidden loss", "myopic-hidden gap"]
    assert [r[0] for r in rows] == ["0", "4"]
    for row, p in zip(rows, s["horizon"]["myopic-hidden"]):
        assert row[3] == f"{p['loss']:.3f}" and row[4].startswith(f"{p['gap']:+.3f} [")
    header, rows = markdown_table(md, "beta")
    assert [r[0] for r in rows] == ["0", "0.5"] and rows[0][1] == f"{s['beta']['myopic'][0]['loss']:.3f}"


# ------------------------------------------------------------------------------------------------------------
# --design isoflop
# ------------------------------------------------------------------------------------------------------------


def tiny_iso(**kw):
    from myopia.experiments.isoflop import IsoFlopSettings

    # tiny on purpose: 0.02-3 tokens/parameter keeps the runs at a few dozen steps (the design rules are the same)
    base = dict(budgets=[1e8, 2e8, 4e8], gradients=["vanilla", "myopic-hidden"], n_sizes=3, ratio_range=(0.02, 3.0),
                aspect=16, head_dim=16, min_width=16, max_width=64, seeds=[0, 1, 2], seq_len=16, batch_size=4,
                lr=3e-3, pilot_lr_grid=[2e-3, 6e-3], pilot_sizes=2, warmup_min=2, decay_frac=0.25, eval_tokens=256,
                ckpt_every=4, device="cpu")
    base.update(kw)
    return IsoFlopSettings(**base)


def test_isoflop_plan_follows_the_recipe():
    from myopia.experiments.isoflop import IsoFlopSettings, pilot_runs, plan_runs, shard_runs

    s = tiny_iso(strict_budgets=[2e8])
    runs = plan_runs(s, 257, 100_000, batch_size=4, lr=3e-3)
    trunks = {r.name: r for r in runs if r.stage == "trunk"}
    for r in runs:
        cfg = r.train_cfg
        assert cfg.schedule == "wsd" and cfg.lr == 3e-3 and cfg.batch_size == 4 and cfg.mup_base_width == 0
        assert abs(r.flops / r.budget - 1) < 0.05 and r.seed in (0, 1, 2)
        if r.stage == "branch":  # resumes its trunk at its own decay start, same shape, warmup and seed
            t = trunks[r.trunk]
            assert r.branch_step == cfg.stable_end and r.branch_step in t.branch_at and t.budget > r.budget
            assert (t.size, t.gradient, t.seed, t.train_cfg.warmup) == (r.size, r.gradient, r.seed, cfg.warmup)
            assert r.trained_flops == pytest.approx(r.flops * (cfg.steps - r.branch_step) / cfg.steps)
    # one trunk per (shape, arm, seed), at the shape's largest budget; strict myopic only where asked
    keys = [(t.size, t.gradient, t.seed) for t in trunks.values()]
    assert len(keys) == len(set(keys))
    assert {r.budget for r in runs if r.gradient == "myopic"} == {2e8}
    for b in s.budgets:
        cell = [r for r in runs if r.budget == b and r.gradient == "vanilla"]
        assert len({r.size for r in cell}) == 3 and all(len([x for x in cell if x.size == z]) == 3
                                                          for z in {r.size for r in cell})
    pilot = pilot_runs(s, 257, 100_000)
    assert len(pilot) == 2 * 2 and {r.seed for r in pilot} == {100} and {r.budget for r in pilot} == {2e8}
    shards = [shard_runs(runs, (k, 2)) for k in range(2)]
    assert sorted(r.name for sh in shards for r in sh) == sorted(r.name for r in runs) and all(shards)
    for sh in shards:  # a branch travels with its trunk
        assert all(r.trunk in {x.name for x in sh} for r in sh if r.trunk)
    for kw, match in ((dict(seeds=[0, 1]), "at least 3 seeds"), (dict(pilot_seeds=[0]), "pilot seeds"),
                      (dict(schedule="cosine"), "wsd")):
        with pytest.raises(MyopiaError, match=match):
            tiny_iso(**kw)
    with pytest.raises(MyopiaError, match="vanilla"):
        IsoFlopSettings(budgets=[1e9], gradients=["myopic"])


def test_isoflop_sweep_trains_the_recipe_and_reports(corpus_file, tmp_path):
    from myopia.experiments import isoflop

    corpus = load_corpus(corpus_file)
    out = tmp_path / "iso"
    s = tiny_iso()
    first = isoflop.run_isoflop(corpus_file, out, s, corpus=corpus, max_runs=3, n_boot=50, log=lambda m: None)
    assert not first["complete"] and first["pilot"]["choice"] is None and not first["points"]
    second = isoflop.run_isoflop(corpus_file, out, s, corpus=corpus, n_boot=50, log=lambda m: None)
    assert second["complete"], second["pending"]
    choice = second["pilot"]["choice"]
    vals = second["pilot"]["val_loss"]
    assert f"b4-lr{choice['lr']:g}" == min(vals, key=vals.get)  # the pilot rule
    assert second["settings"]["schedule"] == "wsd" and second["settings"]["budgets"] == [1e8, 2e8, 4e8]
    pts = second["points"]
    assert len(pts) == 3 * 3 * 2 * 3 and not any(p["seed"] == 100 for p in pts)  # budgets x shapes x arms x seeds
    for p in pts:
        assert {"arm", "flops", "n_params", "tokens", "loss", "seed", "size", "branched_from"} <= set(p)
        assert re.fullmatch(r"\d+x\d+h\d+", p["size"])
        run = next(r for r in second["runs"] if r["gradient"] == p["arm"] and r["size"] == p["size"]
                   and r["seed"] == p["seed"] and r["budget"] == p["flops"])
        assert p["branched_from"] == run["branched_from"]
        if p["branched_from"] is not None:
            result = json.loads((out / run["name"] / "result.json").read_text())
            assert result["resumed_from_step"] == p["branched_from"]["step"]
    assert any(p["branched_from"] for p in pts) and any(p["branched_from"] is None for p in pts)
    trunk_flops = sum(r["flops"] for r in second["runs"] if r["stage"] in ("trunk", "pilot"))
    assert trunk_flops < second["total_train_flops"] < sum(r["flops"] for r in second["runs"])
    fr = second["frontier"]
    assert all("interior" in row for row in fr["frontiers"]["vanilla"])
    assert set(second["frontier_fit"]) == {"vanilla", "myopic-hidden"}
    for f in second["frontier_fit"].values():
        assert "error" in f or ({"E", "A", "B", "alpha", "beta", "ci95"} <= set(f))
    assert main(["report", str(out)]) == 0
    md = assert_report_files(out, ["isoflop_profiles", "isoflop_frontiers", "isoflop_k_vs_null"])
    assert "Recipe: warmup-stable-decay" in md and "Pilot (unreported seeds" in md


def test_isoflop_shards_started_together_share_the_pilot_and_finish_the_sweep(corpus_file, tmp_path, monkeypatch):
    """Two shards started at once: each trains half of the pilot, waits for the other half before the pilot's
    choice, waits for the whole first pass before the seeds at the measured optima, and together they finish."""
    import threading

    from myopia.experiments import isoflop

    monkeypatch.setattr(isoflop, "WAIT_POLL_S", 0.2)
    corpus = load_corpus(corpus_file)
    out = tmp_path / "iso"
    s = tiny_iso(budgets=[1e8, 2e8], optimum_seeds=[7], edge_shapes=True)
    trained: dict[int, list[str]] = {0: [], 1: []}
    errors = []

    def shard(k):
        try:
            isoflop.run_isoflop(corpus_file, out, s, corpus=corpus, shard=(k, 2), n_boot=20,
                                log=lambda m, k=k: trained[k].append(m))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not errors and not any(th.is_alive() for th in threads)
    summary = json.loads((out / "sweep.json").read_text())
    done = {r["name"] for r in summary["runs"] if r["status"] == "done"}
    pilot = [r["name"] for r in summary["runs"] if r["stage"] == "pilot"]
    assert len(pilot) == 4 and set(pilot) <= done
    assert {p["seed"] for p in summary["points"]} == {0, 1, 2, 7}  # the optimum seeds ran after the first pass
    assert all(r["status"] == "done" for r in summary["runs"]) and summary["complete"]
    edges = summary["edge_shapes"]  # decided after the first pass; every shape it added was trained
    assert edges["enabled"] and isinstance(edges["added"], list)
    for a in edges["added"]:
        if a["size"] is not None:
            assert {p["arm"] for p in summary["points"] if p["size"] == a["size"] and p["flops"] == a["budget"]} \
                == {"vanilla", "myopic-hidden"}


def test_isoflop_adds_seeds_at_the_measured_optima_after_the_first_pass(tmp_path):
    """The rule fixed before the first pass: once every first-pass run has finished, per (budget, arm) the shape of
    lowest mean validation loss gets optimum_seeds, at every arm, as whole trunks with branches."""
    from myopia.experiments.isoflop import optimum_shapes, plan_runs
    from myopia.io import write_json

    s = tiny_iso(optimum_seeds=[7])
    first = plan_runs(s, 257, 100_000, batch_size=4, lr=3e-3, out=tmp_path)
    assert {r.seed for r in first} == {0, 1, 2} and optimum_shapes(first, tmp_path) is None  # nothing trained yet
    best = {1e8: "1x32h2", 2e8: "1x16h1", 4e8: "1x32h2"}  # planted optimum per budget
    for r in first:
        loss = 2.0 + (0.0 if best[r.budget] == r.size.name else 0.1) + 0.01 * r.seed
        write_json(tmp_path / r.name / "result.json", {"eval_loss": loss})
    assert optimum_shapes(first, tmp_path) == ["1x16h1", "1x32h2"]
    both = plan_runs(s, 257, 100_000, batch_size=4, lr=3e-3, out=tmp_path)
    extra = both[len(first):]
    assert both[:len(first)] == first and {r.seed for r in extra} == {7}
    assert {r.size.name for r in extra} == {"1x16h1", "1x32h2"}
    assert {r.gradient for r in extra} == {"vanilla", "myopic-hidden"}
    assert {(r.size.name, r.budget) for r in extra} == {(r.size.name, r.budget) for r in first
                                                        if r.size.name in ("1x16h1", "1x32h2")}
    with pytest.raises(MyopiaError, match="optimum seeds"):
        tiny_iso(optimum_seeds=[2])


def test_isoflop_diverged_trunk_takes_its_branches_and_the_sweep_goes_on(corpus_file, tmp_path, monkeypatch):
    """A non-finite loss (the trainer's NaN error) is recorded in diverged.json, a branch of a diverged trunk is
    recorded too without training, nothing diverged is retried, and other errors still stop the sweep."""
    from myopia.experiments import isoflop

    corpus = load_corpus(corpus_file)
    s = tiny_iso(gradients=["vanilla"], pilot_lr_grid=[])
    calls = []

    def ensure(data, run_dir, *a, **kw):
        calls.append(run_dir.name)
        raise MyopiaError("non-finite loss at step 3 (NaN or inf): stopping. Try a lower --lr")

    monkeypatch.setattr(sweep_mod, "ensure_run", ensure)  # the library wrapper records the divergence
    first = isoflop.run_isoflop(corpus_file, tmp_path / "iso", s, corpus=corpus, n_boot=20, log=lambda m: None)
    runs = {r["name"]: r for r in first["runs"]}
    assert first["complete"] and first["points"] == [] and set(first["diverged"]) == set(runs)
    assert set(calls) == {n for n, r in runs.items() if r["stage"] == "trunk"}  # branches never trained
    calls.clear()
    isoflop.run_isoflop(corpus_file, tmp_path / "iso", s, corpus=corpus, n_boot=20, log=lambda m: None)
    assert calls == []
    monkeypatch.setattr(sweep_mod, "ensure_run", lambda *a, **k: (_ for _ in ()).throw(MyopiaError("disk full")))
    with pytest.raises(MyopiaError, match="disk full"):
        isoflop.run_isoflop(corpus_file, tmp_path / "other", s, corpus=corpus, n_boot=20, log=lambda m: None)


def test_isoflop_refuses_a_folder_of_a_retired_design(tmp_path):
    from myopia.experiments import isoflop
    from myopia.io import write_json

    write_json(tmp_path / "sweep.json", {"kind": "myopia-sweep", "design": "isoflop", "settings": {"lr_grid": [1e-3]}})
    with pytest.raises(MyopiaError, match="0.2.0"):
        isoflop.run_isoflop("unused", tmp_path, tiny_iso(), corpus=object(), log=lambda m: None)


def test_cpu_isoflop_preset_follows_the_recipe():
    """The CPU preset (recipes/isoflop.toml): budgets over >= 1 decade, vanilla and myopic-hidden at every budget,
    strict myopic at >= 2, 3 seeds, a pilot on other seeds; on the Brown split's size, 5 shapes per budget of
    head size 16 with >= 2 layers above 20k non-embedding parameters, within the epoch cap."""
    from myopia.cli import build_parser
    from myopia.cli.sweep import isoflop_settings_from_args
    from myopia.experiments.isoflop import plan_runs
    from myopia.scaling_presets import isoflop_presets

    s = isoflop_settings_from_args(build_parser().parse_args(["sweep", "--data", "x", "--out", "y",
                                                               "--preset", "cpu-isoflop"]))
    assert max(s.budgets) / min(s.budgets) >= 10 and len(s.strict_budgets) >= 2
    assert s.gradients == ["vanilla", "myopic-hidden"] and len(s.seeds) >= 3 and not set(s.seeds) & set(s.pilot_seeds)
    assert s.schedule == "wsd" and s.head_dim == 16 and s.pilot_lr_grid and s.pilot_batch_grid
    runs = plan_runs(s, 257, train_tokens=5_371_584, batch_size=4, lr=6e-3)
    for b in s.budgets:
        mine = [r for r in runs if r.budget == b and r.gradient == "vanilla" and r.seed == 0]
        assert len(mine) == 5
    for r in runs:
        assert r.size.d_model // r.size.n_head == 16
        assert r.size.n_layer >= 2 or r.params_non_embedding <= 20_000
        assert r.epochs <= s.max_epochs
    assert "GPU-hours" in isoflop_presets()["gpu-isoflop"]["estimate"]
    s2 = isoflop_settings_from_args(build_parser().parse_args(
        ["sweep", "--data", "x", "--out", "y", "--preset", "cpu-isoflop", "--ratio-range", "5,100",
         "--lr-grid", "none", "--lr", "0.01", "--decay-frac", "0.3"]))
    assert s2.ratio_range == (5.0, 100.0) and s2.pilot_lr_grid == [] and s2.lr == 0.01 and s2.decay_frac == 0.3
    with pytest.raises(MyopiaError, match="LO,HI"):
        isoflop_settings_from_args(build_parser().parse_args(
            ["sweep", "--data", "x", "--out", "y", "--preset", "cpu-isoflop", "--ratio-range", "5"]))


def test_isoflop_cli_errors_and_dry_run(corpus_file, tmp_path, capsys):
    base = ["sweep", "--data", str(corpus_file), "--out", str(tmp_path / "s")]
    assert main(base + ["--design", "isoflop", "--extrapolate"]) == 2
    assert "--asymptote" in capsys.readouterr().err
    assert main(base + ["--preset", "cpu-isoflop", "--tokens", "1M"]) == 2
    assert "horizon-sweep" in capsys.readouterr().err
    assert main(base + ["--preset", "cpu-isoflop", "--shard", "2/2", "--dry-run"]) == 2
    assert main(base + ["--preset", "cpu-isoflop", "--schedule", "cosine", "--dry-run"]) == 2
    assert "wsd" in capsys.readouterr().err
    tiny = base + ["--design", "isoflop", "--aspect", "16", "--seq-len", "16", "--n-sizes", "3", "--dry-run"]
    assert main(tiny + ["--budgets", "1e8,2e8,4e8", "--ratio-range", "0.02,3"]) == 2  # the preset's 20-step warmup
    assert "leave no stable phase" in capsys.readouterr().err
    assert main(tiny + ["--budgets", "2e9,4e9,8e9", "--ratio-range", "0.2,30", "--max-runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "pilot-C" in out and "trunk" in out and "branch" in out and "training FLOPs in all" in out


def test_horizon_summary_with_seeds_has_seed_inclusive_intervals_and_a_null(tmp_path):
    """Fake finished horizon runs (no training): 3 seeds whose vanilla losses differ by a seed shift; the h = 0 gap
    interval includes that training noise (wider than documents alone) and the null is measured."""
    from myopia.experiments.horizon_sweep import horizon_arms, summarise_horizon
    from myopia.sweep_grid import TEST_EVAL_FILE, steps_for
    from myopia.io import write_json

    settings = tiny_settings(sizes=parse_sizes("1x16", 16), tokens=parse_tokens("256"), seeds=[0, 1, 2])
    arms = horizon_arms(16, horizons=[0], betas=[])
    rng = np.random.default_rng(0)
    docs = np.repeat(np.arange(10), 3)
    gap_by_seed = {0: 0.05, 1: 0.15, 2: 0.10}
    for seed in settings.seeds:
        van = 2.0 + 0.03 * seed + rng.normal(0, 0.01, len(docs))
        for arm in arms:
            loss = van + (gap_by_seed[seed] if arm.gradient != "vanilla" else 0.0)
            d = tmp_path / f"{arm.name}-s{seed}"
            write_json(d / "result.json", {"eval_loss": 9.0})  # validation: not what the sweep reports
            write_json(d / TEST_EVAL_FILE, {"doc_of_window": docs.tolist(), "loss_per_window": loss.tolist(),
                                            "mean": float(loss.mean()), "split": "test"})
    size, budget = settings.sizes[0], settings.tokens[0]
    s = summarise_horizon(tmp_path, arms, settings, size, budget, steps_for(settings, budget, 1000), bootstrap=300)
    p = s["horizon"]["myopic-hidden"][0]
    assert p["seeds"] == 3 and p["per_seed"] == pytest.approx([0.05, 0.15, 0.10])
    assert p["gap"] == pytest.approx(0.10) and p["gap_ci"][0] < 0.06 and p["gap_ci"][1] > 0.14
    assert p["gap_ci_eval"][1] - p["gap_ci_eval"][0] < 0.01 and p["training_noise"].startswith("included (3")
    assert s["n_seeds"] == 3 and s["null_gap"]["n_pairs"] == 3 and s["null_gap"]["sd"] > 0.02
    assert s["vanilla"]["loss"] == pytest.approx(2.03, abs=0.01) and p["loss"] == pytest.approx(2.13, abs=0.01)


def test_horizon_sweep_chooses_each_arms_lr_on_unreported_seeds_and_reports_the_test_split(corpus_file, tmp_path,
                                                                                          capsys):
    """A tiny sweep with an lr grid: every arm's lr is the argmin of its tuning runs' validation losses (seed 100,
    never reported), each reported run trains with its arm's lr, and the reported losses are the test split's."""
    from myopia.sweep_grid import EVAL_FILE, TEST_EVAL_FILE

    corpus = load_corpus(corpus_file)
    settings = tiny_settings(sizes=parse_sizes("1x16", 16), tokens=parse_tokens("256"), seeds=[0, 1])
    out = tmp_path / "h"
    grid = [1e-3, 3e-2]
    s = run_horizon_sweep(corpus_file, out, settings, horizons=[0], betas=[], lr_grid=grid, lr_seeds=[100],
                          corpus=corpus, bootstrap=20, log=lambda m: None)
    assert s["complete"] and s["split"] == "test" and s["lr"]["grid"] == grid and s["lr"]["seeds"] == [100]
    arms = ["vanilla", "myopic-h0", "myopic-hidden-h0"]
    assert sorted(s["lr"]["choice"]) == sorted(arms) and s["lr"]["diverged"] == []
    for arm in arms:
        val = {lr: json.loads((out / f"tune-{arm}-lr{lr:g}-s100" / "result.json").read_text())["eval_loss"]
               for lr in grid}
        assert s["lr"]["val_loss"][arm] == {f"{lr:g}": pytest.approx(v) for lr, v in val.items()}
        assert s["lr"]["choice"][arm] == min(grid, key=lambda lr: (val[lr], lr))
        for seed in (0, 1):
            train = json.loads((out / f"{arm}-s{seed}" / "config.json").read_text())["train"]
            assert train["lr"] == s["lr"]["choice"][arm] and train["seed"] == seed
    tuning = sorted(p.name for p in out.iterdir() if p.name.startswith("tune-"))
    assert tuning == sorted(s["lr"]["tuning_runs"]) and len(tuning) == len(arms) * len(grid)
    assert all(n.endswith("-s100") for n in tuning)  # reported seeds never tune
    assert {r["seed"] for r in s["runs"]} == {0, 1} and not any(r["name"].startswith("tune-") for r in s["runs"])
    # the reported losses are the test split's per-window losses, not result.json's validation loss
    van_test, van_val = [], []
    for r in s["runs"]:
        ev = json.loads((out / r["name"] / TEST_EVAL_FILE).read_text())
        assert ev["split"] == "test" and r["test_loss"] == pytest.approx(ev["mean"]) and r["eval_loss"] == r["test_loss"]
        assert not (out / r["name"] / EVAL_FILE).exists()
        if r["arm"] == "vanilla":
            van_test.append(ev["mean"])
            van_val.append(json.loads((out / r["name"] / "result.json").read_text())["eval_loss"])
    assert s["vanilla"]["loss"] == pytest.approx(np.mean(van_test))
    assert abs(np.mean(van_val) - np.mean(van_test)) > 1e-6
    p = s["horizon"]["myopic-hidden"][0]
    assert p["lr"] == s["lr"]["choice"]["myopic-hidden-h0"] and p["gap_ci"] is not None
    assert "p_holm" in p and s["holm_family_size"] == 2
    # the dry run lists the tuning runs and the reported runs; the report shows each point's lr
    assert main(["horizon-sweep", "--data", str(corpus_file), "--out", str(out), "--sizes", "1x16", "--tokens", "256",
                 "--seq-len", "16", "--horizons", "0", "--betas", "", "--seeds", "0,1", "--lr-grid", "1e-3,3e-2",
                 "--lr-seeds", "100", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert all(f"  {n}\n" in printed for n in tuning) and "  myopic-hidden-h0-s1\n" in printed
    assert main(["report", str(out)]) == 0
    header, rows = markdown_table((out / "report.md").read_text(), "horizon h")
    assert header[-1] == "myopic-hidden lr" and rows[0][-1] == f"{s['lr']['choice']['myopic-hidden-h0']:g}"


def test_horizon_sweep_refuses_lr_seeds_among_the_reported_seeds(corpus_file, tmp_path, capsys):
    settings = tiny_settings(sizes=parse_sizes("1x16", 16), tokens=parse_tokens("256"), seeds=[0, 1])
    with pytest.raises(MyopiaError, match="no lr chosen on a reported seed"):
        run_horizon_sweep(corpus_file, tmp_path / "h", settings, horizons=[0], betas=[], lr_grid=[1e-3],
                          lr_seeds=[1, 100], corpus=load_corpus(corpus_file), log=lambda m: None)
    assert not (tmp_path / "h").exists()
    code = main(["horizon-sweep", "--data", str(corpus_file), "--out", str(tmp_path / "h"), "--sizes", "1x16",
                 "--tokens", "256", "--seq-len", "16", "--seeds", "0,1", "--lr-grid", "1e-3", "--lr-seeds", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no lr chosen on a reported seed" in err
    with pytest.raises(MyopiaError, match="without an lr grid"):
        run_horizon_sweep(corpus_file, tmp_path / "h", settings, lr_seeds=[100], corpus=load_corpus(corpus_file))


def test_horizon_sweep_records_diverged_runs_and_goes_on(corpus_file, tmp_path, monkeypatch):
    """A non-finite loss (the trainer's NaN error) in a tuning run drops that lr; in a reported run it is recorded
    in diverged.json, gives no point and the sweep finishes; other errors still stop the sweep."""
    from myopia.sweep_grid import DIVERGED_FILE

    real = sweep_mod.ensure_run

    def ensure(data, run_dir, *a, **kw):
        if "-lr0.03-" in run_dir.name or run_dir.name == "myopic-h0-s0":
            raise MyopiaError("non-finite loss at step 3 (NaN or inf): stopping. Try a lower --lr")
        return real(data, run_dir, *a, **kw)

    monkeypatch.setattr(sweep_mod, "ensure_run", ensure)
    settings = tiny_settings(sizes=parse_sizes("1x16", 16), tokens=parse_tokens("256"), seeds=[0])
    s = run_horizon_sweep(corpus_file, tmp_path / "h", settings, horizons=[0], betas=[], lr_grid=[1e-3, 3e-2],
                          lr_seeds=[100], corpus=load_corpus(corpus_file), bootstrap=20, log=lambda m: None)
    assert s["complete"] and set(s["lr"]["choice"].values()) == {1e-3}
    assert all(v["0.03"] is None for v in s["lr"]["val_loss"].values()) and len(s["lr"]["diverged"]) == 3
    assert s["diverged"] == ["myopic-h0-s0"] and (tmp_path / "h" / "myopic-h0-s0" / DIVERGED_FILE).exists()
    assert s["horizon"]["myopic"][0]["loss"] is None and s["horizon"]["myopic-hidden"][0]["loss"] is not None
    monkeypatch.setattr(sweep_mod, "ensure_run", lambda *a, **k: (_ for _ in ()).throw(MyopiaError("disk full")))
    with pytest.raises(MyopiaError, match="disk full"):
        run_horizon_sweep(corpus_file, tmp_path / "other", settings, horizons=[0], betas=[],
                          corpus=load_corpus(corpus_file), log=lambda m: None)
    with pytest.raises(MyopiaError, match="trained with lr 0.001, but its arm's lr is now 0.003"):
        run_horizon_sweep(corpus_file, tmp_path / "h", settings, horizons=[0], betas=[],
                          corpus=load_corpus(corpus_file), log=lambda m: None)  # no grid: lr 3e-3 for every arm


def test_horizon_lr_choice_skips_diverged_lrs_and_refuses_an_arm_whose_every_lr_diverged(tmp_path):
    """Fake tuning folders: an lr with a diverged run is never chosen; ties go to the smaller lr; an arm whose
    every lr diverged is a MyopiaError; an unfinished tuning run leaves no choice yet."""
    from myopia.experiments.horizon_sweep import lr_choice, tuning_name
    from myopia.io import write_json
    from myopia.sweep_grid import DIVERGED_FILE

    arms = horizon_arms(16, horizons=[0], betas=[])  # vanilla, myopic-h0, myopic-hidden-h0
    grid, seeds = [1e-3, 2e-3, 4e-3], [100, 101]
    val = {"vanilla": {1e-3: (3.0, 3.2), 2e-3: (2.9, 2.9), 4e-3: (1.0, None)},
           "myopic-h0": {1e-3: (3.0, 3.0), 2e-3: (3.25, 2.75), 4e-3: (3.5, 3.5)},
           "myopic-hidden-h0": {1e-3: (3.0, 3.0), 2e-3: (2.5, 2.6), 4e-3: (2.0, 2.0)}}
    for arm, by_lr in val.items():
        for lr, losses in by_lr.items():
            for seed, v in zip(seeds, losses):
                d = tmp_path / tuning_name(arm, lr, seed)
                write_json(d / (DIVERGED_FILE if v is None else "result.json"), {"eval_loss": v})
    choice, table, diverged = lr_choice(tmp_path, arms, grid, seeds)
    assert choice == {"vanilla": 2e-3, "myopic-h0": 1e-3, "myopic-hidden-h0": 4e-3}  # myopic-h0: a tie, 3.0 = 3.0
    assert table["vanilla"]["0.004"] is None and table["vanilla"]["0.002"] == pytest.approx(2.9)
    assert diverged == ["tune-vanilla-lr0.004-s101"]
    (tmp_path / tuning_name("myopic-h0", 1e-3, 101) / "result.json").unlink()
    assert lr_choice(tmp_path, arms, grid, seeds)[0] is None  # pending
    for lr in grid:
        d = tmp_path / tuning_name("myopic-hidden-h0", lr, 100)
        (d / "result.json").unlink()
        write_json(d / DIVERGED_FILE, {"error": "non-finite loss"})
    with pytest.raises(MyopiaError, match="myopic-hidden-h0: every lr of the grid 0.001, 0.002, 0.004 diverged"):
        lr_choice(tmp_path, arms, grid, seeds)


def test_horizon_points_are_adjusted_together_and_read_by_sign():
    from myopia.experiments.horizon_sweep import holm_over_points

    h = {"myopic-hidden": [{"horizon": 0, "gap": 0.03, "p": 0.001}, {"horizon": 8, "gap": -0.02, "p": 0.004}],
         "myopic": [{"horizon": 0, "gap": 0.01, "p": 0.2}]}
    b = {"myopic-hidden": [{"beta": 0.0, "horizon": 0, "gap": 0.03, "p": 0.001}, {"beta": 0.5, "gap": 0.0, "p": 0.9}],
         "myopic": [{"beta": 0.0, "horizon": 0, "gap": 0.01, "p": 0.2}]}
    assert holm_over_points(h, b) == 4  # h = 0 counted once per variant
    assert h["myopic-hidden"][0]["p_holm"] == pytest.approx(0.004) and h["myopic-hidden"][0]["reading"] == "worse than vanilla"
    assert h["myopic-hidden"][1]["p_holm"] == pytest.approx(0.012) and h["myopic-hidden"][1]["reading"] == "better than vanilla"
    assert h["myopic"][0]["reading"] == "no detectable difference" and b["myopic-hidden"][0]["p_holm"] == h["myopic-hidden"][0]["p_holm"]
    from myopia.report.scaling import _horizon_holm

    text = _horizon_holm({"holm_family_size": 4, "horizon": h, "beta": b})
    assert "worse than vanilla: myopic-hidden h = 0 (p_Holm 0.004)" in text
    assert "better than vanilla: myopic-hidden h = 8 (p_Holm 0.012)" in text and "changes optimisation" in text
    assert "beta = 0 " not in text and "beta = 0.5" not in text  # h = 0 once; beta 0.5 not detectable


def test_parabola_edge_says_where_the_profile_minimum_lies():
    """Interior minimum -> None; a profile falling to the largest (smallest) size -> "high" ("low"); a concave
    profile's minimum is at whichever edge is lower; fewer than 3 sizes is an error."""
    from myopia.scaling import parabola_edge

    n = [1e3, 1e4, 1e5, 1e6]
    assert parabola_edge(n, [2.0, 1.8, 1.8, 2.0]) is None
    assert parabola_edge(n, [2.3, 2.1, 2.0, 1.95]) == "high"
    assert parabola_edge(n, [1.9, 2.0, 2.2, 2.5]) == "low"
    assert parabola_edge(n, [2.0, 2.3, 2.3, 1.9]) == "high"  # concave: the lower end wins
    with pytest.raises(MyopiaError, match="3 or more"):
        parabola_edge([1e3, 1e4], [2.0, 1.9])
    with pytest.raises(MyopiaError, match="3 or more"):
        parabola_edge(n, [2.0, 1.8, 1.8, 2.0], [1, 1, 1])


def test_isoflop_adds_a_shape_beyond_an_edge_optimum_after_the_first_pass(tmp_path):
    """EDGE_RULE: once the first pass has finished, at a budget where an arm's validation profile has its minimum at
    the largest (smallest) measured shape, the nearest candidate beyond it trains at that budget for every arm with
    the first-pass seeds; interior budgets get nothing; a shape with first-pass runs keeps their warmup."""
    from myopia.experiments.isoflop import _first_pass_budgets, _trunks, edge_additions, plan_runs, sizes_for_budget
    from myopia.io import write_json
    from myopia.model import non_embedding_params

    s = tiny_iso(edge_shapes=True, strict_budgets=[2e8])
    first = plan_runs(s, 257, 100_000, batch_size=4, lr=3e-3, out=tmp_path)
    assert edge_additions(first, tmp_path, s, 257, 100_000) is None  # nothing trained yet: nothing added
    assert first == plan_runs(replace_settings(s, edge_shapes=False), 257, 100_000, batch_size=4, lr=3e-3)
    shapes = {b: [m for m, _ in sizes_for_budget(s, b, 257, 100_000)] for b in s.budgets}
    for r in first:  # 1e8: interior optimum for both arms; 2e8: myopic-hidden falls to its largest shape
        i = shapes[r.budget].index(r.size)
        falling = r.budget == 2e8 and r.gradient == "myopic-hidden"
        loss = 2.0 - 0.1 * i if falling else 2.0 + 0.1 * (i - 1) ** 2
        write_json(tmp_path / r.name / "result.json", {"eval_loss": loss + 0.001 * r.seed})
    added = edge_additions(first, tmp_path, s, 257, 100_000)
    assert [(a["budget"], a["side"], a["triggered_by"]) for a in added] == [(2e8, "high", ["myopic-hidden"])]
    new = added[0]["size"]
    n_hi = max(non_embedding_params(r.model_cfg) for r in first if r.budget == 2e8)
    assert new is not None and new not in shapes[2e8]
    extra = plan_runs(s, 257, 100_000, batch_size=4, lr=3e-3, out=tmp_path)[len(first):]
    assert {(r.budget, r.size, r.gradient, r.seed) for r in extra} == {
        (2e8, new, arm, seed) for arm in ("vanilla", "myopic-hidden", "myopic") for seed in (0, 1, 2)}
    assert all(r.params_non_embedding > n_hi and r.stage == "trunk" and r.trunk is None for r in extra)
    # a shape added at a budget below its first-pass runs keeps their warmup: the run equals a branch of its trunk
    big = next(m for m, b in _first_pass_budgets(s, 257, 100_000).items() if b == [4e8])
    added_low = _trunks(s, 257, 100_000, 4, 3e-3, s.seeds, budgets_of={big: [1e8]})
    trunk = next(r for r in first if r.size == big and r.budget == 4e8)
    assert {r.train_cfg.warmup for r in added_low} == {trunk.train_cfg.warmup}
    assert all(r.train_cfg.steps < trunk.train_cfg.steps and r.trunk is None for r in added_low)


def replace_settings(s, **kw):
    from dataclasses import replace

    return replace(s, **kw)


def test_run_budget_counts_only_runs_that_still_need_training(tmp_path):
    """--max-runs: a diverged run is free, fresh runs are counted up to the limit, None has no limit."""
    diverged, a, b = tmp_path / "d", tmp_path / "a", tmp_path / "b"
    diverged.mkdir()
    (diverged / sweep_mod.DIVERGED_FILE).write_text("{}")
    budget = sweep_mod.RunBudget(1)
    assert budget.take(diverged) and budget.take(a) and not budget.take(b) and budget.trained == 1
    assert budget.take(diverged)  # still free after the limit
    unlimited = sweep_mod.RunBudget(None)
    assert all(unlimited.take(tmp_path / f"r{i}") for i in range(5)) and unlimited.trained == 5
