"""Paired bootstrap confidence intervals for differences of per-example losses."""

from __future__ import annotations

import numpy as np


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean of a − b over paired examples (same held-out examples under two models) with a percentile CI.

    ``a``, ``b``: (n,) per-example values. Returns {"mean", "lo", "hi", "level", "resamples", "n"}.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("paired_bootstrap needs two equal-length non-empty 1-D arrays")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):
        k = min(256, resamples - start)
        means[start : start + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(1)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "level": level,
            "resamples": resamples, "n": int(d.size)}
