"""``myopia sweep``: model sizes x token budgets x gradient settings x seeds, trained into one folder, then fitted.

Each (size, budget, gradient, seed) trains into ``DIR/<run-name>/`` with :func:`myopia.experiments.train_lm.train_lm`.
Within a size (and budget and seed) every gradient setting gets the same initialisation, data order and
hyperparameters: only the gradient differs. A run whose ``result.json`` exists is skipped; a run with a checkpoint
is resumed; so rerunning the same command continues an interrupted sweep. After training, each model is evaluated
per held-out window (``eval_windows.json``) for paired document-bootstrap intervals on the gaps, and the whole
folder is summarised in ``DIR/sweep.json`` (see :func:`summarise`).
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..arms import MYOPIC_ARMS
from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from ..model import GPTConfig, flops_per_token, non_embedding_params
from ..scaling import (
    compute_multiplier,
    fit_chinchilla,
    fit_power_law,
    multiplier_curve,
)
from ..rundir import CONFIG, METRICS, RESULT, load_run_model, run_status
from ..rundir import SWEEP_JSON as SWEEP_FILE
from ..train import TrainConfig, dist_info
from .scaling_presets import PRESETS, SweepPreset
from .train_lm import train_lm

EVAL_FILE = "eval_windows.json"
TIMING_FILE = "timing.json"


# --------------------------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    n_layer: int
    d_model: int
    n_head: int

    @property
    def name(self) -> str:
        return f"{self.n_layer}x{self.d_model}h{self.n_head}"


def heads_for(d_model: int, head_dim: int) -> int:
    """d_model // head_dim heads (at least 1), reduced until the head count divides d_model with even head size."""
    n = max(1, d_model // max(1, head_dim))
    while n > 1 and (d_model % n or (d_model // n) % 2):
        n -= 1
    if d_model % n or (d_model // n) % 2:
        raise MyopiaError(f"width {d_model} has no even head size; use an even width")
    return n


def ladder(widths, aspect: int, head_dim: int) -> list[ModelSize]:
    """Sizes from width rules: n_layer = max(1, round(width / aspect)), heads = :func:`heads_for`."""
    if aspect < 1:
        raise MyopiaError(f"aspect (width per layer) must be >= 1, got {aspect}")
    return [ModelSize(max(1, round(w / aspect)), int(w), heads_for(int(w), head_dim)) for w in widths]


_SIZE = re.compile(r"^(\d+)x(\d+)(?:h(\d+))?$")


def parse_sizes(text: str, head_dim: int) -> list[ModelSize]:
    """``"1x32,2x64,4x128h4"``: LAYERSxWIDTH[hHEADS], comma separated."""
    sizes = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        m = _SIZE.match(item)
        if not m:
            raise MyopiaError(f"size {item!r} is not LAYERSxWIDTH or LAYERSxWIDTHhHEADS (e.g. 2x64 or 2x64h4)")
        n_layer, d_model = int(m.group(1)), int(m.group(2))
        n_head = int(m.group(3)) if m.group(3) else heads_for(d_model, head_dim)
        GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model)  # validates
        sizes.append(ModelSize(n_layer, d_model, n_head))
    if not sizes:
        raise MyopiaError("no sizes given")
    return sizes


@dataclass(frozen=True)
class TokenBudget:
    """Training tokens per run: ``value`` tokens, or ``value`` per non-embedding parameter when ``per_param``."""

    value: float
    per_param: bool = False

    @property
    def label(self) -> str:
        if self.per_param:
            return f"{self.value:g}N"
        for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if self.value >= div:
                return f"{self.value / div:g}{unit}"
        return f"{self.value:g}"

    def resolve(self, n_params_non_embedding: int) -> int:
        return int(round(self.value * n_params_non_embedding if self.per_param else self.value))


_UNITS = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}


def parse_tokens(text: str) -> list[TokenBudget]:
    """``"2M,4M"``, ``"500k"``, ``"1.5e6"`` or ``"20N"`` (tokens per non-embedding parameter)."""
    out = []
    for item in [t.strip() for t in str(text).split(",") if t.strip()]:
        per_param = item.endswith("N")
        body = item[:-1] if per_param else item
        mult = 1.0
        if not per_param and body and body[-1] in _UNITS:
            mult, body = _UNITS[body[-1]], body[:-1]
        try:
            value = float(body) * mult
        except ValueError:
            raise MyopiaError(f"token budget {item!r} is not a number like 2M, 500k, 1.5e6 or 20N") from None
        if not (math.isfinite(value) and value > 0):
            raise MyopiaError(f"token budget {item!r} must be positive")
        out.append(TokenBudget(value, per_param))
    if not out:
        raise MyopiaError("no token budgets given")
    return out


def parse_list(text: str, kind=str, name: str = "list") -> list:
    try:
        items = [kind(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise MyopiaError(f"{name} {text!r} must be a comma-separated list of {kind.__name__}") from None
    if not items:
        raise MyopiaError(f"{name} is empty")
    return items


@dataclass
class SweepSettings:
    """Everything that defines a sweep besides the corpus; stored in sweep.json and in every run's config."""

    sizes: list[ModelSize]
    tokens: list[TokenBudget]
    gradients: list[str] = field(default_factory=lambda: ["vanilla", "myopic", "myopic-hidden"])
    seeds: list[int] = field(default_factory=lambda: [0])
    seq_len: int = 128
    batch_size: int = 32
    micro_batch_size: int = 0
    lr: float = 2e-3
    lr_ref_width: int = 0
    lr_max: float = 3e-3
    warmup_frac: float = 0.01
    weight_decay: float = 0.1
    min_lr_ratio: float = 0.1
    eval_tokens: int = 262144
    device: str = "auto"
    precision: str = "fp32"
    ckpt_every: int = 200
    beta: float = 0.0
    horizon: int = 0
    preset: str | None = None

    def __post_init__(self) -> None:
        from ..model import GRADIENTS

        for g in self.gradients:
            if g not in GRADIENTS:
                raise MyopiaError(f"gradient {g!r} is not one of {', '.join(GRADIENTS)}")
        if len(set(self.gradients)) != len(self.gradients):
            raise MyopiaError("gradients repeat")
        if len({s.name for s in self.sizes}) != len(self.sizes):
            raise MyopiaError("sizes repeat")
        if self.seq_len < 2 or self.batch_size < 1:
            raise MyopiaError("seq-len must be >= 2 and batch-size >= 1")
        if not (0 <= self.warmup_frac < 1):
            raise MyopiaError("warmup fraction must lie in [0, 1)")

    def lr_for(self, size: ModelSize) -> float:
        if self.lr_ref_width <= 0:
            return self.lr
        return min(self.lr_max, self.lr * math.sqrt(self.lr_ref_width / size.d_model))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"] = [s.name for s in self.sizes]
        d["tokens"] = [t.label for t in self.tokens]
        return d

    @classmethod
    def from_preset(cls, preset: SweepPreset | str, **overrides) -> "SweepSettings":
        """The preset's settings (its ladder, budgets and every field it shares with this class by name), with
        the ``overrides`` that are not None applied by :func:`dataclasses.replace`."""
        p = PRESETS[preset] if isinstance(preset, str) else preset
        shared = {f.name for f in fields(cls)} & {f.name for f in fields(p)} - {"tokens", "gradients", "seeds"}
        base = cls(sizes=ladder(p.widths, p.aspect, p.head_dim), tokens=parse_tokens(",".join(p.tokens)),
                   gradients=list(p.gradients), seeds=list(p.seeds), preset=p.name,
                   **{name: getattr(p, name) for name in shared})
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class SweepRun:
    """One training run of the grid."""

    name: str
    size: ModelSize
    budget: TokenBudget
    gradient: str
    seed: int
    model_cfg: GPTConfig
    train_cfg: TrainConfig
    params_total: int
    params_non_embedding: int
    tokens: int  # tokens actually trained on (whole steps)
    flops: float  # flops_per_token * tokens: 6 N D + causal attention (see myopia.model.flops_per_token)

    def row(self) -> dict:
        return {
            "name": self.name, "size": self.size.name, "n_layer": self.size.n_layer, "d_model": self.size.d_model,
            "n_head": self.size.n_head, "budget": self.budget.label, "gradient": self.gradient, "seed": self.seed,
            "params_total": self.params_total, "params_non_embedding": self.params_non_embedding,
            "tokens": self.tokens, "steps": self.train_cfg.steps, "lr": self.train_cfg.lr, "flops": self.flops,
            "flops_6nd": 6.0 * self.params_non_embedding * self.tokens,
        }


def run_name(size: ModelSize, budget: TokenBudget, gradient: str, seed: int) -> str:
    return f"{size.name}-D{budget.label}-{gradient}-s{seed}"


def plan_runs(settings: SweepSettings, vocab_size: int) -> list[SweepRun]:
    """The grid, ordered size-major (small first) so that an interrupted sweep has whole sizes done."""
    runs = []
    for size in sorted(settings.sizes, key=lambda s: non_embedding_params(model_config_for(settings, s, vocab_size))):
        base_cfg = model_config_for(settings, size, vocab_size)
        n_ne = non_embedding_params(base_cfg)
        n_total = n_ne + vocab_size * size.d_model
        for budget in settings.tokens:
            tokens_per_step = settings.batch_size * settings.seq_len
            steps = steps_for(settings, budget, n_ne)
            for seed in settings.seeds:
                for gradient in settings.gradients:
                    cfg = replace(base_cfg, gradient=gradient)
                    tcfg = train_config_for(settings, size, steps, seed)
                    runs.append(SweepRun(
                        name=run_name(size, budget, gradient, seed), size=size, budget=budget, gradient=gradient,
                        seed=seed, model_cfg=cfg, train_cfg=tcfg, params_total=n_total, params_non_embedding=n_ne,
                        tokens=steps * tokens_per_step, flops=float(flops_per_token(cfg)) * steps * tokens_per_step,
                    ))
    return runs


def train_config_for(settings: SweepSettings, size: ModelSize, steps: int, seed: int) -> TrainConfig:
    """The training hyperparameters of one run: shared by every gradient setting of a (size, budget, seed)."""
    return TrainConfig(
        steps=steps, batch_size=settings.batch_size, micro_batch_size=settings.micro_batch_size,
        lr=settings.lr_for(size), min_lr_ratio=settings.min_lr_ratio,
        warmup_steps=max(1, round(settings.warmup_frac * steps)), weight_decay=settings.weight_decay,
        eval_every=0, ckpt_every=settings.ckpt_every, log_every=10, seed=seed, device=settings.device,
        precision=settings.precision, progress=False,
    )


def steps_for(settings: SweepSettings, budget: TokenBudget, n_params_non_embedding: int) -> int:
    return max(1, round(budget.resolve(n_params_non_embedding) / (settings.batch_size * settings.seq_len)))


def model_config_for(settings: SweepSettings, size: ModelSize, vocab_size: int) -> GPTConfig:
    """The GPT config of one size of the sweep (its context and gradient knobs from ``settings``)."""
    return GPTConfig(vocab_size=vocab_size, n_layer=size.n_layer, n_head=size.n_head, d_model=size.d_model,
                     seq_len=settings.seq_len, beta=settings.beta, horizon=settings.horizon)



# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------


def ensure_run(data, run_dir: Path, model_cfg: GPTConfig, train_cfg: TrainConfig, *, corpus, eval_tokens: int,
               log=print, window_eval: bool = True, branch_at=(), branch_from=None) -> str:
    """Train the run in ``run_dir`` unless finished (resuming a partial one); then (``window_eval``) its
    per-window validation evaluation.

    Returns the status before the call (``done``, ``partial`` or ``new``).
    """
    status = run_status(run_dir)
    if status == "new" and dist_info()[0] == 0:
        for leftover in (CONFIG, METRICS):  # an attempt killed before its first checkpoint
            (run_dir / leftover).unlink(missing_ok=True)
    if status != "done":
        log(f"{'resuming' if status == 'partial' else 'training'} {run_dir.name} "
            f"({train_cfg.steps} steps, {model_cfg.n_layer}x{model_cfg.d_model}, {model_cfg.gradient})")
        t0 = time.perf_counter()
        result = train_lm(data, run_dir, model_cfg, train_cfg, resume=status == "partial", eval_tokens=eval_tokens,
                          corpus=corpus, branch_at=branch_at, branch_from=branch_from)
        if dist_info()[0] == 0:
            timing_path = run_dir / TIMING_FILE
            before = read_json(timing_path)["wall_s"] if timing_path.exists() else 0.0
            write_json(timing_path, {"wall_s": before + time.perf_counter() - t0})
            log(f"  {run_dir.name}: eval loss {result['eval_loss']:.4f} ({time.perf_counter() - t0:.0f} s)")
    if window_eval and dist_info()[0] == 0 and not (run_dir / EVAL_FILE).exists():
        evaluate_windows(run_dir, corpus, eval_tokens, train_cfg.seed)
    return status


@torch.no_grad()
def evaluate_windows(run_dir: Path, corpus, eval_tokens: int, seed: int, batch_size: int = 32, *,
                     split: str = "val", file: str = EVAL_FILE) -> dict:
    """Per-window held-out loss of the run's final model on ``split`` (for "val": the trainer's evaluation
    windows, checked against its eval loss), and each window's document (for the document bootstrap). Writes
    ``file`` in the run folder.
    """
    from ..data import LMTask

    result = read_json(run_dir / RESULT)
    model = load_run_model(run_dir, finished=True)
    cfg = model.cfg
    task = LMTask(corpus, cfg.seq_len, seed=seed, eval_tokens=eval_tokens, eval_split=split,
                  document_mask=result["config"]["train"].get("document_mask", False))
    x, y = task.eval_windows()
    docs = task.eval_docs()  # the masking the run was trained and evaluated with
    losses = []
    for i in range(0, len(x), batch_size):
        logits = task.logits(model, x[i : i + batch_size], None if docs is None else docs[i : i + batch_size])
        ce = F.cross_entropy(logits.float().flatten(0, 1), y[i : i + batch_size].flatten(), reduction="none")
        losses.append(ce.view(-1, cfg.seq_len).mean(1).double())
    per_window = torch.cat(losses).numpy()
    starts = np.arange(len(x)) * cfg.seq_len
    doc_of_window = task.eval_doc_ids[starts + 1]  # the document of each window's first target token
    mean = float(per_window.mean())
    if split == "val" and abs(mean - result["eval_loss"]) > 1e-4 * max(1.0, abs(mean)):
        raise MyopiaError(f"{run_dir}: per-window evaluation {mean:.6f} disagrees with result.json "
                          f"{result['eval_loss']:.6f} (was the corpus or tokenizer changed?)")
    out = {"loss_per_window": per_window.tolist(), "doc_of_window": doc_of_window.tolist(), "mean": mean,
           "seq_len": cfg.seq_len, "split": task.eval_split}
    write_json(run_dir / file, out)
    return out


def run_sweep(data, out, settings: SweepSettings, *, corpus=None, max_runs: int | None = None,
              bootstrap: int = 200, log=None) -> dict:
    """Train every pending run of the grid (at most ``max_runs`` this call), then write and return sweep.json."""
    from ..data import load_corpus

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    corpus = corpus if corpus is not None else load_corpus(data)
    runs = keep_legacy_document_masks(out, plan_runs(settings, corpus.vocab_size), log)
    trained = 0
    for run in runs:
        run_dir = out / run.name
        if run_status(run_dir) != "done":
            if max_runs is not None and trained >= max_runs:
                continue
            trained += 1
        ensure_run(data, run_dir, run.model_cfg, run.train_cfg, corpus=corpus, eval_tokens=settings.eval_tokens,
                   log=log)
    summary = summarise(out, runs, settings, data=data, corpus=corpus, bootstrap=bootstrap)
    if dist_info()[0] == 0:
        write_json(out / SWEEP_FILE, summary)
    return summary


def keep_legacy_document_masks(out: Path, runs: list, log) -> list:
    """A sweep folder whose runs predate ``document_mask`` keeps training without document masks (its runs are
    compared with each other), and says so."""
    def predates(run_dir: Path) -> bool:
        train = read_json(run_dir / CONFIG).get("train") if (run_dir / CONFIG).is_file() else None
        return isinstance(train, dict) and "document_mask" not in train

    legacy = [r.name for r in runs if predates(out / r.name)]
    if not legacy:
        return runs
    log(f"warning: {out} predates --document-mask (e.g. {legacy[0]}): all its runs train without document masks")
    return [replace(r, train_cfg=replace(r.train_cfg, document_mask=False)) for r in runs]


# --------------------------------------------------------------------------------------------------------------
# Summarising: table, fits, compute multipliers
# --------------------------------------------------------------------------------------------------------------


def doc_means(ev: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document ids, per-document mean loss, tokens per document) of a per-window evaluation (EVAL_FILE)."""
    docs = np.asarray(ev["doc_of_window"])
    w = np.asarray(ev["loss_per_window"], dtype=np.float64)
    uniq, inv = np.unique(docs, return_inverse=True)
    n = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    return uniq, np.bincount(inv, weights=w, minlength=len(uniq)) / n, n * float(ev.get("seq_len", 1))


def summarise(out, runs: list[SweepRun], settings: SweepSettings, *, data=None, corpus=None,
              bootstrap: int = 200) -> dict:
    """sweep.json: per-run rows, the per-(size, budget) table, power-law fits and compute multipliers.

    ``fits[budget][arm]`` is L(C) over the sizes trained with that token budget; a row's k compares its myopic
    loss with the vanilla curve of the same budget, and ``k_curve[budget][arm]`` compares the two fitted curves
    (inside the measured range only: no extrapolation). Table losses average over seeds. Gap intervals:
    :class:`myopia.analysis.stats.HierarchicalBootstrap` over seeds and held-out documents (``gap_summary``
    holds the full summary, with ``training_noise``). Fit intervals: residual bootstrap (only with >= 2 residual
    degrees of freedom, i.e. >= 5 sizes); k intervals pair the vanilla and the myopic fits' bootstrap samples, so
    they include both arms' noise.
    """
    rows, evals = _run_rows(Path(out), runs)
    arms = list(settings.gradients)
    table = _size_budget_table(rows, evals, settings, bootstrap)
    fits = _budget_fits(table, arms, bootstrap)
    _add_multipliers(table, fits)
    pending = [r["name"] for r in rows if r["status"] != "done"]
    timings = [r.get("wall_s") or 0.0 for r in rows if r["status"] == "done"]
    return {
        "kind": "myopia-sweep",
        "complete": not pending,
        "pending": pending,
        "data": None if data is None else str(data),
        "corpus": None if corpus is None else corpus.describe(),
        "settings": settings.to_dict(),
        "units": {"loss": "nats/token on held-out windows (validation split)", "flops": "training FLOPs",
                  "k": "compute multiplier C*/C: a myopic model at C matches a vanilla one at k*C"},
        "runs": rows,
        "table": table,
        "fits": {b: {g: (None if f is None else f.to_dict()) for g, f in fb.items()} for b, fb in fits.items()},
        "k_curve": _k_curves(table, fits),
        "chinchilla": _chinchilla(rows, arms, bootstrap),
        "total_train_wall_s": float(sum(timings)),
        "provenance": provenance(),
    }


def _run_rows(out: Path, runs: list[SweepRun]) -> tuple[list[dict], dict]:
    """One row per run (its status, and for a finished run its eval loss, tokens and wall time), and the
    per-window evaluations of the finished runs that have them ({run name: eval_windows.json})."""
    rows, evals = [], {}
    for run in runs:
        row = run.row()
        run_dir = out / run.name
        row["status"] = run_status(run_dir)
        if row["status"] == "done":
            result = read_json(run_dir / RESULT)
            row["eval_loss"] = result["eval_loss"]
            row["eval_tokens"] = result["final_eval"].get("tokens")
            timing = run_dir / TIMING_FILE
            row["wall_s"] = read_json(timing)["wall_s"] if timing.exists() else result.get("train_time_s")
            if (run_dir / EVAL_FILE).exists():
                evals[run.name] = read_json(run_dir / EVAL_FILE)
        rows.append(row)
    return rows, evals


def _size_budget_table(rows: list[dict], evals: dict, settings: SweepSettings, bootstrap: int) -> list[dict]:
    """One entry per (size, budget): losses averaged over seeds (with their seed sd) and the myopic gaps with
    their seed-inclusive intervals; sorted by budget (as in settings.tokens), then size."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        groups.setdefault((row["size"], row["budget"]), {}).setdefault(row["gradient"], []).append(row)
    table = []
    arms = list(settings.gradients)
    for (size, budget), by_grad in groups.items():
        any_row = next(iter(by_grad.values()))[0]
        entry = {k: any_row[k] for k in ("size", "n_layer", "d_model", "n_head", "budget", "params_total",
                                          "params_non_embedding", "tokens", "flops", "flops_6nd")}
        entry["loss"], entry["loss_seed_sd"], entry["seeds_done"] = {}, {}, {}
        for g in _report_arms(arms):
            done = [r for r in by_grad.get(g, []) if r["status"] == "done"]
            losses = [r["eval_loss"] for r in done]
            entry["loss"][g] = float(np.mean(losses)) if losses else None
            entry["loss_seed_sd"][g] = float(np.std(losses, ddof=1)) if len(losses) > 1 else None
            entry["seeds_done"][g] = len(losses)
        entry["gap"], entry["gap_ci"], entry["gap_seed_sd"], entry["gap_summary"] = {}, {}, {}, {}
        for g in MYOPIC_ARMS:
            (entry["gap"][g], entry["gap_ci"][g], entry["gap_seed_sd"][g],
             entry["gap_summary"][g]) = _gap(by_grad, g, evals, bootstrap)
        table.append(entry)
    budget_order = {b.label: i for i, b in enumerate(settings.tokens)}
    table.sort(key=lambda e: (budget_order.get(e["budget"], len(budget_order)), e["params_non_embedding"]))
    return table


def _budget_fits(table: list[dict], arms: list[str], bootstrap: int) -> dict[str, dict]:
    """One curve per token budget and arm: L(C) over the sizes trained on the same D tokens (so compute varies
    through N alone, and k compares a myopic model with vanilla models given the same data); None with fewer than
    3 points. ``{budget: {arm: PowerLawFit | None}}``, budgets in the table's order."""
    budgets = list(dict.fromkeys(e["budget"] for e in table))  # in the order of settings.tokens
    fits: dict[str, dict] = {}
    for b in budgets:
        fits[b] = {}
        for g in _report_arms(arms):
            pts = [(e["flops"], e["loss"][g]) for e in table if e["budget"] == b and e["loss"].get(g) is not None]
            fits[b][g] = None
            if len(pts) >= 3 and len({c for c, _ in pts}) >= 2:  # intervals only from 5 points (2 dof)
                c, l_ = np.array(pts).T
                fits[b][g] = fit_power_law(c, l_, bootstrap=bootstrap, seed=0)
    return fits


def _add_multipliers(table: list[dict], fits: dict[str, dict]) -> None:
    """Each entry's k (and interval) per myopic arm against the vanilla curve of its budget (inf where the curve
    never reaches the myopic loss), in place."""
    for e in table:
        e["k"], e["k_ci"] = {}, {}
        vfit = fits[e["budget"]].get("vanilla")
        for g in MYOPIC_ARMS:
            e["k"][g], e["k_ci"][g] = None, None
            lm = e["loss"].get(g)
            if vfit is None or lm is None:
                continue
            if lm <= vfit.E:
                e["k"][g] = math.inf  # the vanilla fit never reaches a loss this low
            else:
                e["k"][g] = compute_multiplier(vfit, e["flops"], lm)
            e["k_ci"][g] = _k_interval(vfit, fits[e["budget"]].get(g), e["flops"], lm)


def _k_curves(table: list[dict], fits: dict[str, dict]) -> dict[str, dict]:
    """k(C) between the fitted vanilla and myopic curves of each budget, over the measured compute range only."""
    k_curves: dict[str, dict] = {}
    for b in fits:
        k_curves[b] = {}
        cs = [e["flops"] for e in table if e["budget"] == b]
        cmin, cmax = min(cs), max(cs)
        grid = np.logspace(math.log10(cmin), math.log10(cmax), 60)  # the measured range: no extrapolation
        vfit = fits[b].get("vanilla")
        for g in MYOPIC_ARMS:
            k_curves[b][g] = None
            if vfit is not None and fits[b].get(g) is not None:
                curve = multiplier_curve(vfit, fits[b][g], grid)
                k_curves[b][g] = {k: [float(x) for x in v] for k, v in curve.items()}
                k_curves[b][g]["measured_range"] = [cmin, cmax]
    return k_curves


def _chinchilla(rows: list[dict], arms: list[str], bootstrap: int) -> dict:
    """L(N, D) per arm over every finished run, when the grid has >= 3 sizes and >= 3 budgets (else None)."""
    chinchilla = {}
    for g in _report_arms(arms):
        done = [r for r in rows if r["gradient"] == g and r["status"] == "done"]
        n_sizes = len({r["size"] for r in done})
        n_budgets = len({r["tokens"] for r in done})
        chinchilla[g] = None
        if n_sizes >= 3 and n_budgets >= 3 and len(done) >= 6:
            try:
                f = fit_chinchilla([r["params_non_embedding"] for r in done], [r["tokens"] for r in done],
                                   [r["eval_loss"] for r in done], bootstrap=bootstrap)
                chinchilla[g] = f.to_dict(with_samples=False)
            except MyopiaError as exc:
                chinchilla[g] = {"error": str(exc)}
    return chinchilla


def _report_arms(arms: list[str]) -> list[str]:
    """The arms a table reports: the swept ones, plus both myopic variants side by side whenever either is present."""
    out = list(arms)
    if any(a in MYOPIC_ARMS for a in out):
        for a in MYOPIC_ARMS:
            if a not in out:
                out.append(a)
    return out


def _gap(by_grad: dict, arm: str, evals: dict, bootstrap: int):
    """Gap (arm - vanilla) averaged over the seeds both finished, its 95% interval (hierarchical bootstrap over
    seeds and documents, :mod:`myopia.analysis.stats`), the seed sd, and the full stats summary."""
    from ..analysis.stats import HierarchicalBootstrap

    van = {r["seed"]: r for r in by_grad.get("vanilla", []) if r["status"] == "done"}
    myo = {r["seed"]: r for r in by_grad.get(arm, []) if r["status"] == "done"}
    seeds = sorted(set(van) & set(myo))
    if not seeds:
        return None, None, None, None
    gaps = [myo[s]["eval_loss"] - van[s]["eval_loss"] for s in seeds]
    gap = float(np.mean(gaps))
    sd = float(np.std(gaps, ddof=1)) if len(gaps) > 1 else None
    names = [n for s in seeds for n in (myo[s]["name"], van[s]["name"])]
    if bootstrap <= 0 or not all(n in evals for n in names):
        return gap, None, sd, None
    per_doc = [doc_means(evals[n]) for n in names]
    if any(not np.array_equal(d[0], per_doc[0][0]) for d in per_doc):
        raise MyopiaError("runs to be compared were evaluated on different windows")
    diff = np.stack([per_doc[2 * i][1] - per_doc[2 * i + 1][1] for i in range(len(seeds))])  # (S, U)
    boot = HierarchicalBootstrap(diff.shape[1], len(seeds), bootstrap, seed=1)
    summary = boot.unit_means(diff, unit_weights=per_doc[0][2]).summary()
    return gap, summary["ci95"], sd, summary


def _k_interval(vfit, mfit, compute: float, myopic_loss: float) -> tuple[float, float] | None:
    """95% interval of a row's k pairing the vanilla fit's bootstrap samples with the myopic fit's (the myopic
    loss moves by its fit's bootstrap deviation at this compute): both arms' noise. None without both samples."""
    if vfit is None or mfit is None or vfit.samples is None or mfit.samples is None:
        return None
    from ..scaling import percentile_interval

    vs, ms = vfit.sample_fits(), mfit.sample_fits()
    centre = mfit.predict(compute)
    ks = []
    for v, m in zip(vs, ms):
        lm = myopic_loss + (m.predict(compute) - centre)
        ks.append(math.inf if lm <= v.E else v.inverse(lm) / compute)
    return percentile_interval(np.array(ks))


def load_sweep(run_dir) -> dict:
    """sweep.json of a sweep folder (MyopiaError if absent)."""
    path = Path(run_dir) / SWEEP_FILE
    if not path.exists():
        raise MyopiaError(f"{run_dir} holds no {SWEEP_FILE}; run `myopia sweep --out {run_dir}` first")
    return read_json(path)
