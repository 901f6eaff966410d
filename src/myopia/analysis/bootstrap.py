"""Confidence intervals for per-token means by resampling documents (and seeds).

Tokens of one document are correlated, so the unit of resampling is the document: a replicate draws documents
with replacement (multinomial weights) and recomputes the token-weighted mean of every group (a position, a
slice, a token class, or everything). With several seeds (models trained with different initialisation and
data order, evaluated on the same tokens), each replicate also draws seeds with replacement, so the interval
covers both "which text" and "which training run". All groups share the same replicates, so ratios of two
statistics (e.g. the relative gap) get consistent intervals too.
"""

from __future__ import annotations

import numpy as np

from ..errors import MyopiaError


class DocBootstrap:
    """``n_boot`` resampling weights over ``n_docs`` documents and ``n_seeds`` seeds (fixed by ``seed``)."""

    def __init__(self, n_docs: int, n_seeds: int = 1, n_boot: int = 2000, seed: int = 0):
        if n_docs < 1:
            raise MyopiaError("a bootstrap needs at least one document")
        rng = np.random.default_rng(seed)
        self.n_docs, self.n_seeds, self.n_boot = n_docs, n_seeds, n_boot
        self.doc_w = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=n_boot).astype(np.float64)
        if n_seeds > 1:
            self.seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot) / n_seeds
        else:
            self.seed_w = np.ones((n_boot, 1))

    def group_means(self, values: np.ndarray, doc: np.ndarray, group: np.ndarray | None = None,
                    n_groups: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token-weighted means per group.

        values (S, N) or (N,): one row per seed; doc (N,) in [0, n_docs); group (N,) in [0, n_groups) or None.
        Returns (point (G,), replicates (n_boot, G), token counts (G,)); groups without tokens give NaN.
        """
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        S, N = values.shape
        if S != self.n_seeds:
            raise MyopiaError(f"values have {S} seed rows, the bootstrap was set up for {self.n_seeds}")
        group = np.zeros(N, dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
        cell = np.asarray(doc, dtype=np.int64) * n_groups + group
        size = self.n_docs * n_groups
        counts = np.bincount(cell, minlength=size).reshape(self.n_docs, n_groups).astype(np.float64)
        sums = np.stack([np.bincount(cell, weights=v, minlength=size) for v in values])
        sums = sums.reshape(S, self.n_docs, n_groups)
        total = counts.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            point = sums.sum((0, 1)) / (S * total)
            per_seed = np.einsum("bd,sdg->bsg", self.doc_w, sums)
            reps = np.einsum("bs,bsg->bg", self.seed_w, per_seed) / (self.doc_w @ counts)
        return point, reps, total

    def per_seed_means(self, values: np.ndarray, group: np.ndarray | None = None, n_groups: int = 1) -> np.ndarray:
        """(S, G) token-weighted mean of each seed's row per group (no resampling)."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        group = np.zeros(values.shape[1], dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
        counts = np.bincount(group, minlength=n_groups).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.stack([np.bincount(group, weights=v, minlength=n_groups) for v in values]) / counts


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis, ignoring replicates where a group drew no tokens."""
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN groups stay NaN
            return np.nanpercentile(replicates, lo, axis=0), np.nanpercentile(replicates, hi, axis=0)


def summary(point: float, replicates: np.ndarray, level: float = 0.95) -> dict:
    """{"mean", "ci95": [lo, hi], "se"} for one statistic."""
    lo, hi = interval(np.asarray(replicates).reshape(-1, 1), level)
    reps = np.asarray(replicates, dtype=np.float64)
    se = float(np.nanstd(reps)) if np.isfinite(reps).any() else float("nan")
    return {"mean": float(point), "ci95": [float(lo[0]), float(hi[0])], "se": se}
