"""Scaling-law fits and the compute cost of myopia.

- ``fit_power_law(compute, loss)`` fits L(C) = E + A·C^(-α) (loss in nats/token, compute in FLOPs).
- ``compute_multiplier(vanilla_fit, compute, myopic_loss)`` is k = C*/C, where C* is the compute at which the
  vanilla curve reaches the myopic loss: a myopic model trained with C FLOPs is as good as a vanilla one trained
  with k·C. k < 1 means myopia wastes compute (1 - k of it).
- ``fit_chinchilla(params, tokens, loss)`` fits L(N, D) = E + A/N^a + B/D^b when a grid varies both.

Fitting follows Hoffmann et al. (2022): the Huber loss of log-residuals, log L̂ = logsumexp of the terms in log
space, ``scipy.optimize.least_squares`` (robust Huber loss, bounds) from a grid of initialisations, the best
optimum kept. Uncertainty comes from a residual bootstrap
(log-space residuals, inflated by sqrt(n / (n - p)) for the p fitted parameters, resampled onto the fitted curve and
refitted); its 95% percentile intervals and the bootstrap parameter samples are kept on the fit object, so bands
for derived quantities (k(C), extrapolations) use the same samples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import MyopiaError

HUBER_DELTA = 1e-3  # in log-loss units, as in Hoffmann et al. (2022)
INTERVAL = (2.5, 97.5)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _as_positive_array(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(a)):
        raise MyopiaError(f"{name} holds NaN or inf values")
    if np.any(a <= 0):
        raise MyopiaError(f"{name} must be positive, got min {a.min():g}")
    return a


def _huber(r: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Sum of Huber losses of residuals ``r`` and its derivative (psi) with respect to each residual."""
    a = np.abs(r)
    quad = a <= delta
    value = np.where(quad, 0.5 * r * r, delta * (a - 0.5 * delta)).sum()
    return float(value), np.clip(r, -delta, delta)


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of finite-or-infinite samples (order statistics: no inf - inf arithmetic)."""
    s = np.sort(np.asarray(samples, dtype=np.float64)[~np.isnan(samples)])
    if len(s) == 0:
        return (math.nan, math.nan)
    lo = s[int(math.floor(INTERVAL[0] / 100 * (len(s) - 1)))]
    hi = s[int(math.ceil(INTERVAL[1] / 100 * (len(s) - 1)))]
    return (float(lo), float(hi))


def _robust_fit(fun, p0, lower, upper, delta: float) -> tuple[np.ndarray, float]:
    """Minimise sum(huber_delta(r(p))) over the box [lower, upper] with ``scipy.optimize.least_squares``
    (trust-region reflective, ``loss="huber"``, ``f_scale=delta``: its cost 0.5 f_scale^2 rho((r/f_scale)^2) is
    exactly the Huber loss). ``fun(p) -> (r (n,), J (n, p))``. Returns (p, Huber objective)."""
    from scipy.optimize import least_squares

    span = upper - lower
    x0 = np.clip(np.asarray(p0, dtype=np.float64), lower + 1e-9 * span, upper - 1e-9 * span)
    res = least_squares(lambda q: fun(q)[0], x0, jac=lambda q: fun(q)[1], bounds=(lower, upper), method="trf",
                        loss="huber", f_scale=delta, x_scale="jac", xtol=1e-10, ftol=1e-10, gtol=1e-10,
                        max_nfev=400)
    return res.x, _huber(fun(res.x)[0], delta)[0]


MAX_STARTS = 8  # multi-start: the solver runs from this many of the starts with the lowest initial objective


def _multi_start(fun, starts, lower, upper, delta) -> tuple[np.ndarray, float]:
    """Run the robust solver from the ``MAX_STARTS`` most promising starts (lowest Huber objective); the best
    optimum."""
    starts = [np.clip(np.asarray(x0, dtype=np.float64), lower, upper) for x0 in starts]
    if len(starts) > MAX_STARTS:
        initial = [_huber(fun(x0)[0], delta)[0] for x0 in starts]
        starts = [starts[i] for i in np.argsort(initial, kind="stable")[:MAX_STARTS]]
    best_x, best_f = None, math.inf
    for x0 in starts:
        x, fx = _robust_fit(fun, x0, lower, upper, delta)
        if np.all(np.isfinite(x)) and fx < best_f:
            best_x, best_f = x, fx
    if best_x is None:
        raise MyopiaError("the scaling-law fit did not converge from any initialisation")
    return best_x, best_f


def _residual_bootstrap(y: np.ndarray, y_hat: np.ndarray, n_params: int, n_boot: int, seed: int, refit):
    """Parameter samples from refitting ``y_hat + resampled residuals`` ``n_boot`` times (rows of an array)."""
    n = len(y)
    resid = (y - y_hat) * math.sqrt(n / max(1, n - n_params))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        samples.append(refit(y_hat + rng.choice(resid, size=n, replace=True)))
    return np.array(samples)


# --------------------------------------------------------------------------------------------------------------
# L(C) = E + A C^-alpha
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PowerLawFit:
    """L(C) = E + A·C^(-alpha). ``samples`` (n_boot, 3) are bootstrap (E, A, alpha) rows; ``intervals`` 95%."""

    E: float
    A: float
    alpha: float
    n_points: int
    objective: float = 0.0
    intervals: dict = field(default_factory=dict)
    samples: np.ndarray | None = None

    def predict(self, compute):
        """Loss (nats/token) at ``compute`` FLOPs; scalar in, float out; array in, array out."""
        c = np.asarray(compute, dtype=np.float64)
        out = self.E + self.A * np.exp(-self.alpha * np.log(c))
        return float(out) if out.ndim == 0 else out

    def inverse(self, loss):
        """The compute (FLOPs) at which the curve reaches ``loss``; MyopiaError when ``loss <= E``."""
        lo = np.asarray(loss, dtype=np.float64)
        if np.any(~np.isfinite(lo)) or np.any(lo <= self.E):
            bad = float(np.min(lo)) if lo.size else math.nan
            raise MyopiaError(
                f"loss {bad:.4f} is at or below the fitted irreducible loss E = {self.E:.4f}: "
                "the curve never reaches it"
            )
        out = np.exp((np.log(self.A) - np.log(lo - self.E)) / self.alpha)
        return float(out) if out.ndim == 0 else out

    def sample_fits(self) -> list["PowerLawFit"]:
        """The bootstrap fits as PowerLawFit objects (empty without bootstrap)."""
        if self.samples is None:
            return []
        return [PowerLawFit(float(e), float(a), float(al), self.n_points) for e, a, al in self.samples]

    def band(self, compute) -> tuple[np.ndarray, np.ndarray]:
        """95% pointwise bootstrap band of ``predict(compute)``: (lo, hi) arrays."""
        c = np.atleast_1d(np.asarray(compute, dtype=np.float64))
        if self.samples is None or len(self.samples) == 0:
            p = self.predict(c)
            return p, p
        preds = np.stack([f.predict(c) for f in self.sample_fits()])
        return np.percentile(preds, INTERVAL[0], axis=0), np.percentile(preds, INTERVAL[1], axis=0)

    def to_dict(self, with_samples: bool = True) -> dict:
        d = {"form": "L(C) = E + A * C^(-alpha)", "E": self.E, "A": self.A, "alpha": self.alpha,
             "n_points": self.n_points, "objective": self.objective,
             "intervals": {k: list(v) for k, v in self.intervals.items()}}
        if with_samples and self.samples is not None:
            d["samples"] = self.samples.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PowerLawFit":
        samples = d.get("samples")
        return cls(E=float(d["E"]), A=float(d["A"]), alpha=float(d["alpha"]), n_points=int(d["n_points"]),
                   objective=float(d.get("objective", 0.0)),
                   intervals={k: tuple(v) for k, v in d.get("intervals", {}).items()},
                   samples=None if samples is None else np.asarray(samples, dtype=np.float64))


def _power_law_residuals(x: np.ndarray, y: np.ndarray):
    """Residuals log L̂ - y and Jacobian; log L̂ = logaddexp(e, a - alpha x), params (e, a, alpha)."""

    def f(p):
        e, a, alpha = p
        log_pred = np.logaddexp(e, a - alpha * x)
        w_e = np.exp(e - log_pred)  # d log_pred / d e
        w_t = 1.0 - w_e
        return log_pred - y, np.stack([w_e, w_t, -w_t * x], axis=1)

    return f


def _fit_power_law_log(x: np.ndarray, y: np.ndarray, delta: float, starts) -> tuple[np.ndarray, float]:
    lower = np.array([-30.0, -60.0, 1e-4])
    upper = np.array([float(np.max(y)) + 5.0, 60.0, 5.0])
    return _multi_start(_power_law_residuals(x, y), starts, lower, upper, delta)


def _power_law_starts(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float, float]]:
    loss = np.exp(y)
    starts = []
    for frac, alpha in itertools.product((0.02, 0.3, 0.6, 0.8, 0.9, 0.97), (0.05, 0.15, 0.35, 0.8)):
        E = frac * loss.min()
        a = float(np.mean(np.log(np.maximum(loss - E, 1e-12)) + alpha * x))
        starts.append((math.log(E), a, alpha))
    return starts


def fit_power_law(
    compute,
    loss,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    huber_delta: float = HUBER_DELTA,
) -> PowerLawFit:
    """Fit L(C) = E + A·C^(-alpha) to (compute FLOPs, loss nats/token) points (at least 3; 5+ for intervals).

    Robust: Huber loss in log space, 24 initialisations, the best optimum. ``bootstrap`` residual-bootstrap refits
    give 95% intervals for E, A, alpha (and ``fit.samples`` for bands); 0 disables them.
    """
    c = _as_positive_array("compute", compute)
    l_ = _as_positive_array("loss", loss)
    if len(c) != len(l_):
        raise MyopiaError(f"compute and loss differ in length ({len(c)} vs {len(l_)})")
    if len(c) < 3:
        raise MyopiaError(f"a power-law fit L = E + A C^-alpha needs at least 3 points, got {len(c)}")
    if len(np.unique(c)) < 2:
        raise MyopiaError("a power-law fit needs at least two distinct compute values")
    log_c0 = float(np.mean(np.log(c)))
    x, y = np.log(c) - log_c0, np.log(l_)
    p, obj = _fit_power_law_log(x, y, huber_delta, _power_law_starts(x, y))

    def to_params(q):  # (e, a_normalised, alpha) -> (E, A, alpha) with A in raw compute units
        e, a, alpha = q
        return math.exp(e), math.exp(a + alpha * log_c0), float(alpha)

    E, A, alpha = to_params(p)
    fit = PowerLawFit(E, A, alpha, n_points=len(c), objective=obj)
    if bootstrap > 0 and len(c) - 3 >= 2:  # no interval with fewer than 2 residual degrees of freedom
        y_hat = np.logaddexp(p[0], p[1] - p[2] * x)

        def refit(y_b):
            q, _ = _fit_power_law_log(x, y_b, huber_delta, [p, _power_law_starts(x, y_b)[13]])
            return to_params(q)

        fit.samples = _residual_bootstrap(y, y_hat, 3, bootstrap, seed, refit)
        fit.intervals = {name: percentile_interval(fit.samples[:, i]) for i, name in enumerate(("E", "A", "alpha"))}
    return fit


def compute_multiplier(vanilla_fit: PowerLawFit, compute, myopic_loss):
    """k = C*/C: C* = ``vanilla_fit.inverse(myopic_loss)``, the vanilla compute that reaches the myopic loss.

    ``compute`` (FLOPs the myopic model was trained with) and ``myopic_loss`` may be scalars or arrays.
    k < 1: myopic training wastes compute. MyopiaError when the loss is at or below the vanilla fit's E.
    """
    c = _as_positive_array("compute", compute)
    k = vanilla_fit.inverse(myopic_loss) / c
    k = np.asarray(k)
    return float(k.reshape(-1)[0]) if np.ndim(compute) == 0 and np.ndim(myopic_loss) == 0 else k


def multiplier_samples(vanilla_fit: PowerLawFit, compute: float, myopic_loss: float) -> np.ndarray:
    """k under each bootstrap sample of the vanilla fit (inf where that curve never reaches the loss)."""
    out = []
    for f in vanilla_fit.sample_fits():
        out.append(math.inf if myopic_loss <= f.E else f.inverse(myopic_loss) / compute)
    return np.array(out)


def multiplier_interval(vanilla_fit: PowerLawFit, compute: float, myopic_loss: float) -> tuple[float, float] | None:
    """95% bootstrap interval of the compute multiplier (None without bootstrap samples)."""
    s = multiplier_samples(vanilla_fit, compute, myopic_loss)
    return percentile_interval(s) if len(s) else None


def multiplier_curve(vanilla_fit: PowerLawFit, myopic_fit: PowerLawFit, compute) -> dict:
    """k(C) = C*_vanilla(L_myopic(C)) / C from two fitted curves, with a paired 95% bootstrap band.

    Bootstrap samples of the two fits are paired by index. Where a curve never reaches the other's loss k is inf
    (myopic beyond the vanilla asymptote) — returned as is; the band uses order statistics.
    """
    c = np.atleast_1d(np.asarray(compute, dtype=np.float64))

    def k_of(v: PowerLawFit, m: PowerLawFit) -> np.ndarray:
        lm = m.predict(c)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            cstar = np.where(lm > v.E, np.exp((np.log(v.A) - np.log(np.maximum(lm - v.E, 1e-300))) / v.alpha),
                             np.inf)
        return cstar / c

    k = k_of(vanilla_fit, myopic_fit)
    vs, ms = vanilla_fit.sample_fits(), myopic_fit.sample_fits()
    n = min(len(vs), len(ms))
    if n == 0:
        return {"compute": c, "k": k, "lo": k.copy(), "hi": k.copy()}
    ks = np.stack([k_of(vs[i], ms[i]) for i in range(n)])
    lo = np.array([percentile_interval(ks[:, j])[0] for j in range(len(c))])
    hi = np.array([percentile_interval(ks[:, j])[1] for j in range(len(c))])
    return {"compute": c, "k": k, "lo": lo, "hi": hi}


def frontier_mask(compute, loss) -> np.ndarray:
    """Compute-efficient points: those with a lower loss than every cheaper point (ties: the cheaper wins)."""
    c = np.asarray(compute, dtype=np.float64)
    l_ = np.asarray(loss, dtype=np.float64)
    order = np.lexsort((l_, c))
    mask = np.zeros(len(c), dtype=bool)
    best = math.inf
    for i in order:
        if l_[i] < best:
            mask[i] = True
            best = l_[i]
    return mask


# --------------------------------------------------------------------------------------------------------------
# L(N, D) = E + A / N^a + B / D^b
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ChinchillaFit:
    """L(N, D) = E + A/N^a + B/D^b (N parameters, D training tokens). ``samples`` rows (E, A, a, B, b)."""

    E: float
    A: float
    a: float
    B: float
    b: float
    n_points: int
    objective: float = 0.0
    intervals: dict = field(default_factory=dict)
    samples: np.ndarray | None = None

    def predict(self, params, tokens):
        n = np.asarray(params, dtype=np.float64)
        d = np.asarray(tokens, dtype=np.float64)
        out = self.E + self.A * np.exp(-self.a * np.log(n)) + self.B * np.exp(-self.b * np.log(d))
        return float(out) if out.ndim == 0 else out

    def to_dict(self, with_samples: bool = True) -> dict:
        d = {"form": "L(N, D) = E + A / N^a + B / D^b", "E": self.E, "A": self.A, "a": self.a, "B": self.B,
             "b": self.b, "n_points": self.n_points, "objective": self.objective,
             "intervals": {k: list(v) for k, v in self.intervals.items()}}
        if with_samples and self.samples is not None:
            d["samples"] = self.samples.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ChinchillaFit":
        samples = d.get("samples")
        return cls(E=float(d["E"]), A=float(d["A"]), a=float(d["a"]), B=float(d["B"]), b=float(d["b"]),
                   n_points=int(d["n_points"]), objective=float(d.get("objective", 0.0)),
                   intervals={k: tuple(v) for k, v in d.get("intervals", {}).items()},
                   samples=None if samples is None else np.asarray(samples, dtype=np.float64))


def _chinchilla_residuals(xn, xd, y):
    """Params (e, A', a, B', b): log L̂ = logsumexp(e, A' - a xn, B' - b xd); residuals and Jacobian."""

    def f(p):
        e, A, a, B, b = p
        terms = np.stack([np.full_like(y, e), A - a * xn, B - b * xd])
        log_pred = np.logaddexp.reduce(terms, axis=0)
        w = np.exp(terms - log_pred)
        J = np.stack([w[0], w[1], -w[1] * xn, w[2], -w[2] * xd], axis=1)
        return log_pred - y, J

    return f


def _chinchilla_starts(y: np.ndarray) -> list[tuple]:
    lmin = float(np.exp(y).min())
    starts = []
    for frac, a, b in itertools.product((0.2, 0.6, 0.9), (0.1, 0.4), (0.1, 0.4)):
        rest = math.log(max(lmin * (1 - frac) / 2, 1e-6))
        starts.append((math.log(frac * lmin), rest, a, rest, b))
    return starts


CHINCHILLA_LOWER = np.array([-30.0, -60.0, 1e-4, -60.0, 1e-4])


def _chinchilla_solver(n: np.ndarray, d: np.ndarray, ln0: float, ld0: float, huber_delta: float):
    """``solve(loss, starts) -> ((E, A, a, B, b), q, objective)`` for runs of ``n`` parameters and ``d`` tokens;
    ``q`` is the optimum in the normalised coordinates (log N - ln0, log D - ld0) that ``starts`` use."""
    xn, xd = np.log(n) - ln0, np.log(d) - ld0

    def solve(loss, starts):
        y = np.log(loss)
        upper = np.array([float(y.max()) + 5, 60.0, 5.0, 60.0, 5.0])
        q, obj = _multi_start(_chinchilla_residuals(xn, xd, y), starts, CHINCHILLA_LOWER, upper, huber_delta)
        e, A, a, B, b = q
        return (math.exp(e), math.exp(A + a * ln0), float(a), math.exp(B + b * ld0), float(b)), q, obj

    return solve


def _check_chinchilla_inputs(params, tokens, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = _as_positive_array("params", params)
    d = _as_positive_array("tokens", tokens)
    l_ = _as_positive_array("loss", loss)
    if not len(n) == len(d) == len(l_):
        raise MyopiaError("params, tokens and loss differ in length")
    if len(np.unique(n)) < 3 or len(np.unique(d)) < 3 or len(n) < 6:
        # with two values of D, E + B/D^b is two numbers for three parameters (and likewise for N)
        raise MyopiaError("an L(N, D) fit needs at least 6 runs covering at least 3 model sizes and 3 token budgets "
                          "(with two, E, B and b are not identifiable)")
    return n, d, l_


def fit_chinchilla(
    params, tokens, loss, *, bootstrap: int = 200, seed: int = 0, huber_delta: float = HUBER_DELTA
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^a + B/D^b; needs >= 6 points with >= 3 distinct N and >= 3 distinct D. Huber loss of
    log residuals, ``scipy.optimize.least_squares`` from a grid of starts; residual-bootstrap intervals."""
    n, d, l_ = _check_chinchilla_inputs(params, tokens, loss)
    solve = _chinchilla_solver(n, d, float(np.mean(np.log(n))), float(np.mean(np.log(d))), huber_delta)
    y = np.log(l_)
    values, p, obj = solve(l_, _chinchilla_starts(y))
    fit = ChinchillaFit(*values, n_points=len(n), objective=obj)
    if bootstrap > 0 and len(n) > 5:
        xn, xd = np.log(n) - np.mean(np.log(n)), np.log(d) - np.mean(np.log(d))
        terms = np.stack([np.full_like(y, p[0]), p[1] - p[2] * xn, p[3] - p[4] * xd])
        y_hat = np.logaddexp.reduce(terms, axis=0)
        fit.samples = _residual_bootstrap(y, y_hat, 5, bootstrap, seed,
                                          lambda y_b: solve(np.exp(y_b), [p, _chinchilla_starts(y_b)[5]])[0])
        fit.intervals = {name: percentile_interval(fit.samples[:, i])
                         for i, name in enumerate(("E", "A", "a", "B", "b"))}
    return fit


def _budget_optimum(params: tuple, budget_points: list[dict], grid: int = 201) -> tuple[float, float, bool]:
    """(N*, L*, interior) of L(N, D) = E + A/N^a + B/D^b along one budget: N over the measured sizes (log grid),
    D(N) interpolated log-linearly between the measured (N, tokens) of the budget's runs."""
    E, A, a, B, b = params
    ns = np.array(sorted({float(p["n_params"]) for p in budget_points}))
    ds = np.array([np.mean([p["tokens"] for p in budget_points if float(p["n_params"]) == n]) for n in ns])
    x = np.linspace(np.log(ns[0]), np.log(ns[-1]), grid)
    logd = np.interp(x, np.log(ns), np.log(ds))
    loss = E + A * np.exp(-a * x) + B * np.exp(-b * logd)
    j = int(np.argmin(loss))
    return float(np.exp(x[j])), float(loss[j]), 0 < j < grid - 1


FIT_NAMES = ("E", "A", "alpha", "B", "beta")


def _seed_bootstrap_fits(pts: list[dict], solve, q0, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, 5) parameter rows refitted on seeds drawn with replacement (by position in the sorted seed list:
    two arms with the same seeds and the same ``seed`` draw the same seeds, so their replicates are paired)."""
    seeds = sorted({int(p["seed"]) for p in pts})
    by_seed = [np.array([i for i, p in enumerate(pts) if int(p["seed"]) == s_]) for s_ in seeds]
    loss = np.array([p["loss"] for p in pts], dtype=np.float64)
    rng = np.random.default_rng([seed, 7])
    rows = []
    for _ in range(n_boot):
        draw = rng.integers(0, len(seeds), size=len(seeds))
        idx = np.concatenate([by_seed[j] for j in draw])
        rows.append(solve(idx, loss[idx], q0))
    return np.array(rows)


def frontier_fit(points, arm: str, n_boot: int = 200, seed: int = 0, huber_delta: float = HUBER_DELTA) -> dict:
    """The joint fit L(N, D) = E + A/N^alpha + B/D^beta over every run of ``arm`` (N non-embedding parameters, D
    training tokens, L held-out loss) — a second estimator of the frontier L*(C), free of the per-budget
    parabola's edge bias (Besiroglu et al. 2024). Huber loss in log space, ``least_squares`` multi-start; 95%
    intervals (``ci95``) from a bootstrap over seeds (whole runs of a seed resampled together, refitted).
    Returns {E, A, B, alpha, beta, ci95: {name: [lo, hi]}, budgets: [{flops, n_opt, loss_opt, loss_opt_ci95,
    interior}], n_points, n_seeds, method}, or {"error": ...} when the runs cannot identify the fit."""
    pts = [p for p in _check_points(points) if p["arm"] == arm]
    try:
        n, d, l_ = _check_chinchilla_inputs([p["n_params"] for p in pts], [p["tokens"] for p in pts],
                                            [p["loss"] for p in pts])
    except MyopiaError as exc:
        return {"error": str(exc)}
    if len(group_budgets([p["flops"] for p in pts])) < 3:  # along one budget D ~ C/N: the terms are confounded
        return {"error": f"the joint fit needs runs at 3 or more compute budgets ({arm} has fewer)"}
    ln0, ld0 = float(np.mean(np.log(n))), float(np.mean(np.log(d)))
    solve_all = _chinchilla_solver(n, d, ln0, ld0, huber_delta)
    (E, A, a, B, b), q, obj = solve_all(l_, _chinchilla_starts(np.log(l_)))

    def solve_subset(idx, loss, q0):
        sub = _chinchilla_solver(n[idx], d[idx], ln0, ld0, huber_delta)
        return sub(loss, [q0, _chinchilla_starts(np.log(loss))[5]])[0]

    samples = _seed_bootstrap_fits(pts, solve_subset, q, n_boot, seed) if n_boot > 0 else None
    budgets = []
    for idx in group_budgets([p["flops"] for p in pts]):
        bp = [pts[i] for i in idx]
        if len({p["n_params"] for p in bp}) < 2:
            continue
        n_opt, loss_opt, interior = _budget_optimum((E, A, a, B, b), bp)
        reps = None if samples is None else np.array([_budget_optimum(tuple(r), bp)[1] for r in samples])
        budgets.append({"flops": float(np.mean([p["flops"] for p in bp])), "n_opt": n_opt, "loss_opt": loss_opt,
                        "loss_opt_ci95": _ci(reps), "interior": interior, "_reps": reps})
    values = dict(zip(FIT_NAMES, (E, A, a, B, b)))
    ci = {} if samples is None else {k: list(percentile_interval(samples[:, i])) for i, k in enumerate(FIT_NAMES)}
    return {"form": "L(N, D) = E + A / N^alpha + B / D^beta", **values, "ci95": ci, "budgets": budgets,
            "n_points": len(pts), "n_seeds": len({p["seed"] for p in pts}), "objective": obj,
            "method": f"Huber (delta {huber_delta:g}) in log space, scipy least_squares multi-start; "
                      f"{n_boot} bootstrap refits over seeds"}


def frontier_fit_gap(fit_arm: dict, fit_base: dict, parabola_gap: dict | None = None) -> list[dict]:
    """Per budget: the joint fits' L*_arm − L*_baseline with a paired 95% interval, next to the per-budget
    parabolas' gap; ``disagree`` when the two estimators' intervals do not overlap."""
    out = []
    par = {round(math.log10(b["flops"]), 2): b for b in (parabola_gap or {}).get("budgets", [])}
    for ea in fit_arm.get("budgets", []):
        eb = next((e for e in fit_base.get("budgets", []) if abs(e["flops"] / ea["flops"] - 1) <= BUDGET_TOLERANCE),
                  None)
        if eb is None:
            continue
        reps = None if ea["_reps"] is None or eb["_reps"] is None else ea["_reps"] - eb["_reps"]
        row = {"flops": eb["flops"], "gap": ea["loss_opt"] - eb["loss_opt"], "gap_ci95": _ci(reps)}
        pb = par.get(round(math.log10(eb["flops"]), 2))
        if pb is not None:
            row.update(parabola_gap=pb["gap"], parabola_gap_ci95=pb["gap_ci95"])
            a_ci, b_ci = row["gap_ci95"], pb["gap_ci95"]
            row["disagree"] = bool(a_ci and b_ci and (a_ci[1] < b_ci[0] or b_ci[1] < a_ci[0]))
        out.append(row)
    return out


def public_fit(fit: dict) -> dict:
    """``frontier_fit``'s dict without its internal bootstrap replicates (JSON-ready)."""
    return {**fit, "budgets": [{k: v for k, v in b.items() if k != "_reps"} for b in fit.get("budgets", [])]}


# --------------------------------------------------------------------------------------------------------------
# The compute-optimal frontier: IsoFLOP profiles, the frontier gap, k between frontiers, the constant-gap null
# --------------------------------------------------------------------------------------------------------------
# A *point* is one trained run: {"arm", "flops", "n_params" (non-embedding), "tokens", "loss" (held-out nats/token),
# "seed"}, optionally "doc_loss" (per evaluation document, the same documents for every point) and "doc_tokens".
# Points whose flops agree within 1% form one budget. Per arm and budget, a parabola in log10 N through the
# profile (runs weighted equally, i.e. size means weighted by their seed count) gives the optimum N* and the best
# loss L*(C), minimised over the *measured* size range only (an optimum beyond it is reported at the edge and
# flagged). Intervals: with per-document losses, a bootstrap over seeds and documents (myopia.analysis.stats
# .CellBootstrap: documents drawn once per replicate for every cell, seeds by position, so the two arms' replicates
# are paired); with plain points, a residual bootstrap of the run-level parabola. Honesty rules: no interval when
# a fit has fewer than 2 residual degrees of freedom (or, for a parabola, fewer than 4 sizes: with 3 it passes
# through every size mean and its shape is not tested); k(C) only inside the measured compute range.

BUDGET_TOLERANCE = 0.01
MIN_RESIDUAL_DOF = 2
POINT_KEYS = ("arm", "flops", "n_params", "tokens", "loss", "seed")
VERDICTS = ("grows", "no detectable change", "shrinks")


def _check_points(points) -> list[dict]:
    pts = list(points)
    for i, p in enumerate(pts):
        missing = [k for k in POINT_KEYS if k not in p]
        if missing:
            raise MyopiaError(f"point {i} lacks {', '.join(missing)} (a point has {', '.join(POINT_KEYS)})")
        for k in ("flops", "n_params", "tokens", "loss"):
            v = float(p[k])
            if not (math.isfinite(v) and v > 0):
                raise MyopiaError(f"point {i}: {k} must be positive and finite, got {p[k]!r}")
    return pts


def group_budgets(flops, rel: float = BUDGET_TOLERANCE) -> list[np.ndarray]:
    """Indices of ``flops`` grouped into budgets (values within ``rel`` of the group's smallest), by flops."""
    f = np.asarray(flops, dtype=np.float64)
    order = np.argsort(f, kind="stable")
    groups, start = [], None
    for i in order:
        if start is None or f[i] > f[start] * (1 + rel):
            groups.append([])
            start = i
        groups[-1].append(int(i))
    return [np.array(g) for g in groups]


def _fit_parabola(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares y = c0 + c1 x + c2 x^2; coefficients (3,)."""
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    return coef


def _parabola_optimum(coef: np.ndarray, lo: float, hi: float) -> tuple[float, float, bool]:
    """(x*, L*, interior) of the parabola minimised over [lo, hi]."""
    c0, c1, c2 = coef
    cands = [lo, hi]
    if c2 > 0:
        xv = -c1 / (2 * c2)
        if lo < xv < hi:
            return float(xv), float(c0 + c1 * xv + c2 * xv * xv), True
    vals = [c0 + c1 * x + c2 * x * x for x in cands]
    j = int(np.argmin(vals))
    return float(cands[j]), float(vals[j]), False


def parabola_edge(n_params, loss, weights=None) -> str | None:
    """Where the IsoFLOP profile's parabola has its minimum: None (inside the measured sizes), "low" or "high"
    (at the smallest or largest one: N* is then a bound). ``n_params`` (S,) distinct sizes, ``loss`` (S,) their
    mean losses, ``weights`` (S,) runs per size (default 1); the same fit as :func:`isoflop_frontier`'s."""
    x = np.log10(_as_positive_array("n_params", n_params))
    y = np.asarray(loss, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if not (x.shape == y.shape == w.shape) or len(x) < 3 or len(set(x.tolist())) != len(x):
        raise MyopiaError("a parabola edge needs 3 or more distinct sizes, each with one mean loss and weight")
    x0 = float(x.mean())
    lo, hi = float(x.min()) - x0, float(x.max()) - x0
    xs, _, interior = _parabola_optimum(_fit_parabola(x - x0, y, w), lo, hi)
    return None if interior else ("low" if xs <= lo else "high")


def _unit_count(points: list[dict]) -> int:
    """Number of evaluation documents shared by every point (0 when any point lacks per-document losses)."""
    ns = {len(p["doc_loss"]) if p.get("doc_loss") is not None else 0 for p in points}
    return ns.pop() if len(ns) == 1 else 0


def _arm_budget_profiles(points: list[dict], arm: str, n_boot: int, seed: int, n_units: int) -> list[dict]:
    """Per budget of ``arm``: the profile, the parabola, the optimum and its bootstrap replicates (internal)."""
    from .analysis.stats import CellBootstrap

    mine = [p for p in points if p["arm"] == arm]
    if not mine:
        raise MyopiaError(f"no points of arm {arm!r}")
    cb = CellBootstrap(n_units, n_boot, seed)
    out = []
    for idx in group_budgets([p["flops"] for p in mine]):
        bp = [mine[i] for i in idx]
        sizes = sorted({int(p["n_params"]) for p in bp})
        cells = []
        for n in sizes:
            runs = sorted((p for p in bp if int(p["n_params"]) == n), key=lambda p: p["seed"])
            cells.append({"n_params": n, "runs": runs})
        x_all = np.log10([c["n_params"] for c in cells])
        x0 = float(x_all.mean())
        x = x_all - x0
        lo, hi = float(x.min()), float(x.max())
        n_runs = len(bp)
        dof = n_runs - 3
        entry = {"flops": float(np.mean([p["flops"] for p in bp])), "n_points": n_runs, "n_sizes": len(sizes),
                 "dof": dof, "x0": x0}
        if len(sizes) < 3:
            entry.update(ok=False, note=f"{len(sizes)} sizes: a parabola needs at least 3")
            out.append(entry)
            continue
        # point estimate and replicates of every size mean
        means, reps, wts, profile = [], [], [], []
        for c in cells:
            r = c["runs"]
            if n_units:
                vals = np.array([p["doc_loss"] for p in r], dtype=np.float64)
                tw = np.asarray(r[0].get("doc_tokens") or np.ones(n_units), dtype=np.float64)
                point, rep, _ = cb.cell(vals, tw)
            else:
                point, rep = float(np.mean([p["loss"] for p in r])), None
            means.append(point)
            reps.append(rep)
            wts.append(len(r))
            profile.append({"n_params": c["n_params"], "tokens": int(round(np.mean([p["tokens"] for p in r]))),
                            "loss": point, "loss_per_seed": [float(p["loss"]) for p in r],
                            "seeds": [int(p["seed"]) for p in r]})
        means, w = np.array(means), np.array(wts, dtype=np.float64)
        coef = _fit_parabola(x, means, w)
        xs, ls, interior = _parabola_optimum(coef, lo, hi)
        entry.update(ok=True, coef=coef.tolist(), x_range=[lo + x0, hi + x0], n_opt=float(10 ** (xs + x0)),
                     loss_opt=ls, interior=interior, profile=profile)
        can_interval = dof >= MIN_RESIDUAL_DOF and len(sizes) >= 4 and n_boot > 0
        if not can_interval:
            why = (f"{n_runs} runs leave {dof} residual degrees of freedom for 3 parabola parameters"
                   if dof < MIN_RESIDUAL_DOF else
                   f"{len(sizes)} sizes: the parabola passes through every size mean (its shape is untested)"
                   if len(sizes) < 4 else "no bootstrap requested")
            entry.update(reps=None, note=f"no interval: {why}")
            out.append(entry)
            continue
        if n_units:
            R = np.stack(reps, axis=1)  # (B, sizes)
            method = f"bootstrap over seeds and {n_units} evaluation documents"
        else:
            xr = np.concatenate([[x[j]] * wts[j] for j in range(len(cells))])
            yr = np.concatenate([[p["loss"] for p in c["runs"]] for c in cells])
            fitted = coef[0] + coef[1] * xr + coef[2] * xr * xr
            resid = (yr - fitted) * math.sqrt(len(yr) / max(1, len(yr) - 3))
            rng = np.random.default_rng([seed, 2])
            yb = fitted[None, :] + rng.choice(resid, size=(n_boot, len(yr)), replace=True)
            bounds = np.cumsum([0] + wts)
            R = np.stack([yb[:, bounds[j]:bounds[j + 1]].mean(1) for j in range(len(cells))], axis=1)
            method = "residual bootstrap of the run-level parabola (no per-document losses)"
        opt = np.array([_parabola_optimum(_fit_parabola(x, R[b], w), lo, hi)[:2] for b in range(R.shape[0])])
        entry.update(reps={"loss_opt": opt[:, 1], "log_n_opt": opt[:, 0] + x0}, method=method)
        out.append(entry)
    return out


def _ci(reps) -> list[float] | None:
    if reps is None:
        return None
    r = np.asarray(reps, dtype=np.float64)
    if np.mean(np.isfinite(r)) < 0.9:
        return None  # too many replicates undefined (e.g. outside the measured range) for an interval
    lo, hi = percentile_interval(r[np.isfinite(r)])
    return [lo, hi]


def _public_frontier(entry: dict) -> dict:
    d = {k: entry.get(k) for k in ("flops", "n_points", "n_sizes", "dof")}
    if not entry.get("ok"):
        d.update(n_opt=None, loss_opt=None, loss_opt_ci95=None, n_opt_ci95=None, interior=None, note=entry["note"])
        return d
    reps = entry.get("reps")
    d.update(n_opt=entry["n_opt"], loss_opt=entry["loss_opt"],
             loss_opt_ci95=_ci(reps["loss_opt"]) if reps else None,
             n_opt_ci95=None if not reps else [10 ** v for v in percentile_interval(reps["log_n_opt"])],
             interior=entry["interior"], parabola={"coef": entry["coef"], "x0": entry["x0"],
                                                    "log10_n_range": entry["x_range"]},
             profile=entry["profile"], note=entry.get("note") or entry.get("method"))
    if not entry["interior"]:
        d["note"] = (d["note"] or "") + "; the optimum lies at the edge of the measured sizes (N* is a bound)"
    return d


def isoflop_frontier(points, arm: str, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Per budget (sorted by flops): {flops, n_opt, loss_opt, loss_opt_ci95 (pair, or None and a ``note`` saying
    why), n_opt_ci95, n_points, n_sizes, dof, interior, parabola, profile} of ``arm``'s IsoFLOP profile."""
    pts = _check_points(points)
    return [_public_frontier(e) for e in _arm_budget_profiles(pts, arm, n_boot, seed, _unit_count(pts))]


class FrontierCurve:
    """A measured frontier L*(C): piecewise linear in log C between budgets, made non-increasing; NaN outside
    [C_min, C_max] (no extrapolation). ``inverse(L)``: the smallest measured-range compute reaching L (NaN if none)."""

    def __init__(self, flops, loss):
        c = np.asarray(flops, dtype=np.float64)
        order = np.argsort(c)
        self.log_c = np.log(c[order])
        self.loss = np.minimum.accumulate(np.asarray(loss, dtype=np.float64)[order])

    def predict(self, compute):
        lc = np.log(np.atleast_1d(np.asarray(compute, dtype=np.float64)))
        out = np.interp(lc, self.log_c, self.loss)
        out[(lc < self.log_c[0] - 1e-9) | (lc > self.log_c[-1] + 1e-9)] = np.nan
        return out

    def inverse(self, loss):
        lo = np.atleast_1d(np.asarray(loss, dtype=np.float64))
        out = np.full(lo.shape, np.nan)
        for i, v in enumerate(lo):
            if not np.isfinite(v) or v > self.loss[0] + 1e-12 or v < self.loss[-1] - 1e-12:
                continue
            j = int(np.argmax(self.loss <= v + 1e-12))
            if j == 0:
                out[i] = math.exp(self.log_c[0])
                continue
            l0, l1 = self.loss[j - 1], self.loss[j]
            t = 0.0 if l0 == l1 else (l0 - v) / (l0 - l1)
            out[i] = math.exp(self.log_c[j - 1] + t * (self.log_c[j] - self.log_c[j - 1]))
        return out


def constant_gap_k(vanilla_fit, gap, compute) -> np.ndarray:
    """The k = C*/C that a *constant* gap would give at each ``compute``: C* is where ``vanilla_fit`` (a
    PowerLawFit or a FrontierCurve: anything with predict/inverse) reaches predict(C) + gap. The null curve for
    k(C): a k below 1 that falls with C is what a constant gap already produces. NaN where C* is unmeasured
    (FrontierCurve), inf where the curve never reaches the loss (a PowerLawFit at or below E)."""
    c = np.atleast_1d(np.asarray(compute, dtype=np.float64))
    gap = np.broadcast_to(np.asarray(gap, dtype=np.float64), c.shape)
    target = np.asarray(vanilla_fit.predict(c), dtype=np.float64) + gap
    out = np.empty(c.shape)
    for i, (ci, t) in enumerate(zip(c, target)):
        try:
            out[i] = float(np.asarray(vanilla_fit.inverse(t)).reshape(-1)[0]) / ci
        except MyopiaError:
            out[i] = math.inf
    return out


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope and its standard error (NaN with fewer than 3 points)."""
    xm = x - x.mean()
    sxx = float((xm * xm).sum())
    b = float((xm * (y - y.mean())).sum() / sxx)
    if len(x) < 3:
        return b, math.nan
    resid = y - (y.mean() + b * xm)
    return b, math.sqrt(float((resid ** 2).sum()) / (len(x) - 2) / sxx)


def _verdict(ci) -> str:
    if ci is None or ci[0] is None:
        return "no detectable change"
    if ci[0] > 0:
        return "grows"
    if ci[1] < 0:
        return "shrinks"
    return "no detectable change"


def frontier_gap(points, arm: str, baseline: str = "vanilla", n_boot: int = 1000, seed: int = 0) -> dict:
    """Δ(C) = L*_arm(C) − L*_baseline(C) per budget with 95% intervals (paired replicates: both arms' noise), its
    slope per decade of compute with a 95% interval, the verdict, k(C) between the frontiers with the
    constant-gap null, and the optimal-size shift N*_arm / N*_baseline.

    The slope interval is the wider of the bootstrap percentile interval and the OLS t-interval (scatter of the
    gaps about the line, m − 2 dof); none with fewer than 4 budgets (2 residual dof). The verdict says only what
    the interval supports, within [C_min, C_max].
    """
    from scipy import stats as sps

    pts = _check_points(points)
    n_units = _unit_count(pts)
    fa = _arm_budget_profiles(pts, arm, n_boot, seed, n_units)
    fb = _arm_budget_profiles(pts, baseline, n_boot, seed, n_units)
    budgets, pairs = [], []
    for ea in fa:
        eb = next((e for e in fb if abs(e["flops"] / ea["flops"] - 1) <= BUDGET_TOLERANCE), None)
        if eb is None or not ea.get("ok") or not eb.get("ok"):
            continue
        g = ea["loss_opt"] - eb["loss_opt"]
        reps = None
        if ea.get("reps") is not None and eb.get("reps") is not None:
            reps = ea["reps"]["loss_opt"] - eb["reps"]["loss_opt"]
        ratio_reps = None if reps is None else 10 ** (ea["reps"]["log_n_opt"] - eb["reps"]["log_n_opt"])
        budgets.append({"flops": eb["flops"], "gap": g, "gap_ci95": _ci(reps),
                        "loss_opt": ea["loss_opt"], "baseline_loss_opt": eb["loss_opt"],
                        "n_opt_ratio": ea["n_opt"] / eb["n_opt"], "n_opt_ratio_ci95": _ci(ratio_reps),
                        "interior": bool(ea["interior"] and eb["interior"])})
        pairs.append((ea, eb, reps))
    m = len(budgets)
    result = {"arm": arm, "baseline": baseline, "budgets": budgets, "n_budgets": m, "slope_per_decade": None,
              "slope_ci95": None, "slope_ci95_bootstrap": None, "slope_ci95_t": None,
              "compute_range": [budgets[0]["flops"], budgets[-1]["flops"]] if budgets else None}
    if m >= 2:
        lx = np.log10([b["flops"] for b in budgets])
        gy = np.array([b["gap"] for b in budgets])
        slope, se = _slope(lx, gy)
        result["slope_per_decade"] = slope
        if m - 2 < MIN_RESIDUAL_DOF:
            result["slope_note"] = (f"no interval: {m} budgets leave {m - 2} residual degrees of freedom for the "
                                    "2-parameter line (at least 4 budgets needed)")
        elif any(r is None for _, _, r in pairs):
            result["slope_note"] = "no interval: a budget's frontier has no interval (see its note)"
        else:
            R = np.stack([r for _, _, r in pairs], axis=1)  # (B, m)
            xm = lx - lx.mean()
            boot_slopes = (R - R.mean(1, keepdims=True)) @ xm / float(xm @ xm)
            ci_b = list(percentile_interval(boot_slopes))
            half = float(sps.t.ppf(0.975, m - 2)) * se
            ci_t = [slope - half, slope + half]
            result["slope_ci95_bootstrap"], result["slope_ci95_t"] = ci_b, ci_t
            result["slope_ci95"] = max([ci_b, ci_t], key=lambda c: c[1] - c[0])
    else:
        result["slope_note"] = f"no slope: {m} budget(s) with both frontiers"
    result["verdict"] = _verdict(result["slope_ci95"])
    if budgets:
        lo, hi = result["compute_range"]
        result["verdict_sentence"] = _verdict_sentence(result, arm, baseline, lo, hi)
    result["k"] = _k_between(pairs, budgets)
    return result


def _verdict_sentence(r: dict, arm: str, baseline: str, lo: float, hi: float) -> str:
    s = r["slope_per_decade"]
    ci = r["slope_ci95"]
    rng = f"between {lo:.2g} and {hi:.2g} FLOPs"
    if s is None:
        return f"{arm} vs {baseline}: fewer than 2 budgets, no growth measured {rng}."
    if ci is None:
        why = r.get("slope_note", "").removeprefix("no interval: ")
        return (f"{arm} vs {baseline} {rng}: frontier-gap slope {s:+.4f} nats/token per decade without an interval "
                f"({why}); the data do not support a change either way.") + _bracket_note(r["budgets"])
    what = {"grows": "the frontier gap grows with compute", "shrinks": "the frontier gap shrinks with compute",
            "no detectable change": "no detectable change of the frontier gap with compute"}[r["verdict"]]
    return (f"{arm} vs {baseline} {rng}: {what} (slope {s:+.4f} nats/token per decade, 95% CI "
            f"[{ci[0]:+.4f}, {ci[1]:+.4f}]).") + _bracket_note(r["budgets"])


def _bracket_note(budgets: list[dict]) -> str:
    """The verdict's caveat when an optimum lies at the edge of the measured sizes ('' when all are bracketed)."""
    edge = [b for b in budgets if not b.get("interior")]
    if not edge:
        return ""
    where = ", ".join(f"{b['flops']:.2g}" for b in edge)
    return (f" The optimum is not bracketed at {len(edge)} of {len(budgets)} budgets ({where} FLOPs: an arm's fitted "
            "optimum is at the edge of the measured sizes), so there L* is a bound, not an estimate, and Δ(C) "
            "compares bounds.")


def _k_between(pairs, budgets) -> dict:
    """k(C_b) = C*_baseline(L*_arm(C_b)) / C_b between the measured frontiers, the constant-gap null (gap of the
    smallest budget held fixed) and k − k_null, each with replicate intervals; NaN outside the measured range."""
    if len(budgets) < 2:
        return {"flops": [b["flops"] for b in budgets], "note": "k needs at least 2 budgets"}
    flops = np.array([b["flops"] for b in budgets])
    la = np.array([ea["loss_opt"] for ea, _, _ in pairs])
    lb = np.array([eb["loss_opt"] for _, eb, _ in pairs])

    def k_and_null(la_, lb_):
        curve = FrontierCurve(flops, lb_)
        k = curve.inverse(la_) / flops
        null = constant_gap_k(curve, la_[0] - lb_[0], flops)
        return k, null

    k, null = k_and_null(la, lb)
    out = {"flops": flops.tolist(), "k": k.tolist(), "k_null": null.tolist(), "null_gap": float(la[0] - lb[0]),
           "k_ci95": None, "k_null_ci95": None, "k_minus_null": (k - null).tolist(), "k_minus_null_ci95": None,
           "note": "k = C*/C with C* on the baseline's measured frontier (piecewise log-linear, no extrapolation); "
                   "NaN where C* would lie outside the measured compute range. Null: the k a constant gap equal to "
                   "the smallest budget's gap would give."}
    if all(ea.get("reps") is not None and eb.get("reps") is not None for ea, eb, _ in pairs):
        RA = np.stack([ea["reps"]["loss_opt"] for ea, _, _ in pairs], axis=1)
        RB = np.stack([eb["reps"]["loss_opt"] for _, eb, _ in pairs], axis=1)
        ks, nulls = zip(*(k_and_null(RA[b], RB[b]) for b in range(RA.shape[0])))
        ks, nulls = np.array(ks), np.array(nulls)
        out["k_ci95"] = [_ci(ks[:, j]) for j in range(len(flops))]
        out["k_null_ci95"] = [_ci(nulls[:, j]) for j in range(len(flops))]
        out["k_minus_null_ci95"] = [_ci(ks[:, j] - nulls[:, j]) for j in range(len(flops))]
    return out


def frontier_extrapolation(frontier: list[dict], E: float, factor: float = 100.0, n: int = 40) -> dict:
    """L*(C) − E = A C^−α fitted by least squares in log space with the asymptote E fixed by the user (an
    independent constraint: the frontier's few budgets cannot identify E), evaluated up to ``factor`` × C_max."""
    ok = [f for f in frontier if f.get("loss_opt") is not None]
    c = np.array([f["flops"] for f in ok])
    l_ = np.array([f["loss_opt"] for f in ok])
    if len(ok) < 3:
        raise MyopiaError("extrapolating a frontier needs at least 3 budgets")
    if np.any(l_ <= E):
        raise MyopiaError(f"the asymptote E = {E:g} is not below every measured frontier loss")
    X = np.stack([np.ones(len(c)), np.log(c)], axis=1)
    (a, b), *_ = np.linalg.lstsq(X, np.log(l_ - E), rcond=None)
    fit = PowerLawFit(E=float(E), A=float(math.exp(a)), alpha=float(-b), n_points=len(ok))
    grid = np.logspace(math.log10(c.min()), math.log10(c.max() * factor), n)
    return {"E": float(E), "A": fit.A, "alpha": fit.alpha, "compute": grid.tolist(),
            "loss": fit.predict(grid).tolist(), "measured_range": [float(c.min()), float(c.max())],
            "note": f"extrapolated with the asymptote E = {E:g} fixed by the user (not fitted); no interval"}


def frontier_report(points, baseline: str = "vanilla", arms=None, n_boot: int = 1000, seed: int = 0,
                    extrapolate_E: float | None = None) -> dict:
    """Everything the report shows: frontiers per arm, frontier gaps (with k and the null) per non-baseline arm,
    the L(N, D) cross-check per arm, the joint fit per arm (``frontier_fit``, :func:`frontier_fit`) with its
    frontier gap next to the parabolas' (``frontier_fit_gap``) and, only with ``extrapolate_E``, extrapolated
    frontiers."""
    pts = _check_points(points)
    all_arms = list(dict.fromkeys(p["arm"] for p in pts))
    arms = [a for a in (arms or all_arms) if a != baseline]
    out = {"baseline": baseline, "n_boot": n_boot, "seed": seed, "n_units": _unit_count(pts),
           "frontiers": {a: isoflop_frontier(pts, a, n_boot, seed) for a in [baseline] + arms},
           "gaps": {a: frontier_gap(pts, a, baseline, n_boot, seed) for a in arms}, "chinchilla_cross_check": {}}
    for a in [baseline] + arms:
        mine = [p for p in pts if p["arm"] == a]
        try:
            f = fit_chinchilla([p["n_params"] for p in mine], [p["tokens"] for p in mine],
                               [p["loss"] for p in mine], bootstrap=min(n_boot, 200))
            out["chinchilla_cross_check"][a] = {**f.to_dict(with_samples=False), "label": (
                "cross-check only: L(N, D) over every run; its E is not identified by a few budgets")}
        except MyopiaError as exc:
            out["chinchilla_cross_check"][a] = {"error": str(exc)}
    fits = {a: frontier_fit(pts, a, min(n_boot, 200), seed) for a in [baseline] + arms}
    out["frontier_fit"] = {a: public_fit(f) for a, f in fits.items()}
    out["frontier_fit_gap"] = {a: frontier_fit_gap(fits[a], fits[baseline], out["gaps"][a]) for a in arms
                               if "error" not in fits[a] and "error" not in fits[baseline]}
    if extrapolate_E is not None:
        out["extrapolation"] = {a: frontier_extrapolation(out["frontiers"][a], extrapolate_E)
                                for a in [baseline] + arms}
    return out
