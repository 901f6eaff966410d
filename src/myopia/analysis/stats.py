"""THE statistics module: seed-inclusive intervals for gaps, a vanilla-vs-vanilla null, t-intervals and Holm.

Every interval myopia prints comes from here. The setting: each *arm* (vanilla, myopic, myopic-hidden, ...) is
trained once per *seed* (a seed fixes initialisation and data order, shared by all arms of that seed), and every
trained model is scored on the same held-out *units* (documents, sequences, problems). Two sources of noise:

- **evaluation noise**: which held-out units we happened to score (resample units);
- **training noise**: which seed we happened to train (resample seeds).

A gap's uncertainty must include both. :class:`HierarchicalBootstrap` draws, per replicate, seeds with
replacement and then units with replacement. All seeds are scored on the *same* units, so the unit draw of a
replicate is applied to every drawn seed (a crossed design): drawing units independently per seed would average
the shared per-unit effect down by the number of seeds and understate the evaluation part. Statistics are
token- (or unit-) weighted means within each seed, averaged over seeds.

Reported for a gap (:meth:`Resampled.summary`):

- ``ci95_bootstrap``: the hierarchical (seeds + units) percentile interval;
- ``ci95_t``: with ≥ 3 seeds, the t-interval over the per-seed gaps (a bootstrap over 3 seeds is too narrow);
- ``ci95_eval``: units resampled, seeds fixed (evaluation noise only; kept for comparison, never *the* interval);
- ``ci95``: the widest of those, so the seed-inclusive interval is never narrower than the evaluation-only one;
- ``training_noise``: ``"not measured (1 seed)"`` with one seed, printed next to the interval everywhere.

All replicates of one :class:`HierarchicalBootstrap` share the same draws, so replicate-wise arithmetic on
:class:`Resampled` objects (differences, ratios such as the gap as a fraction of the value of context,
interactions) gives consistent intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

from ..errors import MyopiaError

TRAINING_NOISE_ONE_SEED = "not measured (1 seed)"
LEVEL = 0.95


def training_noise_note(n_seeds: int) -> str:
    """What the interval says about training noise, for JSON and printed tables."""
    if n_seeds <= 1:
        return TRAINING_NOISE_ONE_SEED
    how = "hierarchical bootstrap over seeds and units" + (", t-interval over seeds" if n_seeds >= 3 else "")
    return f"included ({n_seeds} seeds: {how})"


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN replicates (a group that drew no tokens)."""
    reps = np.asarray(replicates, dtype=np.float64)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanpercentile(reps, lo, axis=0), np.nanpercentile(reps, hi, axis=0)


def t_interval(values, level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t interval for the mean of ``values`` (1-D, e.g. per-seed gaps); None with fewer than 2 finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    half = _sps.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean() - half), float(v.mean() + half)


def t_test_p(values) -> float | None:
    """Two-sided one-sample t-test p-value of mean(values) = 0; None with fewer than 2 finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    sd = v.std(ddof=1)
    if sd == 0:
        return 0.0 if v.mean() != 0 else 1.0
    t = v.mean() / (sd / math.sqrt(v.size))
    return float(2 * _sps.t.sf(abs(t), v.size - 1))


def bootstrap_p(replicates) -> float | None:
    """Two-sided bootstrap p-value for "the statistic is 0": twice the smaller tail mass at 0, at least 1/B."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return None
    tail = min((r <= 0).mean(), (r >= 0).mean())
    return float(min(1.0, max(2 * tail, 1.0 / r.size)))


def holm(pvalues) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (same order as given; None entries are skipped and stay None)."""
    p = list(pvalues)
    idx = [i for i, x in enumerate(p) if x is not None and np.isfinite(x)]
    m = len(idx)
    order = sorted(idx, key=lambda i: p[i])
    out: list[float | None] = [None] * len(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _pair(lo, hi) -> list[float | None]:
    return [_f(lo), _f(hi)]


def _width(ci) -> float:
    if ci is None or ci[0] is None or ci[1] is None:
        return -math.inf
    return ci[1] - ci[0]


@dataclass
class Resampled:
    """A statistic per group with its replicates: point (G,), per_seed (S, G), boot and boot_eval (B, G), counts (G,).

    ``boot`` resamples seeds and units; ``boot_eval`` resamples units only. Arithmetic (+ − × ÷) with another
    Resampled from the same bootstrap, or with a number, acts replicate by replicate.
    """

    point: np.ndarray
    per_seed: np.ndarray
    boot: np.ndarray
    boot_eval: np.ndarray
    counts: np.ndarray

    @property
    def n_seeds(self) -> int:
        return int(self.per_seed.shape[0])

    def _op(self, other, fn) -> "Resampled":
        with np.errstate(invalid="ignore", divide="ignore"):
            if isinstance(other, Resampled):
                if other.boot.shape[0] != self.boot.shape[0] or other.n_seeds != self.n_seeds:
                    raise MyopiaError("Resampled statistics from different bootstraps cannot be combined")
                return Resampled(fn(self.point, other.point), fn(self.per_seed, other.per_seed),
                                 fn(self.boot, other.boot), fn(self.boot_eval, other.boot_eval),
                                 np.minimum(self.counts, other.counts))
            return Resampled(fn(self.point, other), fn(self.per_seed, other), fn(self.boot, other),
                             fn(self.boot_eval, other), self.counts)

    def __add__(self, o):
        return self._op(o, np.add)

    def __sub__(self, o):
        return self._op(o, np.subtract)

    def __mul__(self, o):
        return self._op(o, np.multiply)

    def __truediv__(self, o):
        return self._op(o, np.divide)

    def __neg__(self):
        return self * -1.0

    def __getitem__(self, g) -> "Resampled":
        """The groups ``g`` (an int keeps one group as G = 1)."""
        sl = [g] if isinstance(g, (int, np.integer)) else g
        return Resampled(self.point[sl], self.per_seed[:, sl], self.boot[:, sl], self.boot_eval[:, sl],
                         self.counts[sl])

    def summary(self, g: int = 0, level: float = LEVEL) -> dict:
        """The contract dict for group ``g``: mean, ci95 (seed-inclusive), ci95_eval, ci95_bootstrap, ci95_t,
        per_seed, n_seeds, se, p (two-sided, for "the statistic is 0") and training_noise."""
        S = self.n_seeds
        point = self.point[g]
        per_seed = self.per_seed[:, g]
        b_lo, b_hi = percentile_interval(self.boot[:, g:g + 1], level)
        e_lo, e_hi = percentile_interval(self.boot_eval[:, g:g + 1], level)
        ci_boot, ci_eval = _pair(b_lo[0], b_hi[0]), _pair(e_lo[0], e_hi[0])
        ci_t = None
        if S >= 3:
            t = t_interval(per_seed, level)
            ci_t = None if t is None else _pair(*t)
        candidates = [ci_eval] if S == 1 else [ci_boot, ci_eval] + ([ci_t] if ci_t else [])
        ci = max(candidates, key=_width)
        reps = self.boot[:, g] if S > 1 else self.boot_eval[:, g]
        finite = reps[np.isfinite(reps)]
        ps = [bootstrap_p(reps)] + ([t_test_p(per_seed)] if S >= 3 else [])
        ps = [p for p in ps if p is not None]
        return {
            "mean": _f(point),
            "ci95": ci,
            "ci95_eval": ci_eval,
            "ci95_bootstrap": ci_boot if S > 1 else None,
            "ci95_t": ci_t,
            "se": _f(finite.std()) if finite.size else None,
            "p": max(ps) if ps else None,
            "per_seed": [_f(x) for x in per_seed],
            "n_seeds": S,
            "training_noise": training_noise_note(S),
        }

    def summaries(self, level: float = LEVEL) -> list[dict]:
        """One :meth:`summary` per group."""
        return [self.summary(g, level) for g in range(len(self.point))]


class HierarchicalBootstrap:
    """Resampling weights for ``n_seeds`` seeds × ``n_units`` held-out units, ``n_boot`` replicates (fixed by ``seed``).

    Replicate b draws seeds with replacement (weights ``seed_w`` (B, S), summing to 1) and units with replacement
    (counts ``unit_w`` (B, U)), the same unit draw for every drawn seed (all seeds score the same units).
    """

    def __init__(self, n_units: int, n_seeds: int = 1, n_boot: int = 2000, seed: int = 0):
        if n_units < 1:
            raise MyopiaError("a bootstrap needs at least one evaluation unit (document, sequence or problem)")
        if n_seeds < 1:
            raise MyopiaError("a bootstrap needs at least one seed")
        rng = np.random.default_rng(seed)
        self.n_units, self.n_seeds, self.n_boot = n_units, n_seeds, n_boot
        self.unit_w = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)
        if n_seeds > 1:
            self.seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot) / n_seeds
        else:
            self.seed_w = np.ones((n_boot, 1))

    def means(self, values, unit, group=None, n_groups: int = 1) -> Resampled:
        """Token-weighted means per group. values (S, N) or (N,) (a seedless row is repeated for every seed);
        unit (N,) in [0, n_units); group (N,) in [0, n_groups) or None. Groups without tokens give NaN."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if values.shape[0] == 1 and self.n_seeds > 1:
            values = np.repeat(values, self.n_seeds, axis=0)
        S, N = values.shape
        if S != self.n_seeds:
            raise MyopiaError(f"values have {S} seed rows, the bootstrap was set up for {self.n_seeds}")
        unit = np.asarray(unit, dtype=np.int64)
        if unit.shape != (N,) or (N and (unit.min() < 0 or unit.max() >= self.n_units)):
            raise MyopiaError(f"unit ids must be {N} values in [0, {self.n_units})")
        group = np.zeros(N, dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
        cell = unit * n_groups + group
        size = self.n_units * n_groups
        counts = np.bincount(cell, minlength=size).reshape(self.n_units, n_groups).astype(np.float64)
        sums = np.stack([np.bincount(cell, weights=v, minlength=size) for v in values])
        return self._from_sums(sums.reshape(S, self.n_units, n_groups), counts)

    def unit_means(self, unit_values, unit_weights=None) -> Resampled:
        """Means over units of per-unit values (S, U) or (U,), weighted by ``unit_weights`` (U,) (default 1 each)."""
        v = np.atleast_2d(np.asarray(unit_values, dtype=np.float64))
        if v.shape[0] == 1 and self.n_seeds > 1:
            v = np.repeat(v, self.n_seeds, axis=0)
        if v.shape != (self.n_seeds, self.n_units):
            raise MyopiaError(f"unit values must be ({self.n_seeds}, {self.n_units}), got {v.shape}")
        w = np.ones(self.n_units) if unit_weights is None else np.asarray(unit_weights, dtype=np.float64)
        return self._from_sums((v * w)[:, :, None], w[:, None])

    def _from_sums(self, sums: np.ndarray, counts: np.ndarray) -> Resampled:
        """sums (S, U, G), counts (U, G) -> Resampled (all replicates in three einsums)."""
        total = counts.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed = sums.sum(1) / total
            num = np.einsum("bu,sug->bsg", self.unit_w, sums)
            den = self.unit_w @ counts
            per_rep_seed = num / den[:, None, :]
            boot = np.einsum("bs,bsg->bg", self.seed_w, per_rep_seed)
            boot_eval = per_rep_seed.mean(1)
        return Resampled(per_seed.mean(0), per_seed, boot, boot_eval, total)


def paired_gap(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = LEVEL) -> dict:
    """Gap summary of per-unit values a − b, each (S, U) or (U,) (same units, seed s of a paired with seed s of b)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape or a.size == 0:
        raise MyopiaError(f"paired values need equal non-empty shapes, got {a.shape} and {b.shape}")
    boot = HierarchicalBootstrap(a.shape[1], a.shape[0], n_boot, seed)
    return {**boot.unit_means(a - b).summary(level=level), "n_units": int(a.shape[1])}


# --- the null: vanilla against vanilla across seeds -------------------------------------------------------------

def seed_pairs(n_seeds: int) -> list[tuple[int, int]]:
    """All ordered pairs (i, j), i < j, of seed rows."""
    return [(i, j) for i in range(n_seeds) for j in range(i + 1, n_seeds)]


def null_gap(values, unit, *, n_boot: int = 2000, seed: int = 0, level: float = LEVEL) -> dict | None:
    """The gap between two vanilla runs of different seeds on the same tokens (what a gap looks like by chance).

    values (S, N): the baseline arm's per-token losses, one row per seed; unit (N,) evaluation units. Returns
    None with one seed; else {"mean", "sd", "ci95", "per_pair", "n_pairs"}: per_pair is the token-weighted mean
    of v_i − v_j for each seed pair i < j; ``sd`` is their root mean square (the typical size of a null gap,
    whose expectation is 0); ``ci95`` is the percentile interval of a bootstrap over seed pairs and units.
    """
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if v.shape[0] < 2:
        return None
    pairs = seed_pairs(v.shape[0])
    diffs = np.stack([v[i] - v[j] for i, j in pairs])
    unit = np.asarray(unit, dtype=np.int64)
    _, unit_index = np.unique(unit, return_inverse=True)
    boot = HierarchicalBootstrap(int(unit_index.max()) + 1, len(pairs), n_boot, seed)
    res = boot.means(diffs, unit_index)
    per_pair = res.per_seed[:, 0]
    lo, hi = percentile_interval(res.boot[:, :1] if len(pairs) > 1 else res.boot_eval[:, :1], level)
    return {"mean": _f(per_pair.mean()), "sd": _f(np.sqrt(np.mean(per_pair ** 2))), "ci95": _pair(lo[0], hi[0]),
            "per_pair": [_f(x) for x in per_pair], "pairs": [list(p) for p in pairs], "n_pairs": len(pairs)}


def against_null(gap_mean: float | None, null: dict | None) -> float | None:
    """The gap in units of the null's sd (|gap| / sd ≫ 1: far outside what two vanilla seeds differ by)."""
    if gap_mean is None or not null or not null.get("sd"):
        return None
    return _f(gap_mean / null["sd"])


# --- an estimate and its one formatter ---------------------------------------------------------------------------

ONE_SEED_NOTE = " (training noise not measured: 1 seed)"


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% interval, as every result file stores it: ``mean``, ``ci95`` (lo, hi) and
    ``n_seeds`` (the seeds the interval's training noise comes from).

    Either end of ``ci95`` is None when unknown (a NaN bound); ``ci95`` None: no interval at all; ``n_seeds``
    None: not recorded (a short form such as ``{"mean", "ci95"}`` quoted beside a main number). The dicts of
    :meth:`Resampled.summary`, :func:`paired_gap` and :func:`null_gap` read as Estimates (their other keys stay in
    the dict).
    """

    mean: float | None
    ci95: tuple[float | None, float | None] | None = None
    n_seeds: int | None = None

    def __post_init__(self):
        if self.ci95 is not None:  # a list read from JSON becomes the tuple (lo, hi)
            lo, hi = self.ci95
            object.__setattr__(self, "ci95", (lo, hi))

    @classmethod
    def from_dict(cls, d: dict) -> "Estimate":
        """The estimate of a result dict (``mean``, ``ci95``, ``n_seeds``; other keys ignored). A missing or null
        ``ci95`` reads as an interval of unknown ends."""
        lo, hi = d.get("ci95") or (None, None)
        return cls(d.get("mean"), (lo, hi), d.get("n_seeds"))

    def to_dict(self) -> dict:
        """``{"mean", "ci95": [lo, hi], "n_seeds"}`` as written to result files (``n_seeds`` only when recorded)."""
        out = {"mean": self.mean, "ci95": None if self.ci95 is None else list(self.ci95)}
        if self.n_seeds is not None:
            out["n_seeds"] = self.n_seeds
        return out

    @property
    def known(self) -> bool:
        """Whether there is a value (a summary of no tokens, or of an arm not trained, has mean None)."""
        return self.mean is not None

    @property
    def bounded(self) -> bool:
        """Whether both ends of the interval are known."""
        return self.ci95 is not None and None not in self.ci95

    def interval(self, digits: int = 3, *, signed: bool = True, missing: str = "–", scale: float = 1.0) -> str:
        """'[+0.042, +0.046]': the interval alone (``missing`` for an unknown end)."""
        lo, hi = self.ci95 or (None, None)
        return f"[{_number(lo, digits, signed, missing, scale)}, {_number(hi, digits, signed, missing, scale)}]"

    def format(self, digits: int = 3, *, signed: bool = True, missing: str = "–", scale: float = 1.0,
               unit: str = "", seed_note: str | None = ONE_SEED_NOTE) -> str:
        """'+0.044 [+0.042, +0.046]' plus ``seed_note`` when at most one seed was trained (None: no note).

        ``digits`` after the point, ``signed`` a leading + on positive numbers, ``missing`` for an unknown number,
        every number times ``scale`` and the mean followed by ``unit`` (``scale=100, unit="%"``: a percentage);
        without an interval (``ci95`` None) only the mean is written."""
        text = _number(self.mean, digits, signed, missing, scale) + unit
        if self.ci95 is not None:
            text += " " + self.interval(digits, signed=signed, missing=missing, scale=scale)
        if seed_note and (self.n_seeds if self.n_seeds is not None else 1) <= 1:
            text += seed_note
        return text


def _number(x, digits: int, signed: bool, missing: str, scale: float = 1.0) -> str:
    return missing if x is None else f"{scale * x:{'+' if signed else ''}.{digits}f}"


def format_interval(summary: dict, digits: int = 3, signed: bool = True) -> str:
    """'+0.044 [+0.042, +0.046]' plus ' (training noise not measured: 1 seed)' when only one seed was trained:
    :meth:`Estimate.format` of a result dict."""
    return Estimate.from_dict(summary).format(digits, signed=signed)


# --- cells with their own seed sets (IsoFLOP profiles) ---------------------------------------------------------
# An IsoFLOP sweep scores many cells (budget × size × arm), each trained with its own seeds (2 here, 3 there) and
# all scored on the same held-out units. ``CellBootstrap`` draws the units once per replicate (shared by every
# cell, so differences between cells are paired on units) and the seeds per replicate by *position* among a
# cell's sorted seeds, one draw per seed count (so two cells with the same seeds, e.g. two arms of one
# (budget, size), draw the same seeds: paired on training noise too).


class CellBootstrap:
    """Replicate means of cells that share ``n_units`` held-out units but have their own seed counts.

    ``n_units`` 0: no per-unit values (plain losses); only the seeds are resampled then.
    """

    def __init__(self, n_units: int, n_boot: int = 1000, seed: int = 0):
        self.n_units, self.n_boot, self.seed = int(n_units), int(n_boot), int(seed)
        if self.n_units > 0:
            rng = np.random.default_rng([self.seed, 0])
            self.unit_w = rng.multinomial(self.n_units, np.full(self.n_units, 1.0 / self.n_units),
                                          size=self.n_boot).astype(np.float64)
        else:
            self.unit_w = None
        self._seed_w: dict[int, np.ndarray] = {}

    def seed_weights(self, n_seeds: int) -> np.ndarray:
        """(n_boot, n_seeds) weights summing to 1 per replicate; the same for every cell with ``n_seeds`` seeds."""
        if n_seeds not in self._seed_w:
            if n_seeds == 1:
                w = np.ones((self.n_boot, 1))
            else:
                rng = np.random.default_rng([self.seed, 1, n_seeds])
                w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=self.n_boot) / n_seeds
            self._seed_w[n_seeds] = w
        return self._seed_w[n_seeds]

    def cell(self, values, unit_weights=None) -> tuple[float, np.ndarray, np.ndarray]:
        """values (S, U) per-unit losses (or (S,) plain losses when n_units is 0); unit_weights (U,) tokens per
        unit. Returns (point, replicates (n_boot,), per_seed (S,)): weighted means over units, averaged over seeds.
        """
        v = np.asarray(values, dtype=np.float64)
        if self.n_units == 0:
            per_seed = v.reshape(-1)
            return float(per_seed.mean()), self.seed_weights(len(per_seed)) @ per_seed, per_seed
        v = np.atleast_2d(v)
        if v.shape[1] != self.n_units:
            raise MyopiaError(f"cell values cover {v.shape[1]} units, the bootstrap was set up for {self.n_units}")
        w = np.ones(self.n_units) if unit_weights is None else np.asarray(unit_weights, dtype=np.float64)
        per_seed = (v * w).sum(1) / w.sum()
        uw = self.unit_w * w  # (B, U)
        per_rep_seed = (uw @ v.T) / uw.sum(1, keepdims=True)  # (B, S)
        reps = (per_rep_seed * self.seed_weights(v.shape[0])).sum(1)
        return float(per_seed.mean()), reps, per_seed


# --- token sets that differ by seed (issue 14: the task suite's leave-one-seed-out selection) -------------------

def masked_means(boot: HierarchicalBootstrap, values, mask, unit) -> Resampled:
    """Like :meth:`HierarchicalBootstrap.means` (one group) when each seed averages its own token set:
    values (S, N), mask (S, N) bool (the tokens seed s averages), unit (N,). With the same mask in every row it
    equals ``boot.means(values[:, m], unit[m])``. ``counts`` is the per-seed token count averaged over seeds."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    mask = np.atleast_2d(np.asarray(mask, dtype=bool))
    if values.shape[0] == 1 and boot.n_seeds > 1:
        values = np.repeat(values, boot.n_seeds, axis=0)
    if mask.shape[0] == 1 and boot.n_seeds > 1:
        mask = np.repeat(mask, boot.n_seeds, axis=0)
    if values.shape != mask.shape or values.shape[0] != boot.n_seeds:
        raise MyopiaError(f"values {values.shape} and mask {mask.shape} must both be ({boot.n_seeds}, N)")
    unit = np.asarray(unit, dtype=np.int64)
    U = boot.n_units
    sums = np.stack([np.bincount(unit, weights=np.where(m, v, 0.0), minlength=U) for v, m in zip(values, mask)])
    counts = np.stack([np.bincount(unit, weights=m.astype(np.float64), minlength=U) for m in mask])  # (S, U)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = sums.sum(1) / counts.sum(1)  # (S,)
        per_rep_seed = (boot.unit_w @ sums.T) / (boot.unit_w @ counts.T)  # (B, S)
        b = (boot.seed_w * per_rep_seed).sum(1)
        b_eval = per_rep_seed.mean(1)
    return Resampled(np.asarray([per_seed.mean()]), per_seed[:, None], b[:, None], b_eval[:, None],
                     np.asarray([counts.sum(1).mean()]))


# --- stated power: what a null interval could have seen (issue 29) ---------------------------------------------
# A gap is measured over S seeds, each scored on the same held-out documents. Model of the estimate:
#
#     ĝ = δ + (mean of S seed effects) + (one document effect shared by every seed),
#     Var ĝ = σ_s² / S + σ_d²,
#
# σ_s: sd of the per-seed gaps (training noise, with the seed × document part); σ_d: se of the gap from the
# documents alone (``ci95_eval``). The interval of :meth:`Resampled.summary` is the widest of the t-interval over
# per-seed gaps (S ≥ 3), the seeds × documents bootstrap and the documents-only one; with the sample sd s of the
# per-seed gaps its half-width is modelled as
#
#     h(s) = max(t_{S-1} s / √S (S ≥ 3),  z √((S-1)/S · s²/S + σ_d²),  z σ_d)
#
# (a bootstrap over S seeds sees (S-1)/S of their variance). A gap is *detected* when the interval excludes 0,
# so its power at a true gap δ is
#
#     power(δ) = E_s[ Φ((δ − h(s)) / τ) + Φ((−δ − h(s)) / τ) ],   τ² = σ_s²/S + σ_d²,  s² ~ σ_s² χ²_{S-1}/(S-1),
#
# integrated over the χ² quantiles. The minimum detectable gap solves power(δ) = 0.8 at α = 0.05.

POWER = 0.8
MIN_SEEDS_FOR_POWER = 3  # the fewest seeds whose interval has a t-part (see seeds_needed)
N_QUANTILES = 2000


def _interval_half_width(s: np.ndarray, n_seeds: int, doc_se: float, level: float = LEVEL) -> np.ndarray:
    """Modelled half-width of the seed-inclusive interval for sample per-seed sds ``s`` (any shape)."""
    S = n_seeds
    z = _sps.norm.ppf((1 + level) / 2)
    boot = z * np.sqrt((S - 1) / S * s ** 2 / S + doc_se ** 2)
    h = np.maximum(boot, z * doc_se)
    if S >= 3:
        h = np.maximum(h, _sps.t.ppf((1 + level) / 2, S - 1) * s / math.sqrt(S))
    return h


def detection_power(gap: float, seed_sd: float, doc_se: float, n_seeds: int, level: float = LEVEL) -> float:
    """Probability that the seed-inclusive interval of ``n_seeds`` seeds excludes 0 when the true gap is ``gap``
    (seed_sd: sd of per-seed gaps; doc_se: se from documents alone; same units as ``gap``)."""
    if n_seeds < 2:
        raise MyopiaError("power needs at least 2 seeds (training noise is not measured with 1)")
    u = (np.arange(N_QUANTILES) + 0.5) / N_QUANTILES
    s = seed_sd * np.sqrt(_sps.chi2.ppf(u, n_seeds - 1) / (n_seeds - 1))
    h = _interval_half_width(s, n_seeds, doc_se, level)
    tau = math.sqrt(seed_sd ** 2 / n_seeds + doc_se ** 2)
    if tau == 0:
        return 1.0 if abs(gap) > 0 else 0.0
    return float(np.mean(_sps.norm.cdf((abs(gap) - h) / tau) + _sps.norm.cdf((-abs(gap) - h) / tau)))


def min_detectable_gap(seed_sd: float, doc_se: float, n_seeds: int, power: float = POWER,
                       level: float = LEVEL) -> float:
    """The smallest true gap the seed-inclusive interval of ``n_seeds`` seeds detects with probability ``power``."""
    if seed_sd < 0 or doc_se < 0:
        raise MyopiaError("standard deviations must be non-negative")
    scale = math.sqrt(seed_sd ** 2 + doc_se ** 2)
    if scale == 0:
        return 0.0
    hi = scale
    while detection_power(hi, seed_sd, doc_se, n_seeds, level) < power:
        hi *= 2
    return float(_brentq(lambda g: detection_power(g, seed_sd, doc_se, n_seeds, level) - power, 0.0, hi))


def _brentq(fn, lo, hi) -> float:
    from scipy.optimize import brentq

    return brentq(fn, lo, hi, xtol=1e-12 * max(hi, 1e-300), rtol=1e-10)


def seeds_needed(target_gap: float, seed_sd: float, doc_se: float, power: float = POWER, level: float = LEVEL,
                 max_seeds: int = 1000) -> int | None:
    """Fewest seeds (≥ 3) whose minimum detectable gap is ≤ ``target_gap``; None when even ``max_seeds`` do not
    suffice (the documents' own noise, which more seeds do not shrink, can make a gap undetectable).

    Never 2: with 2 seeds the interval has no t-part (one degree of freedom) and the bootstrap alone under-states
    the seed variance, so its modelled power is higher than at 3 seeds and not a power a referee would accept."""
    if target_gap <= 0:
        return None
    if detection_power(target_gap, seed_sd, doc_se, max_seeds, level) < power:
        return None
    lo, hi = MIN_SEEDS_FOR_POWER, max_seeds
    if detection_power(target_gap, seed_sd, doc_se, lo, level) >= power:
        return lo
    while hi - lo > 1:  # power grows with the seed count
        mid = (lo + hi) // 2
        if detection_power(target_gap, seed_sd, doc_se, mid, level) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def noise_of_summary(summary: dict, level: float = LEVEL) -> tuple[float | None, float | None]:
    """(seed_sd, doc_se) measured from a gap summary: sd (ddof 1) of ``per_seed``; half-width of ``ci95_eval``
    / z. seed_sd is None with fewer than 2 seeds."""
    per_seed = [x for x in summary.get("per_seed") or [] if x is not None]
    seed_sd = float(np.std(per_seed, ddof=1)) if len(per_seed) >= 2 else None
    ci = summary.get("ci95_eval") or [None, None]
    doc_se = None
    if ci[0] is not None and ci[1] is not None:
        doc_se = (ci[1] - ci[0]) / 2 / _sps.norm.ppf((1 + level) / 2)
    return seed_sd, doc_se


def power_entry(summary: dict, context_value: float | None, *, fraction: float = 0.05, power: float = POWER,
                level: float = LEVEL) -> dict:
    """``power.<arm>`` of gap.json from a gap summary and the value of context (same units, e.g. nats/token):
    min_detectable_gap, min_detectable_fraction_of_context_value, seeds_for_5pct, and the inputs used."""
    seed_sd, doc_se = noise_of_summary(summary, level)
    S = int(summary.get("n_seeds") or len(summary.get("per_seed") or []))
    out = {"min_detectable_gap": None, "min_detectable_fraction_of_context_value": None, "seeds_for_5pct": None,
           "n_seeds": S, "seed_sd": seed_sd, "doc_se": doc_se, "power": power, "alpha": round(1 - level, 10)}
    if seed_sd is None or doc_se is None or S < 2:
        out["note"] = "not stated: training noise not measured (fewer than 2 seeds)"
        return out
    mdg = min_detectable_gap(seed_sd, doc_se, S, power, level)
    out["min_detectable_gap"] = mdg
    if context_value is not None and context_value > 0:
        out["min_detectable_fraction_of_context_value"] = mdg / context_value
        out["seeds_for_5pct"] = seeds_needed(fraction * context_value, seed_sd, doc_se, power, level)
    else:
        out["note"] = "no positive value of context: the gap cannot be put as a fraction of it"
    return out


def null_interval(null: dict | None, n_seeds: int, level: float = LEVEL) -> dict | None:
    """The null of a mean gap over ``n_seeds`` seeds, from vanilla-vs-vanilla pairs (``null_gap``'s result).

    A pair's difference v_i − v_j has variance 2σ_v² (rms of the pairs = √2 × the sd of the vanilla seeds);
    the mean of ``n_seeds`` independent such differences has sd rms / √n_seeds. The interval is ±t·sd with the
    vanilla seeds' degrees of freedom (S_v − 1). None without pairs.
    """
    if not null or not null.get("per_pair"):
        return None
    pairs = np.asarray([p for p in null["per_pair"] if p is not None], dtype=np.float64)
    n_pairs = len(pairs)
    s_v = int(round((1 + math.sqrt(1 + 8 * n_pairs)) / 2))  # n_pairs = S_v (S_v − 1) / 2
    rms = float(np.sqrt(np.mean(pairs ** 2)))
    sd = rms / math.sqrt(n_seeds)
    q = float(_sps.t.ppf((1 + level) / 2, max(s_v - 1, 1))) * sd
    return {"sd": sd, "ci95": [-q, q], "n_seeds": int(n_seeds), "df": max(s_v - 1, 1), "per_pair_rms": rms,
            "definition": "null of a mean over n_seeds independent vanilla-vs-vanilla differences: sd = rms of "
                          "the seed pairs / sqrt(n_seeds); ci95 = ±t(S_v − 1)·sd"}
