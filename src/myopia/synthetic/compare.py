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

__all__ = ["UNIT", "EVAL_SEED", "build_regressor", "train_regression", "train_seed", "compare_regression", "assemble",
           "summarise"]

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


def train_seed(
    spec: RegressionSpec,
    gradients: list[str],
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    out_root: str | Path,
    seed: int,
    *,
    suffix: bool = True,
    eval_sequences: int = 2048,
    probe: bool = False,
    probe_max_lag: int = 20,
    probe_sequences: tuple[int, int] = (2048, 1024),
    keep_models: bool = False,
    log=None,
    announce=None,
) -> dict:
    """Train every gradient setting for one seed (runs ``out_root/TASK-GRADIENT[-seedS]``), score and (with
    ``probe``) probe each model right after training. ``announce(i, gradient, seed)`` is called before the i-th
    model (from 0).

    Returns {"seed", "losses": {gradient: (U,) per-sequence Huber/p}, "trivial": (U,), "runs": {gradient: path},
    "train_time_s": {gradient: s}, "probes": {gradient: lookback probes with ``by_position``} (with ``probe``),
    "models": {gradient: model} (with ``keep_models``)}."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    device = resolve_device(train_cfg.device)
    out: dict = {"seed": seed, "losses": {}, "runs": {}, "train_time_s": {}, "probes": {}, "models": {}}
    for i, gradient in enumerate(gradients):
        run_dir = Path(out_root) / (f"{spec.task}-{gradient}" + (f"-seed{seed}" if suffix else ""))
        if announce is not None:
            announce(i, gradient, seed)
        log(f"[{spec.task}] training {gradient} (seed {seed}, {train_cfg.steps} steps) -> {run_dir}")
        model, task, result = train_regression(spec, replace(model_cfg, gradient=gradient),
                                               replace(train_cfg, seed=seed), run_dir, eval_sequences=eval_sequences)
        model.eval()
        out["losses"][gradient] = task.sequence_losses(model, device) / spec.p
        out["runs"][gradient], out["train_time_s"][gradient] = str(run_dir), result["train_time_s"]
        if "trivial" not in out:  # the same held-out sequences for every seed: one trivial loss per sequence
            out["trivial"] = task.sequence_losses(None, device) / spec.p
        log(f"[{spec.task}] {gradient}: {out['losses'][gradient].mean():.4f} Huber/p ({result['train_time_s']:.0f} s)")
        if probe:
            log(f"[{spec.task}] probing {gradient} (seed {seed})")
            out["probes"][gradient] = probe_model(model, task, device, probe_max_lag, probe_sequences)
        if keep_models:
            out["models"][gradient] = model
    return out


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

    The summary is :func:`assemble`'s. With ``probe``, the first seed's models are probed; with
    ``probe_every_seed`` too, every model (see :func:`assemble`). ``announce(k, n, gradient, seed)`` is called
    before model k of n (k from 1) trains, e.g. to show progress.
    """
    seeds, n = list(seeds), len(seeds) * len(gradients)
    per_seed = []
    for j, seed in enumerate(seeds):
        tell = None if announce is None else (lambda i, g, s, j=j: announce(j * len(gradients) + i + 1, n, g, s))
        per_seed.append(train_seed(spec, gradients, model_cfg, train_cfg, out_root, seed, suffix=len(seeds) > 1,
                                   eval_sequences=eval_sequences, probe=probe and (probe_every_seed or j == 0),
                                   probe_max_lag=probe_max_lag, probe_sequences=probe_sequences,
                                   keep_models=j == 0, log=log, announce=tell))
    return assemble(spec, per_seed, probe=probe, probe_every_seed=probe_every_seed), per_seed[0]["models"]


def assemble(spec: RegressionSpec, per_seed: list[dict], *, probe: bool = False, probe_every_seed: bool = False) -> dict:
    """The summary of a comparison from :func:`train_seed`'s results (in seed order): :func:`summarise`'s, with
    ``runs`` and ``train_time_s`` (mean over seeds) per gradient and, with ``probe``, ``probes`` (the first
    seed's) and, with ``probe_every_seed``, ``probes_by_seed`` (per gradient a list over seeds)."""
    gradients = list(per_seed[0]["losses"])
    seeds = [r["seed"] for r in per_seed]
    losses = {g: np.stack([r["losses"][g] for r in per_seed]) for g in gradients}
    summary = summarise(spec, seeds, losses, per_seed[0]["trivial"])
    summary["runs"] = {g: [r["runs"][g] for r in per_seed] for g in gradients}
    summary["train_time_s"] = {g: float(np.mean([r["train_time_s"][g] for r in per_seed])) for g in gradients}
    if probe:
        summary["probes"] = {g: per_seed[0]["probes"][g] for g in gradients}
        if probe_every_seed:
            summary["probes_by_seed"] = {g: [r["probes"][g] for r in per_seed] for g in gradients}
    return summary


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
