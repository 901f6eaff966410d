"""Future-token linear probes: how much a layer's hidden state at position t says about the token at t + k.

Windows hold ``T + 1`` tokens w_0..w_T; the model reads inputs w_0..w_{T-1} and its hidden state h_t at position
t has seen w_0..w_t. The probe for offset k maps h_t to w_{t+k} (k = 1 is the next token, the model's own
target), for t = 0..T-k. Probes are multinomial logistic regressions on standardised features, trained on one
split's windows and scored on another's: accuracy and cross-entropy (nats). With a large vocabulary the
targets are restricted to the ``classes - 1`` most frequent probe-training tokens plus one "other" class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import MyopiaError


@torch.no_grad()
def hidden_states(model, inputs: torch.Tensor, layers: list[int] | None = None, *, device="cpu",
                  batch_size: int = 16) -> dict[int, torch.Tensor]:
    """Residual stream after layer ℓ (0 = embeddings, ℓ = output of block ℓ) for each ℓ in ``layers`` (default:
    every layer), from any model that fills ``hidden_out``: ``{ℓ: (N, T, d) float32 on the CPU}``."""
    model.eval()
    out: dict[int, list] = {layer: [] for layer in layers or []}
    for i in range(0, len(inputs), batch_size):
        hs: list = []
        model(inputs[i : i + batch_size].to(device), hidden_out=hs)
        for layer in range(len(hs)) if layers is None else layers:
            if layer >= len(hs):
                raise MyopiaError(f"layer {layer} does not exist (the model has {len(hs) - 1} layers)")
            out.setdefault(layer, []).append(hs[layer].float().cpu())
    return {layer: torch.cat(v) for layer, v in out.items()}


def future_pairs(h: torch.Tensor, windows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features h_t (t = 0..T-k) and targets w_{t+k}: ``h`` (N, T, d), ``windows`` (N, T+1) -> (M, d), (M,)."""
    N, T, d = h.shape
    if windows.shape != (N, T + 1):
        raise MyopiaError(f"windows must be (N, T+1) = ({N}, {T + 1}), got {tuple(windows.shape)}")
    if not 1 <= k <= T:
        raise MyopiaError(f"offset k must lie in 1..{T}, got {k}")
    return h[:, : T - k + 1].reshape(-1, d), windows[:, k:].reshape(-1)


def class_map(train_targets: torch.Tensor, classes: int) -> tuple[dict, int]:
    """Token -> class index: the ``classes - 1`` most frequent training targets, every other token -> "other"."""
    values, counts = torch.unique(train_targets, return_counts=True)
    if len(values) <= classes:
        return {int(v): i for i, v in enumerate(values.tolist())}, len(values) + 1
    order = torch.argsort(counts, descending=True, stable=True)[: classes - 1]
    return {int(values[i]): j for j, i in enumerate(order.tolist())}, classes


def _map(targets: torch.Tensor, mapping: dict, n_classes: int) -> torch.Tensor:
    """Class index of each target (tokens outside ``mapping`` -> the last class, "other")."""
    size = max(int(targets.max()) if len(targets) else 0, max(mapping, default=0)) + 1
    lut = torch.full((size,), n_classes - 1, dtype=torch.long)
    lut[torch.tensor(list(mapping), dtype=torch.long)] = torch.tensor(list(mapping.values()), dtype=torch.long)
    return lut[targets.long()]


def _train_linear(x, y, n_classes, prior, *, steps, lr, weight_decay, seed, device):
    """Weights (d, C) and bias (C,) of a softmax regression minimising CE + weight_decay |W|^2: full-batch L-BFGS
    (strong-Wolfe line search) for at most ``steps`` iterations, the standard solver for this convex problem
    (what scikit-learn's LogisticRegression uses); ``lr`` scales its first step."""
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(x.shape[1], n_classes, generator=gen) * 0.01).to(device).requires_grad_()
    b = prior.clone().to(device).requires_grad_()
    opt = torch.optim.LBFGS([w, b], lr=lr, max_iter=steps, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_probe(x_train, y_train, x_test, y_test, *, classes: int = 1024, steps: int = 100, lr: float = 1.0,
              weight_decays=(1e-4, 1e-3, 1e-2), seed: int = 0, device="cpu", test_group: int | None = None) -> dict:
    """Train a linear softmax probe on (x_train, y_train) and score it on (x_test, y_test).

    Features are standardised with the training mean/std. The L2 weight is chosen among ``weight_decays`` by
    the cross-entropy on the last 20% of the training pairs (later windows) after fitting on the first 80%;
    the probe is then refit on all training pairs. Returns accuracy and cross-entropy on the test set (and the
    training set), the unigram baseline on the test set and the chosen weight decay. Test pairs are never
    used for fitting or selection. With ``test_group`` (consecutive test pairs that share a window), the
    standard errors ``accuracy_se``/``ce_se`` are computed from per-window means.
    """
    if len(x_train) < 5 or len(x_test) == 0:
        raise MyopiaError("too few probe training pairs or an empty test set")
    mapping, n_classes = class_map(y_train, classes)
    yt, ye = _map(y_train, mapping, n_classes).to(device), _map(y_test, mapping, n_classes).to(device)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xt, xe = ((x_train - mean) / std).to(device), ((x_test - mean) / std).to(device)
    counts = torch.bincount(yt, minlength=n_classes).float() + 1.0
    prior = torch.log(counts / counts.sum()).to(device)
    fit = dict(steps=steps, lr=lr, seed=seed, device=device)
    cut = int(0.8 * len(yt))
    selection = {}
    for wd in weight_decays:
        w, b = _train_linear(xt[:cut], yt[:cut], n_classes, prior, weight_decay=wd, **fit)
        selection[wd] = float(F.cross_entropy(xt[cut:] @ w + b, yt[cut:]))
    best = min(selection, key=selection.get)
    w, b = _train_linear(xt, yt, n_classes, prior, weight_decay=best, **fit)
    lt, le = xt @ w + b, xe @ w + b
    correct = (le.argmax(1) == ye).double()
    ce_each = F.cross_entropy(le, ye, reduction="none").double()
    result = {
        "accuracy": float((le.argmax(1) == ye).float().mean()),
        "ce": float(F.cross_entropy(le, ye)),
        "train_accuracy": float((lt.argmax(1) == yt).float().mean()),
        "train_ce": float(F.cross_entropy(lt, yt)),
        "baseline_accuracy": float((ye == int(prior.argmax())).float().mean()),
        "baseline_ce": float(F.cross_entropy(prior.expand(len(ye), -1), ye)),
        "weight_decay": best,
        "classes": n_classes,
        "other_fraction_test": float((ye == n_classes - 1).float().mean()) if n_classes > len(mapping) else 0.0,
        "train_pairs": len(yt),
        "test_pairs": len(ye),
    }
    if test_group and len(ye) % test_group == 0 and len(ye) // test_group > 1:
        n = len(ye) // test_group
        for key, values in (("accuracy_se", correct), ("ce_se", ce_each)):
            per_window = values.view(n, test_group).mean(1)
            result[key] = float(per_window.std() / math.sqrt(n))
    if not all(math.isfinite(v) for v in result.values() if isinstance(v, float)):
        raise MyopiaError("probe training diverged (non-finite loss); try a lower probe learning rate")
    return result


def probe_model(model, train_windows: torch.Tensor, test_windows: torch.Tensor, *, layers: list[int],
                ks: list[int], device="cpu", log=None, **fit) -> dict:
    """``{layer: {k: fit_probe result}}`` for one model; windows are (N, T+1) token ids. ``log`` (a callable
    taking a line) hears of each layer as it starts."""
    h_train = hidden_states(model, train_windows[:, :-1], layers, device=device)
    h_test = hidden_states(model, test_windows[:, :-1], layers, device=device)
    out: dict = {}
    for i, layer in enumerate(layers):
        if log is not None:
            log(f"layer {layer} ({i + 1} of {len(layers)}): {len(ks)} offsets")
        out[layer] = {}
        for k in ks:
            xt, yt = future_pairs(h_train[layer], train_windows, k)
            xe, ye = future_pairs(h_test[layer], test_windows, k)
            out[layer][k] = fit_probe(xt, yt, xe, ye, device=device, test_group=test_windows.shape[1] - k, **fit)
    return out
