"""What the sweeps share: model shapes and their parsing, token budgets, the settings of a size ladder (used by
``myopia horizon-sweep``), running one run of a sweep folder (:func:`ensure_run`: skip a finished run, resume a
partial one; :func:`ensure_run_or_diverged` records a run stopped by a non-finite loss as :data:`DIVERGED_FILE`
instead of stopping the sweep, :func:`sweep_run_status` reads it) and its per-window held-out evaluation
(:func:`evaluate_windows`; the reported test-split one in :data:`TEST_EVAL_FILE`).

The fixed-token ladder design of ``myopia sweep`` was retired in version 0.2.0: ``myopia sweep`` is the IsoFLOP
design (:mod:`myopia.experiments.isoflop`).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .arms import MYOPIC_ARMS  # noqa: F401 (re-exported for the horizon sweep)
from .errors import MyopiaError
from .io import read_json, write_json
from .model import GPTConfig
from .rundir import CONFIG, METRICS, RESULT, load_run_model, run_status
from .rundir import SWEEP_JSON as SWEEP_FILE
from .train import TrainConfig, dist_info
from .scaling_presets import PRESETS, SweepPreset
from .lm import train_lm

EVAL_FILE = "eval_windows.json"  # per-window losses on the validation split
TEST_EVAL_FILE = "eval_windows_test.json"  # per-window losses on the test split (what a sweep reports)
DIVERGED_FILE = "diverged.json"  # a run stopped by a non-finite loss: an outcome of its lr, not a crash
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
        from .model import GRADIENTS

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


def ensure_test_eval(run_dir: Path, corpus, eval_tokens: int, seed: int) -> None:
    """The reported test-split window evaluation of a finished run (:data:`TEST_EVAL_FILE`), once, on rank 0."""
    if dist_info()[0] == 0 and not (Path(run_dir) / TEST_EVAL_FILE).exists():
        evaluate_windows(run_dir, corpus, eval_tokens, seed, split="test", file=TEST_EVAL_FILE)


def sweep_run_status(run_dir: Path) -> str:
    """:func:`run_status`, or ``diverged`` (stopped by a non-finite loss, see :data:`DIVERGED_FILE`)."""
    return "diverged" if (Path(run_dir) / DIVERGED_FILE).exists() else run_status(run_dir)


FINISHED = ("done", "diverged")  # the statuses of a sweep run that needs no more training


def finished(run_dir: Path) -> bool:
    """Whether a sweep run needs no more training (done, or stopped by a non-finite loss)."""
    return sweep_run_status(run_dir) in FINISHED


class RunBudget:
    """``--max-runs``: at most ``max_runs`` runs trained by this process (None: no limit); finished runs are
    free. ``take(run_dir)`` says whether to go on with that run and counts it when it still needs training."""

    def __init__(self, max_runs: int | None):
        self.max_runs, self.trained = max_runs, 0

    def take(self, run_dir: Path) -> bool:
        if finished(run_dir):
            return True
        if self.max_runs is not None and self.trained >= self.max_runs:
            return False
        self.trained += 1
        return True


def ensure_run_or_diverged(data, run_dir: Path, model_cfg: GPTConfig, train_cfg: TrainConfig, *, corpus,
                           eval_tokens: int, log=print, **kw) -> bool:
    """:func:`ensure_run`, except that a run stopped by a non-finite loss is recorded as :data:`DIVERGED_FILE`
    (its seed and the error) and the sweep goes on. Returns False when the run diverged (now or before)."""
    if sweep_run_status(run_dir) == "diverged":
        return False
    try:
        ensure_run(data, run_dir, model_cfg, train_cfg, corpus=corpus, eval_tokens=eval_tokens, log=log, **kw)
    except MyopiaError as exc:
        if not str(exc).startswith("non-finite"):
            raise
        if dist_info()[0] == 0:
            write_json(Path(run_dir) / DIVERGED_FILE, {"run": Path(run_dir).name, "seed": train_cfg.seed,
                                                       "error": str(exc)})
        log(f"  {Path(run_dir).name}: diverged ({exc}); recorded in {DIVERGED_FILE}, the sweep goes on")
        return False
    return True


@torch.no_grad()
def evaluate_windows(run_dir: Path, corpus, eval_tokens: int, seed: int, batch_size: int = 32, *,
                     split: str = "val", file: str = EVAL_FILE) -> dict:
    """Per-window held-out loss of the run's final model on ``split`` (for "val": the trainer's evaluation
    windows, checked against its eval loss), and each window's document (for the document bootstrap). Writes
    ``file`` in the run folder.
    """
    from .data import LMTask

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


def load_sweep(run_dir) -> dict:
    """sweep.json of a sweep folder (MyopiaError if absent)."""
    path = Path(run_dir) / SWEEP_FILE
    if not path.exists():
        raise MyopiaError(f"{run_dir} holds no {SWEEP_FILE}; run `myopia sweep --out {run_dir}` first")
    return read_json(path)
