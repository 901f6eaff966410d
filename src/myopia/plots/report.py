"""Figures of the natural-language report (the gap by position, slice and class; the bonus; arithmetic accuracy).

Each function takes plain numbers (what :mod:`myopia.report` reads from gap.json / bonus.json) and returns PNG bytes
(:func:`myopia.plots.style.save`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .style import arm_color, pyplot, save


def gap_by_position(curve: dict, arms: list[str]) -> bytes:
    """Gap (arm - vanilla) per context position with 95% bands, and each arm's loss per position."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    pos = np.asarray(curve["position"])
    ax2.plot(pos, np.asarray(curve["vanilla"], dtype=float), color=arm_color("vanilla"), label="vanilla")
    for i, arm in enumerate(arms):
        if arm not in curve:
            continue
        c = arm_color(arm, i)
        g = np.asarray(curve[arm]["gap"], dtype=float)
        lo = np.asarray(curve[arm]["lo"], dtype=float)
        hi = np.asarray(curve[arm]["hi"], dtype=float)
        if arm != "bigram":
            ax1.plot(pos, g, color=c, label=arm)
            ax1.fill_between(pos, lo, hi, color=c, alpha=0.2, lw=0)
        ax2.plot(pos, np.asarray(curve[arm]["loss"], dtype=float), color=c, label=arm)
    ax1.axhline(0, color="k", lw=0.8)
    ax1.set(xlabel="position in context window", ylabel="gap (nats/token)", title="gap vs vanilla (95% CI)")
    ax2.set(xlabel="position in context window", ylabel="loss (nats/token)", title="held-out loss by position")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig)


def gap_bars(rows: dict[str, dict], arms: list[str], title: str, ylabel: str = "gap (nats/token)") -> bytes:
    """Grouped horizontal bars: one group per row label, one bar per arm, 95% CI whiskers."""
    plt = pyplot()
    labels = list(rows)
    arms = [a for a in arms if a != "bigram"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(3, len(labels)) * max(1, len(arms)) / 1.6 + 1))
    h = 0.8 / max(1, len(arms))
    y = np.arange(len(labels))
    for i, arm in enumerate(arms):
        vals = [rows[lab].get(arm, {}) or {} for lab in labels]
        mean = np.array([v.get("mean") if v.get("mean") is not None else np.nan for v in vals], dtype=float)
        lo = np.array([(v.get("ci95") or [np.nan, np.nan])[0] for v in vals], dtype=float)
        hi = np.array([(v.get("ci95") or [np.nan, np.nan])[1] for v in vals], dtype=float)
        err = np.vstack([np.clip(mean - lo, 0, None), np.clip(hi - mean, 0, None)])
        ax.barh(y + (i - (len(arms) - 1) / 2) * h, mean, h, xerr=np.nan_to_num(err), color=arm_color(arm, i),
                label=arm, capsize=2, error_kw={"lw": 0.8})
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel=ylabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig)


def loss_bars(losses: dict[str, dict], title: str) -> bytes:
    """One bar per model: mean held-out loss with 95% CI."""
    plt = pyplot()
    names = list(losses)
    mean = np.array([losses[n]["mean"] for n in names], dtype=float)
    lo = np.array([losses[n]["ci95"][0] for n in names], dtype=float)
    hi = np.array([losses[n]["ci95"][1] for n in names], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3.6))
    ax.bar(names, mean, yerr=np.vstack([mean - lo, hi - mean]), capsize=3,
           color=[arm_color(n, i) for i, n in enumerate(names)])
    span = max(hi.max() - lo.min(), 1e-3)
    ax.set_ylim(max(0.0, lo.min() - 0.6 * span), hi.max() + 0.3 * span)
    for i, m in enumerate(mean):
        ax.text(i, m, f"{m:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="held-out loss (nats/token)", title=title)
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return save(fig)


def accuracy_grid(result: dict, path: str | Path | None = None) -> bytes:
    """Bar chart of exact-match accuracy: gradient settings × filler settings (the multiplication grid of
    ``myopia arithmetic``). Writes ``path`` when given; returns the PNG bytes."""
    plt = pyplot()
    fillers = result["fillers"]
    gradients = result["gradients"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(fillers), 3.2), layout="constrained")
    width = 0.8 / len(gradients)
    for k, g in enumerate(gradients):
        acc = [result["accuracy"][f"filler={f}"][g] for f in fillers]
        ax.bar(np.arange(len(fillers)) + (k - (len(gradients) - 1) / 2) * width, acc, width, label=g,
               color=arm_color(g, k))
    ax.set_xticks(range(len(fillers)))
    ax.set_xticklabels([f"F = {f}" for f in fillers])
    ax.set_ylabel("exact-match accuracy (greedy)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return save(fig, path)
