"""Linear probes: closed-form ridge regression from hidden states to known features, scored by held-out R².

For the regression tasks, :func:`lookback_probes` asks, for every layer's residual stream at position n and
every lookback i, how well a linear map recovers sin(ω·x_{n−i}) and x_{n−i}. A model that pre-caches computes
sin(ω·x_n) at position n (lookback 0) even where that feature is useless to position n's own target.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import MyopiaError
from ..probes import hidden_states
from .regression import SequenceRegressionTask
from .sampling import PROBE_FIT, PROBE_TEST

PROBE_TARGETS = ("sin", "x")


def ridge_fit(X: torch.Tensor, Y: torch.Tensor, alpha: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression with an (unpenalised) intercept: X (N, d), Y (N, k) -> W (d, k), b (k,).

    Minimises |Y − X W − b|² + λ|W|² with λ = alpha · trace(XcᵀXc) / d (Xc: centred X), so ``alpha`` is
    scale-free. Solved in float64.
    """
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise MyopiaError(f"ridge_fit needs X (N, d) and Y (N, k) with equal N; got {tuple(X.shape)}, {tuple(Y.shape)}")
    X, Y = X.double(), Y.double()
    return ridge_from_moments(X.shape[0], X.sum(0), Y.sum(0), X.T @ X, X.T @ Y, alpha)


def ridge_from_moments(n, sum_x, sum_y, xtx, xty, alpha: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ridge_fit` from sufficient statistics: n rows, Σx (d,), Σy (k,), XᵀX (d, d), XᵀY (d, k).

    Lets many probes share one pass over the data (e.g. suffix sums of per-position moments).
    """
    if n < 2:
        raise MyopiaError("a ridge probe needs at least 2 samples")
    mx, my = sum_x / n, sum_y / n
    gram = xtx - n * torch.outer(mx, mx)  # centred XᵀX
    cross = xty - n * torch.outer(mx, my)  # centred XᵀY
    d = gram.shape[0]
    lam = alpha * max(float(gram.diagonal().sum()) / d, 1e-12)
    W = torch.linalg.solve(gram + lam * torch.eye(d, dtype=gram.dtype, device=gram.device), cross)
    return W, my - mx @ W


def r2_score(Y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per column: 1 − SSE / SST (SST about Y's own mean). (N, k) -> (k,)."""
    Y, pred = Y.double(), pred.double()
    sse = ((Y - pred) ** 2).sum(0)
    sst = ((Y - Y.mean(0)) ** 2).sum(0)
    return 1.0 - sse / sst.clamp_min(1e-300)


def probe_r2(X_fit, Y_fit, X_test, Y_test, alpha: float = 1e-3) -> torch.Tensor:
    """Fit a ridge probe on (X_fit, Y_fit) and return its R² per target column on (X_test, Y_test)."""
    W, b = ridge_fit(X_fit, Y_fit, alpha)
    return r2_score(Y_test, X_test.double() @ W + b)


def lookback_probes(
    model,
    task: SequenceRegressionTask,
    *,
    max_lag: int = 20,
    fit_sequences: int = 2048,
    test_sequences: int = 1024,
    alpha: float = 1e-3,
    device="cpu",
) -> dict:
    """R² of ridge probes from each layer's hidden state at n to sin(ω x_{n−i}) and x_{n−i}, i = 0..max_lag.

    Probes are fitted on stream PROBE_FIT and scored on stream PROBE_TEST (neither is trained on). Lookbacks
    i >= seq_len have no rows and are left out. Returns {"lags": [...], "layers": [...], "sin": [[R²]],
    "x": [[R²]]} with R² indexed [layer][lag]; layer 0 is the input embedding, layer l the output of block l.
    """
    T = task.spec.seq_len
    lags = list(range(0, min(max_lag, T - 1) + 1))
    data = {}
    for name, stream, n in (("fit", PROBE_FIT, fit_sequences), ("test", PROBE_TEST, test_sequences)):
        arrays = task.arrays(stream, np.arange(n))
        batch = task.to_batch(arrays)
        x = batch["x"]
        values = torch.stack([torch.sin(task.spec.omega * x.double()), x.double()], dim=-1)  # (n, T, 2)
        data[name] = (hidden_states(model.to(device), batch["inputs"], device=device, batch_size=512), values)
    n_layers = len(data["fit"][0])
    r2 = np.full((len(PROBE_TARGETS), n_layers, len(lags)), np.nan)
    vf, vt = data["fit"][1], data["test"][1]
    for layer in range(n_layers):
        hf = data["fit"][0][layer].double()  # (N, T, d)
        ht = data["test"][0][layer].double()
        # Per-position moments; rows with n >= lag are the suffix n = lag..T-1.
        xtx_suffix = torch.einsum("snd,sne->nde", hf, hf).flip(0).cumsum(0).flip(0)  # (T, d, d)
        sx_suffix = hf.sum(0).flip(0).cumsum(0).flip(0)  # (T, d)
        for j, lag in enumerate(lags):
            h_now, v_then = hf[:, lag:], vf[:, : T - lag]
            W, b = ridge_from_moments(
                h_now.shape[0] * h_now.shape[1], sx_suffix[lag], v_then.sum((0, 1)), xtx_suffix[lag],
                torch.einsum("snd,snk->dk", h_now, v_then), alpha,
            )
            pred = ht[:, lag:] @ W + b
            r2[:, layer, j] = r2_score(vt[:, : T - lag].reshape(-1, vt.shape[-1]), pred.reshape(-1, W.shape[1])).numpy()
    return {
        "lags": lags,
        "layers": list(range(n_layers)),
        **{name: r2[t].tolist() for t, name in enumerate(PROBE_TARGETS)},
        "alpha": alpha,
        "fit_sequences": fit_sequences,
        "test_sequences": test_sequences,
    }


def future_positions(spec) -> tuple[list[int], list[int]]:
    """(positions m whose sin(ω x_m) enters a later target y_n, n > m, within the sequence; the others).

    The others — the last position — have nothing to pre-cache for: a probe there is a built-in null."""
    T = spec.seq_len
    has_future = [m for m in range(T) if any(m + i < T for i in spec.lags if i >= 1)]
    return has_future, [m for m in range(T) if m not in has_future]


@torch.no_grad()
def position_probes(
    model,
    task: SequenceRegressionTask,
    *,
    fit_sequences: int = 2048,
    test_sequences: int = 1024,
    alpha: float = 1e-3,
    device="cpu",
) -> dict:
    """R² of a ridge probe from each layer's hidden state at position n to sin(ω x_n), one probe per position.

    Fitted on stream PROBE_FIT, scored on PROBE_TEST. Returns {"positions", "layers", "sin": [[R²]] indexed
    [layer][position], "future_positions", "last_positions", "sin_with_future" and "sin_last" (per layer: mean
    R² over the positions whose feature serves a later target, and over those with no later target)}."""
    T = task.spec.seq_len
    data = {}
    for name, stream, n in (("fit", PROBE_FIT, fit_sequences), ("test", PROBE_TEST, test_sequences)):
        batch = task.to_batch(task.arrays(stream, np.arange(n)))
        target = torch.sin(task.spec.omega * batch["x"].double())  # (n, T)
        data[name] = (hidden_states(model.to(device), batch["inputs"], device=device, batch_size=512), target)
    n_layers = len(data["fit"][0])
    r2 = np.full((n_layers, T), np.nan)
    for layer in range(n_layers):
        for pos in range(T):
            r2[layer, pos] = float(probe_r2(data["fit"][0][layer][:, pos], data["fit"][1][:, pos, None],
                                            data["test"][0][layer][:, pos], data["test"][1][:, pos, None], alpha)[0])
    future, last = future_positions(task.spec)
    mean_over = lambda cols: [float(r2[layer, cols].mean()) if cols else None for layer in range(n_layers)]
    return {"positions": list(range(T)), "layers": list(range(n_layers)), "sin": r2.tolist(),
            "future_positions": future, "last_positions": last,
            "sin_with_future": mean_over(future), "sin_last": mean_over(last),
            "alpha": alpha, "fit_sequences": fit_sequences, "test_sequences": test_sequences}
