"""Sequence regression where pre-caching is necessary (``precache``) or not (``control``).

Each sequence has T positions with x_n ~ N(0, 1) and z_n ~ Bernoulli(p); the input at position n is the pair
(x_n, z_n) and the target is

    y_n = z_n · Σ_{i ∈ lags} sin(ω · x_{n−i}) + (1 − z_n) · x_n,      x_m = 0 for m < 0 (so sin(ω·x_m) = 0),

with lags = 1..w for ``precache`` and 0..w−1 for ``control``. In ``precache`` the feature sin(ω·x_n) is useless
to position n itself and only helps the next w positions: a model learns to compute it at position n only if
the later positions' losses reach back (the off-diagonal gradient). In ``control`` the same feature is also part
of the present target ("breadcrumbs"), so a myopic model has a reason to compute it anyway.

The model (:class:`Regressor`) is a GPT trunk between a linear map of the per-position features and a linear
scalar head, trained with the Huber loss (δ = 1, summed). Losses are reported per position, divided by p (the
loss per z = 1 position when the z = 0 positions are solved) and as a fraction of the trivial predictor's
(x_n where z_n = 0, the best constant where z_n = 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MyopiaError
from ..model import GPT, GPTConfig
from .sampling import BASELINE_FIT, EVAL, TRAIN, BlockSampler

TASKS = ("precache", "control")
HUBER_DELTA = 1.0
N_FEATURES = 2  # (x_n, z_n)


@dataclass
class RegressionSpec:
    """The data distribution: task kind, frequency ω, window w, Bernoulli p, sequence length T."""

    task: str = "precache"
    omega: float = 10.0
    window: int = 10
    p: float = 1.0
    seq_len: int = 64

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MyopiaError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if not (isinstance(self.window, int) and not isinstance(self.window, bool) and self.window >= 1):
            raise MyopiaError(f"window must be a positive integer, got {self.window!r}")
        if not (isinstance(self.seq_len, int) and not isinstance(self.seq_len, bool) and self.seq_len >= 2):
            raise MyopiaError(f"seq-len must be an integer >= 2, got {self.seq_len!r}")
        if not (0.0 < float(self.p) <= 1.0):
            raise MyopiaError(f"p must lie in (0, 1], got {self.p!r}")
        if not (math.isfinite(float(self.omega)) and float(self.omega) > 0):
            raise MyopiaError(f"omega must be a positive number, got {self.omega!r}")

    @property
    def lags(self) -> range:
        """Lookbacks i whose sin(ω x_{n−i}) enter y_n."""
        return range(1, self.window + 1) if self.task == "precache" else range(0, self.window)

    def to_dict(self) -> dict:
        return asdict(self)


def regression_targets(x: np.ndarray, z: np.ndarray, spec: RegressionSpec) -> np.ndarray:
    """y (n, T) from x, z (n, T): windowed sums of sin(ω x) via a prefix sum (x before the start is 0)."""
    s = np.sin(spec.omega * x)
    T = x.shape[-1]
    prefix = np.concatenate([np.zeros_like(s[..., :1]), np.cumsum(s, axis=-1)], axis=-1)  # prefix[k] = Σ_{m<k}
    lo, hi = spec.lags[0], spec.lags[-1]
    n = np.arange(T)
    upper = np.clip(n - lo + 1, 0, T)  # positions m = n−hi .. n−lo, clipped at 0
    lower = np.clip(n - hi, 0, T)
    window_sum = prefix[..., upper] - prefix[..., lower]
    return np.where(z, window_sum, x)


def _draw_sequences(spec: RegressionSpec):
    def draw(rng: np.random.Generator, n: int) -> dict:
        x = rng.standard_normal((n, spec.seq_len))
        z = rng.random((n, spec.seq_len)) < spec.p
        return {"x": x, "z": z}

    return draw


def huber(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise Huber loss with δ = 1 (quadratic within 1, linear outside)."""
    return F.huber_loss(pred, target, reduction="none", delta=HUBER_DELTA)


def best_constant(y: np.ndarray) -> float:
    """argmin_c Σ huber(y − c): the trivial predictor's output where z = 1 (Newton steps on a convex loss)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return 0.0
    c = float(np.median(y))
    for _ in range(100):
        r = y - c
        grad = -np.clip(r, -HUBER_DELTA, HUBER_DELTA).sum()
        hess = max(float((np.abs(r) <= HUBER_DELTA).sum()), 1.0)
        step = grad / hess
        c -= step
        if abs(step) < 1e-12:
            break
    return c


class Regressor(nn.Module):
    """Per-position features (B, T, F) -> linear -> GPT trunk -> linear -> predictions (B, T)."""

    def __init__(self, cfg: GPTConfig, n_features: int = N_FEATURES):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(n_features, cfg.d_model)
        self.gpt = GPT(cfg)  # its token embedding is unused (vocab_size may be 1)
        self.head = nn.Linear(cfg.d_model, 1)
        nn.init.normal_(self.inp.weight, 0.0, cfg.init_std)
        nn.init.zeros_(self.inp.bias)
        nn.init.normal_(self.head.weight, 0.0, cfg.init_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, inputs: torch.Tensor, hidden_out: list | None = None) -> torch.Tensor:
        """``inputs`` (B, T, F) -> (B, T); ``hidden_out`` collects the residual stream (n_layer + 1 tensors)."""
        h = self.gpt.trunk(embeds=self.inp(inputs), hidden_out=hidden_out)
        return self.head(h).squeeze(-1)

    def set_gradient(self, gradient) -> None:
        """Switch the trunk's gradient setting (a kind or a :class:`myopia.arms.GradientSetting`)."""
        self.gpt.set_gradient(gradient)


def regressor_config(**kw) -> GPTConfig:
    """A GPTConfig for the regressor (vocab_size 1: the token embedding is not used)."""
    return GPTConfig(vocab_size=1, **kw)


class SequenceRegressionTask:
    """The ``precache``/``control`` task for :func:`myopia.train.train`.

    Training examples come from stream TRAIN of ``seed``, evaluation from the fixed first ``eval_sequences``
    examples of stream EVAL of ``eval_seed`` (default ``seed``; fresh samples, never trained on), and the trivial
    predictor's constant is fitted on stream BASELINE_FIT of ``eval_seed``.
    """

    def __init__(self, spec: RegressionSpec, *, seed: int = 0, eval_sequences: int = 2048, eval_batch_size: int = 512,
                 eval_seed: int | None = None):
        if eval_sequences < 1:
            raise MyopiaError(f"eval-sequences must be >= 1, got {eval_sequences}")
        self.spec, self.seed = spec, int(seed)
        self.eval_seed = self.seed if eval_seed is None else int(eval_seed)
        self.sampler = BlockSampler(seed, _draw_sequences(spec))
        # every stream but TRAIN (evaluation, probes, baseline fit) comes from eval_seed: runs with different
        # training seeds can then be scored on the same held-out sequences (a crossed seeds x units design)
        self.heldout_sampler = (self.sampler if self.eval_seed == self.seed
                                else BlockSampler(self.eval_seed, _draw_sequences(spec)))
        self.eval_sequences, self.eval_batch_size = int(eval_sequences), int(eval_batch_size)
        self.tokens_per_example = spec.seq_len
        self._constant: float | None = None
        self._eval: dict | None = None
        self._trivial: float | None = None

    # ---- data ------------------------------------------------------------------------------------------------
    def arrays(self, stream: int, indices) -> dict:
        """numpy {"x", "z", "y"} (n, T) for the given examples of a stream (TRAIN from ``seed``, others from
        ``eval_seed``)."""
        d = (self.sampler if stream == TRAIN else self.heldout_sampler).rows(stream, indices)
        return {"x": d["x"], "z": d["z"], "y": regression_targets(d["x"], d["z"], self.spec)}

    @staticmethod
    def to_batch(arrays: dict, device="cpu") -> dict:
        x = torch.as_tensor(arrays["x"], dtype=torch.float32)
        z = torch.as_tensor(arrays["z"], dtype=torch.float32)
        return {
            "inputs": torch.stack([x, z], dim=-1).to(device),
            "x": x.to(device),
            "z": z.to(device),
            "y": torch.as_tensor(arrays["y"], dtype=torch.float32).to(device),
        }

    def examples(self, indices, device="cpu") -> dict:
        """Training examples: {"inputs": (n, T, 2), "x", "z", "y": (n, T)} float32."""
        return self.to_batch(self.arrays(TRAIN, indices), device)

    @staticmethod
    def count(batch: dict) -> int:
        return batch["y"].numel()

    @staticmethod
    def loss(model, batch: dict) -> torch.Tensor:
        """Sum of per-position Huber losses."""
        return huber(model(batch["inputs"]).float(), batch["y"]).sum()

    # ---- baselines and evaluation ------------------------------------------------------------------------------
    @property
    def constant(self) -> float:
        """The trivial predictor's constant, fitted on 1024 sequences of stream BASELINE_FIT."""
        if self._constant is None:
            d = self.arrays(BASELINE_FIT, np.arange(1024))
            self._constant = best_constant(d["y"][d["z"]])
        return self._constant

    def trivial_predictions(self, batch: dict) -> torch.Tensor:
        """x_n where z_n = 0, the best constant where z_n = 1."""
        return torch.where(batch["z"] > 0, torch.full_like(batch["x"], self.constant), batch["x"])

    def eval_batch(self, device="cpu") -> dict:
        if self._eval is None:
            self._eval = self.to_batch(self.arrays(EVAL, np.arange(self.eval_sequences)))
        return {k: v.to(device) for k, v in self._eval.items()}

    @torch.no_grad()
    def sequence_losses(self, model, device="cpu") -> np.ndarray:
        """Mean Huber loss per held-out sequence (eval_sequences,) float64; ``model=None`` = trivial predictor."""
        batch = self.eval_batch(device)
        out = []
        for i in range(0, self.eval_sequences, self.eval_batch_size):
            part = {k: v[i : i + self.eval_batch_size] for k, v in batch.items()}
            pred = self.trivial_predictions(part) if model is None else model(part["inputs"]).float()
            out.append(huber(pred, part["y"]).double().mean(-1).cpu())
        return torch.cat(out).numpy()

    def summarise(self, losses: np.ndarray, trivial: float) -> dict:
        loss = float(np.mean(losses))
        return {"loss": loss, "loss_over_p": loss / self.spec.p, "fraction_of_trivial": loss / trivial}

    def evaluate(self, model, device="cpu") -> dict:
        """Held-out Huber loss per position, also divided by p and as a fraction of the trivial predictor's."""
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise MyopiaError("the model's parameters are not finite (NaN or inf); try a lower --lr")
        if self._trivial is None:
            self._trivial = float(np.mean(self.sequence_losses(None, device)))
        return self.summarise(self.sequence_losses(model, device), self._trivial)

    def describe(self) -> dict:
        return {"kind": "regression", **self.spec.to_dict(), "data_seed": self.seed, "eval_seed": self.eval_seed,
                "eval_sequences": self.eval_sequences, "huber_delta": HUBER_DELTA,
                "trivial_constant": self.constant}
