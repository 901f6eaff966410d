"""Paired gradient comparisons on the synthetic regression tasks (experiment code; the tasks live in
:mod:`myopia.synthetic.regression`).

Every gradient setting of a comparison trains from the same initialisation (seeded by ``seed``) on the same
examples in the same order with the same hyperparameters, and is evaluated on the same fresh held-out
sequences; gaps come with a paired bootstrap interval over those sequences.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import MyopiaError
from ..model import GPTConfig
from ..synthetic.bootstrap import paired_bootstrap
from ..synthetic.probes import lookback_probes
from ..synthetic.regression import Regressor, RegressionSpec, SequenceRegressionTask
from ..train import TrainConfig, resolve_device, train

UNIT = "Huber loss (delta 1) per position, divided by p, on fresh held-out sequences"


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
) -> tuple[Regressor, SequenceRegressionTask, dict]:
    """Train one regressor (gradient setting in ``model_cfg``) on ``spec``; the run directory is ``out``."""
    if model_cfg.seq_len < spec.seq_len:
        raise MyopiaError(f"the model's seq_len {model_cfg.seq_len} is shorter than the task's {spec.seq_len}")
    task = SequenceRegressionTask(spec, seed=train_cfg.seed, eval_sequences=eval_sequences)
    model = build_regressor(model_cfg, train_cfg.seed)
    run_config = {"command": "synthetic", "spec": spec.to_dict(), "model": model_cfg.to_dict(),
                  "eval_sequences": eval_sequences}
    result = train(model, task, train_cfg, out, run_config=run_config)
    return model, task, result


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
    log=None,
) -> tuple[dict, dict]:
    """Train every gradient setting for every seed on ``spec``; return (summary, {gradient: seed-0 model}).

    The summary holds, in units of :data:`UNIT`, ``trivial`` and one key per gradient (means over seeds),
    ``fraction_of_trivial``, ``per_seed``, ``gap`` (gradient − vanilla with a paired bootstrap 95% interval,
    seed 0; and the across-seed mean/sd when several seeds ran) and, with ``probe``, lookback-probe R² tables.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out_root = Path(out_root)
    device = resolve_device(train_cfg.device)
    seq_losses: dict[str, list[np.ndarray]] = {g: [] for g in gradients}
    trivial_losses: list[np.ndarray] = []
    runs: dict[str, list[str]] = {g: [] for g in gradients}
    train_time: dict[str, list[float]] = {g: [] for g in gradients}
    models: dict[str, Regressor] = {}
    tasks: dict[str, SequenceRegressionTask] = {}
    for seed in seeds:
        for gradient in gradients:
            run_dir = out_root / (f"{spec.task}-{gradient}" + (f"-seed{seed}" if len(seeds) > 1 else ""))
            log(f"[{spec.task}] training {gradient} (seed {seed}, {train_cfg.steps} steps) -> {run_dir}")
            model, task, result = train_regression(
                spec, replace(model_cfg, gradient=gradient), replace(train_cfg, seed=seed), run_dir,
                eval_sequences=eval_sequences,
            )
            model.eval()
            seq_losses[gradient].append(task.sequence_losses(model, device) / spec.p)
            runs[gradient].append(str(run_dir))
            train_time[gradient].append(result["train_time_s"])
            if seed == seeds[0]:
                models[gradient], tasks[gradient] = model, task
            log(f"[{spec.task}] {gradient}: {seq_losses[gradient][-1].mean():.4f} Huber/p "
                f"({result['train_time_s']:.0f} s)")
        trivial_losses.append(task.sequence_losses(None, device) / spec.p)

    trivial_means = [float(t.mean()) for t in trivial_losses]
    summary: dict = {"task": spec.to_dict(), "unit": UNIT, "seeds": list(seeds),
                     "trivial": float(np.mean(trivial_means))}
    per_seed = {"trivial": trivial_means}
    for g in gradients:
        per_seed[g] = [float(s.mean()) for s in seq_losses[g]]
        summary[g] = float(np.mean(per_seed[g]))
    summary["fraction_of_trivial"] = {g: float(np.mean([v / t for v, t in zip(per_seed[g], trivial_means)]))
                                      for g in ["trivial", *gradients]}
    summary["per_seed"] = per_seed
    if "vanilla" in gradients:
        gaps = {}
        for g in gradients:
            if g == "vanilla":
                continue
            gap = paired_bootstrap(seq_losses[g][0], seq_losses["vanilla"][0], seed=seeds[0])
            if len(seeds) > 1:
                diffs = np.array(per_seed[g]) - np.array(per_seed["vanilla"])
                gap["seed_mean"], gap["seed_sd"] = float(diffs.mean()), float(diffs.std(ddof=1))
            gaps[g] = gap
        summary["gap"] = gaps
    summary["runs"] = runs
    summary["train_time_s"] = {g: float(np.mean(v)) for g, v in train_time.items()}
    if probe:
        summary["probes"] = {}
        for g in gradients:
            log(f"[{spec.task}] probing {g}")
            summary["probes"][g] = lookback_probes(models[g], tasks[g], max_lag=probe_max_lag, device=device,
                                                     fit_sequences=probe_sequences[0],
                                                     test_sequences=probe_sequences[1])
    return summary, models
