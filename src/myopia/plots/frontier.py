"""Figures of an IsoFLOP sweep (``sweep.json`` with ``design: isoflop``): profiles with their parabolas, the
frontiers L*(C), the frontier gap Δ(C) with its slope, and k(C) beside the constant-gap null.

Numbers come from :func:`myopia.scaling.frontier_report` (stored under ``sweep["frontier"]``); this module only
draws them. Each function takes the sweep dict and returns PNG bytes.
"""

from __future__ import annotations

import math

import numpy as np

from .style import arm_color, pyplot, save


def _arms(fr: dict) -> list[str]:
    return list(fr["frontiers"])


def _log_x(ax) -> None:
    """Log x axis with labels on the decades only (minor-tick labels of a short range overlap)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _num(x) -> float:
    return math.nan if x is None else float(x)


def plot_isoflop_profiles(sweep: dict) -> bytes:
    """One panel per arm: held-out loss of every run against N (per seed), the fitted parabola in log N per
    budget over the measured sizes, and the optimum (open marker where it sits at the edge)."""
    plt = pyplot()
    fr = sweep["frontier"]
    arms = _arms(fr)
    fig, axes = plt.subplots(1, len(arms), figsize=(4.6 * len(arms), 4.2), sharey=True, squeeze=False)
    budgets = sorted({round(math.log10(f["flops"]), 3) for a in arms for f in fr["frontiers"][a]})
    cmap = plt.get_cmap("viridis")
    shade = {b: cmap(0.1 + 0.8 * i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}
    for ax, arm in zip(axes[0], arms):
        for f in fr["frontiers"][arm]:
            color = shade[round(math.log10(f["flops"]), 3)]
            for p in f.get("profile") or []:
                ax.scatter([p["n_params"]] * len(p["loss_per_seed"]), p["loss_per_seed"], s=12, color=color,
                           alpha=0.7, zorder=3)
            par = f.get("parabola")
            if par:
                lo, hi = par["log10_n_range"]
                xs = np.linspace(lo, hi, 60)
                c0, c1, c2 = par["coef"]
                u = xs - par["x0"]
                ax.plot(10 ** xs, c0 + c1 * u + c2 * u * u, color=color, lw=1.2, label=f"C = {f['flops']:.2g}")
            if f.get("n_opt") is not None:
                ax.scatter([f["n_opt"]], [f["loss_opt"]], marker="*", s=90, zorder=4,
                           facecolor=color if f.get("interior") else "white", edgecolor="black", lw=0.7)
        _log_x(ax)
        ax.set_title(arm)
        ax.set_xlabel("non-embedding parameters N")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("held-out loss (nats/token)")
    axes[0][0].legend(fontsize=7, title="budget (FLOPs)", title_fontsize=7)
    fig.suptitle("IsoFLOP profiles: runs (dots), parabola in log N, optimum (star; open = at the edge)", fontsize=9)
    return save(fig)


def plot_frontiers(sweep: dict) -> bytes:
    """Left: the frontiers L*(C) of every arm with 95% intervals. Right: Δ(C) = L*_arm − L*_vanilla with 95%
    intervals and the fitted slope per decade (dashed), inside the measured compute range."""
    plt = pyplot()
    fr = sweep["frontier"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, arm in enumerate(_arms(fr)):
        f = [x for x in fr["frontiers"][arm] if x.get("loss_opt") is not None]
        c = np.array([x["flops"] for x in f])
        y = np.array([x["loss_opt"] for x in f])
        ci = np.array([x["loss_opt_ci95"] or [math.nan, math.nan] for x in f], dtype=float).reshape(-1, 2)
        ax1.errorbar(c, y, yerr=np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y])), color=arm_color(arm, i),
                     marker="o", ms=4, capsize=3, lw=1.2, label=arm)
    _log_x(ax1)
    ax1.set_xlabel("training compute C (FLOPs)")
    ax1.set_ylabel("frontier loss L*(C) (nats/token)")
    ax1.set_title("compute-optimal frontiers (95% CI)")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    for i, (arm, g) in enumerate(fr["gaps"].items()):
        b = g["budgets"]
        if not b:
            continue
        c = np.array([x["flops"] for x in b])
        y = np.array([x["gap"] for x in b])
        ci = np.array([x["gap_ci95"] or [math.nan, math.nan] for x in b], dtype=float).reshape(-1, 2)
        color = arm_color(arm, i)
        ax2.errorbar(c * (1 + 0.03 * i), y, yerr=np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y])), color=color,
                     marker="o", ms=4, capsize=3, lw=0, elinewidth=1.2, label=arm)
        if g.get("slope_per_decade") is not None and len(b) >= 2:
            lx = np.log10(c)
            xs = np.linspace(lx.min(), lx.max(), 20)
            ys = y.mean() + g["slope_per_decade"] * (xs - lx.mean())
            ci_s = g.get("slope_ci95")
            label = (f"  slope {g['slope_per_decade']:+.4f}/decade"
                     + (f" [{ci_s[0]:+.4f}, {ci_s[1]:+.4f}]" if ci_s else " (no interval)"))
            ax2.plot(10 ** xs, ys, color=color, ls="--", lw=1, label=label)
    ax2.axhline(0, color="black", lw=0.6)
    _log_x(ax2)
    ax2.set_xlabel("training compute C (FLOPs)")
    ax2.set_ylabel("frontier gap Δ(C) (nats/token)")
    ax2.set_title("Δ(C) = L*_arm − L*_vanilla (95% CI) and its slope")
    ax2.grid(alpha=0.3, which="both")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    return save(fig)


def plot_k_vs_null(sweep: dict) -> bytes:
    """k(C) between the measured frontiers (95% CI) and the constant-gap null k (dashed, with its CI): k falling
    faster than the null is the evidence that the gap grows; NaN (not drawn) outside the measured compute."""
    plt = pyplot()
    fr = sweep["frontier"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (arm, g) in enumerate(fr["gaps"].items()):
        k = g.get("k") or {}
        if "k" not in k:
            continue
        c = np.array(k["flops"], dtype=float)
        color = arm_color(arm, i)
        kv = np.array([_num(x) for x in k["k"]])
        nv = np.array([_num(x) for x in k["k_null"]])
        for vals, cis, ls, lab in ((kv, k.get("k_ci95"), "-", f"{arm}: k(C)"),
                                   (nv, k.get("k_null_ci95"), "--", f"{arm}: constant-gap null")):
            ax.plot(c, vals, color=color, ls=ls, marker="o" if ls == "-" else None, ms=4, lw=1.2, label=lab)
            if cis:
                lo = np.array([_num(x[0]) if x else math.nan for x in cis])
                hi = np.array([_num(x[1]) if x else math.nan for x in cis])
                ax.fill_between(c, lo, hi, color=color, alpha=0.12 if ls == "-" else 0.06, lw=0)
    ax.axhline(1, color="black", lw=0.6)
    _log_x(ax)
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("compute multiplier k = C*/C")
    ax.set_title("k between frontiers vs the constant-gap null (measured range only)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "k needs at least 2 budgets", ha="center", transform=ax.transAxes)
    return save(fig)
