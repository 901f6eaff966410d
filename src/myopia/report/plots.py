"""Figures for reports (matplotlib, Agg backend). Each function takes plain numbers and returns PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ARM_COLORS = {"vanilla": "#1f4e9c", "myopic": "#c62828", "myopic-hidden": "#ef8f00", "bigram": "#7f7f7f",
              "local": "#2e7d32", "local-scratch": "#66bb6a", "continued": "#5c6bc0"}
_EXTRA = ["#8e24aa", "#00897b", "#6d4c41", "#d81b60", "#3949ab", "#7cb342"]


def arm_color(arm: str, i: int = 0) -> str:
    return ARM_COLORS.get(arm, _EXTRA[i % len(_EXTRA)])


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _ema(y: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    out = np.empty(len(y))
    acc = y[0] if len(y) else 0.0
    for i, v in enumerate(y):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def training_curves(curves: dict[str, list[dict]]) -> bytes:
    """curves: {arm: [{"seed", "step": [...], "train_loss": [...], "eval_step": [...], "eval_loss": [...]}]}."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (arm, runs) in enumerate(curves.items()):
        c = arm_color(arm, i)
        for j, r in enumerate(runs):
            label = arm if j == 0 else None
            alpha = 1.0 if j == 0 else 0.45
            if len(r["step"]):
                ax1.plot(r["step"], _ema(np.asarray(r["train_loss"], dtype=float)), color=c, alpha=alpha,
                         lw=1.2, label=label)
            if len(r["eval_step"]):
                ax2.plot(r["eval_step"], r["eval_loss"], "o-", color=c, alpha=alpha, ms=3, lw=1, label=label)
    ax1.set(xlabel="step", ylabel="train loss (nats/token, EMA 0.1)", title="training loss")
    ax2.set(xlabel="step", ylabel="validation loss (nats/token)", title="held-out loss during training")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return to_png(fig)


def gap_by_position(curve: dict, arms: list[str]) -> bytes:
    """Gap (arm - vanilla) per context position with 95% bands, and each arm's loss per position."""
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
    return to_png(fig)


def gap_bars(rows: dict[str, dict], arms: list[str], title: str, ylabel: str = "gap (nats/token)") -> bytes:
    """Grouped horizontal bars: one group per row label, one bar per arm, 95% CI whiskers."""
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
    return to_png(fig)


def loss_bars(losses: dict[str, dict], title: str) -> bytes:
    """One bar per model: mean held-out loss with 95% CI."""
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
    return to_png(fig)
