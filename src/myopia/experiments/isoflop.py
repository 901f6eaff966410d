"""``myopia sweep --design isoflop``: compute budgets x model sizes x arms x learning rates x seeds.

The design (decided before any run, the same for every arm):

- **budgets** C_1 .. C_m in training FLOPs (:func:`myopia.model.flops_per_token` accounting, as the ladder);
- per budget, ``n_sizes`` model shapes whose tokens per non-embedding parameter, tokens = C / FLOPs-per-token,
  lie closest to log-spaced targets between ``ratio_range`` (5 to 100 by default), picked from a fixed
  candidate family (width 16..512 in steps of 8, depth = max(1, round(width / aspect)));
- per (budget, size, arm) the learning rate is chosen from ``lr_grid`` by the **validation** loss of full-length
  seed-``seeds[0]`` runs (one run per grid value: no short-run proxy, so nothing to validate about a proxy); the
  remaining seeds train at the chosen learning rate; the seed-0 run at the chosen learning rate is one of the seeds;
- every run: warmup ``warmup_frac`` (>= 5%) of its steps, cosine decay to ``min_lr_ratio``, the same schedule shape
  for every arm; within a (budget, size, seed) every arm shares initialisation and data order;
- seeds: ``seeds`` everywhere plus ``frontier_seeds`` at the ``n_frontier`` middle sizes of each budget (the ones
  the design expects nearest the optimum; the report says whether the measured optimum landed there);
- the reported loss of a run is measured on the **test** split (``eval_windows_test.json``, per window and
  document), so the learning-rate selection on validation does not bias the reported numbers.

Data repetition: ``epochs`` = tokens / training-split tokens is recorded per run and flagged above 1.

Divergence: a run stopped by a non-finite loss (the trainer's NaN/inf check) is recorded in its folder as
``diverged.json`` and the sweep goes on; a diverged grid lr loses the lr choice (its validation loss counts as
+inf), a diverged seed run is listed in sweep.json's ``diverged`` and gives no point. Delete the file to retry.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from ..model import GPTConfig, flops_per_token, non_embedding_params
from ..rundir import RESULT
from ..train import TrainConfig, dist_info
from .sweep import (
    SWEEP_FILE,
    TIMING_FILE,
    ModelSize,
    doc_means,
    ensure_run,
    evaluate_windows,
    heads_for,
    keep_legacy_document_masks,
    run_status,
)

TEST_EVAL_FILE = "eval_windows_test.json"
DIVERGED_FILE = "diverged.json"  # a run stopped by a non-finite loss: an outcome of its lr, not a crash
DESIGN = "isoflop"


def _fmt_flops(c: float) -> str:
    """1e11 -> '1e11', 2.5e11 -> '2.5e11' (run-folder names)."""
    m, e = f"{c:.3e}".split("e")
    return f"{float(m):g}e{int(e)}"


@dataclass
class IsoFlopSettings:
    """Everything that defines an IsoFLOP sweep besides the corpus; stored in sweep.json."""

    budgets: list[float]
    gradients: list[str] = field(default_factory=lambda: ["vanilla", "myopic-hidden"])
    strict_budgets: list[float] = field(default_factory=list)  # budgets that also train strict "myopic"
    n_sizes: int = 4
    ratio_range: tuple[float, float] = (5.0, 100.0)
    aspect: int = 32
    head_dim: int = 32
    min_width: int = 16
    max_width: int = 512
    lr_grid: list[float] = field(default_factory=lambda: [1.5e-3, 3e-3, 6e-3])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    frontier_seeds: list[int] = field(default_factory=lambda: [2])
    n_frontier: int = 2
    seq_len: int = 128
    batch_size: int = 16
    micro_batch_size: int = 0
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    min_lr_ratio: float = 0.1
    eval_tokens: int = 196608
    device: str = "auto"
    precision: str = "fp32"
    ckpt_every: int = 200
    preset: str | None = None
    design: str = DESIGN

    def __post_init__(self) -> None:
        from ..model import GRADIENTS

        if not self.budgets or any(not (math.isfinite(c) and c > 0) for c in self.budgets):
            raise MyopiaError("IsoFLOP budgets must be positive FLOP counts")
        if len(self.budgets) != len(set(self.budgets)):
            raise MyopiaError("IsoFLOP budgets repeat")
        for g in self.gradients:
            if g not in GRADIENTS:
                raise MyopiaError(f"gradient {g!r} is not one of {', '.join(GRADIENTS)}")
        if "vanilla" not in self.gradients:
            raise MyopiaError("an IsoFLOP sweep needs the vanilla arm (the frontier every gap is measured against)")
        if self.warmup_frac < 0.05 or self.warmup_frac >= 1:
            raise MyopiaError(f"warmup must be at least 5% of the steps (got {self.warmup_frac:g})")
        if len(self.seeds) < 2:
            raise MyopiaError("an IsoFLOP sweep trains at least 2 seeds per cell (training noise must be measured)")
        if self.n_sizes < 3:
            raise MyopiaError("an IsoFLOP profile needs at least 3 sizes per budget (a parabola has 3 parameters)")
        lo, hi = self.ratio_range
        if not (0 < lo < hi):
            raise MyopiaError(f"tokens-per-parameter range must be 0 < lo < hi, got {self.ratio_range}")
        if not self.lr_grid or any(lr <= 0 for lr in self.lr_grid):
            raise MyopiaError("the learning-rate grid must hold positive values")

    def arms_for(self, budget: float) -> list[str]:
        arms = list(self.gradients)
        if any(math.isclose(budget, b, rel_tol=0.01) for b in self.strict_budgets) and "myopic" not in arms:
            arms.append("myopic")
        return arms

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio_range"] = list(self.ratio_range)
        return d


# --------------------------------------------------------------------------------------------------------------
# Sizes per budget
# --------------------------------------------------------------------------------------------------------------


def candidate_sizes(s: IsoFlopSettings) -> list[ModelSize]:
    """The fixed family sizes are picked from: widths min..max in steps of 8, depths with width / depth within
    1.5x of ``aspect`` (at least 1 layer), heads = :func:`heads_for` (so tiny models need no big jumps in N)."""
    out = []
    for w in range(s.min_width, s.max_width + 1, 8):
        try:
            heads = heads_for(w, s.head_dim)
        except MyopiaError:
            continue
        depths = [d for d in range(1, 49) if s.aspect / 1.5 <= w / d <= s.aspect * 1.5] or [1]
        out += [ModelSize(d, w, heads) for d in depths]
    return out


def _cfg(s: IsoFlopSettings, size: ModelSize, vocab_size: int, gradient: str = "vanilla") -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, n_layer=size.n_layer, n_head=size.n_head, d_model=size.d_model,
                     seq_len=s.seq_len, gradient=gradient)


def sizes_for_budget(s: IsoFlopSettings, budget: float, vocab_size: int) -> list[tuple[ModelSize, float]]:
    """``n_sizes`` distinct shapes whose tokens/parameter is nearest log-spaced targets in ``ratio_range``:
    [(size, tokens_per_param)], small first."""
    lo, hi = s.ratio_range
    targets = np.geomspace(hi, lo, s.n_sizes)  # high ratio = small model first
    cands = []
    for size in candidate_sizes(s):
        cfg = _cfg(s, size, vocab_size)
        ratio = budget / flops_per_token(cfg) / non_embedding_params(cfg)
        cands.append((size, ratio))
    chosen, used = [], set()
    for t in targets:
        best = min((c for c in cands if c[0].name not in used),
                   key=lambda c: (round(abs(math.log(c[1] / t)), 2), abs(math.log(c[0].d_model / c[0].n_layer
                                                                                   / s.aspect))), default=None)
        if best is None:
            break
        used.add(best[0].name)
        chosen.append(best)
    if len(chosen) < s.n_sizes:
        raise MyopiaError(f"budget {budget:.3g} FLOPs: not enough distinct sizes in the candidate family")
    chosen.sort(key=lambda c: -c[1])
    for size, ratio in chosen:
        if not (lo / 2 <= ratio <= hi * 2):  # "roughly": the family of tiny shapes is discrete
            raise MyopiaError(
                f"budget {budget:.3g} FLOPs: the nearest candidate ({size.name}) has {ratio:.1f} tokens/parameter, "
                f"far outside {lo:g}-{hi:g}; widen --max-width/--min-width or change the budget")
    return chosen


# --------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------


@dataclass
class IsoRun:
    """One training run: a (budget, size, arm, lr, seed)."""

    name: str
    cell: str  # budget-size: the unit of sharding (an arm's lr choice stays inside one process)
    budget: float
    size: ModelSize
    gradient: str
    lr: float
    seed: int
    model_cfg: GPTConfig
    train_cfg: TrainConfig
    params_non_embedding: int
    params_total: int
    tokens: int
    flops: float
    tokens_per_param: float
    epochs: float
    stage: str  # "lr-grid" (seed 0, each lr) or "seeds" (other seeds at the chosen lr)

    def row(self) -> dict:
        return {"name": self.name, "cell": self.cell, "budget": self.budget, "size": self.size.name,
                "n_layer": self.size.n_layer, "d_model": self.size.d_model, "n_head": self.size.n_head,
                "gradient": self.gradient, "lr": self.lr, "seed": self.seed, "stage": self.stage,
                "params_non_embedding": self.params_non_embedding, "params_total": self.params_total,
                "tokens": self.tokens, "steps": self.train_cfg.steps, "warmup_steps": self.train_cfg.warmup_steps,
                "flops": self.flops, "tokens_per_param": self.tokens_per_param, "epochs": self.epochs}


def run_name(budget: float, size: ModelSize, gradient: str, lr: float, seed: int) -> str:
    return f"C{_fmt_flops(budget)}-{size.name}-{gradient}-lr{lr:g}-s{seed}"


def _train_cfg(s: IsoFlopSettings, steps: int, lr: float, seed: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=s.batch_size, micro_batch_size=s.micro_batch_size, lr=lr,
                       min_lr_ratio=s.min_lr_ratio, warmup_steps=max(1, math.ceil(s.warmup_frac * steps)),
                       weight_decay=s.weight_decay, eval_every=0, ckpt_every=s.ckpt_every, log_every=10, seed=seed,
                       device=s.device, precision=s.precision, progress=False)


def seeds_for(s: IsoFlopSettings, size_index: int) -> list[int]:
    """``seeds`` everywhere, plus ``frontier_seeds`` at the ``n_frontier`` middle sizes."""
    n = s.n_sizes
    first = (n - s.n_frontier) // 2
    middle = first <= size_index < first + s.n_frontier
    return list(s.seeds) + (list(s.frontier_seeds) if middle else [])


def plan_cells(s: IsoFlopSettings, vocab_size: int, train_tokens: int) -> list[dict]:
    """One dict per (budget, size): {cell, budget, size, ratio, seeds, arms, runs: {arm: {"grid": [IsoRun],
    "seeds": {lr: [IsoRun]}}}}; seeds beyond the first exist for every lr (only the chosen one is trained)."""
    tokens_per_step = s.batch_size * s.seq_len
    cells = []
    for budget in sorted(s.budgets):
        for i, (size, _) in enumerate(sizes_for_budget(s, budget, vocab_size)):
            base = _cfg(s, size, vocab_size)
            fpt = flops_per_token(base)
            n_ne = non_embedding_params(base)
            steps = max(1, round(budget / fpt / tokens_per_step))
            tokens = steps * tokens_per_step
            cell = f"C{_fmt_flops(budget)}-{size.name}"
            seeds = seeds_for(s, i)
            runs = {}
            for arm in s.arms_for(budget):
                cfg = replace(base, gradient=arm)

                def mk(lr, seed, stage):
                    return IsoRun(run_name(budget, size, arm, lr, seed), cell, budget, size, arm, lr, seed, cfg,
                                  _train_cfg(s, steps, lr, seed), n_ne, n_ne + vocab_size * size.d_model, tokens,
                                  float(fpt) * tokens, tokens / n_ne, tokens / max(1, train_tokens), stage)

                runs[arm] = {"grid": [mk(lr, seeds[0], "lr-grid") for lr in s.lr_grid],
                             "seeds": {lr: [mk(lr, sd, "seeds") for sd in seeds[1:]] for lr in s.lr_grid}}
            cells.append({"cell": cell, "budget": budget, "size": size, "ratio": tokens / n_ne, "seeds": seeds,
                          "arms": s.arms_for(budget), "runs": runs, "flops": float(fpt) * tokens, "steps": steps})
    return cells


def cell_cost(cell: dict, n_lr: int) -> float:
    """Expected FLOPs of a cell: every arm trains the lr grid plus the extra seeds once."""
    per_arm = len(cell["runs"]) * (n_lr + len(cell["seeds"]) - 1)
    return per_arm * cell["flops"]


def shard_cells(cells: list[dict], shard: tuple[int, int] | None, n_lr: int) -> list[dict]:
    """The cells of shard K of N, deterministic: whole budgets when there are at least N of them (so a shard that
    finishes leaves complete IsoFLOP profiles: the analysis needs every size of a budget), greedily by cost
    (largest first onto the lightest shard); otherwise single cells the same way."""
    if shard is None:
        return cells
    k, n = shard
    budgets = sorted({c["budget"] for c in cells})
    units = ([[c for c in cells if c["budget"] == b] for b in budgets] if len(budgets) >= n
             else [[c] for c in cells])
    loads = [0.0] * n
    owner = {}
    for unit in sorted(units, key=lambda u: (-sum(cell_cost(c, n_lr) for c in u), u[0]["cell"])):
        j = min(range(n), key=lambda i: (loads[i], i))
        loads[j] += sum(cell_cost(c, n_lr) for c in unit)
        for c in unit:
            owner[c["cell"]] = j
    return [c for c in cells if owner[c["cell"]] == k]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise MyopiaError(f"--shard {text!r} must be K/N (e.g. 0/2)") from None
    if not (n >= 1 and 0 <= k < n):
        raise MyopiaError(f"--shard {text!r}: need 0 <= K < N")
    return k, n


def iso_status(run_dir: Path) -> str:
    """:func:`run_status`, or ``diverged`` (stopped by a non-finite loss, see :data:`DIVERGED_FILE`)."""
    return "diverged" if (Path(run_dir) / DIVERGED_FILE).exists() else run_status(run_dir)


def chosen_lr(grid_runs: list[IsoRun], out: Path) -> tuple[float | None, dict]:
    """The grid lr with the lowest validation loss among finished grid runs (None until all have finished; a
    diverged run counts as finished with loss +inf)."""
    val = {}
    for r in grid_runs:
        p = out / r.name / RESULT
        if (out / r.name / DIVERGED_FILE).exists():
            val[r.lr] = math.inf
        elif p.exists():
            val[r.lr] = float(read_json(p)["eval_loss"])
    if len(val) < len(grid_runs):
        return None, val
    finite = {lr: v for lr, v in val.items() if math.isfinite(v)}
    if not finite:
        return None, val
    return min(finite, key=lambda lr: (finite[lr], lr)), val


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------


def _ensure(corpus, data, run: IsoRun, out: Path, s: IsoFlopSettings, log) -> None:
    run_dir = out / run.name
    if iso_status(run_dir) == "diverged":
        return
    try:
        ensure_run(data, run_dir, run.model_cfg, run.train_cfg, corpus=corpus, eval_tokens=s.eval_tokens, log=log,
                   window_eval=False)  # validation: the trainer's eval loss (lr selection); test: per window below
    except MyopiaError as exc:
        if not str(exc).startswith("non-finite"):
            raise
        if dist_info()[0] == 0:
            write_json(run_dir / DIVERGED_FILE, {"run": run.name, "lr": run.lr, "seed": run.seed, "error": str(exc)})
        log(f"  {run.name}: diverged ({exc}); recorded in {DIVERGED_FILE}, the sweep goes on")
        return
    if dist_info()[0] == 0 and not (run_dir / TEST_EVAL_FILE).exists():
        evaluate_windows(run_dir, corpus, s.eval_tokens, run.train_cfg.seed, split="test", file=TEST_EVAL_FILE)


def _cell_runs(cells: list[dict]) -> list[IsoRun]:
    return [r for c in cells for runs in c["runs"].values()
            for r in runs["grid"] + [x for seeds in runs["seeds"].values() for x in seeds]]


def _keep_legacy_masks(out: Path, cells: list[dict], log) -> None:
    """As the ladder (:func:`keep_legacy_document_masks`): a folder whose runs predate ``document_mask`` trains
    every run of the plan without document masks, so that reused and new runs are the same design (in place)."""
    runs = _cell_runs(cells)
    kept = {r.name: r.train_cfg for r in keep_legacy_document_masks(out, runs, log)}
    for r in runs:
        r.train_cfg = kept[r.name]


def run_isoflop(data, out, s: IsoFlopSettings, *, corpus=None, max_runs: int | None = None,
                shard: tuple[int, int] | None = None, n_boot: int = 1000, extrapolate_E: float | None = None,
                log=None) -> dict:
    """Train the pending runs of this shard (cell by cell: lr grid, then the other seeds at the chosen lr), then
    write and return sweep.json (the analysis covers whatever has finished, in every shard)."""
    from ..data import load_corpus

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    corpus = corpus if corpus is not None else load_corpus(data)
    cells = plan_cells(s, corpus.vocab_size, len(corpus.split_tokens("train")))
    _keep_legacy_masks(out, cells, log)
    trained = 0

    def budget_left() -> bool:
        return max_runs is None or trained < max_runs

    for cell in shard_cells(cells, shard, len(s.lr_grid)):
        for arm, runs in cell["runs"].items():
            for r in runs["grid"]:
                if iso_status(out / r.name) not in ("done", "diverged"):
                    if not budget_left():
                        continue
                    trained += 1
                _ensure(corpus, data, r, out, s, log)
            lr, _ = chosen_lr(runs["grid"], out)
            if lr is None:
                continue
            for r in runs["seeds"][lr]:
                if iso_status(out / r.name) not in ("done", "diverged"):
                    if not budget_left():
                        continue
                    trained += 1
                _ensure(corpus, data, r, out, s, log)
    summary = summarise_isoflop(out, cells, s, data=data, corpus=corpus, n_boot=n_boot, extrapolate_E=extrapolate_E)
    if dist_info()[0] == 0:
        write_json(out / SWEEP_FILE, summary)
    return summary


# --------------------------------------------------------------------------------------------------------------
# Summarising
# --------------------------------------------------------------------------------------------------------------


def _run_record(run: IsoRun, out: Path) -> dict:
    row = run.row()
    d = out / run.name
    row["status"] = iso_status(d)
    if row["status"] == "done":
        row["val_loss"] = float(read_json(d / RESULT)["eval_loss"])
        t = d / TIMING_FILE
        row["wall_s"] = read_json(t)["wall_s"] if t.exists() else None
        if (d / TEST_EVAL_FILE).exists():
            row["test_loss"] = float(read_json(d / TEST_EVAL_FILE)["mean"])
    return row


def _document_mask(run_dir: Path) -> bool:
    """Whether the finished run trained with document masks (runs that predate the option did not)."""
    return bool(read_json(run_dir / RESULT)["config"]["train"].get("document_mask", False))


def _doc_losses(ev: dict) -> tuple[list[float], list[float]]:
    """Per-document mean loss and token count of a per-window evaluation."""
    _, mean, tokens = doc_means(ev)
    return mean.tolist(), tokens.tolist()


def summarise_isoflop(out, cells: list[dict], s: IsoFlopSettings, *, data=None, corpus=None, n_boot: int = 1000,
                      extrapolate_E: float | None = None) -> dict:
    """sweep.json of an IsoFLOP sweep: runs, the lr selection per (budget, size, arm), the points (the chosen-lr
    runs' test losses with per-document losses) and the frontier analysis of :func:`myopia.scaling.frontier_report`.
    """
    from ..scaling import frontier_report

    out = Path(out)
    rows, selection, points, pending = [], [], [], []
    for cell in cells:
        for arm, runs in cell["runs"].items():
            grid_rows = [_run_record(r, out) for r in runs["grid"]]
            rows += grid_rows
            lr, val = chosen_lr(runs["grid"], out)
            chosen_rows = []
            if lr is None:
                pending += [r["name"] for r in grid_rows if r["status"] not in ("done", "diverged")]
                pending += [f"{cell['cell']}-{arm}-s{sd} (after the lr grid)" for sd in cell["seeds"][1:]]
            else:
                seed_rows = [_run_record(r, out) for r in runs["seeds"][lr]]
                rows += seed_rows
                pending += [r["name"] for r in seed_rows if r["status"] not in ("done", "diverged")]
                chosen_rows = [r for r in grid_rows if r["lr"] == lr] + seed_rows
            grid = sorted(val)
            selection.append({"cell": cell["cell"], "budget": cell["budget"], "size": cell["size"].name, "arm": arm,
                              "val_loss_by_lr": {f"{k:g}": v for k, v in sorted(val.items()) if math.isfinite(v)},
                              "diverged_lrs": [k for k, v in sorted(val.items()) if not math.isfinite(v)], "lr": lr,
                              "at_grid_edge": None if lr is None else lr in (min(s.lr_grid), max(s.lr_grid)),
                              "grid_done": len(grid) == len(s.lr_grid)})
            for r in chosen_rows:
                if r["status"] != "done" or "test_loss" not in r:
                    continue
                ev = read_json(out / r["name"] / TEST_EVAL_FILE)
                doc_loss, doc_tokens = _doc_losses(ev)
                # flops: the budget (whole steps put the actual FLOPs within a step of it: flops_actual), so that
                # the runs of one budget group together even when rounding to whole steps differs by > 1%
                points.append({"arm": arm, "flops": cell["budget"], "flops_actual": r["flops"],
                               "n_params": r["params_non_embedding"], "tokens": r["tokens"], "loss": r["test_loss"],
                               "seed": r["seed"], "lr": r["lr"], "size": r["size"], "epochs": r["epochs"],
                               "doc_loss": doc_loss, "doc_tokens": doc_tokens})
    arms = list(dict.fromkeys(p["arm"] for p in points))
    analysis = frontier_report(points, baseline="vanilla", arms=[a for a in arms if a != "vanilla"], n_boot=n_boot,
                               extrapolate_E=extrapolate_E) if points else None
    timings = [r.get("wall_s") or 0.0 for r in rows if r["status"] == "done"]
    masks = sorted({_document_mask(out / r["name"]) for r in rows if r["status"] == "done"})
    max_epochs = max((r["epochs"] for r in rows), default=0.0)
    return {
        "kind": "myopia-sweep",
        "design": DESIGN,
        "complete": not pending,
        "pending": pending,
        "data": None if data is None else str(data),
        "corpus": None if corpus is None else corpus.describe(),
        "settings": s.to_dict(),
        "units": {"loss": "nats/token on held-out test-split windows (lr chosen on the validation split)",
                  "flops": "training FLOPs (myopia.model.flops_per_token x tokens)",
                  "k": "compute multiplier C*/C between the frontiers, inside the measured compute range"},
        "plan": [{"cell": c["cell"], "budget": c["budget"], "size": c["size"].name, "tokens_per_param": c["ratio"],
                  "steps": c["steps"], "flops": c["flops"], "seeds": c["seeds"], "arms": c["arms"]} for c in cells],
        "document_mask": masks[0] if len(masks) == 1 else None,  # None: mixed (or nothing trained yet)
        "data_repeat": {"max_epochs": max_epochs, "repeats": max_epochs > 1.0,
                        "note": (f"data repeat: up to {max_epochs:.2f} epochs of the training split" if max_epochs > 1
                                 else f"no data repeat (at most {max_epochs:.2f} epochs)")},
        "runs": rows,
        "diverged": [r["name"] for r in rows if r["status"] == "diverged"],
        "lr_selection": selection,
        "points": points,
        "frontier": analysis,
        "total_train_wall_s": float(sum(timings)),
        "provenance": provenance(),
    }
