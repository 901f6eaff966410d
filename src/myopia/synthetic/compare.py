"""Paired gradient comparisons on the synthetic regression tasks (the tasks live in :mod:`.regression`).

Every gradient setting of a comparison trains from the same initialisation (seeded by ``seed``) on the same
examples in the same order with the same hyperparameters, and is evaluated on the same fresh held-out
sequences. All seeds are scored on the same held-out sequences (drawn from :data:`EVAL_SEED`, never from a
training stream), so gaps get the seed-inclusive interval of :mod:`myopia.analysis.stats` (seeds × sequences,
crossed). Used by ``myopia synthetic`` and ``myopia demo``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..analysis.stats import HierarchicalBootstrap, null_gap, paired_gap, training_noise_note
from ..errors import MyopiaError
from ..model import GPTConfig
from ..train import TrainConfig, resolve_device, train
from .probes import lookback_probes, position_probes
from .regression import Regressor, RegressionSpec, SequenceRegressionTask

__all__ = ["UNIT", "EVAL_SEED", "build_regressor", "train_regression", "compare_regression", "summarise"]

UNIT = "Huber loss (delta 1) per position, divided by p, on fresh held-out sequences"
EVAL_SEED = 0  # the held-out sequences (and probe/baseline data) of every comparison, whatever the training seed


def build_regressor(model_cfg: GPTConfig, seed: int) -> Regressor:
    """A fresh :class:`Regressor`; its initialisation depends only on ``seed`` and the architecture."""
    torch.manual_seed(seed)
    return Regressor(model_cfg)


def train_regression(
    spec: RegressionSpec,
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    out: str | Path,
    *,
    eval_sequences: int = 2048,
    eval_seed: int | None = EVAL_SEED,
) -> tuple[Regressor, SequenceRegressionTask, dict]:
    """Train one regressor (gradient setting in ``model_cfg``) on ``spec``; the run directory is ``out``.

    Training data and initialisation come from ``train_cfg.seed``; held-out data from ``eval_seed``."""
    if model_cfg.seq_len < spec.seq_len:
        raise MyopiaError(f"the model's seq_len {model_cfg.seq_len} is shorter than the task's {spec.seq_len}")
    task = SequenceRegressionTask(spec, seed=train_cfg.seed, eval_sequences=eval_sequences, eval_seed=eval_seed)
    model = build_regressor(model_cfg, train_cfg.seed)
    run_config = {"command": "synthetic", "spec": spec.to_dict(), "model": model_cfg.to_dict(),
                  "eval_sequences": eval_sequences, "eval_seed": task.eval_seed}
    result = train(model, task, train_cfg, out, run_config=run_config)
    return model, task, result


def probe_model(model, task: SequenceRegressionTask, device, max_lag: int, sequences: tuple[int, int]) -> dict:
    """Lookback probes of one trained model with its per-position probes under ``by_position``."""
    kw = dict(device=device, fit_sequences=sequences[0], test_sequences=sequences[1])
    probes = lookback_probes(model, task, max_lag=max_lag, **kw)
    probes["by_position"] = position_probes(model, task, **kw)
    return probes


def compare_regression(
    spec: RegressionSpec,
    gradients: list[str],
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    out_root: str | Path,
    *,
    seeds: list[int] = (0,),
    eval_sequences: int = 2048,
    probe: bool = False,
    probe_max_lag: int = 20,
    probe_sequences: tuple[int, int] = (2048, 1024),
    probe_every_seed: bool = False,
    log=None,
    announce=None,
) -> tuple[dict, dict]:
    """Train every gradient setting for every seed on ``spec``; return (summary, {gradient: first seed's model}).

    The summary is :func:`summarise`'s. With ``probe``, the first seed's models are probed (``probes``); with
    ``probe_every_seed`` too, every model is probed right after training (``probes_by_seed[gradient]``, a list
    over seeds; ``probes`` repeats the first seed's). ``announce(k, n, gradient, seed)`` is called before model
    k of n (k from 1) trains, e.g. to show progress.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out_root, seeds = Path(out_root), list(seeds)
    device = resolve_device(train_cfg.device)
    seq_losses: dict[str, list[np.ndarray]] = {g: [] for g in gradients}
    runs: dict[str, list[str]] = {g: [] for g in gradients}
    train_time: dict[str, list[float]] = {g: [] for g in gradients}
    probes: dict[str, list[dict]] = {g: [] for g in gradients}
    models: dict[str, Regressor] = {}
    trivial = None
    for i, (seed, gradient) in enumerate((s, g) for s in seeds for g in gradients):
        run_dir = out_root / (f"{spec.task}-{gradient}" + (f"-seed{seed}" if len(seeds) > 1 else ""))
        if announce is not None:
            announce(i + 1, len(seeds) * len(gradients), gradient, seed)
        log(f"[{spec.task}] training {gradient} (seed {seed}, {train_cfg.steps} steps) -> {run_dir}")
        model, task, result = train_regression(spec, replace(model_cfg, gradient=gradient),
                                               replace(train_cfg, seed=seed), run_dir, eval_sequences=eval_sequences)
        model.eval()
        seq_losses[gradient].append(task.sequence_losses(model, device) / spec.p)
        runs[gradient].append(str(run_dir))
        train_time[gradient].append(result["train_time_s"])
        if trivial is None:  # the same held-out sequences for every seed: one trivial loss per sequence
            trivial = task.sequence_losses(None, device) / spec.p
        log(f"[{spec.task}] {gradient}: {seq_losses[gradient][-1].mean():.4f} Huber/p "
            f"({result['train_time_s']:.0f} s)")
        if probe and (probe_every_seed or seed == seeds[0]):
            log(f"[{spec.task}] probing {gradient} (seed {seed})")
            probes[gradient].append(probe_model(model, task, device, probe_max_lag, probe_sequences))
        if seed == seeds[0]:
            models[gradient] = model
    summary = summarise(spec, seeds, {g: np.stack(v) for g, v in seq_losses.items()}, trivial)
    summary["runs"] = runs
    summary["train_time_s"] = {g: float(np.mean(v)) for g, v in train_time.items()}
    if probe:
        summary["probes"] = {g: p[0] for g, p in probes.items()}
        if probe_every_seed:
            summary["probes_by_seed"] = probes
    return summary, models


def summarise(spec: RegressionSpec, seeds: list[int], losses: dict[str, np.ndarray], trivial: np.ndarray) -> dict:
    """Summary of one comparison from per-sequence losses ``losses[gradient]`` (S seeds, U sequences) and the
    trivial predictor's (U,), in units of :data:`UNIT`.

    Holds ``trivial`` and one key per gradient (means over seeds), ``fraction_of_trivial`` (mean over seeds of
    each seed's fraction) with ``fraction_of_trivial_ci95``, ``per_seed``, ``n_seeds``, ``gap`` (gradient −
    vanilla: :func:`myopia.analysis.stats.paired_gap` over seeds × held-out sequences, seed-inclusive ``ci95``;
    ``lo``/``hi`` repeat it) and ``null`` (vanilla against vanilla across seeds)."""
    gradients = list(losses)
    S, U = len(seeds), len(trivial)
    boot = HierarchicalBootstrap(U, S, seed=seeds[0])
    triv = boot.unit_means(trivial)
    summary: dict = {"task": spec.to_dict(), "unit": UNIT, "seeds": seeds, "n_seeds": S, "eval_seed": EVAL_SEED,
                     "eval_sequences": U, "trivial": float(trivial.mean()),
                     "training_noise": training_noise_note(S)}
    per_seed = {"trivial": [float(trivial.mean())] * S}
    for g in gradients:
        per_seed[g] = [float(row.mean()) for row in losses[g]]
        summary[g] = float(np.mean(per_seed[g]))
    fractions = {g: boot.unit_means(losses[g]) / triv for g in gradients}
    summary["fraction_of_trivial"] = {"trivial": 1.0, **{g: float(fractions[g].point[0]) for g in gradients}}
    summary["fraction_of_trivial_ci95"] = {g: fractions[g].summary()["ci95"] for g in gradients}
    summary["per_seed"] = per_seed
    if "vanilla" in gradients:
        gaps = {}
        for g in gradients:
            if g == "vanilla":
                continue
            gap = paired_gap(losses[g], losses["vanilla"], seed=seeds[0])
            gap["lo"], gap["hi"] = gap["ci95"]
            gap["fraction_of_trivial"] = (fractions[g] - fractions["vanilla"]).summary()
            gaps[g] = gap
        summary["gap"] = gaps
        summary["null"] = null_gap(losses["vanilla"], np.arange(U), seed=seeds[0])
    return summary
