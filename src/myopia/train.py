"""The training loop: AdamW, warmup + cosine, clipping, held-out evaluation, checkpoints, exact resume, scale-out.

A *task* supplies the data and the loss; the trainer owns everything else. A task implements

    examples(indices, device) -> batch        the training examples with these global indices
    count(batch) -> int                       how many loss terms the batch holds
    loss(model, batch) -> Tensor              the *sum* of those loss terms
    evaluate(model, device) -> dict           held-out metrics, at least {"loss": ...}; may take shard= (sharded)
    describe() -> dict                        what to record in config.json
    tokens_per_example: int
    validate(model) -> None                   optional: raise MyopiaError if model and task do not fit

Step s uses global examples s*B .. s*B+B-1 (B = ``batch_size``), split over ranks and micro-batches, and
the loss is the sum over the global batch divided by its global count. The result is independent of world
size, sharding and micro-batching up to float summation order (dropout aside), and paired runs see identical
data. Under ``torchrun`` the engine of :mod:`myopia.distributed` (DDP, or FSDP2 with ``shard``) synchronises
gradients; checkpoints are distributed checkpoints (:mod:`myopia.checkpoint`); :mod:`myopia.progress` records.
Rank 0 alone prints and writes files; every rank returns the same result dict.

**Files.** ``config.json``, ``metrics.jsonl`` (every ``log_every`` steps and every evaluation),
``checkpoints/step_XXXXXXX/`` (every ``ckpt_every`` steps and at the end; the previous one is kept),
``model.safetensors`` and ``result.json`` (written last: its presence means the run finished), optionally
``tensorboard/``, and ``.lock`` (held while a process writes the run). Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (
    RunLock,
    branch_state_dir,
    read_checkpoint_meta,
    export_model,
    full_model_state,
    load_distributed,
    old_version_error,
    plan_resume,
    remove_checkpoints_after,
    save_distributed,
)
from .config import option
from .distributed import (
    SHARD_MODES,
    Engine,
    dist_info,
    gather,
    init_distributed,
    is_main_process,
    launched_world_size,
    local_tensor,
    mark_all_ranks,
    memory_plan,
    on_all_ranks,
    share,
    shutdown_distributed,
    sum_over_ranks,
)
from .errors import MyopiaError, first_line
from .io import MetricsLog, provenance, write_json
from .progress import Recorder
from .rundir import CONFIG, METRICS, MODEL, RESULT

PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("sqrt", "linear")
TIMING_KEYS = ("tokens_per_s", "elapsed_s", "train_time_s", "created")  # fields that differ between identical runs

__all__ = ["TrainConfig", "train", "lr_at", "make_optimizer", "resolve_device", "resolve_precision",
           "autocast_context", "validate_model_task", "dist_info", "is_main_process", "init_distributed",
           "shutdown_distributed", "launched_world_size", "TIMING_KEYS"]


def auto_eval_every(steps: int) -> int:
    """The evaluation interval when none is given: about ten evaluations per run (at least every step, at most
    every 250), so that a short run's held-out curve has points; the trainer always evaluates at the end too."""
    return max(1, min(250, int(steps) // 10)) if isinstance(steps, (int, np.integer)) and steps > 0 else 250


@dataclass
class TrainConfig:
    """Optimisation, evaluation, checkpointing and device settings of one run.

    Each field's ``metadata["help"]`` is its command-line help (:mod:`myopia.cli.common` builds the options).
    """

    steps: int = option(1000, "optimizer steps")
    batch_size: int = option(32, "global batch: sequences per optimizer step, over all processes")
    micro_batch_size: int = option(0, "sequences per process per forward/backward (0 = the whole share at once)")
    lr: float = option(1e-3, "peak learning rate")
    min_lr_ratio: float = option(0.1, "final learning rate / peak (cosine decay)")
    warmup_steps: int = option(-1, "linear warmup steps, a floor when warmup-frac > 0 (-1: 1% of the steps, at "
                               "least 1)")
    warmup_frac: float = option(0.0, "warmup of at least this fraction of the steps: max(warmup-frac * steps, "
                                "warmup-steps) (0: warmup-steps alone)")
    schedule: str = option("cosine", "learning-rate schedule after warmup: cosine (decay to min-lr-ratio * lr) or "
                           "wsd (warmup-stable-decay: constant, then decay over the last decay-frac of the steps)",
                           choices=SCHEDULES)
    decay_frac: float = option(0.2, "wsd: fraction of the steps spent decaying to min-lr-ratio * lr")
    decay_shape: str = option("sqrt", "wsd decay: sqrt (1 - sqrt(progress), Hagele et al. 2024) or linear",
                              choices=DECAY_SHAPES)
    mup_base_width: int = option(0, "width-scaled lr (muP-style): hidden matrices' Adam lr is lr * base / width, "
                                 "embeddings and norms keep lr (0: off)")
    weight_decay: float = option(0.1, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.95, "AdamW beta2")
    grad_clip: float = option(1.0, "gradient-norm clipping (0: none)")
    eval_every: int = option(250, "held-out evaluation every N steps (0: only at the end)",
                             unset="a tenth of --steps, at most 250: about ten evaluations, the last at the end")
    ckpt_every: int = option(500, "checkpoint every N steps (0: only at the end)")
    log_every: int = option(10, "training loss to metrics.jsonl every N steps")
    seed: int = option(0, "initialisation and data-order seed")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ... (auto: cuda:LOCAL_RANK if a GPU, else cpu)")
    precision: str = option("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=PRECISIONS)
    progress: bool = option(True, "progress bar / progress lines on stderr")
    compile: bool = option(False, "torch.compile the model's forward (slow start; CUDA mostly)")
    compile_backend: str = option("inductor", "torch.compile backend")
    tensorboard: bool = option(False, "also write TensorBoard events to OUT/tensorboard")
    shard: str = option("none", "none: DDP under torchrun; grad: FSDP2, ZeRO-2-like; full: FSDP2, ZeRO-3-like",
                        choices=SHARD_MODES)
    activation_checkpointing: bool = option(False, "recompute each block's activations in the backward pass (less "
                                            "memory, ~1/3 more compute)")
    async_checkpoint: bool = option(False, "write checkpoints in the background (DCP async_save)")
    device_memory_gb: float = option(0.0, "refuse a run whose memory plan exceeds this per process (0: the GPU's "
                                     "own memory)")
    document_mask: bool = option(True, "keep attention inside documents: no position attends across an "
                                       "end-of-document boundary, in every gradient mode (off: windows run across "
                                       "documents, as in one token stream)", both_switches=True)

    def __post_init__(self) -> None:
        if self.eval_every is None:  # the command line's default: about ten evaluations, the last at the end
            self.eval_every = auto_eval_every(self.steps)
        self.validate()

    def validate(self) -> None:
        """Types and ranges of every field; raises :class:`MyopiaError` naming the (CLI) option."""

        def flag(name):
            return name.replace("_", "-")

        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
                raise MyopiaError(f"{flag(name)} must be {what}, got {v!r}")

        def number(name, lo, hi=math.inf, *, lo_open=False, hi_open=False):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                if hi == math.inf:
                    what = f"> {lo}" if lo_open else f">= {lo}"
                else:
                    what = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
                raise MyopiaError(f"{flag(name)} must be a finite number {what}, got {v!r}")

        for name in ("steps", "batch_size"):
            integer(name, 1)
        for name in ("micro_batch_size", "eval_every", "ckpt_every", "log_every", "seed"):
            integer(name, 0)
        integer("warmup_steps", -1)
        integer("mup_base_width", 0)
        number("warmup_frac", 0, 1, hi_open=True)
        number("decay_frac", 0, 1, lo_open=True)
        if self.schedule not in SCHEDULES:
            raise MyopiaError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.decay_shape not in DECAY_SHAPES:
            raise MyopiaError(f"decay-shape must be one of {', '.join(DECAY_SHAPES)}, got {self.decay_shape!r}")
        number("lr", 0, lo_open=True)
        number("min_lr_ratio", 0, 1)
        number("weight_decay", 0)
        number("adam_beta1", 0, 1, hi_open=True)
        number("adam_beta2", 0, 1, hi_open=True)
        number("grad_clip", 0)
        if not isinstance(self.device, str) or not self.device:
            raise MyopiaError(f"device must be a name such as auto, cpu, cuda or cuda:1, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise MyopiaError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        number("device_memory_gb", 0)
        if self.shard not in SHARD_MODES:
            raise MyopiaError(f"shard must be one of {', '.join(SHARD_MODES)}, got {self.shard!r}")
        for name in ("progress", "compile", "tensorboard", "activation_checkpointing", "async_checkpoint",
                     "document_mask"):
            if not isinstance(getattr(self, name), bool):
                raise MyopiaError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise MyopiaError(f"compile-backend must be a backend name, got {self.compile_backend!r}")

    @property
    def warmup(self) -> int:
        """Warmup steps: ``max(ceil(warmup_frac * steps), warmup_steps)``; 1% of the steps when both are unset."""
        if self.warmup_frac <= 0:
            return max(1, self.steps // 100) if self.warmup_steps < 0 else self.warmup_steps
        return max(1, self.warmup_steps, math.ceil(self.warmup_frac * self.steps - 1e-9))

    @property
    def decay_steps(self) -> int:
        """wsd: steps of the final decay, ``round(decay_frac * steps)``, at least 1."""
        return max(1, math.floor(self.decay_frac * self.steps + 0.5))

    @property
    def stable_end(self) -> int:
        """wsd: the first decaying step (the learning rate is constant on ``warmup .. stable_end - 1``)."""
        return self.steps - self.decay_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Rebuild a saved config (unknown keys ignored); one without ``document_mask`` predates 0.2.0 and is
        refused (:func:`myopia.checkpoint.old_version_error`)."""
        if "document_mask" not in d:
            raise old_version_error("this training config", "it has no document_mask")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the update of step ``step`` (0-based): linear warmup to ``lr`` over ``warmup`` steps, then

    - cosine: cosine decay to ``min_lr_ratio * lr`` at the end;
    - wsd: constant ``lr`` until ``stable_end``, then over the last ``decay_steps`` a decay with progress
      ``p = (step - stable_end + 1) / decay_steps`` in (0, 1]: ``lr * (m + (1 - m) * (1 - f(p)))`` with
      ``m = min_lr_ratio`` and ``f(p) = sqrt(p)`` (``decay_shape`` sqrt) or ``p`` (linear); the last step runs
      at ``m * lr``. The stable part does not depend on ``steps``: runs of different lengths share it, which
      is what lets a cooldown branch from a longer run (:func:`train`'s ``branch_from``).
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "wsd":
        if step < cfg.stable_end:
            return cfg.lr
        p = min(1.0, (step - cfg.stable_end + 1) / cfg.decay_steps)
        f = math.sqrt(p) if cfg.decay_shape == "sqrt" else p
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - f))
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (and embeddings), not on biases and norm gains.

    With ``mup_base_width`` > 0 the learning rate is width-scaled in the spirit of muP for Adam (Yang et al.
    2022, "Tensor Programs V", Table 3): hidden matrices (every parameter of >= 2 dims that is not an
    ``nn.Embedding`` weight, so attention and MLP matrices) get ``lr * base / width`` (``width`` = the model's
    ``d_model``), embeddings (and the output head tied to them), biases and norm gains keep ``lr``. Only the
    per-layer Adam learning rate is scaled: initialisation and the output multiplier are the standard
    parametrisation's (an lr-only muTransfer). Each group's factor is stored as ``lr_scale`` (:func:`set_lr`).
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    if cfg.mup_base_width <= 0:
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        embedding = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        scale = cfg.mup_base_width / model_width(model)
        groups = [{"params": [p for p in decay if id(p) not in embedding], "weight_decay": cfg.weight_decay,
                   "lr_scale": scale},
                  {"params": [p for p in decay if id(p) in embedding], "weight_decay": cfg.weight_decay,
                   "lr_scale": 1.0},
                  {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
        groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=1e-8)


def model_width(model: torch.nn.Module) -> int:
    """The residual width of a model (``cfg.d_model``, or a Hugging Face config's ``hidden_size``/``n_embd``)."""
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    for name in ("d_model", "hidden_size", "n_embd"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    raise MyopiaError(f"mup-base-width needs the model's width, but {type(model).__name__} has no d_model")




# ------------------------------------------------------------------------------------------------------------
# Devices and precision
# ------------------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info()[2])
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise MyopiaError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MyopiaError("device cuda requested but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MyopiaError(f"device {name} requested but only {torch.cuda.device_count()} GPUs are visible")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type not in ("cpu", "mps"):
        raise MyopiaError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA GPUs that support it, fp32 elsewhere; ``bf16`` is checked against the device."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MyopiaError(f"{torch.cuda.get_device_name(device)} does not support bf16; use --precision fp32")
    return precision


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"`` (matmuls in bf16; losses, norms, softmax statistics in fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ------------------------------------------------------------------------------------------------------------
# Checks before any work
# ------------------------------------------------------------------------------------------------------------


def _model_context(model) -> int | None:
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    for name in ("seq_len", "max_position_embeddings", "n_positions"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _model_vocab(model) -> int | None:
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    v = getattr(cfg, "vocab_size", None)
    return v if isinstance(v, int) and v > 0 else None


def validate_model_task(model, task) -> None:
    """Check that ``task`` follows the task protocol and fits ``model``: context length, vocabulary.

    Also calls the task's own ``validate(model)`` when it has one. Raises :class:`MyopiaError`.
    """
    for name in ("examples", "count", "loss", "evaluate", "describe"):
        if not callable(getattr(task, name, None)):
            raise MyopiaError(f"task {type(task).__name__} has no {name}() method (see myopia.train)")
    tpe = getattr(task, "tokens_per_example", None)
    if isinstance(tpe, bool) or not isinstance(tpe, (int, np.integer)) or tpe < 1:
        raise MyopiaError(f"task {type(task).__name__}.tokens_per_example must be a positive integer, got {tpe!r}")
    context, task_len = _model_context(model), getattr(task, "seq_len", None)
    if context is not None and isinstance(task_len, int) and task_len > context:
        raise MyopiaError(f"sequence length {task_len} exceeds the model's context of {context} positions")
    corpus = getattr(task, "corpus", None)
    data_vocab = getattr(task, "vocab_size", None) or getattr(corpus, "vocab_size", None)
    model_vocab = _model_vocab(model)
    if isinstance(data_vocab, int) and model_vocab is not None and data_vocab > model_vocab:
        raise MyopiaError(
            f"the data uses a vocabulary of {data_vocab} token ids but the model has only {model_vocab}: "
            "was the data tokenized with another tokenizer?"
        )
    if callable(getattr(task, "validate", None)):
        task.validate(model)


def _check_compile(cfg: TrainConfig) -> None:
    if not cfg.compile:
        return
    try:
        import torch._dynamo  # noqa: F401

        backends = torch._dynamo.list_backends(exclude_tags=())
    except Exception as exc:  # pragma: no cover - depends on the platform
        raise MyopiaError(f"--compile is not available here ({type(exc).__name__}: {exc})") from None
    if cfg.compile_backend not in backends:
        available = ", ".join(sorted(backends))
        raise MyopiaError(f"unknown compile backend {cfg.compile_backend!r}; available: {available}")


def _check_tensorboard(cfg: TrainConfig, is_main: bool) -> None:
    if cfg.tensorboard and is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise MyopiaError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None


# ------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------


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
    stop_when=None,
    branch_at=(),
    branch_from: str | Path | None = None,
) -> dict:
    """Train ``model`` on ``task``; write config.json, metrics.jsonl, checkpoints and result.json to ``out_dir``.

    ``run_config`` is everything needed to rebuild the run (model config, task settings, CLI arguments); it is
    stored in config.json and a resumed run must present the same one. ``on_checkpoint(step, model)``, if
    given, is called on the main process after each checkpoint is written (e.g. to keep weight snapshots; under
    FSDP ``model`` is a view whose ``state_dict()`` is the full one). Returns the result dict (the same on every
    rank). Under torchrun it joins the process group itself; only rank 0 writes. With ``shard`` the model's
    parameters are left sharded: read the trained weights from ``model.safetensors``.
    ``stop_when(step, eval_loss) -> bool``, if given (one process only), is asked after every evaluation; True
    ends training there (a final checkpoint, model and result with the steps actually taken).

    **Cooldown branching** (``schedule`` wsd): ``branch_at`` lists stable-phase steps at which the full state
    (model, optimizer, generators) is also saved, to ``OUT/branches/checkpoints/step_XXXXXXX``
    (:func:`myopia.checkpoint.branch_state_dir`). A new run given ``branch_from`` (such a folder) starts from that
    state and trains to its own ``steps``, decaying at its own end: it equals, bitwise, a fresh run of that
    length with the same data, init and settings, because the two schedules agree on every step before the
    branch point (checked, :func:`branch_plan`).
    """
    cfg.validate()
    init_distributed(cfg.device, force=cfg.shard != "none")
    rank, world, _ = dist_info()
    out = Path(out_dir)
    if stop_when is not None and world > 1:
        raise MyopiaError("stopping at a validation plateau is supported on one process only")
    if hasattr(task, "use_document_mask"):  # tasks with documents keep attention inside them when asked
        task.use_document_mask(cfg.document_mask)
    device, precision, memory = on_all_ranks(lambda: check_inputs(model, task, cfg, world, rank), world)
    full_config = {"run": run_config, "train": cfg.to_dict(), "task": task.describe(), "world_size": world,
                   "precision": precision}
    lock = on_all_ranks(lambda: RunLock(out).acquire() if rank == 0 else None, world)
    try:
        plan = on_all_ranks(lambda: plan_resume(out, full_config, resume) if rank == 0 else None, world, share=True)
        check_branch_steps(cfg, branch_at)
        if branch_from is not None and plan["checkpoint"] is None:
            plan = {**plan, **on_all_ranks(lambda: branch_plan(branch_from, full_config, cfg), world)}
        engine = Engine(model, task, device=device, precision=precision, shard=cfg.shard,
                        activation_checkpointing=cfg.activation_checkpointing, world=world, rank=rank)
        optimizer = make_optimizer(model, cfg)
        restore(plan, model, optimizer, cfg, device, rank, world)
        on_all_ranks(lambda: prepare_run_dir(out, plan, full_config, memory, engine) if rank == 0 else None, world)
        if cfg.compile:
            model.compile(backend=cfg.compile_backend)
        try:
            last_eval, elapsed, steps_done = run_loop(engine, optimizer, task, cfg, out, plan["step"],
                                                      full_config, precision, on_checkpoint, stop_when, branch_at)
        except MyopiaError:
            if rank == 0:
                forget_unsaved_run(out)
            raise
        result = finish(engine, cfg, out, full_config, last_eval, elapsed, plan["step"], precision, memory,
                        flops_per_example, steps_done, branched_from=plan.get("branched_from"))
    finally:
        if lock is not None:
            lock.release()
    return share(result, world)


BRANCH_KEYS = ("batch_size", "seed", "weight_decay", "adam_beta1", "adam_beta2", "grad_clip", "mup_base_width",
               "document_mask")  # training settings a cooldown branch must share with the run it branches from


def check_branch_steps(cfg: TrainConfig, branch_at) -> None:
    """``branch_at`` must be stable-phase steps of a wsd run (after warmup, before the decay)."""
    if not branch_at:
        return
    if cfg.schedule != "wsd":
        raise MyopiaError("saving cooldown branch points needs --schedule wsd")
    for s in branch_at:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not cfg.warmup <= s <= cfg.stable_end:
            raise MyopiaError(f"branch point {s!r} is not a stable-phase step (warmup {cfg.warmup} .. decay start "
                              f"{cfg.stable_end})")


def branch_plan(path: str | Path, full_config: dict, cfg: TrainConfig) -> dict:
    """The resume plan of a cooldown branch from the saved state ``path``; raises :class:`MyopiaError` unless
    the branch saw the same data, model and schedule as the run it branches from, up to the branch step."""
    meta = read_checkpoint_meta(path)
    step = int(meta["step"])
    saved = meta.get("config") or {}
    where = f"cannot branch from {path}"
    if saved.get("task") != json.loads(json.dumps(full_config["task"], default=str)):
        raise MyopiaError(f"{where}: it was trained on other data or another task")
    parent = TrainConfig.from_dict(saved.get("train") or {})
    for key in BRANCH_KEYS:
        if getattr(parent, key) != getattr(cfg, key):
            raise MyopiaError(f"{where}: its {key} is {getattr(parent, key)!r}, this run's {getattr(cfg, key)!r}")
    if step > cfg.steps or any(lr_at(parent, t) != lr_at(cfg, t) for t in range(step)):
        raise MyopiaError(f"{where}: its learning-rate schedule before step {step} differs from this run's "
                          f"(same lr and warmup, and a decay starting at or after step {step}, are needed)")
    return {"checkpoint": str(path), "step": step, "fresh": True, "branched_from": str(path),
            "saved_world_size": meta.get("world_size")}


def check_inputs(model, task, cfg: TrainConfig, world: int, rank: int):
    """Everything a user can get wrong, checked on every rank before any work: (device, precision, memory plan)."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if cfg.batch_size < world:
        raise MyopiaError(f"batch-size {cfg.batch_size} is smaller than the number of processes ({world})")
    _check_compile(cfg)
    _check_tensorboard(cfg, rank == 0)
    validate_model_task(model, task)
    micro = max(b - a for a, b in _rank_slices(cfg.batch_size, world, 0, cfg.micro_batch_size))
    memory = memory_plan(model, shard=cfg.shard, world=world, precision=precision, micro_batch=micro,
                         seq_len=getattr(task, "seq_len", None) or task.tokens_per_example,
                         activation_checkpointing=cfg.activation_checkpointing, device=device,
                         device_memory_gb=cfg.device_memory_gb)
    return device, precision, memory


def restore(plan: dict, model, optimizer, cfg: TrainConfig, device, rank: int, world: int) -> None:
    """Load the planned checkpoint into model and optimizer (every rank), or seed a fresh run's generators."""
    if plan["checkpoint"] is None:
        if world > 1:  # distinct random streams per rank (dropout), reproducible
            torch.manual_seed(cfg.seed * 100_003 + rank + 1)
        return
    on_all_ranks(lambda: load_distributed(plan["checkpoint"], model, optimizer, rank=rank, device=device), world)
    saved_world = plan.get("saved_world_size")
    if world > 1 and saved_world is not None and rank >= saved_world:  # ranks the saved run did not have
        torch.manual_seed(cfg.seed * 100_003 + plan["step"] * 7919 + rank + 1)


def prepare_run_dir(out: Path, plan: dict, full_config: dict, memory: dict, engine: Engine) -> None:
    """Rank 0: warnings, config.json, the memory plan line, and for a resumed run drop what came after its step."""
    notes = list(plan["notes"])
    if engine.kind == "single" and full_config["train"]["shard"] != "none":
        notes.append("--shard has no effect in one process started without torchrun (it needs a process group)")
    for note in notes:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if plan["fresh"] or plan.get("restart") or not (out / CONFIG).exists():
        write_json(out / CONFIG, full_config)
    if not plan["fresh"]:
        MetricsLog(out / METRICS).truncate_after(plan["step"])
        remove_checkpoints_after(out, plan["step"])
    if full_config["train"]["progress"]:
        print(f"{engine.description}: {memory['summary']}", file=sys.stderr, flush=True)


def run_loop(engine: Engine, optimizer, task, cfg: TrainConfig, out: Path, start_step: int, full_config: dict,
             precision: str, on_checkpoint, stop_when=None, branch_at=()) -> tuple[dict, float, int]:
    """Steps ``start_step`` .. ``cfg.steps``: train, record, evaluate and checkpoint when due; returns (last
    evaluation, seconds, steps done: ``cfg.steps`` unless ``stop_when`` ended training earlier)."""
    rank, world = engine.rank, engine.world
    autocast = autocast_context(engine.device, precision)
    slices = _rank_slices(cfg.batch_size, world, rank, cfg.micro_batch_size)
    rounds = max(len(_rank_slices(cfg.batch_size, world, r, cfg.micro_batch_size)) for r in range(world))
    if engine.kind == "fsdp":  # every rank runs as many forward passes (FSDP gathers in each)
        slices = slices + [None] * (rounds - len(slices))
    recorder = Recorder(out, steps=cfg.steps, start_step=start_step, log_every=cfg.log_every,
                        tokens_per_step=cfg.batch_size * task.tokens_per_example, progress=cfg.progress,
                        tensorboard=cfg.tensorboard, active=rank == 0)
    checkpoints = Checkpointer(out, cfg, full_config, world, rank, on_checkpoint, branch_at)
    last_eval: dict = {}
    step = start_step
    steps_done = cfg.steps
    try:
        for step in range(start_step, cfg.steps):
            done = step + 1
            lr = set_lr(optimizer, cfg, step)
            train_loss, grad_norm = train_step(engine, optimizer, task, cfg, step, slices, autocast, out)
            recorder.train_step(done, train_loss, lr, grad_norm)
            checkpoints.save_branch(done, engine, optimizer, lr)
            if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
                last_eval = evaluate(engine, autocast)
                recorder.evaluation(done, train_loss, last_eval)
            stop = (stop_when is not None and bool(last_eval) and done < cfg.steps and cfg.eval_every > 0
                    and done % cfg.eval_every == 0 and stop_when(done, last_eval["loss"]))
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps or stop:
                checkpoints.save(done, engine, optimizer, lr)
            if stop:
                steps_done = done
                break
        checkpoints.finish()
        if not last_eval:  # resumed a finished run
            last_eval = evaluate(engine, autocast)
    except torch.OutOfMemoryError:
        raise MyopiaError(f"out of memory at step {step + 1} on {engine.device}: lower --micro-batch-size, use "
                          "--activation-checkpointing or --shard (gradient accumulation keeps the global batch)") from None
    except Exception as exc:
        if cfg.compile and _compile_error(exc):
            raise MyopiaError(f"torch.compile (backend {cfg.compile_backend}) failed on this model: "
                              f"{first_line(exc)}; run without --compile") from exc
        raise
    finally:
        recorder.close()
    return last_eval, recorder.elapsed(), steps_done


def set_lr(optimizer, cfg: TrainConfig, step: int) -> float:
    """Set every group's lr to the schedule's value at ``step`` times the group's ``lr_scale``; returns the base."""
    lr = lr_at(cfg, step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def train_step(engine: Engine, optimizer, task, cfg: TrainConfig, step: int, slices, autocast, out: Path):
    """One optimizer step on global examples step*B .. step*B+B-1; returns (train loss, gradient norm).

    Each rank backpropagates its micro-batches' loss sums times world / (global count), and the engine averages
    the gradients over ranks: the gradient of the global mean loss, as in one process. A ``None`` slice is a
    padding micro-batch (FSDP): a forward and backward with zero weight.
    """
    device, world = engine.device, engine.world
    engine.model.train()
    optimizer.zero_grad(set_to_none=True)
    base = step * cfg.batch_size
    real = [s for s in slices if s is not None]
    batches = [task.examples(np.arange(base + a, base + b), device) for a, b in real]
    batches += [batches[0]] * (len(slices) - len(real))
    local = float(sum(task.count(b) for b in batches[: len(real)]))
    total = sum_over_ranks([local], device, world)[0]
    if total <= 0:
        raise mark_all_ranks(MyopiaError(f"step {step + 1}: the global batch holds no loss terms"))
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for i, batch in enumerate(batches):
        with engine.micro_batch(last=i == len(batches) - 1), autocast:
            loss = engine.loss(batch)
        if i >= len(real):
            loss = loss * 0.0
        scaled = loss / total if world == 1 else loss / total * world
        scaled.backward()
        loss_sum += loss.detach().double()
    train_loss = sum_over_ranks([loss_sum.item()], device, world)[0] / total
    if not math.isfinite(train_loss):
        raise mark_all_ranks(MyopiaError(_nan_message(step + 1, out)))
    limit = divergence_limit(engine.model, task)
    if limit is not None and train_loss > limit:
        raise mark_all_ranks(MyopiaError(_nan_message(step + 1, out, what="loss", value=train_loss, limit=limit)))
    params = engine.parameters()
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else 1e30)
    norm = local_tensor(norm)
    if not torch.isfinite(norm):
        raise mark_all_ranks(MyopiaError(_nan_message(step + 1, out, what="gradient norm")))
    optimizer.step()
    return train_loss, norm.item()


def evaluate(engine: Engine, autocast) -> dict:
    """The task's held-out metrics in eval mode (rank 0's dict; sharded over ranks when the task supports it)."""
    engine.model.eval()
    try:
        with autocast:
            return engine.evaluate()
    finally:
        engine.model.train()


class Checkpointer:
    """Writes the run's distributed checkpoints (with every rank's RNG state) and calls ``on_checkpoint``."""

    def __init__(self, out: Path, cfg: TrainConfig, full_config: dict, world: int, rank: int, on_checkpoint,
                 branch_at=()):
        self.out, self.cfg, self.full_config, self.world, self.rank = out, cfg, full_config, world, rank
        self.on_checkpoint = on_checkpoint
        self.branch_at = frozenset(int(s) for s in branch_at)
        self.pending = None
        self.async_group = None
        if cfg.async_checkpoint and world > 1:
            self.async_group = torch.distributed.new_group(backend="gloo")

    def save(self, done: int, engine: Engine, optimizer, lr: float) -> None:
        if not all_finite(engine.parameters(), engine.device, self.world):
            raise mark_all_ranks(MyopiaError(_nan_message(done, self.out, what="parameters")))
        self.finish()
        meta = {"step": done, "examples_seen": done * self.cfg.batch_size, "world_size": self.world, "lr": lr,
                "shard": self.cfg.shard, "config": self.full_config}
        rng = rng_states(engine.device, self.world)
        self.pending = on_all_ranks(lambda: save_distributed(self.out, done, engine.model, optimizer, meta,
                                                             rng_states=rng, async_save=self.cfg.async_checkpoint,
                                                             async_group=self.async_group), self.world)
        if self.on_checkpoint is not None:
            self.finish()
            if engine.kind == "fsdp":
                state = full_model_state(engine.model)
                if self.rank == 0:
                    self.on_checkpoint(done, _StateView(state))
            elif self.rank == 0:
                self.on_checkpoint(done, engine.model)

    def save_branch(self, done: int, engine: Engine, optimizer, lr: float) -> None:
        """At a ``branch_at`` step: the full state to ``OUT/branches`` (kept; a cooldown branch starts there)."""
        if done not in self.branch_at:
            return
        self.finish()
        meta = {"step": done, "examples_seen": done * self.cfg.batch_size, "world_size": self.world, "lr": lr,
                "shard": self.cfg.shard, "config": self.full_config, "branch_point": True}
        rng = rng_states(engine.device, self.world)
        root = branch_state_dir(self.out, done).parent.parent
        on_all_ranks(lambda: save_distributed(root, done, engine.model, optimizer, meta, rng_states=rng,
                                              keep=1 << 30), self.world)

    def finish(self) -> None:
        """Complete a checkpoint still being written in the background."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            on_all_ranks(pending.finish, self.world)


class _StateView(torch.nn.Module):
    """Stands for a sharded model where a callback only reads ``state_dict()`` (the full, gathered one)."""

    def __init__(self, state: dict):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):
        return dict(self._state)


def finish(engine: Engine, cfg: TrainConfig, out: Path, full_config: dict, last_eval: dict, elapsed: float,
           start_step: int, precision: str, memory: dict, flops_per_example, steps_done: int | None = None,
           branched_from: str | None = None) -> dict:
    """Export ``model.safetensors`` (gathered from every rank) and write ``result.json`` (rank 0)."""
    steps = cfg.steps if steps_done is None else steps_done
    on_all_ranks(lambda: export_model(out / MODEL, engine.model,
                                      {"config": full_config, "step": steps}), engine.world)
    if engine.rank != 0:
        return {}
    tokens_per_step = cfg.batch_size * engine.task.tokens_per_example
    result = {
        "config": full_config,
        "seed": cfg.seed,
        "steps": steps,
        "tokens_seen": steps * tokens_per_step,
        "examples_seen": steps * cfg.batch_size,
        "flops": None if flops_per_example is None else flops_per_example * steps * cfg.batch_size,
        "final_eval": last_eval,
        "eval_loss": last_eval["loss"],
        "train_time_s": elapsed,
        "world_size": engine.world,
        "engine": engine.kind,
        "shard": cfg.shard,
        "memory_plan": {k: v for k, v in memory.items() if k != "summary"},
        "precision": precision,
        "resumed_from_step": start_step or None,
        **({"branched_from": branched_from} if branched_from else {}),
        **({"stopped_early": True, "max_steps": cfg.steps} if steps < cfg.steps else {}),
        **provenance(),
    }
    write_json(out / RESULT, result)
    return result


def rng_states(device: torch.device, world: int) -> dict[str, torch.Tensor]:
    """Every rank's CPU (and CUDA) generator state, gathered on all ranks: ``torch.r<rank>``, ``cuda.r<rank>``."""
    mine = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    return {f"{kind}.r{r}": state for r, states in enumerate(gather(mine, world)) for kind, state in states.items()}


def all_finite(params: list[torch.Tensor], device: torch.device, world: int) -> bool:
    """Whether every parameter (every rank's shard) is finite."""
    with torch.no_grad():
        local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
        bad = float(not bool(torch.stack([torch.isfinite(p).all() for p in local]).all()))
    return sum_over_ranks([bad], device, world)[0] == 0


def _rank_slices(batch_size: int, world: int, rank: int, micro: int) -> list[tuple[int, int]]:
    """This rank's contiguous share of [0, batch_size), cut into micro-batches."""
    per = [batch_size // world + (1 if r < batch_size % world else 0) for r in range(world)]
    lo = sum(per[:rank])
    hi = lo + per[rank]
    step = micro if micro > 0 else max(1, hi - lo)
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


# A language model's training loss above this many times ln(vocab) nats/token (the loss of predicting every token
# uniformly, itself at least the unigram loss) has diverged: a fresh model starts near 1 x ln(vocab).
DIVERGENCE_FACTOR = 4.0


def divergence_limit(model, task) -> float | None:
    """``DIVERGENCE_FACTOR * ln(vocab)`` for next-token tasks (those with a unigram baseline), else None."""
    vocab = _model_vocab(model) or _model_vocab(getattr(model, "module", None))
    if vocab is None or vocab < 2 or not hasattr(task, "unigram_loss"):
        return None
    return DIVERGENCE_FACTOR * math.log(vocab)


def _nan_message(step: int, out: Path, what: str = "loss", value: float | None = None,
                 limit: float | None = None) -> str:
    from .checkpoint import checkpoint_steps

    kept = [p for _, p in checkpoint_steps(out)]
    keep = (f"; the last good checkpoint {kept[0]} is kept (continue with --resume)" if kept else
            f"; no checkpoint was written yet, so the run's files are removed and {out} may be reused")
    if value is not None:
        return (f"training diverged at step {step}: loss {value:.4g} nats/token is above {limit:.4g} "
                f"({DIVERGENCE_FACTOR:g} x ln(vocab), the uniform prediction's loss): stopping{keep}. Try a lower --lr")
    return f"non-finite {what} at step {step} (NaN or inf): stopping{keep}. Try a lower --lr"


def forget_unsaved_run(out: Path) -> None:
    """After a diagnosed failure before the first checkpoint: remove the run's config.json and metrics.jsonl,
    so that the folder holds no run (a rerun with any settings may use it). Nothing is removed once a
    checkpoint or result exists."""
    from .checkpoint import has_checkpoint

    if has_checkpoint(out) or (out / RESULT).exists():
        return
    for name in (CONFIG, METRICS):
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass


def _compile_error(exc: BaseException) -> bool:
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover
        return False
    from_compiler = type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))
    return isinstance(exc, TorchDynamoException) or from_compiler


