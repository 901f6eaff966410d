"""The training loop: AdamW, warmup + cosine, clipping, held-out evaluation, checkpoints, exact resume, DDP.

A *task* supplies the data and the loss; the trainer owns everything else. A task implements

    examples(indices, device) -> batch        the training examples with these global indices
    count(batch) -> int                       how many loss terms the batch holds
    loss(model, batch) -> Tensor              the *sum* of those loss terms
    evaluate(model, device) -> dict           held-out metrics, at least {"loss": ...}
    describe() -> dict                        what to record in config.json
    tokens_per_example: int

Step s uses global examples s*B .. s*B+B-1 (B = ``batch_size``), split over ranks and micro-batches, and
the loss is the sum over the global batch divided by its global count. The result is independent of world
size and micro-batching up to float summation order, and paired runs see identical data.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint, save_model
from .errors import MyopiaError
from .io import MetricsLog, provenance, read_json, write_json

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # global: examples per optimizer step, over all ranks
    micro_batch_size: int = 0  # per rank per forward/backward; 0 = the whole rank share at once
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = -1  # -1: 1% of steps (at least 1)
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 250
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MyopiaError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}")
        for name in ("micro_batch_size", "eval_every", "ckpt_every", "log_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise MyopiaError(f"{name.replace('_', '-')} must be an integer >= 0, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise MyopiaError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise MyopiaError(f"min-lr-ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise MyopiaError("weight-decay and grad-clip must be >= 0")
        if self.precision not in ("fp32", "bf16"):
            raise MyopiaError(f"precision must be fp32 or bf16, got {self.precision!r}")

    @property
    def warmup(self) -> int:
        return max(1, self.steps // 100) if self.warmup_steps < 0 else self.warmup_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr`` at the end."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (and embeddings), not on biases and norm gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=1e-8)


# ------------------------------------------------------------------------------------------------------------
# Distributed helpers (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)
# ------------------------------------------------------------------------------------------------------------


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); (0, 1, 0) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def init_distributed() -> None:
    """Initialise the process group when launched by torchrun (nccl on CUDA, gloo on CPU)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        torch.distributed.init_process_group(backend)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info()[2])
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise MyopiaError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MyopiaError("device cuda requested but no CUDA GPU is available")
    return dev


def _all_reduce_sum(values: list[torch.Tensor], world: int) -> None:
    if world > 1:
        for v in values:
            torch.distributed.all_reduce(v)


def _all_reduce_grads(model: torch.nn.Module, world: int) -> None:
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


# ------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------


def _rank_slices(batch_size: int, world: int, rank: int, micro: int) -> list[tuple[int, int]]:
    """This rank's contiguous share of [0, batch_size), cut into micro-batches."""
    per = [batch_size // world + (1 if r < batch_size % world else 0) for r in range(world)]
    lo = sum(per[:rank])
    hi = lo + per[rank]
    step = micro if micro > 0 else max(1, hi - lo)
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def train(
    model: torch.nn.Module,
    task,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    run_config: dict,
    resume: bool = False,
    flops_per_example: float | None = None,
    on_checkpoint=None,
) -> dict:
    """Train ``model`` on ``task``; write config.json, metrics.jsonl, checkpoints and result.json to ``out_dir``.

    ``run_config`` is everything needed to rebuild the run (model config, task settings, CLI arguments); it is
    stored in config.json and a resumed run must present the same one. ``on_checkpoint(step, model)``, if
    given, is called on the main process after each checkpoint is written (e.g. to keep weight snapshots).
    Returns the result dict.
    """
    rank, world, _ = dist_info()
    device = resolve_device(cfg.device)
    out = Path(out_dir)
    is_main = rank == 0
    ckpt_path = out / CHECKPOINT
    full_config = {"run": run_config, "train": cfg.to_dict(), "task": task.describe(), "world_size": world}
    if cfg.batch_size < world:
        raise MyopiaError(f"batch-size {cfg.batch_size} is smaller than the number of processes ({world})")

    model.to(device)
    optimizer = make_optimizer(model, cfg)
    start_step = 0
    if resume and ckpt_path.exists():
        saved = read_json(out / "config.json")
        mismatch = _config_mismatch(saved, full_config)
        if mismatch:
            raise MyopiaError(f"cannot resume {out}: its config differs from this run ({mismatch})")
        meta = load_checkpoint(ckpt_path, model, optimizer)
        start_step = int(meta["step"])
    elif is_main:
        if (out / "result.json").exists() or ckpt_path.exists():
            raise MyopiaError(f"{out} already holds a run; use --resume to continue it or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", full_config)
    log = MetricsLog(out / "metrics.jsonl")
    if is_main and start_step > 0:
        log.truncate_after(start_step)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    slices = _rank_slices(cfg.batch_size, world, rank, cfg.micro_batch_size)
    tokens_per_step = cfg.batch_size * task.tokens_per_example
    last_eval: dict = {}
    t_start = time.perf_counter()
    bar = _progress(cfg, start_step, is_main)
    tokens_window, t_window = 0, time.perf_counter()

    for step in range(start_step, cfg.steps):
        lr = lr_at(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        optimizer.zero_grad(set_to_none=True)
        base = step * cfg.batch_size
        batches = [task.examples(np.arange(base + a, base + b), device) for a, b in slices]
        counts = torch.tensor([float(sum(task.count(b) for b in batches))], dtype=torch.float64, device=device)
        _all_reduce_sum([counts], world)
        total = counts.item()
        loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
        for batch in batches:
            with autocast:
                loss = task.loss(model, batch)
            (loss / total).backward()
            loss_sum += loss.detach().double()
        _all_reduce_sum([loss_sum], world)
        _all_reduce_grads(model, world)
        train_loss = loss_sum.item() / total
        if not math.isfinite(train_loss):
            raise MyopiaError(_nan_message(step, ckpt_path))
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else 1e30)
        if not torch.isfinite(grad_norm):
            raise MyopiaError(_nan_message(step, ckpt_path, what="gradient norm"))
        optimizer.step()

        done = step + 1
        tokens_window += tokens_per_step
        if is_main and (done % max(1, cfg.log_every) == 0 or done == cfg.steps):
            now = time.perf_counter()
            tps = tokens_window / max(now - t_window, 1e-9)
            tokens_window, t_window = 0, now
            log.append({"step": done, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm.item(),
                        "tokens": done * tokens_per_step, "tokens_per_s": tps,
                        "elapsed_s": now - t_start})
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tps:,.0f}", refresh=False)
        if bar is not None:
            bar.update(1)
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
            last_eval = _evaluate(model, task, device, autocast, is_main, world)
            if is_main:
                log.append({"step": done, **{f"eval_{k}": v for k, v in last_eval.items()}})
                if bar is None and cfg.progress:
                    print(f"step {done}/{cfg.steps}  train {train_loss:.4f}  eval {last_eval['loss']:.4f}",
                          file=sys.stderr, flush=True)
        if is_main and ((cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps):
            save_checkpoint(ckpt_path, model, optimizer, {"step": done, "config": full_config})
            if on_checkpoint is not None:
                on_checkpoint(done, model)
        if world > 1:
            torch.distributed.barrier()
    if bar is not None:
        bar.close()

    result = {}
    if is_main:
        if not last_eval:  # resumed a finished run
            last_eval = _evaluate(model, task, device, autocast, is_main, world)
        elapsed = time.perf_counter() - t_start
        tokens = cfg.steps * tokens_per_step
        result = {
            "config": full_config,
            "seed": cfg.seed,
            "steps": cfg.steps,
            "tokens_seen": tokens,
            "examples_seen": cfg.steps * cfg.batch_size,
            "flops": None if flops_per_example is None else flops_per_example * cfg.steps * cfg.batch_size,
            "final_eval": last_eval,
            "eval_loss": last_eval["loss"],
            "train_time_s": elapsed,
            "resumed_from_step": start_step or None,
            **provenance(),
        }
        save_model(out / "model.safetensors", model, {"config": full_config, "step": cfg.steps})
        write_json(out / "result.json", result)
    if world > 1:
        torch.distributed.barrier()
    return result


def _evaluate(model, task, device, autocast, is_main, world) -> dict:
    result: dict = {}
    if is_main:
        model.eval()
        with autocast:
            result = task.evaluate(model, device)
        model.train()
    return result


def _nan_message(step: int, ckpt_path: Path, what: str = "loss") -> str:
    kept = f"; the last good checkpoint {ckpt_path} is kept" if ckpt_path.exists() else ""
    return f"non-finite {what} at step {step + 1} (NaN or inf): stopping{kept}. Try a lower --lr"


def _config_mismatch(saved: dict, current: dict) -> str:
    """First differing key between two configs (ignoring the resume flag itself), or ''."""

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k in ("resume", "progress"):
                    continue
                if k not in a or k not in b:
                    return f"{path}{k} present in only one"
                d = walk(a[k], b[k], f"{path}{k}.")
                if d:
                    return d
            return ""
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            if len(a) != len(b):
                return f"{path.rstrip('.')} differs"
            for x, y in zip(a, b):
                d = walk(x, y, path)
                if d:
                    return d
            return ""
        return "" if a == b else f"{path.rstrip('.')}: {a!r} vs {b!r}"

    import json

    return walk(json.loads(json.dumps(saved)), json.loads(json.dumps(current, default=str)), "")


def _progress(cfg: TrainConfig, start: int, is_main: bool):
    if not (cfg.progress and is_main and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=start, unit="step", dynamic_ncols=True, leave=True)
