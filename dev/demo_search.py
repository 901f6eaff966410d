"""Development script (not part of the package): the search that chose the demo's configuration, a small grid,
every point run on every arm. Its log is dev/LOG.md; its rows are results/demo/search.jsonl. Run from a checkout
with ``PYTHONPATH=src``. Every seed it trains (0, and 0-2 in confirmations) is in
:data:`myopia.experiments.demo.SCREENED_SEEDS`, which the demo refuses; ``--confirm`` now uses the demo's fresh seeds.

The target was fixed before the search (:data:`TARGET`): on ``precache`` both myopic variants reach ≥ 0.9 of the
trivial loss and vanilla ≤ 0.15; on ``control`` myopic-hidden ≤ 0.15 and vanilla ≤ 0.15. Each grid point trains
vanilla, myopic-hidden and myopic (strict) on both tasks with seed 0 (the two tasks in two single-threaded
processes, as the demo does) and appends one JSON line per point to ``OUT/search.jsonl``. A point is accepted
only if the target holds on *all* arms; nothing is chosen by one arm's outcome.

    python dev/demo_search.py OUT [POINT ...]     # POINT: names from GRID (default: all)
    python dev/demo_search.py OUT --ladder        # the budget ladder, stopping at its first success
    python dev/demo_search.py OUT --probe POINT ... # probe the seed-0 models a search left in OUT
    python dev/demo_search.py OUT --confirm POINT   # the 3-seed demo of one point: OUT/confirm-POINT

``--probe`` reads the trained models of finished points (``OUT/runs/POINT/TASK/TASK-ARM/model.safetensors``) and
appends to ``OUT/probes.jsonl`` where each arm holds sin(ω x_{n−i}): the ridge-probe R² per layer at lag 0 (the
position's own feature, the breadcrumb a later position could read) and its mean over lags 1..w−1 (features
brought in from the past), plus the per-position R² at the positions with a future. It tells the two routes to
``control`` apart: breadcrumbs need sin(ω x_n) at block 1; the raw-input route leaves it low there.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

from myopia.experiments.demo import DemoConfig, load_preset, meets_target

DEMO = load_preset("cpu")

# Every point changes one or two knobs of the base (the pre-search default, with p = 0.5); within the demo's
# 5-minute budget: 3 seeds x 3 arms per process must train in about 4 minutes (≈ 25 s per model).
BASE = replace(DEMO, omega=3.0, window=8, p=0.5, n_layer=2, d_model=64, steps=1000, lr=3e-3, min_lr_ratio=0.5)
GRID: dict[str, dict] = {
    "base": {},
    "lr6e-3": {"lr": 6e-3},
    "floor0.1": {"min_lr_ratio": 0.1},
    "window6": {"window": 6},
    "omega2.5": {"omega": 2.5},
    "d32-2000steps": {"d_model": 32, "steps": 2000},
    "L3-d48": {"n_layer": 3, "d_model": 48},
    # The budget ladder (added at the second search session, before any of its rungs was run): the demo's default
    # (p = 1, the rest as BASE) with 2x, 4x and 8x the steps, same lr and schedule shape. "The smallest budget that
    # meets the target" is the first rung, in this order, where seed 0 meets it on every arm; it is then confirmed
    # with 3 seeds by ``myopia demo --steps N`` (the target is judged on the 3-seed means).
    "p1-2000steps": {"p": 1.0, "steps": 2000},
    "p1-4000steps": {"p": 1.0, "steps": 4000},
    "p1-8000steps": {"p": 1.0, "steps": 8000},
    # Shorter windows at the demo's budget (added after the ladder's 2000-step rung, before either was run): that
    # rung moved the two conditions of the target in opposite directions (control myopic-hidden 0.385 -> 0.338,
    # precache myopic-hidden 0.959 -> 0.818 of trivial, seed 0), so the ladder was paused there (and finished
    # afterwards: 4000 and 8000 steps met control, not precache; docs/synthetic.md). The earlier CPU
    # prototype (window 2-4, p = 1, ~4k steps; recorded before this search) had precache myopic-hidden 1.000 and
    # control myopic-hidden 0.005 at window 2. Rule fixed now: the demo's default becomes the first of these, in
    # this order (the larger window first: closer to the paper's 10), whose seed-0 run meets the target on every
    # arm, confirmed by a 3-seed ``myopia demo``.
    "p1-window4": {"p": 1.0, "window": 4},
    "p1-window2": {"p": 1.0, "window": 2},
    # Session 3 (2026-12-02, committed before any of these was run). Every earlier window-8 failure on ``precache``
    # is the raw-input route: copy the window's x_{n-i} to the present, one lag per attention head, and compute the
    # w sines there (2 layers x 4 heads = 8 heads, the window's 8 lags). Pre-caching and breadcrumbs need only one
    # uniform head over the window, so fewer heads should close the raw route and leave both others open; a larger
    # ω makes each sine costlier, which the raw route pays w times and the others once (the paper's ω is 10); a
    # third layer gives the own-term sine more room before the reading attention. Rule fixed now: all points run
    # (seed 0, every arm); the demo's default becomes the first 1000-step point in this order (p = 0.5 first, as
    # the issue asks) that meets the target, confirmed by a 3-seed ``myopia demo`` whose means meet the target
    # and whose vanilla probe R² for sin(ω x_n) at the positions with a future is ≥ 0.5 (so the task is solved by
    # pre-caching, unlike window 2). If only the 2000-step point meets it, that becomes the CPU-with-time preset.
    "heads1": {"n_head": 1},
    "p1-heads1": {"p": 1.0, "n_head": 1},
    "p1-heads2": {"p": 1.0, "n_head": 2},
    "p1-omega5": {"p": 1.0, "omega": 5.0},
    "p1-L3": {"p": 1.0, "n_layer": 3},
    "p1-heads1-2000steps": {"p": 1.0, "n_head": 1, "steps": 2000},
    # Session 3, second batch (committed after the first five points above, before any of these was run). At
    # 1000 steps ω = 5 and 2 heads kept myopic-hidden at the trivial loss on precache (1.000, 0.999) and every
    # control myopic-hidden stayed at 0.41-0.60. Its layer-1 probe on control (the demo's recorded run) explains
    # why: R² 0.32 for sin(ω x_n) and 0.12-0.26 at each lag, i.e. myopic-hidden copies raw inputs on control too
    # and has not formed the breadcrumb. Whether it forms it with more steps while the raw route stays closed is
    # a budget question, so: a ladder at ω = 5 and one rung at 2 heads. Rule: the first in this order whose seed-0
    # run meets the target is confirmed with 3 seeds (the same confirmation rule) and becomes the CPU-with-time
    # preset; the 5-minute default stays as it is (no 1000-step point met the target).
    "p1-omega5-2000steps": {"p": 1.0, "omega": 5.0, "steps": 2000},
    "p1-omega5-4000steps": {"p": 1.0, "omega": 5.0, "steps": 4000},
    "p1-heads2-4000steps": {"p": 1.0, "n_head": 2, "steps": 4000},
    # Third batch (committed after p1-omega5-2000steps, before any of these was run): at ω = 5 the raw route stays
    # closed at 2000 steps (precache myopic-hidden 0.999) but vanilla learns precache slowly (0.356 -> 0.339 of
    # trivial from 1000 to 2000 steps). ω = 4 lies between the demo's 3 (raw route opens by 2000 steps) and 5.
    # Same rule, after the second batch in order.
    "p1-omega4-2000steps": {"p": 1.0, "omega": 4.0, "steps": 2000},
    "p1-omega4-4000steps": {"p": 1.0, "omega": 4.0, "steps": 4000},
    # Fourth batch (committed after p1-omega5-4000steps, before any of these was run). At ω = 5 and 4000 steps
    # precache meets its part on every arm (vanilla 0.083, both myopic variants 0.999) and so does control vanilla
    # (0.071); control myopic-hidden is 0.410 / 0.357 / 0.317 at 1000 / 2000 / 4000 steps, its training loss still
    # falling. Two ways to more of it: a third layer (the own-term sine computed in block 1 or 2 is readable by a
    # later attention; with 2 layers only block 1's is) and twice the steps. Same rule, in this order.
    "p1-omega5-L3-4000steps": {"p": 1.0, "omega": 5.0, "n_layer": 3, "steps": 4000},
    "p1-omega5-8000steps": {"p": 1.0, "omega": 5.0, "steps": 8000},
    # Fifth batch (committed after probing p1-omega5-4000steps, before any of these was run; run *before* the
    # third and fourth batches, which had not started, because of what the probe showed). At ω = 5 control
    # myopic-hidden holds its own sin(ω x_n) poorly (block-1 R² 0.23, vanilla 0.60): the feature is learned from
    # one position's loss under myopia and from w positions' losses in vanilla, so at window 8 the breadcrumb is
    # learned with an eighth of vanilla's signal. A shorter window shrinks that factor while ω = 5 keeps the raw
    # route (now w sines, each costly) closed. Same rule; the acceptance order stays the commit order, and points
    # of earlier batches left unrun for the budget are reported as not run.
    "p1-omega5-window4": {"p": 1.0, "omega": 5.0, "window": 4},
    "p1-omega5-window4-2000steps": {"p": 1.0, "omega": 5.0, "window": 4, "steps": 2000},
    "p1-omega5-window4-4000steps": {"p": 1.0, "omega": 5.0, "window": 4, "steps": 4000},
    # Sixth batch (committed after p1-heads2-4000steps and p1-omega5-window4, before any of these was run; run
    # next, ahead of the unrun rest). The only points where control myopic-hidden reached ≤ 0.15 at 1000 steps are
    # windows 4 and 2 at ω = 3, where precache's raw route opened; the raw route stayed closed with 2 heads at
    # window 8, ω = 3 (0.999 at 1000 and 4000 steps) and at ω = 5. So window 4 with 2 heads, and window 4 at ω = 4.
    "p1-heads2-window4": {"p": 1.0, "n_head": 2, "window": 4},
    "p1-heads2-window4-2000steps": {"p": 1.0, "n_head": 2, "window": 4, "steps": 2000},
    "p1-omega4-window4": {"p": 1.0, "omega": 4.0, "window": 4},
    "p1-omega4-window4-2000steps": {"p": 1.0, "omega": 4.0, "window": 4, "steps": 2000},
    # Seventh batch (committed after p1-heads2-window4-2000steps and p1-omega4-window4, before either was run;
    # run next). Every knob so far moved the two failing conditions together: what lets myopic-hidden read the
    # past on control (steps, shorter windows) also lets it build precache's raw route. The raw route computes w
    # sines at the present position, pre-caching and breadcrumbs one per position, so a narrow MLP (hidden width
    # 64 instead of 256) should price the raw route out and leave the other two. Window 4 (the breadcrumb's
    # signal under myopia is 1/w of vanilla's).
    "p1-mlp1-window4": {"p": 1.0, "mlp_ratio": 1, "window": 4},
    "p1-mlp1-window4-2000steps": {"p": 1.0, "mlp_ratio": 1, "window": 4, "steps": 2000},
    # Eighth batch (committed after p1-mlp1-window4, before either was run). The narrow MLP broke the coupling:
    # at 1000 steps control myopic-hidden 0.110 with precache myopic-hidden 1.001, and only precache vanilla
    # missed (0.166 > 0.15). Within the 5-minute budget (1000 steps): the lr floor that sped up vanilla at the
    # base point (cosine to 0.1·lr) and an MLP ratio of 2. Same rule: a 1000-step point that meets the target on
    # every arm with seed 0 is confirmed by a 3-seed ``myopia demo`` and, if confirmed, becomes the default.
    "p1-mlp1-window4-floor0.1": {"p": 1.0, "mlp_ratio": 1, "window": 4, "min_lr_ratio": 0.1},
    "p1-mlp2-window4": {"p": 1.0, "mlp_ratio": 2, "window": 4},
    # Ninth batch (committed after the eighth batch and the failed 3-seed confirmation of
    # p1-omega4-window4-2000steps, before either was run). The floor and the wider MLP both failed; the narrow
    # MLP at 1000 steps missed only on precache vanilla (0.166), so a larger peak lr within the same 1000 steps.
    # Same rule.
    "p1-mlp1-window4-lr4.5e-3": {"p": 1.0, "mlp_ratio": 1, "window": 4, "lr": 4.5e-3},
    "p1-mlp1-window4-lr6e-3": {"p": 1.0, "mlp_ratio": 1, "window": 4, "lr": 6e-3},
    # Tenth batch (committed after p1-mlp1-window4-2000steps passed its 3-seed confirmation and became
    # --cpu-long, before this point was run). The issue asks for p < 1 where it works, so that the (1 − z)·x_n
    # branch occurs: the --cpu-long configuration at the base's p = 0.5. Rule: if its seed-0 run meets the target
    # and a 3-seed confirmation passes (the same conditions), it replaces the p = 1 point as --cpu-long.
    "mlp1-window4-2000steps": {"mlp_ratio": 1, "window": 4, "steps": 2000},
}
SESSION3 = ("heads1", "p1-heads1", "p1-heads2", "p1-omega5", "p1-L3", "p1-heads1-2000steps",
            "p1-omega5-2000steps", "p1-omega5-4000steps", "p1-heads2-4000steps",
            "p1-omega4-2000steps", "p1-omega4-4000steps", "p1-omega5-L3-4000steps", "p1-omega5-8000steps",
            "p1-omega5-window4", "p1-omega5-window4-2000steps", "p1-omega5-window4-4000steps",
            "p1-heads2-window4", "p1-heads2-window4-2000steps", "p1-omega4-window4", "p1-omega4-window4-2000steps",
            "p1-mlp1-window4", "p1-mlp1-window4-2000steps", "p1-mlp1-window4-floor0.1", "p1-mlp2-window4",
            "p1-mlp1-window4-lr4.5e-3", "p1-mlp1-window4-lr6e-3", "mlp1-window4-2000steps")
LADDER = ("p1-2000steps", "p1-4000steps", "p1-8000steps")
WINDOWS = ("p1-window4", "p1-window2")


def _point_task(cfg: DemoConfig, task: str, runs_dir: str) -> dict:
    import torch

    from myopia.experiments.demo import run_task

    torch.set_num_threads(1)
    cfg = replace(cfg, seeds=(0,), eval_every=0)
    s = run_task(cfg, task, Path(runs_dir), False, lambda m: print(m, file=sys.stderr, flush=True), probe=False)
    return {"fraction_of_trivial": s["fraction_of_trivial"], "train_time_s": s["train_time_s"]}


def run_point(name: str, out: Path) -> dict:
    cfg = replace(BASE, **GRID[name])
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        fut = {t: pool.submit(_point_task, cfg, t, str(out / "runs" / name / t)) for t in ("precache", "control")}
        res = {t: f.result() for t, f in fut.items()}
    fr = {t: res[t]["fraction_of_trivial"] for t in res}
    return {"point": name, "changes": GRID[name], "config": asdict(cfg), "fraction_of_trivial": fr,
            "train_time_s": {t: res[t]["train_time_s"] for t in res}, "meets_target": meets_target(fr),
            "wall_time_s": time.perf_counter() - t0}


def probe_point(name: str, out: Path) -> dict:
    """Probe R² (see the module docstring) for every task and arm of a finished point; one row for probes.jsonl."""
    import torch

    from myopia.checkpoint import load_state_into, load_weights
    from myopia.synthetic.compare import EVAL_SEED, build_regressor
    from myopia.synthetic.probes import lookback_probes, position_probes
    from myopia.synthetic.regression import SequenceRegressionTask

    cfg = replace(BASE, **GRID[name])
    row: dict = {"point": name, "changes": GRID[name], "probes": {}}
    for task in cfg.tasks:
        spec = cfg.spec(task)
        probe_task = SequenceRegressionTask(spec, seed=0, eval_seed=EVAL_SEED, eval_sequences=1)
        row["probes"][task] = {}
        for arm in cfg.gradients:
            path = out / "runs" / name / task / f"{task}-{arm}" / "model.safetensors"
            if not path.exists():
                raise FileNotFoundError(f"{path}: run the point first")
            model = build_regressor(replace(cfg.model(), gradient=arm), 0)
            state, _ = load_weights(path)
            load_state_into(model, state, path)
            model.eval()
            with torch.no_grad():
                lb = lookback_probes(model, probe_task, max_lag=cfg.window)
                pos = position_probes(model, probe_task)
            row["probes"][task][arm] = {
                "sin_lag0": [r[0] for r in lb["sin"]],
                "sin_lags_1_to_w-1": [sum(r[1:cfg.window]) / max(cfg.window - 1, 1) for r in lb["sin"]],
                "sin_with_future": pos["sin_with_future"], "layers": lb["layers"]}
    return row


def confirm_point(name: str, out: Path) -> dict:
    """The confirmation of one point: ``run_demo`` with the point's configuration in ``out/confirm-NAME`` (the
    demo's fresh seeds; the confirmations of the search itself used seeds 0-2, now screened)."""
    from myopia.experiments.demo import run_demo

    cfg = replace(BASE, **GRID[name])
    cfg = replace(cfg, seeds=DEMO.seeds, eval_every=max(1, cfg.steps // 4), notes=f"confirmation of search point {name}")
    return run_demo(cfg, out / f"confirm-{name}", progress=False)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0])
    ladder = "--ladder" in argv[1:]
    probe = "--probe" in argv[1:]
    confirm = "--confirm" in argv[1:]
    rest = [a for a in argv[1:] if a not in ("--ladder", "--probe", "--confirm")]
    names = list(LADDER) if ladder else (rest or [n for n in GRID if n not in LADDER + WINDOWS + SESSION3])
    unknown = [n for n in names if n not in GRID]
    if unknown:
        print(f"error: unknown grid point(s) {', '.join(unknown)}; known: {', '.join(GRID)}", file=sys.stderr)
        return 2
    if confirm:
        if len(names) != 1:
            print("error: --confirm takes exactly one grid point", file=sys.stderr)
            return 2
        result = confirm_point(names[0], out)
        print(result["table"] + "\n" + result["verdict"], flush=True)
        return 0
    if probe:
        try:
            rows = [probe_point(name, out) for name in names]
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        with open(out / "probes.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        row = run_point(name, out)
        with open(out / "search.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in ("point", "fraction_of_trivial", "meets_target", "wall_time_s")}),
              flush=True)
        if ladder and row["meets_target"]:
            break  # the smallest rung that meets the target; larger rungs are not needed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
