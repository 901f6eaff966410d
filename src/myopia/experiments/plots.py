"""Figures for the synthetic experiments (matplotlib, Agg backend). Numbers come from result files only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_jsonl

COLOURS = {"vanilla": "tab:blue", "myopic": "tab:red", "myopic-hidden": "tab:orange", "bigram": "tab:gray"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Write a figure atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def training_curves(tasks: dict, path: str | Path) -> None:
    """One panel per task: loss as a fraction of the trivial predictor's against step, one colour per gradient.

    Thin lines: training loss (logged every few steps, divided by the held-out trivial loss); markers:
    held-out evaluations. ``tasks``: {task name: {gradient: run directory holding metrics.jsonl}}.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False, layout="constrained")
    for ax, (name, runs) in zip(axes[0], tasks.items()):
        for gradient, run_dir in runs.items():
            records = read_jsonl(Path(run_dir) / "metrics.jsonl")
            evals = [r for r in records if "eval_fraction_of_trivial" in r]
            colour = COLOURS.get(gradient)
            if not evals:
                continue
            trivial = evals[-1]["eval_loss"] / evals[-1]["eval_fraction_of_trivial"]
            train = [(r["step"], r["train_loss"] / trivial) for r in records if "train_loss" in r]
            if train:
                ax.plot(*zip(*train), color=colour, alpha=0.35, lw=0.8)
            ax.plot([r["step"] for r in evals], [r["eval_fraction_of_trivial"] for r in evals], "o-", ms=3,
                    color=colour, label=gradient)
        ax.axhline(1.0, color="k", ls=":", lw=1, label="trivial predictor")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss / trivial predictor's (held-out: markers)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def probe_heatmap(probes: dict, path: str | Path, title: str = "") -> None:
    """Rows: gradient settings; columns: probe targets (sin(ω x_{n−i}), x_{n−i}). Each panel: layer × lookback R².

    ``probes``: {gradient: result of :func:`myopia.synthetic.probes.lookback_probes`}.
    """
    plt = _pyplot()
    targets = [("sin", r"$\sin(\omega x_{n-i})$"), ("x", r"$x_{n-i}$")]
    fig, axes = plt.subplots(len(probes), 2, figsize=(11, 0.8 + 2.2 * len(probes)), squeeze=False,
                             layout="constrained")
    image = None
    for row, (gradient, p) in enumerate(probes.items()):
        for col, (key, label) in enumerate(targets):
            ax = axes[row][col]
            r2 = np.clip(np.array(p[key], dtype=float), 0.0, 1.0)
            image = ax.imshow(r2, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
            ax.set_yticks(range(len(p["layers"])))
            ax.set_yticklabels([("embed" if layer == 0 else f"block {layer}") for layer in p["layers"]], fontsize=7)
            ax.set_xticks(range(len(p["lags"])))
            ax.set_xticklabels(p["lags"], fontsize=7)
            ax.set_title(f"{gradient}: R² for {label}", fontsize=9)
            if row == len(probes) - 1:
                ax.set_xlabel("lookback i")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="held-out R² (clipped to [0, 1])")
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)


def accuracy_grid(result: dict, path: str | Path) -> None:
    """Bar chart of exact-match accuracy: gradient settings × filler settings (multiplication grid)."""
    plt = _pyplot()
    fillers = result["fillers"]
    gradients = result["gradients"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(fillers), 3.2), layout="constrained")
    width = 0.8 / len(gradients)
    for k, g in enumerate(gradients):
        acc = [result["accuracy"][f"filler={f}"][g] for f in fillers]
        ax.bar(np.arange(len(fillers)) + (k - (len(gradients) - 1) / 2) * width, acc, width, label=g,
               color=COLOURS.get(g))
    ax.set_xticks(range(len(fillers)))
    ax.set_xticklabels([f"F = {f}" for f in fillers])
    ax.set_ylabel("exact-match accuracy (greedy)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
