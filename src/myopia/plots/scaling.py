"""Figures of a horizon sweep (from horizon.json); an IsoFLOP sweep's figures are in :mod:`myopia.plots.frontier`.

Numbers come from :mod:`myopia.experiments.horizon_sweep`; this module only
draws them. Each function takes the summary dict and returns PNG bytes (what :mod:`myopia.report.scaling` puts in
the report; write them anywhere with ``Path(...).write_bytes``).
"""

from __future__ import annotations

import math

import numpy as np

from ..arms import MYOPIC_ARMS
from .style import ARM_COLORS as COLORS
from .style import pyplot, save


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


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
