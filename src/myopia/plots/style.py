"""The look of every figure and the one way to save it: the arm palette, lazy matplotlib (Agg), PNG output.

Matplotlib is imported on the first call of :func:`pyplot`, never when a module of this package is imported, so
commands that draw nothing do not pay for it.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..io import atomic_write_bytes

ARM_COLORS = {"vanilla": "#1f4e9c", "myopic": "#c62828", "myopic-hidden": "#ef8f00", "bigram": "#7f7f7f",
              "local": "#2e7d32", "local-scratch": "#66bb6a", "continued": "#5c6bc0"}
EXTRA_COLORS = ("#8e24aa", "#00897b", "#6d4c41", "#d81b60", "#3949ab", "#7cb342")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = "osD^v"
DPI = 110

__all__ = ["ARM_COLORS", "EXTRA_COLORS", "LINESTYLES", "MARKERS", "DPI", "arm_color", "pyplot", "save"]


def arm_color(arm: str, i: int = 0) -> str:
    """The colour of an arm (gradient setting or bonus trainee); the ``i``-th spare colour for any other name."""
    return ARM_COLORS.get(arm, EXTRA_COLORS[i % len(EXTRA_COLORS)])


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path | None = None, *, dpi: int = DPI) -> bytes:
    """Render ``fig`` as PNG, close it, and return the bytes; with ``path``, also write them there atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data
