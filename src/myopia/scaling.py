"""Scaling-law fits and the compute cost of myopia.

- ``fit_power_law(compute, loss)`` fits L(C) = E + A·C^(-α) (loss in nats/token, compute in FLOPs).
- ``compute_multiplier(vanilla_fit, compute, myopic_loss)`` is k = C*/C, where C* is the compute at which the
  vanilla curve reaches the myopic loss: a myopic model trained with C FLOPs is as good as a vanilla one trained
  with k·C. k < 1 means myopia wastes compute (1 - k of it).
- ``fit_chinchilla(params, tokens, loss)`` fits L(N, D) = E + A/N^a + B/D^b when a grid varies both.

Fitting follows Hoffmann et al. (2022): the Huber loss of log-residuals, log L̂ = logsumexp of the terms in log
space, L-BFGS-B from a grid of initialisations, the best optimum kept. Uncertainty comes from a residual bootstrap
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


def _percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of finite-or-infinite samples (order statistics: no inf - inf arithmetic)."""
    s = np.sort(np.asarray(samples, dtype=np.float64)[~np.isnan(samples)])
    if len(s) == 0:
        return (math.nan, math.nan)
    lo = s[int(math.floor(INTERVAL[0] / 100 * (len(s) - 1)))]
    hi = s[int(math.ceil(INTERVAL[1] / 100 * (len(s) - 1)))]
    return (float(lo), float(hi))


def _levenberg_marquardt(fun, p0, lower, upper, delta: float, max_iter: int = 300) -> tuple[np.ndarray, float]:
    """Minimise sum(huber(r(p))) by Gauss-Newton with Huber (IRLS) weights and Levenberg-Marquardt damping.

    ``fun(p) -> (r (n,), J (n, p))``; parameters are clipped to [lower, upper]. Pure numpy on tiny systems (no
    threaded BLAS calls, which are slow on a busy machine).
    """
    p = np.clip(np.asarray(p0, dtype=np.float64), lower, upper)
    r, J = fun(p)
    f = _huber(r, delta)[0]
    lam = 1e-3
    stall = 0
    history = [f]
    for _ in range(max_iter):
        w = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), 1e-300))
        g = J.T @ (w * r)
        H = J.T @ (J * w[:, None])
        accepted = False
        while lam < 1e12:
            try:
                step = np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), -g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            q = np.clip(p + step, lower, upper)
            r_q, J_q = fun(q)
            f_q = _huber(r_q, delta)[0]
            if np.isfinite(f_q) and f_q < f:
                accepted = True
                break
            lam *= 4
        if not accepted:
            break
        gain = f - f_q
        moved = float(np.max(np.abs(q - p) / (1.0 + np.abs(p))))
        p, r, J, f = q, r_q, J_q, f_q
        history.append(f)
        lam = max(lam / 3, 1e-12)
        stall = stall + 1 if (gain <= 1e-12 * f or moved < 1e-10) else 0
        slow = len(history) > 10 and history[-11] - f <= 1e-5 * f  # creeping along a flat valley (L1 regime)
        if stall >= 3 or slow or f < 1e-24:
            break
    return p, float(f)


def _multi_start(fun, starts, lower, upper, delta) -> tuple[np.ndarray, float]:
    """Run the robust solver from each start; the best optimum."""
    best_x, best_f = None, math.inf
    for x0 in starts:
        x, fx = _levenberg_marquardt(fun, x0, lower, upper, delta)
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
    """Fit L(C) = E + A·C^(-alpha) to (compute FLOPs, loss nats/token) points (at least 3; 4+ for intervals).

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
    if bootstrap > 0 and len(c) > 3:
        y_hat = np.logaddexp(p[0], p[1] - p[2] * x)

        def refit(y_b):
            q, _ = _fit_power_law_log(x, y_b, huber_delta, [p, _power_law_starts(x, y_b)[13]])
            return to_params(q)

        fit.samples = _residual_bootstrap(y, y_hat, 3, bootstrap, seed, refit)
        fit.intervals = {name: _percentile_interval(fit.samples[:, i]) for i, name in enumerate(("E", "A", "alpha"))}
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
    return _percentile_interval(s) if len(s) else None


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
    lo = np.array([_percentile_interval(ks[:, j])[0] for j in range(len(c))])
    hi = np.array([_percentile_interval(ks[:, j])[1] for j in range(len(c))])
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


def fit_chinchilla(
    params, tokens, loss, *, bootstrap: int = 200, seed: int = 0, huber_delta: float = HUBER_DELTA
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^a + B/D^b; needs >= 6 points with >= 3 distinct N and >= 3 distinct D."""
    n = _as_positive_array("params", params)
    d = _as_positive_array("tokens", tokens)
    l_ = _as_positive_array("loss", loss)
    if not len(n) == len(d) == len(l_):
        raise MyopiaError("params, tokens and loss differ in length")
    if len(np.unique(n)) < 3 or len(np.unique(d)) < 3 or len(n) < 6:
        # with two values of D, E + B/D^b is two numbers for three parameters (and likewise for N)
        raise MyopiaError("an L(N, D) fit needs at least 6 runs covering at least 3 model sizes and 3 token budgets "
                          "(with two, E, B and b are not identifiable)")
    ln0, ld0 = float(np.mean(np.log(n))), float(np.mean(np.log(d)))
    xn, xd, y = np.log(n) - ln0, np.log(d) - ld0, np.log(l_)
    lower = np.array([-30.0, -60.0, 1e-4, -60.0, 1e-4])
    upper = np.array([float(y.max()) + 5, 60.0, 5.0, 60.0, 5.0])

    def solve(y_, starts):
        return _multi_start(_chinchilla_residuals(xn, xd, y_), starts, lower, upper, huber_delta)

    def to_params(q):
        e, A, a, B, b = q
        return math.exp(e), math.exp(A + a * ln0), float(a), math.exp(B + b * ld0), float(b)

    p, obj = solve(y, _chinchilla_starts(y))
    fit = ChinchillaFit(*to_params(p), n_points=len(n), objective=obj)
    if bootstrap > 0 and len(n) > 5:
        terms = np.stack([np.full_like(y, p[0]), p[1] - p[2] * xn, p[3] - p[4] * xd])
        y_hat = np.logaddexp.reduce(terms, axis=0)
        fit.samples = _residual_bootstrap(y, y_hat, 5, bootstrap, seed,
                                          lambda y_b: to_params(solve(y_b, [p, _chinchilla_starts(y_b)[5]])[0]))
        fit.intervals = {name: _percentile_interval(fit.samples[:, i])
                         for i, name in enumerate(("E", "A", "a", "B", "b"))}
    return fit
