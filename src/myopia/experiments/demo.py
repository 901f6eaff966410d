"""``myopia demo``: the pre-caching task and its breadcrumbs control, every gradient setting, 3 seeds, probes, a verdict.

Three configurations:

- :data:`DEMO` (the default) is sized for a 2-core CPU: ω = 3, window 8, 16 positions, p = 1, a 2-layer width-64
  GPT, 1000 AdamW steps of 128 sequences per model (lr 3e-3, cosine to half of it), 3 seeds per arm. The two tasks
  train in two single-threaded processes side by side. The configuration search (docs/synthetic.md,
  :mod:`myopia.experiments.demo_search`; every point run on every arm) found no 1000-step configuration that meets the target
  (:data:`TARGET`): at window 8 myopic-hidden does not solve ``control`` (0.27–0.43 of the trivial loss), with 4–8×
  the steps it solves ``control`` (0.13–0.14) but partly solves ``precache`` without pre-caching (0.81–0.85, where ≥
  0.9 is needed), p = 0.5 does so already at 1000 steps (0.66–0.77); at windows 4 and 2 ``precache`` is solved
  without pre-caching (by reading the raw inputs of the window), by myopic-hidden in some seeds and by vanilla too
  (probe R² 0.07 at window 2, against 0.96 at window 8). Window 8 keeps the pre-caching evidence clean: vanilla
  computes the feature where it is useless to the present and neither myopic variant does.
- :data:`CPU_LONG` (``--cpu-long``) is the configuration that meets the target, with 3 seeds, in about 9 minutes:
  window 4, MLP ratio 1 (64 hidden units, which makes copying the raw inputs and computing w sines at the present
  cost w times what pre-caching costs), 2000 steps. No 1000-step configuration met it.
- :data:`FULL` (``--full``) is the paper's scale (ω = 10, window 10, 64 positions, width 128) for a GPU.

Each seed trains vanilla, myopic-hidden and myopic (strict) models (``--gradients`` may add ``bigram``) from one
initialisation on one data order; every model of every seed is evaluated on the same fresh held-out sequences,
so gaps get seed-inclusive intervals (:mod:`myopia.analysis.stats`).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..arms import PRIMARY_FIRST
from ..errors import MyopiaError
from ..io import provenance, write_json
from ..rundir import RESULT
from ..synthetic.regression import RegressionSpec, regressor_config
from ..synthetic.sampling import BASELINE_FIT, EVAL, PROBE_FIT, PROBE_TEST, TRAIN
from ..train import TrainConfig, resolve_device
from .regression import UNIT, compare_regression

GRADIENT_ORDER = ("vanilla", "myopic-hidden", "myopic", "bigram")
DEMO_GRADIENTS = ("vanilla", "myopic-hidden", "myopic")


@dataclass
class DemoConfig:
    omega: float = 3.0
    window: int = 8
    p: float = 1.0
    seq_len: int = 16
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    mlp_ratio: int = 4
    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.5
    weight_decay: float = 0.1
    eval_sequences: int = 2048
    eval_every: int = 250
    probe_max_lag: int = 20
    probe_fit_sequences: int = 2048
    probe_test_sequences: int = 1024
    gradients: tuple = DEMO_GRADIENTS
    tasks: tuple = ("precache", "control")
    seeds: tuple = (0, 1, 2)
    device: str = "auto"
    notes: str = ""

    def spec(self, task: str) -> RegressionSpec:
        return RegressionSpec(task=task, omega=self.omega, window=self.window, p=self.p, seq_len=self.seq_len)

    def model(self):
        return regressor_config(n_layer=self.n_layer, n_head=self.n_head, d_model=self.d_model, seq_len=self.seq_len,
                                mlp_ratio=self.mlp_ratio)

    def train(self, progress: bool) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, min_lr_ratio=self.min_lr_ratio,
                           weight_decay=self.weight_decay,
                           eval_every=self.eval_every, ckpt_every=0, log_every=25, seed=self.seeds[0],
                           device=self.device, progress=progress)


DEMO = DemoConfig(notes="CPU scale, 3 seeds: 18 models of 1000 steps; about 5 minutes on an idle 2-core machine "
                         "(estimated from per-step timings, see docs/synthetic.md); the target is not met at this budget")
# ``--cpu-long``: the search point that met the target and passed its 3-seed confirmation
# (``p1-mlp1-window4-2000steps``, docs/synthetic.md; the earlier ``p1-omega4-window4-2000steps`` met it with seed
# 0 and failed the confirmation). A narrow MLP (hidden width 64) prices out precache's raw-input route.
CPU_LONG = DemoConfig(window=4, mlp_ratio=1, steps=2000, eval_every=500,
                      notes="CPU with time: window 4, MLP ratio 1, 2000 steps (the search point that met the target "
                            "with 3 seeds); about 9 minutes on an idle 2-core machine")
FULL = DemoConfig(omega=10.0, window=10, seq_len=64, d_model=128, n_layer=2, n_head=4, steps=20000, batch_size=256,
                  lr=1e-3, eval_sequences=4096, eval_every=1000,
                  notes="paper scale (Wu et al. 2024, synthetic task): for a GPU; not measured on the CPU machine")


# The demo's target, fixed before the configuration search (issue 15) and checked on every arm.
TARGET = {"precache": {"myopic-hidden": (">=", 0.9), "myopic": (">=", 0.9), "vanilla": ("<=", 0.15)},
          "control": {"myopic-hidden": ("<=", 0.15), "vanilla": ("<=", 0.15)}}


def target_checks(fractions: dict) -> dict:
    """{task: {arm: bool}} for every condition of :data:`TARGET`; ``fractions``: {task: {arm: fraction of trivial}}."""
    out = {}
    for task, conds in TARGET.items():
        out[task] = {}
        for arm, (op, bound) in conds.items():
            v = fractions.get(task, {}).get(arm)
            out[task][arm] = v is not None and (v >= bound if op == ">=" else v <= bound)
    return out


def meets_target(fractions: dict) -> bool:
    """Whether every condition of :data:`TARGET` holds."""
    return all(all(c.values()) for c in target_checks(fractions).values())


def _level(frac: float) -> str:
    return "at the trivial predictor" if frac >= 0.9 else ("near it" if frac >= 0.7 else "below it")


def target_line(result: dict) -> str:
    """'Target met on every arm' or the conditions that failed (with the measured fractions)."""
    t = result.get("target")
    if not t:
        return ""
    if t["met"]:
        return "Target (fixed before the configuration search) met on every arm."
    failed = [f"{task} {arm} {result[task]['fraction_of_trivial'][arm]:.3f} (needs {t['conditions'][task][arm]})"
              for task, arms in t["checks"].items() for arm, ok in arms.items() if not ok and task in result]
    return "Target (fixed before the configuration search) NOT met: " + "; ".join(failed) + "."


def verdict(result: dict) -> str:
    """One line judging the numbers (fractions of the trivial loss): does vanilla beat myopic on precache, do
    both myopic variants solve control, and how strict myopia differs from hidden-state myopia."""
    f = {t: result[t]["fraction_of_trivial"] for t in ("precache", "control") if t in result}
    if "precache" not in f or "control" not in f or not {"vanilla", "myopic", "myopic-hidden"} <= set(f["precache"]):
        return "no verdict: needs precache and control with vanilla, myopic and myopic-hidden"
    pv, ph, ps = f["precache"]["vanilla"], f["precache"]["myopic-hidden"], f["precache"]["myopic"]
    cv, ch, cs = f["control"]["vanilla"], f["control"]["myopic-hidden"], f["control"]["myopic"]
    if not pv <= 0.5 * min(ph, ps):
        return (f"No clear pre-caching separation at this budget: on precache vanilla reaches {pv:.3f} of the trivial "
                f"loss, myopic-hidden {ph:.3f}, strict myopic {ps:.3f} (vanilla should be at most half of both).")
    line = (f"Vanilla solves precache ({pv:.3f} of the trivial loss) and myopic training does not: strict myopic "
            f"{ps:.2f} ({_level(ps)}), myopic-hidden {ph:.2f} ({_level(ph)})")
    if cv <= 0.2 and ch <= 0.2:
        line += f"; on control, where the feature also serves the present, myopic-hidden solves it too ({ch:.3f}"
        line += f" vs vanilla {cv:.3f})"
        if cs > 2 * max(ch, cv):
            line += (f" but strict myopia lags ({cs:.3f}): it also removes the gradient that teaches W_K/W_V to read "
                     f"the past, so the hidden-state variant is the one that isolates pre-caching.")
        else:
            line += f" and so does strict myopia ({cs:.3f})."
    else:
        line += (f"; but control is not solved by every variant (vanilla {cv:.3f}, myopic-hidden {ch:.3f}, strict "
                 f"{cs:.3f}), so this budget does not cleanly separate pre-caching from slow learning.")
    return line


def format_table(result: dict) -> str:
    """Plain-text table: per task, each model's held-out Huber/p and (in brackets) its fraction of trivial
    (means over seeds), and each myopic variant's gap with its seed-inclusive 95% interval."""
    from ..analysis.stats import format_interval

    tasks = [t for t in ("precache", "control") if t in result]
    gradients = [g for g in GRADIENT_ORDER if g in result[tasks[0]]]
    header = ["task", "trivial"] + [("myopic (strict)" if g == "myopic" else g) for g in gradients]
    header += [f"gap {g}" for g in PRIMARY_FIRST if g in gradients]
    rows = []
    for t in tasks:
        r = result[t]
        row = [t, f"{r['trivial']:.4f}"]
        row += [f"{r[g]:.4f} ({r['fraction_of_trivial'][g]:.3f})" for g in gradients]
        for g in PRIMARY_FIRST:
            if g in gradients:
                row.append(format_interval(r["gap"][g], 4))
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    n = result[tasks[0]].get("n_seeds", 1)
    out.append(f"Held-out Huber loss / p (fraction of the trivial predictor's), means over {n} seed(s); gap = model − "
               f"vanilla with a 95% interval over seeds and held-out sequences "
               f"(training noise {'included' if n > 1 else 'not measured: 1 seed'}).")
    return "\n".join(out)


def probe_summary(result: dict, task: str = "precache", layer: int = 1) -> str:
    """One line: R² of sin(ω·x_n) from block ``layer`` at the positions with a future in the window, and at the
    last position (nothing to pre-cache for), per arm (seed 0)."""
    probes = result.get(task, {}).get("probes")
    if not probes:
        return ""
    parts = []
    for g in GRADIENT_ORDER:
        if g in probes and layer < len(probes[g]["layers"]):
            bp = probes[g].get("by_position")
            if bp and bp["sin_last"][layer] is not None:
                parts.append(f"{g} {bp['sin_with_future'][layer]:.3f} (last position {bp['sin_last'][layer]:.3f})")
            else:
                parts.append(f"{g} {probes[g]['sin'][layer][0]:.3f}")
    return (f"Probe R² for sin(ω·x_n) from block-{layer} output at positions n with a future in the window "
            f"({task}, held-out, seed {result[task]['seeds'][0]}): " + ", ".join(parts))


def reproducibility() -> dict:
    """What bitwise reproduction of the numbers on CPU needs besides the config and seeds: intra-op threads of
    the process that trained, the thread environment, deterministic-algorithm mode, library versions (recorded
    beside this in ``versions``)."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "mkldnn": torch.backends.mkldnn.is_available(), "dtype": "float32 (fp32 on CPU)"}


def run_task(cfg: DemoConfig, task: str, runs_dir: Path, progress: bool, log, probe: bool = True) -> dict:
    """One task of the demo (precache or control): every gradient setting and seed trained in ``runs_dir``,
    evaluated (and probed, with ``probe``); returns the task's summary."""
    summary, _ = compare_regression(
        cfg.spec(task), list(cfg.gradients), cfg.model(), cfg.train(progress), runs_dir,
        seeds=list(cfg.seeds), eval_sequences=cfg.eval_sequences, probe=probe, probe_max_lag=cfg.probe_max_lag,
        probe_sequences=(cfg.probe_fit_sequences, cfg.probe_test_sequences), log=log,
    )
    summary["reproducibility"] = reproducibility()
    return summary


def _task_worker(cfg: DemoConfig, task: str, runs_dir: str, threads: int) -> dict:
    """Entry point of a worker process: one task, ``threads`` intra-op threads, log lines to stderr."""
    import torch

    torch.set_num_threads(threads)
    return run_task(cfg, task, Path(runs_dir), False, lambda msg: print(msg, file=sys.stderr, flush=True))


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def task_workers(cfg: DemoConfig, requested: int | None = None) -> int:
    """How many processes train the tasks: one per task on a multi-core CPU (tiny models use two cores
    poorly, two processes use them well), one on a GPU or a single core; ``requested`` overrides."""
    if requested is not None:
        if requested < 1:
            raise MyopiaError(f"--workers must be >= 1, got {requested}")
        return min(requested, len(cfg.tasks))
    if resolve_device(cfg.device).type != "cpu":
        return 1
    return max(1, min(len(cfg.tasks), os.cpu_count() or 1))


def run_demo(cfg: DemoConfig = DEMO, out: str | Path | None = None, *, full: bool = False, plots: bool = True,
             progress: bool = True, log=None, workers: int | None = None, preset: str | None = None) -> dict:
    """Run the demo; with ``out``, write out/result.json, plots and the run directories. Returns the result.

    ``workers``: processes training the tasks side by side (default: :func:`task_workers`)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    if "vanilla" not in cfg.gradients:
        raise MyopiaError("the demo compares against vanilla: include it in --gradients")
    if out is not None:
        out = Path(out)
        if (out / RESULT).exists() or (out / "runs").exists():
            raise MyopiaError(f"{out} already holds a (possibly unfinished) demo; remove it or choose another --out")
    with tempfile.TemporaryDirectory(prefix="myopia-demo-") as scratch:
        runs_root = (out / "runs") if out is not None else Path(scratch)
        result: dict = {"command": "demo", "full": full, "preset": preset or ("full" if full else "cpu"),
                        "config": asdict(cfg), "unit": UNIT,
                        "seeds": {"init_and_data": list(cfg.seeds), "streams": {"train": TRAIN, "eval": EVAL,
                                  "probe_fit": PROBE_FIT, "probe_test": PROBE_TEST, "baseline_fit": BASELINE_FIT}}}
        workers = task_workers(cfg, workers)
        threads = _threads_per_worker(workers)
        result["parallel"] = {"processes": workers, "threads_per_process": threads}
        if workers <= 1:
            for task in cfg.tasks:
                result[task] = run_task(cfg, task, runs_root / task, progress, log)
        else:  # one process per task, each on its share of the cores; bars from several processes would mix
            log(f"[demo] training the tasks in {workers} parallel processes ({threads} thread(s) each)")
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {t: pool.submit(_task_worker, cfg, t, str(runs_root / t), threads)
                           for t in cfg.tasks}
                for task, fut in futures.items():
                    result[task] = fut.result()
        fractions = {t: result[t]["fraction_of_trivial"] for t in cfg.tasks}
        result["target"] = {"conditions": {t: {g: f"{op} {b}" for g, (op, b) in c.items()} for t, c in TARGET.items()},
                            "checks": target_checks(fractions), "met": meets_target(fractions)}
        result["verdict"] = verdict(result) + " " + target_line(result)
        result["table"] = format_table(result)
        result["probe_summary"] = probe_summary(result)
        result["wall_time_s"] = time.perf_counter() - t0
        result.update(provenance())
        if out is not None:
            if plots:
                from ..plots.probes import probe_heatmap
                from ..plots.training import synthetic_training_curves

                synthetic_training_curves({t: {g: p[0] for g, p in result[t]["runs"].items()} for t in cfg.tasks},
                                          out / "training_curves.png")
                for t in cfg.tasks:
                    probe_heatmap(result[t]["probes"], out / f"probes_{t}.png",
                                  title=f"{t}: ridge-probe R² by layer and lookback (ω={cfg.omega:g})")
                result["plots"] = ["training_curves.png"] + [f"probes_{t}.png" for t in cfg.tasks]
            result["wall_time_s"] = time.perf_counter() - t0
            write_json(out / RESULT, result)
    return result


PRESETS = {"cpu": DEMO, "cpu-long": CPU_LONG, "full": FULL}


def demo_config(full: bool = False, preset: str | None = None, **overrides) -> DemoConfig:
    """The default (or ``full``, or ``preset`` from :data:`PRESETS`) configuration with the overrides that are not
    None applied."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if preset is not None and preset not in PRESETS:
        raise MyopiaError(f"unknown demo preset {preset!r}; known: {', '.join(PRESETS)}")
    if full and preset not in (None, "full"):
        raise MyopiaError(f"--full and --{preset} exclude each other")
    base = FULL if full else PRESETS[preset or "cpu"]
    seed, n_seeds = changes.pop("seed", None), changes.pop("n_seeds", None)
    if seed is not None or n_seeds is not None:
        first = base.seeds[0] if seed is None else int(seed)
        n = len(base.seeds) if n_seeds is None else int(n_seeds)
        if n < 1:
            raise MyopiaError(f"--n-seeds must be >= 1, got {n}")
        changes["seeds"] = tuple(range(first, first + n))
    if "seeds" in changes:
        changes["seeds"] = tuple(int(x) for x in changes["seeds"])
        if not changes["seeds"]:
            raise MyopiaError("the demo needs at least one seed")
    if "gradients" in changes:
        changes["gradients"] = tuple(changes["gradients"])
    return replace(base, **changes)
