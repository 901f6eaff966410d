"""Training curves: loss against step for the arms of a pair (natural language) and of the synthetic tasks.

Numbers come from the runs' metrics.jsonl records only (read by the caller or here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_jsonl
from ..rundir import METRICS
from .style import arm_color, pyplot, save


def smooth(y: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Centred moving average over a window of ``frac`` of the series (at least 1 point; shorter at the ends):
    no lag, so the curve ends where the run ends (an exponential average started at the first, highest loss
    would end well above the last losses of a short run)."""
    y = np.asarray(y, dtype=float)
    half = max(0, int(frac * len(y)) // 2)
    if half == 0:
        return y
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(len(y))
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(y))
    return (c[hi] - c[lo]) / (hi - lo)


def pair_training_curves(curves: dict[str, list[dict]]) -> bytes:
    """Training loss (faint: as logged; solid: centred moving average over 5% of the run) and held-out loss against
    step, one colour per arm, one line per seed (every seed drawn; the first solid, the others fainter); PNG bytes.

    ``curves``: {arm: [{"seed", "step": [...], "train_loss": [...], "eval_step": [...], "eval_loss": [...]}]}.
    """
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (arm, runs) in enumerate(curves.items()):
        c = arm_color(arm, i)
        for j, r in enumerate(runs):
            label = arm if j == 0 else None
            alpha = 1.0 if j == 0 else 0.45
            if len(r["step"]):
                ax1.plot(r["step"], r["train_loss"], color=c, alpha=0.15 * alpha, lw=0.6)
                ax1.plot(r["step"], smooth(r["train_loss"]), color=c, alpha=alpha, lw=1.2, label=label)
            if len(r["eval_step"]):
                ax2.plot(r["eval_step"], r["eval_loss"], "o-", color=c, alpha=alpha, ms=3, lw=1, label=label)
    ax1.set(xlabel="step", ylabel="train loss (nats/token; solid: 5% moving average)", title="training loss")
    ax2.set(xlabel="step", ylabel="validation loss (nats/token)", title="held-out loss during training")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig)


def synthetic_training_curves(tasks: dict, path: str | Path, seeds: list | None = None) -> bytes:
    """One panel per task: loss as a fraction of the trivial predictor's against step, one colour per gradient.

    ``tasks``: {task name: {gradient: run directory holding metrics.jsonl, or a list of them, one per seed}};
    every run is drawn (thin lines: training loss divided by the held-out trivial loss; markers: held-out
    evaluations); ``seeds`` names the runs of each list in the title. Writes ``path`` and returns the PNG bytes.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False, layout="constrained")
    for ax, (name, runs) in zip(axes[0], tasks.items()):
        n_runs = 1
        for gradient, run_dirs in runs.items():
            run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
            n_runs = len(run_dirs)
            for i, run_dir in enumerate(run_dirs):
                _draw_run(ax, Path(run_dir), arm_color(gradient), gradient if i == 0 else None)
        ax.axhline(1.0, color="k", ls=":", lw=1, label="trivial predictor")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss / trivial predictor's (held-out: markers)")
        which = f"seeds {', '.join(map(str, seeds))}" if seeds else f"{n_runs} run(s) per arm"
        ax.set_title(f"{name}: every run, {which}", fontsize=9)
        ax.legend(fontsize=8)
    return save(fig, path)


def _draw_run(ax, run_dir: Path, colour: str, label: str | None) -> None:
    """One run's training loss (thin) and held-out evaluations (markers), as fractions of the trivial loss."""
    records = read_jsonl(run_dir / METRICS)
    evals = [r for r in records if "eval_fraction_of_trivial" in r]
    if not evals:
        return
    trivial = evals[-1]["eval_loss"] / evals[-1]["eval_fraction_of_trivial"]
    train = [(r["step"], r["train_loss"] / trivial) for r in records if "train_loss" in r]
    if train:
        ax.plot(*zip(*train), color=colour, alpha=0.25, lw=0.7)
    ax.plot([r["step"] for r in evals], [r["eval_fraction_of_trivial"] for r in evals], "o-", ms=2.5, lw=1,
            color=colour, alpha=0.8, label=label)
