"""``myopia demo``: does training make a model compute, at position n, a feature only later positions need?

The pre-caching task (``precache``) rewards computing sin(ω·x_n) at position n only through later targets; its
breadcrumbs control (``control``) also rewards it at n itself. Each seed trains vanilla, myopic-hidden and myopic
(strict) models from one initialisation on one data order, on both tasks; every model is scored on the same fresh
held-out sequences and probed (ridge probes of its hidden states for sin(ω·x_n), every seed and arm).

**The criterion** (:data:`CRITERION`, fixed before the demo's fresh-seed runs and written into ``result.json``):
pre-caching beyond slow learning is shown when, for each myopic variant (myopic and myopic-hidden), the
*interaction* — precache gap minus control gap, gap = variant − vanilla in Huber/p, paired per seed — has a 95%
t-interval over seeds above 0; plus vanilla's probe R² for sin(ω·x_n) at position n on ``precache`` (best block,
mean over the positions whose feature serves a later target) ≥ 0.5 on every seed, and myopic-hidden's < 0.2 on
every seed. The seeds are never ones the configuration search or its confirmations used
(:data:`SCREENED_SEEDS`). The older absolute target (:data:`TARGET`) is reported as a secondary line.

Presets are data in ``recipes/demo.toml``: ``cpu`` (the default, window 8, 1000 steps), ``cpu-long`` (window 4,
MLP ratio 1, 2000 steps) and ``full`` (the paper's scale, for a GPU). How the CPU configurations were found is
told in docs/synthetic.md; the search itself is the development script ``dev/demo_search.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..analysis.stats import format_interval, t_interval, t_test_p
from ..arms import PRIMARY_FIRST
from ..errors import MyopiaError
from ..io import provenance, write_json
from ..progress import duration, set_display
from ..recipe_files import read_recipe_file
from ..rundir import RESULT
from ..synthetic.compare import UNIT, assemble, train_seed
from ..synthetic.regression import RegressionSpec, regressor_config
from ..synthetic.sampling import BASELINE_FIT, EVAL, PROBE_FIT, PROBE_TEST, TRAIN
from ..train import TrainConfig, resolve_device

GRADIENT_ORDER = ("vanilla", "myopic-hidden", "myopic", "bigram")
DEMO_GRADIENTS = ("vanilla", "myopic-hidden", "myopic")
MYOPIC = ("myopic", "myopic-hidden")
# Every seed the configuration search (seed 0) and its confirmations (seeds 0-2) trained: the demo never uses them.
SCREENED_SEEDS = (0, 1, 2)
PROBE_MIN_VANILLA, PROBE_MAX_HIDDEN = 0.5, 0.2
CRITERION = (
    "Pre-caching beyond slow learning is shown when, for each of myopic and myopic-hidden, the interaction "
    "(precache gap minus control gap; gap = variant minus vanilla, held-out Huber/p, paired per seed) has a 95% "
    "t-interval over seeds above 0; and vanilla's probe R² for sin(ω·x_n) at position n on precache (best block, mean "
    f"over positions whose feature serves a later target) is >= {PROBE_MIN_VANILLA} on every seed while "
    f"myopic-hidden's is < {PROBE_MAX_HIDDEN} on every seed. Seeds never screened: none of {list(SCREENED_SEEDS)}.")
PRESET_NAMES = ("cpu", "cpu-long", "full")


@dataclass
class DemoConfig:
    """One demo configuration (the defaults are the ``cpu`` preset of recipes/demo.toml)."""
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
    seeds: tuple = (10, 11, 12, 13, 14)
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


def check_seeds(seeds) -> tuple[int, ...]:
    """``seeds`` as a tuple of ints, refused (one-line error) if empty, repeated or screened."""
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise MyopiaError("the demo needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise MyopiaError(f"demo seeds repeat: {list(seeds)}")
    screened = sorted(set(seeds) & set(SCREENED_SEEDS))
    if screened:
        raise MyopiaError(f"seed(s) {screened} were used to choose the demo's configuration; the demo's verdict needs "
                          f"fresh seeds (anything but {list(SCREENED_SEEDS)})")
    return seeds


def load_preset(name: str) -> DemoConfig:
    """The preset ``name`` (``cpu``, ``cpu-long`` or ``full``) read from ``recipes/demo.toml``."""
    if name not in PRESET_NAMES:
        raise MyopiaError(f"unknown demo preset {name!r}; known: {', '.join(PRESET_NAMES)}")
    table = read_recipe_file("demo").get(name)
    if not isinstance(table, dict):
        raise MyopiaError(f"recipes/demo.toml has no [{name}] table")
    known = {f.name for f in fields(DemoConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise MyopiaError(f"recipes/demo.toml [{name}]: unknown field(s) {', '.join(unknown)}")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in table.items()}
    cfg = replace(DemoConfig(), **values)
    check_seeds(cfg.seeds)
    return cfg


def __getattr__(name: str):
    """``DEMO``, ``CPU_LONG``, ``FULL`` and ``PRESETS``, read from recipes/demo.toml when first asked for."""
    names = {"DEMO": "cpu", "CPU_LONG": "cpu-long", "FULL": "full"}
    if name in names:
        return load_preset(names[name])
    if name == "PRESETS":
        return {n: load_preset(n) for n in PRESET_NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Secondary: the demo's older absolute target (fractions of the trivial loss, means over seeds).
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


def target_line(result: dict) -> str:
    """The secondary absolute target: met, or the conditions that failed with the measured fractions."""
    t = result.get("target")
    if not t:
        return ""
    head = ("Secondary, absolute target (precache: both myopic ≥ 0.9 of the trivial loss, vanilla ≤ 0.15; "
            "control: vanilla and myopic-hidden ≤ 0.15; means over seeds)")
    if t["met"]:
        return head + ": met."
    failed = [f"{task} {arm} {result[task]['fraction_of_trivial'][arm]:.3f} (needs {t['conditions'][task][arm]})"
              for task, arms in t["checks"].items() for arm, ok in arms.items() if not ok and task in result]
    return head + ": not met — " + "; ".join(failed) + "."


def interaction(precache_gaps, control_gaps) -> dict:
    """Per-seed interaction (precache gap − control gap, paired by seed) with its 95% t-interval over seeds.

    ``precache_gaps``, ``control_gaps``: per-seed gaps (variant − vanilla, Huber/p), same seed order. Returns
    {"mean", "ci95" ([lo, hi], None below 2 seeds), "per_seed", "p" (two-sided t-test of mean 0), "n_seeds"}."""
    a, b = np.asarray(precache_gaps, dtype=np.float64), np.asarray(control_gaps, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise MyopiaError(f"interaction needs two equal-length per-seed lists; got {a.shape} and {b.shape}")
    d = a - b
    ci = t_interval(d)
    return {"mean": float(d.mean()), "ci95": None if ci is None else list(ci), "per_seed": d.tolist(),
            "p": t_test_p(d), "n_seeds": int(d.size)}


def interactions(result: dict) -> dict:
    """{arm: :func:`interaction`} for each myopic variant in ``result`` (needs precache and control gaps)."""
    out = {}
    for arm in MYOPIC:
        gaps = [result.get(t, {}).get("gap", {}).get(arm) for t in ("precache", "control")]
        if all(gaps):
            out[arm] = interaction(gaps[0]["per_seed"], gaps[1]["per_seed"])
    return out


def best_block_r2(by_position: dict) -> float:
    """R² for sin(ω·x_n) at its own position: the best block (embedding excluded) of the mean over positions
    whose feature serves a later target (``by_position``: :func:`myopia.synthetic.probes.position_probes`)."""
    values = [v for v in by_position["sin_with_future"][1:] if v is not None]
    return float(max(values)) if values else float("nan")


def probe_tables(result: dict, tasks) -> tuple[dict, dict]:
    """({task: {arm: [best-block R² per seed]}}, {task: {arm: [[R² per layer and position] per seed]}})."""
    r2, by_pos = {}, {}
    for t in tasks:
        per_arm = result[t].get("probes_by_seed", {})
        r2[t] = {g: [best_block_r2(p["by_position"]) for p in per_arm[g]] for g in GRADIENT_ORDER if g in per_arm}
        by_pos[t] = {g: [p["by_position"]["sin"] for p in per_arm[g]] for g in GRADIENT_ORDER if g in per_arm}
    return r2, by_pos


def criterion_checks(inter: dict, probe_r2: dict) -> dict:
    """Each part of :data:`CRITERION` as a bool, and ``met`` (all of them)."""
    checks = {f"interaction {arm} above 0": bool(inter.get(arm) and inter[arm]["ci95"] and inter[arm]["ci95"][0] > 0)
              for arm in MYOPIC}
    pre = probe_r2.get("precache", {})
    checks[f"vanilla probe R² >= {PROBE_MIN_VANILLA} on every seed"] = bool(
        pre.get("vanilla")) and all(v >= PROBE_MIN_VANILLA for v in pre["vanilla"])
    checks[f"myopic-hidden probe R² < {PROBE_MAX_HIDDEN} on every seed"] = bool(
        pre.get("myopic-hidden")) and all(v < PROBE_MAX_HIDDEN for v in pre["myopic-hidden"])
    checks["met"] = all(checks.values())
    return checks


def _seed_words(seeds) -> str:
    return f"{len(seeds)} fresh seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def verdict(result: dict) -> str:
    """A few short lines: what was shown, on how many seeds, what it means (from ``interaction``, ``probe_r2``
    and ``criterion_checks`` of ``result``)."""
    inter, r2, checks = result.get("interaction", {}), result.get("probe_r2", {}), result.get("criterion_checks")
    seeds = result.get("seeds", [])
    if not checks or set(inter) != set(MYOPIC) or "vanilla" not in r2.get("precache", {}):
        return "No verdict: the criterion needs precache and control, with vanilla, myopic-hidden and myopic."
    gaps = "; ".join(f"{arm} {format_interval(inter[arm], 3)}" for arm in ("myopic-hidden", "myopic"))
    pv, ph = r2["precache"]["vanilla"], r2["precache"].get("myopic-hidden", [float("nan")])
    k = sum(v >= PROBE_MIN_VANILLA for v in pv)
    vanilla = ("vanilla computes the feature where only later positions use it on every seed" if k == len(pv) else
               f"vanilla computes the feature where only later positions use it on {k} of {len(pv)} seeds")
    lines = [f"Extra loss from myopic training on the task that needs pre-caching, beyond the control that does "
             f"not (Huber/p, 95% interval over seeds): {gaps}.",
             f"Probes: {vanilla} (R² {min(pv):.2f}–{max(pv):.2f}); myopic-hidden "
             f"{'does not' if max(ph) < PROBE_MAX_HIDDEN else 'partly does'} (R² {min(ph):.2f}–{max(ph):.2f})."]
    if checks["met"]:
        lines.insert(0, f"Shown on {_seed_words(seeds)}: ordinary training makes the model prepare, at one position, "
                        f"a feature that only later positions need (pre-caching), beyond what slower learning explains.")
    else:
        failed = [k for k, ok in checks.items() if k != "met" and not ok]
        lines.insert(0, f"Not shown on {_seed_words(seeds)}: the declared criterion fails on: {'; '.join(failed)}.")
        if all(checks[f"interaction {arm} above 0"] for arm in MYOPIC) and k < len(pv):
            lines.append("Meaning: myopic training loses more where pre-caching is needed than where it is not, but "
                         "at this budget vanilla did not solve the task by pre-caching on every seed.")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """Plain-text table: per task, each model's held-out Huber/p and (in brackets) its fraction of trivial
    (means over seeds), and each myopic variant's gap with its seed-inclusive 95% interval."""
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


def probe_table(result: dict) -> str:
    """Plain-text table: per task and arm, the probe R² for sin(ω·x_n) at its own position (best block) per seed."""
    r2 = result.get("probe_r2", {})
    seeds = result.get("seeds", [])
    out = [f"Probe R² for sin(ω·x_n) at position n (best block; positions whose feature serves a later target), "
           f"per seed {seeds}:"]
    for t, arms in r2.items():
        for g, values in arms.items():
            out.append(f"  {t:9s} {g:14s} " + "  ".join(f"{v:.3f}" for v in values))
    return "\n".join(out)


def interaction_table(result: dict) -> str:
    """Plain-text lines: each myopic variant's per-seed interaction and its interval."""
    out = ["Interaction = precache gap − control gap (Huber/p), per seed and 95% t-interval over seeds:"]
    for arm, v in result.get("interaction", {}).items():
        out.append(f"  {arm:14s} {format_interval(v, 3)}   per seed " + " ".join(f"{x:+.3f}" for x in v["per_seed"]))
    return "\n".join(out)


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


def _announce(task: str, n: int, log, position: int | None):
    """Before each model of one (task, seed) unit: a 'model i of n' line and the label of its step display."""
    def announce(i: int, gradient: str, seed: int) -> None:
        log(f"[{task}] seed {seed}: model {i + 1} of {n} ({gradient})")
        set_display(f"{task} s{seed} {i + 1}/{n} {gradient}", position, plain_evaluations=False, shared_clock=True)
    return announce


def train_unit(cfg: DemoConfig, task: str, seed: int, runs_dir: Path, progress: bool, log, probe: bool = True,
               position: int | None = None) -> dict:
    """One (task, seed) unit of the demo: every gradient setting trained in ``runs_dir``, scored and (with
    ``probe``) probed; :func:`myopia.synthetic.compare.train_seed`'s result plus ``reproducibility``."""
    out = train_seed(cfg.spec(task), list(cfg.gradients), cfg.model(), cfg.train(progress), runs_dir, seed,
                     suffix=len(cfg.seeds) > 1, eval_sequences=cfg.eval_sequences, probe=probe,
                     probe_max_lag=cfg.probe_max_lag, probe_sequences=(cfg.probe_fit_sequences,
                                                                      cfg.probe_test_sequences),
                     log=log, announce=_announce(task, len(cfg.gradients), log, position))
    out.pop("models")
    out["reproducibility"] = reproducibility()
    return out


def run_task(cfg: DemoConfig, task: str, runs_dir: Path, progress: bool, log, probe: bool = True) -> dict:
    """One task of the demo (precache or control), every seed in this process; returns the task's summary."""
    units = [train_unit(cfg, task, seed, runs_dir, progress, log, probe) for seed in cfg.seeds]
    return task_summary(cfg, task, units, probe)


def task_summary(cfg: DemoConfig, task: str, units: list[dict], probe: bool = True) -> dict:
    """A task's summary from its (task, seed) units, in seed order (:func:`myopia.synthetic.compare.assemble`)."""
    summary = assemble(cfg.spec(task), units, probe=probe, probe_every_seed=probe)
    summary["reproducibility"] = units[0]["reproducibility"]
    return summary


def _unit_worker(cfg: DemoConfig, task: str, seed: int, runs_dir: str, threads: int, progress: bool,
                 position: int) -> dict:
    """Entry point of a worker process: one (task, seed) unit, ``threads`` intra-op threads, log lines to stderr."""
    import torch

    torch.set_num_threads(threads)
    return train_unit(cfg, task, seed, Path(runs_dir), progress, lambda msg: print(msg, file=sys.stderr, flush=True),
                      position=position)


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def task_workers(cfg: DemoConfig, requested: int | None = None) -> int:
    """How many processes train the (task, seed) units: one per core on a CPU (tiny models use several cores
    poorly, several processes use them well), one on a GPU; ``requested`` overrides."""
    units = len(cfg.tasks) * len(cfg.seeds)
    if requested is not None:
        if requested < 1:
            raise MyopiaError(f"--workers must be >= 1, got {requested}")
        return min(requested, units)
    if resolve_device(cfg.device).type != "cpu":
        return 1
    return max(1, min(units, os.cpu_count() or 1))


def train_tasks(cfg: DemoConfig, runs_root: Path, progress: bool, log, workers: int) -> dict:
    """{task: summary} for every task of ``cfg``: the (task, seed) units in ``workers`` processes or in this one,
    with an overall 'unit k of n, ETA' line as each finishes. The numbers do not depend on ``workers``."""
    units = [(task, seed) for seed in cfg.seeds for task in cfg.tasks]
    done: dict = {}
    t0 = time.perf_counter()

    def finished(key, value) -> None:
        done[key] = value
        elapsed = time.perf_counter() - t0
        eta = elapsed / len(done) * (len(units) - len(done))
        log(f"[demo] {key[0]} seed {key[1]} done: {len(done)} of {len(units)} (task, seed) units, "
            f"{len(done) * len(cfg.gradients)} of {len(units) * len(cfg.gradients)} models; "
            f"elapsed {duration(elapsed)}, ETA {duration(eta)}")

    if workers <= 1:
        for task, seed in units:
            finished((task, seed), train_unit(cfg, task, seed, runs_root / task, progress, log))
    else:
        threads = _threads_per_worker(workers)
        log(f"[demo] training {len(units)} (task, seed) units in {workers} parallel processes ({threads} thread(s) each)")
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_unit_worker, cfg, t, s, str(runs_root / t), threads, progress, i % workers): (t, s)
                       for i, (t, s) in enumerate(units)}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    return {t: task_summary(cfg, t, [done[(t, s)] for s in cfg.seeds]) for t in cfg.tasks}


def judge(result: dict, cfg: DemoConfig) -> None:
    """Add the interaction, probe tables, criterion, secondary target, verdict and tables to ``result``."""
    result["interaction"] = interactions(result)
    result["probe_r2"], result["probe_r2_by_position"] = probe_tables(result, cfg.tasks)
    result["criterion_checks"] = criterion_checks(result["interaction"], result["probe_r2"])
    fractions = {t: result[t]["fraction_of_trivial"] for t in cfg.tasks}
    result["target"] = {"conditions": {t: {g: f"{op} {b}" for g, (op, b) in c.items()} for t, c in TARGET.items()},
                        "checks": target_checks(fractions), "met": meets_target(fractions)}
    result["verdict"] = verdict(result)
    result["target_line"] = target_line(result)
    result["table"] = format_table(result)
    result["interaction_table"] = interaction_table(result)
    result["probe_table"] = probe_table(result)


def write_plots(result: dict, cfg: DemoConfig, out: Path) -> list[str]:
    """training_curves.png (every seed), probes_<task>.png (lookback R², mean over seeds) and
    probes_by_position.png (per-position R², every seed); returns the file names."""
    from ..plots.probes import position_r2_by_seed, probe_heatmap
    from ..plots.training import synthetic_training_curves

    seeds = list(cfg.seeds)
    synthetic_training_curves({t: result[t]["runs"] for t in cfg.tasks}, out / "training_curves.png", seeds=seeds)
    names = ["training_curves.png"]
    for t in cfg.tasks:
        by_seed = result[t]["probes_by_seed"]
        mean = {g: {**ps[0], "sin": np.mean([p["sin"] for p in ps], 0).tolist(),
                    "x": np.mean([p["x"] for p in ps], 0).tolist()} for g, ps in by_seed.items()}
        probe_heatmap(mean, out / f"probes_{t}.png", title=f"{t}: ridge-probe R² by layer and lookback "
                      f"(ω={cfg.omega:g}), mean over seeds {seeds}")
        names.append(f"probes_{t}.png")
    position_r2_by_seed(result["probe_r2_by_position"], out / "probes_by_position.png", seeds=seeds,
                        future={t: result[t]["probes_by_seed"]["vanilla"][0]["by_position"]["future_positions"]
                                for t in cfg.tasks})
    return names + ["probes_by_position.png"]


def run_demo(cfg: DemoConfig | None = None, out: str | Path | None = None, *, full: bool = False, plots: bool = True,
             progress: bool = True, log=None, workers: int | None = None, preset: str | None = None) -> dict:
    """Run the demo; with ``out``, write out/result.json, plots and the run directories. Returns the result.

    ``cfg``: default the ``cpu`` preset. ``workers``: processes training the tasks side by side (default:
    :func:`task_workers`). The criterion (:data:`CRITERION`) is in the result before any model trains."""
    cfg = cfg if cfg is not None else load_preset("cpu")
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    check_seeds(cfg.seeds)
    if "vanilla" not in cfg.gradients:
        raise MyopiaError("the demo compares against vanilla: include it in --gradients")
    if out is not None:
        out = Path(out)
        if (out / RESULT).exists() or (out / "runs").exists():
            raise MyopiaError(f"{out} already holds a (possibly unfinished) demo; remove it or choose another --out")
    result: dict = {"command": "demo", "full": full, "preset": preset or ("full" if full else "cpu"),
                    "criterion": CRITERION, "seeds": list(cfg.seeds), "screened_seeds": list(SCREENED_SEEDS),
                    "config": asdict(cfg), "unit": UNIT,
                    "seed_streams": {"train": TRAIN, "eval": EVAL, "probe_fit": PROBE_FIT, "probe_test": PROBE_TEST,
                                     "baseline_fit": BASELINE_FIT}}
    with tempfile.TemporaryDirectory(prefix="myopia-demo-") as scratch:
        runs_root = (out / "runs") if out is not None else Path(scratch)
        workers = task_workers(cfg, workers)
        result["parallel"] = {"processes": workers, "threads_per_process": _threads_per_worker(workers)}
        result.update(train_tasks(cfg, runs_root, progress, log, workers))
        judge(result, cfg)
        result.update(provenance())
        if out is not None and plots:
            result["plots"] = write_plots(result, cfg, out)
        result["wall_time_s"] = time.perf_counter() - t0
        if out is not None:
            write_json(out / RESULT, result)
    return result


def demo_config(full: bool = False, preset: str | None = None, **overrides) -> DemoConfig:
    """The default (or ``full``, or ``preset`` from :data:`PRESET_NAMES`) configuration with the overrides that
    are not None applied; seeds are checked against :data:`SCREENED_SEEDS`."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if full and preset not in (None, "full"):
        raise MyopiaError(f"--full and --{preset} exclude each other")
    base = load_preset("full" if full else (preset or "cpu"))
    seed, n_seeds = changes.pop("seed", None), changes.pop("n_seeds", None)
    if seed is not None or n_seeds is not None:
        if "seeds" in changes:
            raise MyopiaError("--seeds and --seed/--n-seeds exclude each other")
        first = base.seeds[0] if seed is None else int(seed)
        n = len(base.seeds) if n_seeds is None else int(n_seeds)
        if n < 1:
            raise MyopiaError(f"--n-seeds must be >= 1, got {n}")
        changes["seeds"] = tuple(range(first, first + n))
    if "seeds" in changes:
        changes["seeds"] = check_seeds(changes["seeds"])
    if "gradients" in changes:
        changes["gradients"] = tuple(changes["gradients"])
    return replace(base, **changes)
