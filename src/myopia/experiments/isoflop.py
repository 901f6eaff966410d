"""``myopia sweep --design isoflop``: compute budgets x model sizes x arms x seeds, trained with one recipe.

The design (decided before any run, the same for every arm):

- **budgets** C_1 .. C_m in training FLOPs (:func:`myopia.model.flops_per_token` accounting, head included);
- per budget, ``n_sizes`` model shapes whose tokens per non-embedding parameter lie closest to log-spaced targets
  over ``ratio_range``, from a fixed candidate family (widths ``min_width``..``max_width`` in steps of 8, heads of
  ``head_dim``, depth with width / depth within 1.5x of ``aspect``, and at least 2 layers above ``deep_above``
  non-embedding parameters); a shape whose run would read more than ``max_epochs`` passes over the training
  split is not used at that budget (the epoch cap; ``data_repeat`` in sweep.json says when data repeat);
- **the recipe** (:mod:`myopia.train`): warmup-stable-decay (warmup ``max(warmup_frac * steps, warmup_min)``
  steps of the shape's shortest run, ``decay_frac`` 1-sqrt cooldown), AdamW with ``adam_beta2``, and optionally
  a width-scaled learning rate (hidden matrices at ``lr * mup_base_width / width``; off by default);
- **the pilot** (seeds ``pilot_seeds``, never reported): at ``pilot_budget`` (default: the middle budget) and its
  ``pilot_sizes`` middle shapes, vanilla, every (batch, lr) of ``pilot_batch_grid`` x ``pilot_lr_grid``. Rule,
  fixed before the pilot: the pair with the lowest mean validation loss over the pilot runs (a diverged run
  counts as +inf; ties: the smaller batch, then the smaller lr). Empty grids: ``batch_size`` and ``lr`` as given;
- **one run per (shape, arm, seed)** trained to the shape's largest budget (the *trunk*); at each smaller budget
  of the shape a **cooldown branch** resumes the trunk's stable-phase state at that budget's decay start and
  decays to its own length (bitwise the fresh run of that length, :func:`myopia.train.train`);
- every arm shares initialisation and data order within a (shape, seed); ``seeds`` (>= 3) at every cell, and
  ``optimum_seeds`` more at the shapes of the measured optima by a rule fixed before the first pass
  (:data:`OPTIMUM_RULE`); with ``edge_shapes``, one more shape beyond the measured sizes at every budget where an
  arm's first-pass profile has its optimum at an edge (:data:`EDGE_RULE`, also after the first pass);
- the reported loss of a run is measured on the **test** split (``eval_windows_test.json``, per window and
  document); the pilot chose its settings on validation.

Divergence: a run stopped by a non-finite loss is recorded as ``diverged.json`` in its folder and gives no point.
A folder written by an earlier design (before version 0.2.0: fixed-token ladder, or the lr grid per cell) is
refused with one line.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..checkpoint import branch_state_dir
from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from ..model import GPTConfig, flops_per_token, non_embedding_params
from ..rundir import RESULT
from ..train import TrainConfig, dist_info
from ..sweep_grid import (
    DIVERGED_FILE,
    FINISHED,
    SWEEP_FILE,
    TEST_EVAL_FILE,
    TIMING_FILE,
    ModelSize,
    RunBudget,
    doc_means,
    ensure_run_or_diverged,
    ensure_test_eval,
    finished,
    heads_for,
    sweep_run_status,
)

DESIGN = "isoflop"
VERSION_NOTE = "0.2.0"


def _fmt_flops(c: float) -> str:
    """1e11 -> '1e11', 2.5e11 -> '2.5e11' (run-folder names)."""
    m, e = f"{c:.3e}".split("e")
    return f"{float(m):g}e{int(e)}"


@dataclass
class IsoFlopSettings:
    """Everything that defines an IsoFLOP sweep besides the corpus; stored in sweep.json (``settings``)."""

    budgets: list[float]
    gradients: list[str] = field(default_factory=lambda: ["vanilla", "myopic-hidden"])
    strict_budgets: list[float] = field(default_factory=list)  # budgets that also train strict "myopic"
    n_sizes: int = 5
    ratio_range: tuple[float, float] = (15.0, 1000.0)
    aspect: int = 32
    head_dim: int = 16
    min_width: int = 16
    max_width: int = 512
    deep_above: int = 20_000  # non-embedding parameters above which a shape has >= 2 layers
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    optimum_seeds: list[int] = field(default_factory=list)  # more seeds at the measured optima (OPTIMUM_RULE)
    edge_shapes: bool = False  # a shape beyond an edge optimum, after the first pass (EDGE_RULE)
    seq_len: int = 128
    batch_size: int = 4  # sequences per step, used when the pilot's batch grid is empty
    lr: float = 6e-3  # base lr (at mup_base_width), used when the pilot's lr grid is empty
    pilot_batch_grid: list[int] = field(default_factory=list)
    pilot_lr_grid: list[float] = field(default_factory=list)
    pilot_budget: float | None = None
    pilot_sizes: int = 2
    pilot_seeds: list[int] = field(default_factory=lambda: [100])
    mup_base_width: int = 0  # 0: off (see docs/scaling.md's transfer check)
    schedule: str = "wsd"
    decay_frac: float = 0.2
    decay_shape: str = "sqrt"
    warmup_frac: float = 0.05
    warmup_min: int = 20
    adam_beta2: float = 0.99
    weight_decay: float = 0.1
    min_lr_ratio: float = 0.0
    max_epochs: float = 4.0
    eval_tokens: int = 131072
    micro_batch_size: int = 0
    device: str = "auto"
    precision: str = "fp32"
    ckpt_every: int = 200
    preset: str | None = None
    design: str = DESIGN

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
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
        if self.schedule != "wsd":
            raise MyopiaError("the IsoFLOP design trains with the wsd schedule (cooldowns branch from one run)")
        if len(self.seeds) < 3:
            raise MyopiaError("an IsoFLOP sweep trains at least 3 seeds per cell (training noise must be measured)")
        if set(self.seeds) & set(self.pilot_seeds) or set(self.optimum_seeds) & set(self.pilot_seeds):
            raise MyopiaError("pilot seeds must differ from the reported seeds (no setting chosen on a reported seed)")
        if set(self.optimum_seeds) & set(self.seeds):
            raise MyopiaError("optimum seeds must differ from the first pass's seeds")
        if self.pilot_budget is not None and not any(math.isclose(self.pilot_budget, b, rel_tol=0.01)
                                                     for b in self.budgets):
            raise MyopiaError(f"the pilot budget {self.pilot_budget:g} is not one of the budgets")
        if self.n_sizes < 3:
            raise MyopiaError("an IsoFLOP profile needs at least 3 sizes per budget (a parabola has 3 parameters)")
        lo, hi = self.ratio_range
        if not (0 < lo < hi):
            raise MyopiaError(f"tokens-per-parameter range must be 0 < lo < hi, got {self.ratio_range}")
        if any(lr <= 0 for lr in self.pilot_lr_grid) or any(b < 1 for b in self.pilot_batch_grid) or self.lr <= 0:
            raise MyopiaError("learning rates must be positive and batch sizes at least 1")
        if self.max_epochs <= 0 or self.warmup_min < 1:
            raise MyopiaError("max-epochs must be positive and the warmup floor at least 1 step")
        TrainConfig(decay_frac=self.decay_frac, decay_shape=self.decay_shape, adam_beta2=self.adam_beta2,
                    warmup_frac=self.warmup_frac, mup_base_width=self.mup_base_width)  # validates these

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
    """The fixed family: widths min..max in steps of 8 that ``head_dim`` divides (heads of exactly ``head_dim``),
    depths of 2 or more with width / depth within 1.5x of ``aspect``, and 1 layer only for shapes of at most
    ``deep_above`` non-embedding parameters."""
    out = []
    for w in range(s.min_width, s.max_width + 1, 8):
        if w % s.head_dim:
            continue
        try:
            heads = heads_for(w, s.head_dim)
        except MyopiaError:
            continue
        shallow = non_embedding_params(GPTConfig(vocab_size=256, n_layer=1, n_head=heads, d_model=w,
                                                 seq_len=s.seq_len)) <= s.deep_above
        depths = [d for d in range(2, 49) if s.aspect / 1.5 <= w / d <= s.aspect * 1.5]
        out += [ModelSize(d, w, heads) for d in ([1] if shallow else []) + depths]
    return out


def _cfg(s: IsoFlopSettings, size: ModelSize, vocab_size: int, gradient: str = "vanilla") -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, n_layer=size.n_layer, n_head=size.n_head, d_model=size.d_model,
                     seq_len=s.seq_len, gradient=gradient)


def _ratios(s: IsoFlopSettings, budget: float, vocab_size: int,
            train_tokens: int | None) -> list[tuple[ModelSize, float]]:
    """[(shape, tokens per non-embedding parameter at ``budget``)] over the candidate family, under the epoch cap."""
    out = []
    for size in candidate_sizes(s):
        cfg = _cfg(s, size, vocab_size)
        tokens = budget / flops_per_token(cfg)
        if train_tokens and tokens / train_tokens > s.max_epochs:
            continue
        out.append((size, tokens / non_embedding_params(cfg)))
    return out


def _nearest_target(s: IsoFlopSettings, target: float):
    """Sort key of a (shape, ratio) candidate for a tokens-per-parameter target: distance in log ratio (to 0.01),
    then the aspect nearest ``aspect``."""
    return lambda c: (round(abs(math.log(c[1] / target)), 2),
                      abs(math.log(c[0].d_model / c[0].n_layer / s.aspect)))


def sizes_for_budget(s: IsoFlopSettings, budget: float, vocab_size: int,
                     train_tokens: int | None = None) -> list[tuple[ModelSize, float]]:
    """``n_sizes`` distinct shapes whose tokens/parameter is nearest log-spaced targets in ``ratio_range`` (shapes
    over the epoch cap excluded when ``train_tokens`` is given): [(size, tokens_per_param)], small first."""
    lo, hi = s.ratio_range
    targets = np.geomspace(hi, lo, s.n_sizes)  # high ratio = small model first
    # "roughly" the range: the family of tiny shapes is discrete
    cands = [c for c in _ratios(s, budget, vocab_size, train_tokens) if lo / 2 <= c[1] <= hi * 2]
    chosen, used = [], set()
    for t in targets:
        best = min((c for c in cands if c[0].name not in used), key=_nearest_target(s, t), default=None)
        if best is None:
            break
        used.add(best[0].name)
        chosen.append(best)
    if len(chosen) < s.n_sizes:
        raise MyopiaError(f"budget {budget:.3g} FLOPs: fewer than {s.n_sizes} shapes of the candidate family have "
                          f"{lo / 2:g}-{hi * 2:g} tokens/parameter (under the epoch cap of {s.max_epochs:g}); widen "
                          "--ratio-range or change the budget")
    chosen.sort(key=lambda c: -c[1])
    return chosen


# --------------------------------------------------------------------------------------------------------------
# The plan: pilot, trunks and their cooldown branches
# --------------------------------------------------------------------------------------------------------------


@dataclass
class IsoRun:
    """One training run: a (budget, size, arm, seed) — a trunk, a cooldown branch of one, or a pilot run."""

    name: str
    budget: float
    size: ModelSize
    gradient: str
    seed: int
    model_cfg: GPTConfig
    train_cfg: TrainConfig
    params_non_embedding: int
    params_total: int
    tokens: int
    flops: float
    epochs: float
    stage: str  # "pilot", "trunk" or "branch"
    trunk: str | None = None  # a branch: the trunk it resumes
    branch_step: int | None = None  # a branch: the trunk step it resumes at
    branch_at: tuple[int, ...] = ()  # a trunk: the steps it saves for its branches

    @property
    def trained_flops(self) -> float:
        """FLOPs this run itself spends (a branch: only its cooldown, the trunk paid for the rest)."""
        done = self.branch_step or 0
        return self.flops * (self.train_cfg.steps - done) / self.train_cfg.steps

    def row(self) -> dict:
        return {"name": self.name, "budget": self.budget, "size": self.size.name, "n_layer": self.size.n_layer,
                "d_model": self.size.d_model, "n_head": self.size.n_head, "gradient": self.gradient,
                "lr": self.train_cfg.lr, "batch_size": self.train_cfg.batch_size, "seed": self.seed,
                "stage": self.stage, "params_non_embedding": self.params_non_embedding,
                "params_total": self.params_total, "tokens": self.tokens, "steps": self.train_cfg.steps,
                "warmup_steps": self.train_cfg.warmup, "decay_steps": self.train_cfg.decay_steps,
                "flops": self.flops, "trained_flops": self.trained_flops,
                "tokens_per_param": self.tokens / self.params_non_embedding, "epochs": self.epochs,
                "branched_from": None if self.trunk is None else {"run": self.trunk, "step": self.branch_step}}


def run_name(budget: float, size: ModelSize, gradient: str, seed: int) -> str:
    return f"C{_fmt_flops(budget)}-{size.name}-{gradient}-s{seed}"


def _train_cfg(s: IsoFlopSettings, steps: int, warmup: int, lr: float, batch: int, seed: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch, micro_batch_size=s.micro_batch_size, lr=lr,
                       min_lr_ratio=s.min_lr_ratio, warmup_steps=warmup, schedule="wsd", decay_frac=s.decay_frac,
                       decay_shape=s.decay_shape, adam_beta2=s.adam_beta2, mup_base_width=s.mup_base_width,
                       weight_decay=s.weight_decay, eval_every=0, ckpt_every=s.ckpt_every, log_every=10,
                       seed=seed, device=s.device, precision=s.precision, progress=False)


def _steps(s: IsoFlopSettings, budget: float, fpt: float, batch: int) -> int:
    return max(1, round(budget / fpt / (batch * s.seq_len)))


def _warmup(s: IsoFlopSettings, shortest: int) -> int:
    """Warmup of every run of a shape: max(warmup_frac x its shortest run, warmup_min) steps."""
    return max(s.warmup_min, math.ceil(s.warmup_frac * shortest - 1e-9))


def _mk(s, budget, size, arm, seed, vocab_size, train_tokens, batch, lr, warmup, stage, name=None) -> IsoRun:
    cfg = _cfg(s, size, vocab_size, arm)
    fpt, n_ne = flops_per_token(cfg), non_embedding_params(cfg)
    steps = _steps(s, budget, fpt, batch)
    if warmup > steps - TrainConfig(steps=steps, decay_frac=s.decay_frac).decay_steps:
        raise MyopiaError(f"{size.name} at {budget:.3g} FLOPs: {steps} steps leave no stable phase after a "
                          f"{warmup}-step warmup; raise the budget or lower --batch-size")
    tokens = steps * batch * s.seq_len
    return IsoRun(name or run_name(budget, size, arm, seed), budget, size, arm, seed, cfg,
                  _train_cfg(s, steps, warmup, lr, batch, seed), n_ne, n_ne + vocab_size * size.d_model, tokens,
                  float(fpt) * tokens, tokens / max(1, train_tokens), stage)


def pilot_runs(s: IsoFlopSettings, vocab_size: int, train_tokens: int) -> list[IsoRun]:
    """The pilot grid (vanilla, pilot seeds, the middle shapes of the pilot budget); [] without a grid."""
    if not s.pilot_batch_grid and not s.pilot_lr_grid:
        return []
    budget = s.pilot_budget or sorted(s.budgets)[len(s.budgets) // 2]
    sizes = [size for size, _ in sizes_for_budget(s, budget, vocab_size, train_tokens)]
    first = (len(sizes) - s.pilot_sizes) // 2
    runs = []
    for size in sizes[first:first + s.pilot_sizes]:
        for batch in s.pilot_batch_grid or [s.batch_size]:
            fpt = flops_per_token(_cfg(s, size, vocab_size))
            warmup = _warmup(s, _steps(s, budget, fpt, batch))
            for lr in s.pilot_lr_grid or [s.lr]:
                for seed in s.pilot_seeds:
                    name = f"pilot-C{_fmt_flops(budget)}-{size.name}-b{batch}-lr{lr:g}-s{seed}"
                    runs.append(_mk(s, budget, size, "vanilla", seed, vocab_size, train_tokens, batch, lr, warmup,
                                    "pilot", name))
    return runs


def pilot_choice(runs: list[IsoRun], out: Path) -> tuple[dict | None, dict]:
    """(``{"batch_size", "lr"}`` by the pilot rule, or None while a pilot run is unfinished; the mean validation
    loss per (batch, lr))."""
    losses: dict[tuple[int, float], list[float]] = {}
    for r in runs:
        d = out / r.name
        key = (r.train_cfg.batch_size, r.train_cfg.lr)
        if (d / DIVERGED_FILE).exists():
            losses.setdefault(key, []).append(math.inf)
        elif (d / RESULT).exists():
            losses.setdefault(key, []).append(float(read_json(d / RESULT)["eval_loss"]))
    table = {f"b{b}-lr{lr:g}": (float(np.mean(v)) if all(map(math.isfinite, v)) else None)
             for (b, lr), v in sorted(losses.items())}  # None: a run of this setting diverged
    if sum(map(len, losses.values())) < len(runs):
        return None, table
    finite = {k: float(np.mean(v)) for k, v in losses.items() if all(map(math.isfinite, v))}
    if not finite:
        raise MyopiaError("every pilot setting diverged: lower the pilot's learning rates")
    batch, lr = min(finite, key=lambda k: (finite[k], k[0], k[1]))
    return {"batch_size": batch, "lr": lr}, table


def _first_pass_budgets(s: IsoFlopSettings, vocab_size: int, train_tokens: int) -> dict[ModelSize, list[float]]:
    """{shape: its budgets in ascending order} of the first pass, shapes in order of their smallest budget."""
    budgets_of: dict[ModelSize, list[float]] = {}
    for budget in sorted(s.budgets):
        for size, _ in sizes_for_budget(s, budget, vocab_size, train_tokens):
            budgets_of.setdefault(size, []).append(budget)
    return budgets_of


def _trunks(s: IsoFlopSettings, vocab_size: int, train_tokens: int, batch_size: int, lr: float, seeds,
            shapes=None, budgets_of=None) -> list[IsoRun]:
    """Per (shape, arm, seed) the trunk (its largest budget; ``branch_at`` the decay starts of the smaller budgets)
    followed by its cooldown branches, shapes in order of their smallest budget (only ``shapes`` when given;
    ``budgets_of`` {shape: ascending budgets} instead of the first pass's). A shape's warmup is the one of its
    first-pass runs wherever it has any, so that a run added at another budget equals a branch of its trunk."""
    first = _first_pass_budgets(s, vocab_size, train_tokens)
    runs = []
    for size, budgets in (first if budgets_of is None else budgets_of).items():
        if shapes is not None and size.name not in shapes:
            continue
        fpt = flops_per_token(_cfg(s, size, vocab_size))
        warmup = _warmup(s, _steps(s, (first.get(size) or budgets)[0], fpt, batch_size))
        arms = list(dict.fromkeys(a for b in budgets for a in s.arms_for(b)))
        for arm in arms:
            mine = [b for b in budgets if arm in s.arms_for(b)]
            for seed in seeds:
                made = [_mk(s, b, size, arm, seed, vocab_size, train_tokens, batch_size, lr, warmup, "branch")
                        for b in mine]
                trunk = made[-1]
                trunk.stage = "trunk"
                for r in made[:-1]:
                    r.trunk, r.branch_step = trunk.name, r.train_cfg.stable_end
                trunk.branch_at = tuple(r.branch_step for r in made[:-1])
                runs += [trunk] + made[:-1]
    return runs


OPTIMUM_RULE = ("after every first-pass run has finished: per (budget, arm), the shape with the lowest mean "
                "validation loss over its seeds; every such shape trains optimum_seeds at every arm (whole trunks "
                "with their branches)")


def first_pass_val_losses(runs: list[IsoRun],
                          out: Path) -> dict[tuple[float, str], dict[ModelSize, list[float]]] | None:
    """{(budget, arm): {shape: validation losses of its finished seeds}} of the first pass ``runs`` (a diverged run
    gives none), or None while one of them is pending: what the rules decided after the first pass read."""
    if any(not finished(out / r.name) for r in runs):
        return None
    losses: dict[tuple[float, str], dict[ModelSize, list[float]]] = {}
    for r in runs:
        if sweep_run_status(out / r.name) == "done":
            v = float(read_json(out / r.name / RESULT)["eval_loss"])
            losses.setdefault((r.budget, r.gradient), {}).setdefault(r.size, []).append(v)
    return losses


def optimum_shapes(runs: list[IsoRun], out: Path) -> list[str] | None:
    """The shapes that get ``optimum_seeds`` by :data:`OPTIMUM_RULE`, or None while a first-pass run is pending."""
    losses = first_pass_val_losses(runs, out)
    if losses is None:
        return None
    best = {min(((m.name, v) for m, v in by.items()), key=lambda kv: (float(np.mean(kv[1])), kv[0]))[0]
            for by in losses.values()}
    return sorted(best)


EDGE_RULE = ("after every first-pass run has finished: per budget, where the parabola in log N fitted to an arm's "
             "mean validation losses over its first-pass shapes has its minimum at the smallest (largest) measured "
             "size, the candidate shape nearest the tokens-per-parameter target one step of the design's log "
             "spacing beyond the range (within one step of it, strictly smaller (larger) than every measured shape, "
             "under the epoch cap; none if the family has no such shape) trains at that budget for every arm of the "
             "budget with the first pass's seeds; once per budget and side (no second round)")


def beyond_edge(s: IsoFlopSettings, budget: float, vocab_size: int, train_tokens: int | None,
                measured: list[ModelSize], side: str) -> ModelSize | None:
    """The shape :data:`EDGE_RULE` adds at ``budget`` past ``side`` ("low" or "high") of the ``measured`` shapes,
    or None when the candidate family has none."""
    lo, hi = s.ratio_range
    step = (hi / lo) ** (1.0 / (s.n_sizes - 1))
    target = hi * step if side == "low" else lo / step  # low: more tokens per parameter (a smaller model)
    def n_of(m: ModelSize) -> int:
        return non_embedding_params(_cfg(s, m, vocab_size))

    n_lo, n_hi = min(map(n_of, measured)), max(map(n_of, measured))
    beyond = (lambda n: n < n_lo) if side == "low" else (lambda n: n > n_hi)
    cands = [c for c in _ratios(s, budget, vocab_size, train_tokens)
             if abs(math.log(c[1] / target)) <= math.log(step) + 1e-9 and beyond(n_of(c[0]))]
    return min(cands, key=_nearest_target(s, target))[0] if cands else None


def edge_additions(first: list[IsoRun], out: Path, s: IsoFlopSettings, vocab_size: int,
                   train_tokens: int | None) -> list[dict] | None:
    """:data:`EDGE_RULE` on the finished first pass ``first``: [{"budget", "side", "size" (a ModelSize or None),
    "triggered_by" (arms)}] in budget order, or None while a first-pass run is pending."""
    from ..scaling import parabola_edge

    losses = first_pass_val_losses(first, out)
    if losses is None:
        return None
    n_of = {r.size: r.params_non_embedding for r in first}
    added = []
    for budget in sorted({b for b, _ in losses}):
        sides: dict[str, list[str]] = {}
        for arm, by_size in ((a, by) for (b, a), by in losses.items() if b == budget):
            if len(by_size) < 3:
                continue
            sizes = list(by_size)
            side = parabola_edge([n_of[m] for m in sizes], [float(np.mean(by_size[m])) for m in sizes],
                                 [len(by_size[m]) for m in sizes])
            if side is not None:
                sides.setdefault(side, []).append(arm)
        measured = list({r.size for r in first if r.budget == budget})
        for side in sorted(sides):
            added.append({"budget": budget, "side": side, "triggered_by": sides[side],
                          "size": beyond_edge(s, budget, vocab_size, train_tokens, measured, side)})
    return added


def plan_runs(s: IsoFlopSettings, vocab_size: int, train_tokens: int, batch_size: int, lr: float,
              out: Path | None = None) -> list[IsoRun]:
    """Every reported run: the first pass (``seeds`` at every shape), then, given the sweep folder ``out`` and
    once the first pass has finished, ``optimum_seeds`` at the shapes of the measured optima (:func:`optimum_shapes`)
    and, with ``edge_shapes``, the shapes :func:`edge_additions` adds beyond edge optima (first-pass seeds)."""
    first = _trunks(s, vocab_size, train_tokens, batch_size, lr, s.seeds)
    runs = list(first)
    shapes = optimum_shapes(first, Path(out)) if s.optimum_seeds and out is not None else None
    if shapes:
        runs += _trunks(s, vocab_size, train_tokens, batch_size, lr, s.optimum_seeds, shapes)
    added = edge_additions(first, Path(out), s, vocab_size, train_tokens) if s.edge_shapes and out is not None \
        else None
    budgets_of: dict[ModelSize, list[float]] = {}
    for a in added or []:
        if a["size"] is not None:
            budgets_of.setdefault(a["size"], []).append(a["budget"])
    if budgets_of:
        runs += _trunks(s, vocab_size, train_tokens, batch_size, lr, s.seeds,
                        budgets_of={k: sorted(v) for k, v in budgets_of.items()})
    return runs


def shard_runs(runs: list[IsoRun], shard: tuple[int, int] | None) -> list[IsoRun]:
    """The runs of shard K of N: whole trunks with their branches, greedily by FLOPs onto the lightest shard."""
    if shard is None:
        return runs
    k, n = shard
    groups: dict[str, list[IsoRun]] = {}
    for r in runs:
        groups.setdefault(r.trunk or r.name, []).append(r)
    loads, mine = [0.0] * n, []
    for name, group in sorted(groups.items(), key=lambda kv: (-sum(r.trained_flops for r in kv[1]), kv[0])):
        j = min(range(n), key=lambda i: (loads[i], i))
        loads[j] += sum(r.trained_flops for r in group)
        if j == k:
            mine += group
    names = {r.name for r in mine}
    return [r for r in runs if r.name in names]


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


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------


def _ensure(corpus, data, run: IsoRun, out: Path, s: IsoFlopSettings, log) -> None:
    run_dir = out / run.name
    if sweep_run_status(run_dir) == "diverged":
        return
    trunk_dir = None if run.trunk is None else out / run.trunk
    if trunk_dir is not None and sweep_run_status(trunk_dir) == "diverged":
        if dist_info()[0] == 0:
            write_json(run_dir / DIVERGED_FILE, {"run": run.name, "error": f"its trunk {run.trunk} diverged"})
        return
    branch_from = None if trunk_dir is None else branch_state_dir(trunk_dir, run.branch_step)
    if not ensure_run_or_diverged(data, run_dir, run.model_cfg, run.train_cfg, corpus=corpus,
                                  eval_tokens=s.eval_tokens, log=log, window_eval=False, branch_at=run.branch_at,
                                  branch_from=branch_from):
        return
    if run.stage != "pilot":
        ensure_test_eval(run_dir, corpus, s.eval_tokens, run.train_cfg.seed)


def refuse_old_folder(out: Path) -> None:
    """One clear line for a sweep folder written by a design retired in 0.2.0 (nothing is touched)."""
    path = out / SWEEP_FILE
    if not path.is_file():
        return
    settings = (read_json(path) or {}).get("settings") or {}
    if settings.get("schedule") != "wsd":
        raise MyopiaError(f"{out} holds a sweep of a design retired in myopia {VERSION_NOTE} (fixed-token ladder or "
                          "an lr grid per cell, cosine schedule); it cannot be continued: choose a new --out")


WAIT_POLL_S = 20.0  # how often a shard looks at the other shards' runs while it waits (seconds)


def wait_for_runs(runs: list[IsoRun], out: Path, log, what: str) -> None:
    """Block until every run in ``runs`` is done or diverged (other shards train them): a shard needs the whole
    pilot before the pilot's choice, and the whole first pass before :data:`OPTIMUM_RULE`. Logs every 10 minutes."""
    waited, poll_s = 0.0, WAIT_POLL_S
    while True:
        pending = [r.name for r in runs if not finished(out / r.name)]
        if not pending:
            return
        if waited % 600 < poll_s:
            log(f"  waiting for {len(pending)} {what} run(s) of other shards (e.g. {pending[0]})")
        time.sleep(poll_s)
        waited += poll_s


def run_isoflop(data, out, s: IsoFlopSettings, *, corpus=None, max_runs: int | None = None,
                shard: tuple[int, int] | None = None, n_boot: int = 1000, extrapolate_E: float | None = None,
                log=None) -> dict:
    """Train the pending runs (the pilot first, then this shard's trunks, each followed by its branches), then
    write and return sweep.json (the analysis covers whatever has finished, in every shard). With ``shard`` (K, N)
    the shard trains every N-th pilot run and waits for the others' (and, with ``optimum_seeds`` or
    ``edge_shapes``, for the whole first pass) before it goes on, so that N processes started together finish the
    sweep; with ``max_runs`` it does not wait."""
    from ..data import load_corpus

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    refuse_old_folder(out)
    corpus = corpus if corpus is not None else load_corpus(data)
    train_tokens = len(corpus.split_tokens("train"))
    pilot = pilot_runs(s, corpus.vocab_size, train_tokens)
    budget = RunBudget(max_runs)

    def take(run) -> bool:
        return budget.take(out / run.name)

    for r in pilot if shard is None else pilot[shard[0]::shard[1]]:
        if take(r):
            _ensure(corpus, data, r, out, s, log)
    if shard is not None and max_runs is None:
        wait_for_runs(pilot, out, log, "pilot")
    choice, _ = pilot_choice(pilot, out) if pilot else ({"batch_size": s.batch_size, "lr": s.lr}, {})
    for npass in range(2 if choice is not None else 0):  # the first pass, then the seeds at the measured optima
        plan = plan_runs(s, corpus.vocab_size, train_tokens, **choice, out=out)
        for r in shard_runs(plan, shard):
            if (r.trunk is None or finished(out / r.trunk)) and take(r):
                _ensure(corpus, data, r, out, s, log)
        if npass == 0 and shard is not None and max_runs is None and (s.optimum_seeds or s.edge_shapes):
            wait_for_runs(plan, out, log, "first-pass")
    summary = summarise_isoflop(out, s, data=data, corpus=corpus, n_boot=n_boot, extrapolate_E=extrapolate_E)
    if dist_info()[0] == 0:
        write_json(out / SWEEP_FILE, summary)
    return summary


# --------------------------------------------------------------------------------------------------------------
# Summarising
# --------------------------------------------------------------------------------------------------------------


def _run_record(run: IsoRun, out: Path) -> dict:
    row = run.row()
    d = out / run.name
    row["status"] = sweep_run_status(d)
    if row["status"] == "done":
        row["val_loss"] = float(read_json(d / RESULT)["eval_loss"])
        t = d / TIMING_FILE
        row["wall_s"] = read_json(t)["wall_s"] if t.exists() else None
        if (d / TEST_EVAL_FILE).exists():
            row["test_loss"] = float(read_json(d / TEST_EVAL_FILE)["mean"])
    return row


def _point(row: dict, out: Path) -> dict:
    """A frontier point of a finished run: its test loss with per-document losses (see myopia.scaling)."""
    _, mean, tokens = doc_means(read_json(out / row["name"] / TEST_EVAL_FILE))
    # flops: the budget (whole steps put the actual FLOPs within a step of it: flops_actual), so that the runs of
    # one budget group together even when rounding to whole steps differs by > 1%
    return {"arm": row["gradient"], "flops": row["budget"], "flops_actual": row["flops"],
            "n_params": row["params_non_embedding"], "tokens": row["tokens"], "loss": row["test_loss"],
            "seed": row["seed"], "lr": row["lr"], "size": row["size"], "epochs": row["epochs"],
            "branched_from": row["branched_from"], "doc_loss": mean.tolist(), "doc_tokens": tokens.tolist()}


def summarise_isoflop(out, s: IsoFlopSettings, *, data=None, corpus=None, n_boot: int = 1000,
                      extrapolate_E: float | None = None) -> dict:
    """sweep.json of an IsoFLOP sweep: the pilot and its choice, every run, the points (test losses with
    per-document losses, ``size``, ``seed``, ``branched_from``), the frontier analysis of
    :func:`myopia.scaling.frontier_report` (``frontier``; its joint fits also as ``frontier_fit``) and the FLOPs
    and wall time spent (``total_train_flops``: trunks in full, branches their cooldown only, the pilot)."""
    from ..scaling import frontier_report

    out = Path(out)
    train_tokens = len(corpus.split_tokens("train")) if corpus is not None else 1
    vocab = corpus.vocab_size if corpus is not None else 256
    pilot = pilot_runs(s, vocab, train_tokens)
    choice, table = pilot_choice(pilot, out) if pilot else ({"batch_size": s.batch_size, "lr": s.lr}, {})
    planned = pilot + ([] if choice is None else plan_runs(s, vocab, train_tokens, **choice, out=out))
    rows = [_run_record(r, out) for r in planned]
    pending = [r["name"] for r in rows if r["status"] not in FINISHED]
    if choice is None:
        pending.append("the reported runs (after the pilot)")
    first = None if choice is None else _trunks(s, vocab, train_tokens, choice["batch_size"], choice["lr"], s.seeds)
    shapes = None if first is None or not s.optimum_seeds else optimum_shapes(first, out)
    if s.optimum_seeds and shapes is None:
        pending.append(f"seeds {s.optimum_seeds} at the measured optima (after the first pass)")
    edges = None if first is None or not s.edge_shapes else edge_additions(first, out, s, vocab, train_tokens)
    if s.edge_shapes and edges is None:
        pending.append("the shapes beyond edge optima (after the first pass)")
    points = [_point(r, out) for r in rows if r["stage"] != "pilot" and r["status"] == "done" and "test_loss" in r]
    arms = list(dict.fromkeys(p["arm"] for p in points))
    analysis = frontier_report(points, baseline="vanilla", arms=[a for a in arms if a != "vanilla"], n_boot=n_boot,
                               extrapolate_E=extrapolate_E) if points else None
    done = [r for r in rows if r["status"] == "done"]
    max_epochs = max((r["epochs"] for r in rows), default=0.0)
    return {
        "kind": "myopia-sweep", "design": DESIGN, "complete": not pending, "pending": pending,
        "data": None if data is None else str(data), "corpus": None if corpus is None else corpus.describe(),
        "settings": s.to_dict(),
        "units": {"loss": "nats/token on held-out test-split windows (settings chosen on the validation split)",
                  "flops": "training FLOPs (myopia.model.flops_per_token x tokens)",
                  "k": "compute multiplier C*/C between the frontiers, inside the measured compute range"},
        "pilot": {"runs": [r["name"] for r in rows if r["stage"] == "pilot"], "seeds": list(s.pilot_seeds),
                  "val_loss": table, "choice": choice,
                  "rule": "lowest mean validation loss over the pilot runs; ties: smaller batch, then smaller lr"},
        "optimum_seeds": {"seeds": list(s.optimum_seeds), "shapes": shapes, "rule": OPTIMUM_RULE},
        "edge_shapes": {"enabled": s.edge_shapes, "rule": EDGE_RULE,
                        "added": None if edges is None else [dict(a, size=None if a["size"] is None
                                                                  else a["size"].name) for a in edges]},
        "plan": [{"name": r["name"], "stage": r["stage"], "budget": r["budget"], "size": r["size"],
                  "steps": r["steps"], "branched_from": r["branched_from"]} for r in rows],
        "data_repeat": {"max_epochs": max_epochs, "repeats": max_epochs > 1.0, "cap": s.max_epochs,
                        "note": (f"data repeat: up to {max_epochs:.2f} epochs of the training split" if max_epochs > 1
                                 else f"no data repeat (at most {max_epochs:.2f} epochs)")},
        "runs": rows,
        "diverged": [r["name"] for r in rows if r["status"] == "diverged"],
        "points": points,
        "frontier": analysis,
        "frontier_fit": None if analysis is None else analysis["frontier_fit"],
        "total_train_flops": float(sum(r["trained_flops"] for r in done)),
        "total_train_wall_s": float(sum(r.get("wall_s") or 0.0 for r in done)),
        "provenance": provenance(),
    }
