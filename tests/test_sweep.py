"""myopia sweep / horizon-sweep on tiny models: the grid, skipping finished runs, resuming partial ones, reports."""

import json
import random
import re
from dataclasses import replace

import numpy as np
import pytest

from myopia.cli import main
from myopia.data import LMTask, load_corpus
from myopia.errors import MyopiaError
from myopia.experiments import sweep as sweep_mod
from myopia.experiments.horizon_sweep import default_horizons, horizon_arms, run_horizon_sweep
from myopia.experiments.scaling_presets import PRESETS
from myopia.experiments.train_lm import train_lm  # the real trainer (the sweep's is replaced by a recorder)
from myopia.experiments.sweep import (
    SweepSettings,
    ladder,
    parse_sizes,
    parse_tokens,
    plan_runs,
    run_status,
    run_sweep,
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
# The grid
# ------------------------------------------------------------------------------------------------------------



def _die_on_fourth_batch(monkeypatch):
    """Make training raise KeyboardInterrupt when it asks for its 4th batch (after the step-2 checkpoint); returns
    the real LMTask.examples for restoring."""
    calls = {"n": 0}
    real_examples = LMTask.examples

    def dying_examples(self, indices, device="cpu"):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_examples(self, indices, device)

    monkeypatch.setattr(LMTask, "examples", dying_examples)
    return real_examples


def _record_training(monkeypatch) -> list:
    """Make the sweep's train_lm record (run name, resume) for each run it trains; returns that list."""
    trained = []
    real_train_lm = sweep_mod.train_lm

    def recording_train_lm(data, run_out, *a, resume=False, **kw):
        trained.append((run_out.name, resume))
        return real_train_lm(data, run_out, *a, resume=resume, **kw)

    monkeypatch.setattr(sweep_mod, "train_lm", recording_train_lm)
    return trained

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
    n = [non_embedding_params(plan.model_cfg) for plan in plan_runs(cpu, 257)[:: len(cpu.gradients)]]
    assert len(n) >= 5 and max(n) / min(n) >= 30
    gpt2 = SweepSettings.from_preset("gpu-64").sizes[-1]
    assert (gpt2.n_layer, gpt2.d_model, gpt2.n_head) == (12, 768, 12)  # GPT-2 small
    assert PRESETS["gpu-64"].seq_len == 64 and PRESETS["gpu-256"].seq_len == 256
    # GPT-2 small with its 50257-token vocabulary: 124M parameters
    top = plan_runs(replace(SweepSettings.from_preset("gpu-64"), gradients=["vanilla"]), 50257)[-1]
    assert top.params_total == pytest.approx(124.4e6, rel=0.01)


def test_plan_pairs_gradients_within_a_size():
    runs = plan_runs(tiny_settings(seeds=[0, 1]), vocab_size=257)
    assert len(runs) == 3 * 2 * 3
    by_key = {}
    for r in runs:
        by_key.setdefault((r.size, r.budget, r.seed), []).append(r)
    for group in by_key.values():
        assert [r.gradient for r in group] == ["vanilla", "myopic", "myopic-hidden"]
        assert len({json.dumps(r.train_cfg.to_dict(), sort_keys=True) for r in group}) == 1
        cfgs = [replace(r.model_cfg, gradient="vanilla") for r in group]
        assert all(c == cfgs[0] for c in cfgs)
        assert len({r.flops for r in group}) == 1
    assert len({r.name for r in runs}) == len(runs)


def test_gap_interval_is_paired_and_includes_training_noise():
    """The ladder's gap interval comes from the statistics module: a constant shift on shared documents has no
    evaluation spread; two seeds with different gaps widen it (training noise), one seed says it is unmeasured."""
    rng = np.random.default_rng(0)
    docs = np.repeat(np.arange(10), 3)
    base = rng.normal(3.0, 0.3, len(docs))

    def ev(x):
        return {"loss_per_window": list(x), "doc_of_window": docs.tolist(), "seq_len": 4}

    def rows(gaps):
        by = {"vanilla": [], "myopic": []}
        evals = {}
        for seed, g in enumerate(gaps):
            for arm, shift in (("vanilla", 0.0), ("myopic", g)):
                name = f"{arm}-s{seed}"
                by[arm].append({"seed": seed, "name": name, "status": "done",
                                "eval_loss": float(np.mean(base + shift))})
                evals[name] = ev(base + shift)
        return by, evals

    by, evals = rows([0.1])
    gap, ci, sd, summary = sweep_mod._gap(by, "myopic", evals, 200)
    assert gap == pytest.approx(0.1) and ci == pytest.approx([0.1, 0.1], abs=1e-12) and sd is None
    assert summary["training_noise"] == "not measured (1 seed)"
    gap, ci, sd, summary = sweep_mod._gap(rows([0.05, 0.15])[0], "myopic", rows([0.05, 0.15])[1], 400)
    assert gap == pytest.approx(0.1) and sd == pytest.approx(0.1 / 2 ** 0.5)
    assert ci[0] < 0.07 and ci[1] > 0.13 and summary["n_seeds"] == 2


# ------------------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_runs_skips_finished_and_resumes_partial(corpus_file, tmp_path, monkeypatch):
    corpus = load_corpus(corpus_file)
    out = tmp_path / "sweep"
    settings = tiny_settings()
    first = run_sweep(corpus_file, out, settings, corpus=corpus, max_runs=4, bootstrap=20, log=lambda m: None)
    assert not first["complete"] and len(first["pending"]) == 5
    assert sum(r["status"] == "done" for r in first["runs"]) == 4

    # a run killed mid-way (after its step-2 checkpoint) must be resumed, not restarted
    target = next(r for r in plan_runs(settings, corpus.vocab_size)
                  if r.name.startswith("2x32h2") and r.gradient == "myopic")
    real_examples = _die_on_fourth_batch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        sweep_mod.ensure_run(corpus_file, out / target.name, target.model_cfg, target.train_cfg, corpus=corpus,
                             eval_tokens=settings.eval_tokens, log=lambda m: None)
    monkeypatch.setattr(LMTask, "examples", real_examples)
    assert run_status(out / target.name) == "partial"

    # a run killed before its first checkpoint leaves config.json (and maybe metrics.jsonl): it starts afresh
    early = next(r for r in plan_runs(settings, corpus.vocab_size)
                 if r.name.startswith("2x32h2") and r.gradient == "vanilla")
    (out / early.name).mkdir(parents=True, exist_ok=True)
    (out / early.name / "config.json").write_text("{}")
    assert run_status(out / early.name) == "new"

    trained = _record_training(monkeypatch)
    done_before = {r["name"]: (out / r["name"] / "result.json").stat().st_mtime_ns
                   for r in first["runs"] if r["status"] == "done"}
    second = run_sweep(corpus_file, out, settings, corpus=corpus, bootstrap=20, log=lambda m: None)
    assert second["complete"]
    assert len(trained) == 5 and (target.name, True) in trained
    assert all(not resume for name, resume in trained if name != target.name)
    assert not any(name in done_before for name, _ in trained)
    for name, mtime in done_before.items():
        assert (out / name / "result.json").stat().st_mtime_ns == mtime

    # the resumed run equals an uninterrupted one (the trainer's exact resume)
    fresh = train_lm(corpus_file, tmp_path / "fresh", target.model_cfg, target.train_cfg,
                     eval_tokens=settings.eval_tokens, corpus=corpus)
    resumed = json.loads((out / target.name / "result.json").read_text())
    assert resumed["resumed_from_step"] == 2
    assert resumed["eval_loss"] == pytest.approx(fresh["eval_loss"], abs=1e-6)

    # a third call trains nothing
    trained.clear()
    third = run_sweep(corpus_file, out, settings, corpus=corpus, bootstrap=20, log=lambda m: None)
    assert trained == []
    s = json.loads((out / "sweep.json").read_text())
    assert s["complete"] and s["provenance"]["git"] is not None
    assert [e["size"] for e in third["table"]] == ["1x16h1", "1x32h2", "2x32h2"]
    for e in s["table"]:
        assert set(e["loss"]) == {"vanilla", "myopic", "myopic-hidden"}
        for key in ("gap", "gap_ci", "k", "k_ci"):
            assert set(e[key]) == {"myopic", "myopic-hidden"}
        assert e["gap"]["myopic"] == pytest.approx(e["loss"]["myopic"] - e["loss"]["vanilla"])
        lo, hi = e["gap_ci"]["myopic-hidden"]
        assert lo <= e["gap"]["myopic-hidden"] <= hi
        assert e["flops"] > e["flops_6nd"] > 0
    for arm in ("vanilla", "myopic", "myopic-hidden"):
        assert s["fits"]["384"][arm] is not None and s["fits"]["384"][arm]["n_points"] == 3
    for arm in ("myopic", "myopic-hidden"):
        assert len(s["k_curve"]["384"][arm]["k"]) == 60
    per_window = json.loads((out / target.name / "eval_windows.json").read_text())
    assert np.mean(per_window["loss_per_window"]) == pytest.approx(resumed["eval_loss"], rel=1e-6)

    assert main(["sweep-report", str(out)]) == 0  # the alias of `myopia report`
    md = assert_report_files(out, ["scaling_loss_vs_compute", "scaling_gap_vs_params", "scaling_compute_multiplier"])
    assert "## Scaling: the cost of myopia" in md and "Incomplete" not in md
    header, rows = markdown_table(md, "size")
    assert [r[0] for r in rows] == ["1x16h1", "1x32h2", "2x32h2"]
    for row, e in zip(rows, s["table"]):
        cell = dict(zip(header, row))
        assert cell["vanilla"] == f"{e['loss']['vanilla']:.3f}"
        assert cell["myopic-hidden"] == f"{e['loss']['myopic-hidden']:.3f}"


def test_cli_dry_run_and_report(corpus_file, tmp_path, capsys):
    args = ["sweep", "--data", str(corpus_file), "--out", str(tmp_path / "s"), "--sizes", "1x16,2x32",
            "--tokens", "1k,2k", "--seq-len", "16", "--batch-size", "4", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "36 runs" in out  # 2 sizes x 2 budgets x 3 gradient settings x 3 seeds (the cpu preset default)
    assert main(args + ["--seeds", "0"]) == 0
    assert "training noise not measured (1 seed)" in capsys.readouterr().err
    assert "1x16h1-D1k-myopic-hidden-s0" in out
    assert main(["sweep-report", str(tmp_path / "nothing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "sweep.json, horizon.json" in capsys.readouterr().err
    # the report's spelling of the result files and arms (it does not import the training stack) is the sweep's
    import myopia.experiments.horizon_sweep as horizon_mod
    import myopia.report.scaling as report_scaling

    assert (report_scaling.SWEEP_FILE, report_scaling.HORIZON_FILE) == (sweep_mod.SWEEP_FILE, horizon_mod.HORIZON_FILE)
    assert report_scaling.MYOPIC_ARMS == sweep_mod.MYOPIC_ARMS
    assert main(["sweep", "--data", str(corpus_file), "--out", str(tmp_path / "s"), "--tokens", "many"]) == 2
    assert main(["sweep", "--data", str(corpus_file), "--out", str(tmp_path / "s"), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


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


@pytest.mark.slow
def test_summary_recovers_planted_multipliers_per_budget(tmp_path, corpus_file, monkeypatch, capsys):
    """Fake finished runs (no training) whose losses follow planted curves: the table's k is the planted one, and
    the report shows it in the right columns."""
    from myopia.io import write_json

    settings = tiny_settings(sizes=parse_sizes("1x16,1x32,2x32,2x48,3x48", 16), tokens=parse_tokens("1k,2k,4k"),
                             seeds=[0, 1])  # 5 sizes: a 3-parameter fit keeps 2 residual dof, so it has intervals
    runs = plan_runs(settings, 257)
    k_planted = {"myopic": 0.4, "myopic-hidden": 0.8}
    rng = np.random.default_rng(0)
    docs = np.repeat(np.arange(8), 4)
    for r in runs:
        E, A, alpha = {"1k": 2.0, "2k": 1.9, "4k": 1.8}[r.budget.label], 40.0, 0.2
        loss = E + A * (k_planted.get(r.gradient, 1.0) * r.flops) ** -alpha + 0.01 * r.seed  # seed: a shift
        per_window = loss + rng.normal(0, 0.01, len(docs))
        per_window += loss - per_window.mean()  # exact mean
        write_json(tmp_path / r.name / "result.json", {"eval_loss": loss, "final_eval": {"loss": loss, "tokens": 512},
                                                        "train_time_s": 1.0})
        write_json(tmp_path / r.name / "eval_windows.json",
                   {"loss_per_window": per_window.tolist(), "doc_of_window": docs.tolist()})
    s = sweep_mod.summarise(tmp_path, runs, settings, bootstrap=10)
    assert s["complete"] and len(s["table"]) == 15
    assert [e["budget"] for e in s["table"]] == ["1k"] * 5 + ["2k"] * 5 + ["4k"] * 5
    for e in s["table"]:
        for arm, k in k_planted.items():
            assert e["k"][arm] == pytest.approx(k, rel=1e-3)
            lo, hi = e["k_ci"][arm]
            assert lo <= e["k"][arm] * 1.001 and hi >= e["k"][arm] * 0.999
            assert e["gap"][arm] > 0
            assert e["gap_seed_sd"][arm] == pytest.approx(0.0, abs=1e-12)  # the seed shift cancels in the gap
        assert e["loss_seed_sd"]["vanilla"] == pytest.approx(0.01 / 2 ** 0.5)
        assert e["seeds_done"] == {"vanilla": 2, "myopic": 2, "myopic-hidden": 2}
    for b, E in (("1k", 2.0), ("2k", 1.9), ("4k", 1.8)):
        assert s["fits"][b]["vanilla"]["E"] == pytest.approx(E + 0.005, rel=1e-3)  # mean over the two seeds
        for arm, k in k_planted.items():
            np.testing.assert_allclose(s["k_curve"][b][arm]["k"], k, rtol=1e-3)
    for arm in ("vanilla", "myopic", "myopic-hidden"):
        assert s["chinchilla"][arm] is not None and "E" in s["chinchilla"][arm]
    write_json(tmp_path / "sweep.json", s)

    # `sweep --report` (training stubbed out: the runs above are the sweep) writes the report of `myopia report`
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda *a, **kw: s)
    assert main(["sweep", "--data", str(corpus_file), "--out", str(tmp_path), "--sizes", "1x16", "--report"]) == 0
    assert "1 sections: scaling; 3 figures" in capsys.readouterr().out
    md = assert_report_files(tmp_path, ["scaling_loss_vs_compute", "scaling_gap_vs_params",
                                        "scaling_compute_multiplier"])
    header, rows = markdown_table(md, "size")
    assert header == ["size", "N non-emb", "N total", "tokens", "FLOPs", "vanilla", "myopic", "myopic-hidden",
                      "gap myopic [95% CI]", "gap myopic-hidden [95% CI]", "k myopic [95% CI]",
                      "k myopic-hidden [95% CI]"]
    assert len(rows) == 15
    for row, e in zip(rows, s["table"]):
        cell = dict(zip(header, row))
        assert cell["size"] == e["size"] and cell["myopic"] == f"{e['loss']['myopic']:.3f}"
        assert cell["gap myopic-hidden [95% CI]"].startswith(f"{e['gap']['myopic-hidden']:+.3f} [")
        assert cell["k myopic [95% CI]"].startswith("0.40 [") and cell["k myopic-hidden [95% CI]"].startswith("0.80 [")
    header, rows = markdown_table(md, "budget")  # the L(C) fits
    assert [r[:2] for r in rows if r[0] == "4k"] == [["4k", "vanilla"], ["4k", "myopic"], ["4k", "myopic-hidden"]]
    assert rows[0][2].startswith(f"{s['fits']['1k']['vanilla']['E']:.3f} [")
    header, rows = markdown_table(md, "budget | arm | k(C) smallest measured")
    assert len(rows) == 6 and all(r[2].startswith("0.40 [" if r[1] == "myopic" else "0.80 [") for r in rows)
    assert "L(N, D)" in md and len(markdown_table(md, "arm | E")[1]) == 3
    html = (tmp_path / "report.html").read_text()
    assert "<th>k myopic-hidden [95% CI]</th>" in html and "Scaling: the cost of myopia" in html


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
        assert cfg.schedule == "wsd" and cfg.lr == 3e-3 and cfg.batch_size == 4 and cfg.mup_base_width == 32
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
    from myopia.experiments.scaling_presets import isoflop_presets

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
    assert main(base + ["--budgets", "1e9"]) == 2  # an isoflop option on the ladder design
    assert "--design isoflop" in capsys.readouterr().err
    assert main(base + ["--preset", "cpu-isoflop", "--tokens", "1M"]) == 2
    assert "--design ladder" in capsys.readouterr().err
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
    from myopia.experiments.sweep import EVAL_FILE, steps_for
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
            write_json(d / "result.json", {"eval_loss": float(loss.mean())})
            write_json(d / EVAL_FILE, {"doc_of_window": docs.tolist(), "loss_per_window": loss.tolist()})
    size, budget = settings.sizes[0], settings.tokens[0]
    s = summarise_horizon(tmp_path, arms, settings, size, budget, steps_for(settings, budget, 1000), bootstrap=300)
    p = s["horizon"]["myopic-hidden"][0]
    assert p["seeds"] == 3 and p["per_seed"] == pytest.approx([0.05, 0.15, 0.10])
    assert p["gap"] == pytest.approx(0.10) and p["gap_ci"][0] < 0.06 and p["gap_ci"][1] > 0.14
    assert p["gap_ci_eval"][1] - p["gap_ci_eval"][0] < 0.01 and p["training_noise"].startswith("included (3")
    assert s["n_seeds"] == 3 and s["null_gap"]["n_pairs"] == 3 and s["null_gap"]["sd"] > 0.02
