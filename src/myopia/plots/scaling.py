"""Figures of a scaling sweep (from sweep.json) and a horizon sweep (from horizon.json).

Numbers come from :mod:`myopia.experiments.sweep` and :mod:`myopia.experiments.horizon_sweep`; this module only
draws them. Each function takes the summary dict and returns PNG bytes (what :mod:`myopia.report.scaling` puts in
the report; write them anywhere with ``Path(...).write_bytes``).
"""

from __future__ import annotations

import math

import numpy as np

from ..arms import MYOPIC_ARMS
from ..scaling import PowerLawFit
from .style import ARM_COLORS as COLORS
from .style import LINESTYLES, MARKERS, pyplot, save


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _budgets(sweep: dict) -> list[str]:
    return list(dict.fromkeys(e["budget"] for e in sweep["table"]))


def plot_loss_vs_compute(sweep: dict) -> bytes:
    """Held-out loss against training FLOPs, every arm, with its fitted L(C) (one curve per token budget) and the
    95% bootstrap band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    table = sweep["table"]
    budgets = _budgets(sweep)
    for j, b in enumerate(budgets):
        rows = [e for e in table if e["budget"] == b]
        cs = [e["flops"] for e in rows]
        grid = np.logspace(math.log10(min(cs)) - 0.2, math.log10(max(cs)) + 0.2, 100)
        for arm, fd in sweep["fits"].get(b, {}).items():
            pts = [(e["flops"], e["loss"][arm]) for e in rows if _finite(e["loss"].get(arm))]
            if not pts:
                continue
            c, l_ = np.array(pts).T
            color = COLORS.get(arm, None)
            suffix = f", D={b}" if len(budgets) > 1 else ""
            ax.scatter(c, l_, color=color, marker=MARKERS[j % len(MARKERS)], s=22, zorder=3, label=f"{arm}{suffix}")
            if fd:
                fit = PowerLawFit.from_dict(fd)
                ax.plot(grid, fit.predict(grid), color=color, lw=1.1, ls=LINESTYLES[j % len(LINESTYLES)],
                        label=f"  fit: E={fit.E:.2f}, alpha={fit.alpha:.3f}")
                if fit.samples is not None:
                    lo, hi = fit.band(grid)
                    ax.fill_between(grid, lo, hi, color=color, alpha=0.12, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("Loss vs compute: L(C) = E + A C^-alpha per token budget")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, ncol=2 if len(budgets) > 1 else 1)
    return _png(fig)


def plot_gap_vs_params(sweep: dict) -> bytes:
    """Myopia gap (myopic - vanilla) against non-embedding parameters, both variants, 95% intervals."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    budgets = _budgets(sweep)
    markers = MARKERS
    for arm in MYOPIC_ARMS:
        for j, b in enumerate(budgets):
            rows = [e for e in sweep["table"] if e["budget"] == b and _finite(e["gap"].get(arm))]
            if not rows:
                continue
            n = np.array([e["params_non_embedding"] for e in rows], dtype=float)
            g = np.array([e["gap"][arm] for e in rows])
            err = np.array([[g[i] - (e["gap_ci"][arm] or [g[i], g[i]])[0],
                             (e["gap_ci"][arm] or [g[i], g[i]])[1] - g[i]] for i, e in enumerate(rows)]).T
            label = arm if len(budgets) == 1 else f"{arm}, D={b}"
            ax.errorbar(n, g, yerr=err, color=COLORS[arm], marker=markers[j % len(markers)], capsize=3, lw=1.2,
                        label=label)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("gap: loss - vanilla loss (nats/token)")
    ax.set_title("Myopia gap vs model size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_multiplier(sweep: dict) -> bytes:
    """Compute multiplier k(C): measured points (95% intervals) and the fitted curve with its bootstrap band,
    extrapolated beyond the measured compute range (shaded region = extrapolation). One curve per budget."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    drew = False
    budgets = _budgets(sweep)
    cmax_all = 0.0
    for j, b in enumerate(budgets):
        suffix = f", D={b}" if len(budgets) > 1 else ""
        for arm in MYOPIC_ARMS:
            curve = (sweep.get("k_curve") or {}).get(b, {}).get(arm)
            color = COLORS[arm]
            if curve:
                c = np.array(curve["compute"])
                k, lo, hi = (np.array([_num(v) for v in curve[key]]) for key in ("k", "lo", "hi"))
                ok = np.isfinite(k) & (k > 0)
                ax.plot(c[ok], k[ok], color=color, lw=1.2, ls=LINESTYLES[j % len(LINESTYLES)],
                        label=f"{arm}{suffix}: fitted k(C)")
                band = np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
                ax.fill_between(c[band], lo[band], hi[band], color=color, alpha=0.12, lw=0)
                cmax_all = max(cmax_all, curve["measured_range"][1])
                drew = True
            pts = [(e["flops"], _num(e["k"][arm]), e["k_ci"][arm]) for e in sweep["table"]
                   if e["budget"] == b and _finite(_num(e["k"].get(arm)))]
            if pts:
                c = np.array([p[0] for p in pts])
                k = np.array([p[1] for p in pts])
                lo = np.array([_num(p[2][0]) if p[2] else p[1] for p in pts])
                hi = np.array([_num(p[2][1]) if p[2] else p[1] for p in pts])
                hi = np.where(np.isfinite(hi), hi, 1e12)  # unbounded above: the bar runs off the axes
                ax.errorbar(c, k, yerr=[np.maximum(k - lo, 0), np.maximum(hi - k, 0)], fmt=MARKERS[j % len(MARKERS)],
                            color=color, capsize=3, label=f"{arm}{suffix}: measured")
                drew = True
    if cmax_all > 0:
        ax.axvspan(cmax_all, ax.get_xlim()[1], color="0.92", zorder=0)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ks = [_num(e["k"].get(a)) for e in sweep["table"] for a in MYOPIC_ARMS]
    ks = [k for k in ks if math.isfinite(k) and k > 0] or [1.0]
    ax.set_ylim(max(1e-3, min(ks + [1.0]) / 10), min(1e3, max(ks + [1.0]) * 10))
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("k = C*/C (vanilla compute matching myopic)")
    ax.set_title("Compute multiplier of myopia (grey: extrapolation)")
    ax.grid(alpha=0.3, which="both")
    if drew:
        ax.legend(fontsize=6.5)
    return _png(fig)


def plot_horizon(summary: dict) -> bytes:
    """Loss against the gradient horizon h (left) and against beta (right), both myopic variants and vanilla."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.0), sharey=True)
    van = summary["vanilla"]["loss"]
    for arm in MYOPIC_ARMS:
        pts = [p for p in summary["horizon"].get(arm, []) if _finite(p.get("loss"))]
        if pts:
            h = np.array([p["horizon"] for p in pts], dtype=float)
            ax1.plot(h, [p["loss"] for p in pts], marker="o", color=COLORS[arm], label=arm)
        pts = [p for p in summary["beta"].get(arm, []) if _finite(p.get("loss"))]
        if pts:
            ax2.plot([p["beta"] for p in pts], [p["loss"] for p in pts], marker="o", color=COLORS[arm], label=arm)
    if _finite(van):
        for ax in (ax1, ax2):
            ax.axhline(van, color=COLORS["vanilla"], ls="--", label="vanilla")
    ax1.set_xscale("symlog", linthresh=1.0)
    ax1.set_xlabel("horizon h (earlier positions reached by the gradient)")
    ax1.set_ylabel("held-out loss (nats/token)")
    ax1.set_title("How far back the training signal may reach")
    ax2.set_xlabel("beta (weight of the off-diagonal gradient)")
    ax2.set_title("Partial myopia")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _png(fig)


def _num(x):
    """JSON numbers back to floats ('inf'/'nan' strings included); None -> nan."""
    if x is None:
        return math.nan
    return float(x)


def _png(fig) -> bytes:
    fig.tight_layout()
    return save(fig)
