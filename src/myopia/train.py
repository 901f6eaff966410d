"""The training loop: AdamW, warmup + cosine, clipping, held-out evaluation, checkpoints, exact resume, DDP.

A *task* supplies the data and the loss; the trainer owns everything else. A task implements

    examples(indices, device) -> batch        the training examples with these global indices
    count(batch) -> int                       how many loss terms the batch holds
    loss(model, batch) -> Tensor              the *sum* of those loss terms
    evaluate(model, device) -> dict           held-out metrics, at least {"loss": ...}
    describe() -> dict                        what to record in config.json
    tokens_per_example: int
    validate(model) -> None                   optional: raise MyopiaError if model and task do not fit

Step s uses global examples s*B .. s*B+B-1 (B = ``batch_size``), split over ranks and micro-batches, and
the loss is the sum over the global batch divided by its global count. The result is independent of world
size and micro-batching up to float summation order (dropout aside), and paired runs see identical data.

**Several processes.** Launched by ``torchrun``, :func:`train` joins the process group itself (nccl on GPUs,
gloo on CPUs), so every command that calls it runs data-parallel. Each rank computes its contiguous share of
the global batch (in micro-batches: gradient accumulation), then one bucketed all-reduce sums the gradients
and the loss. This is deliberately a manual reduction, not ``DistributedDataParallel``: it sums exactly what a
single process would (a loss normalised by the *global* token count, whatever each rank holds), it needs no
wrapper, so tasks may call any model method (``trunk``, ``past_kv=``, Hugging Face kwargs) without silently
skipping the synchronisation, and accumulation costs no extra communication. The price is no overlap of
communication with the backward pass. Rank 0 alone evaluates, logs and writes files; every rank returns the
same result dict.

**Files.** ``config.json``, ``metrics.jsonl`` (every ``log_every`` steps and every evaluation),
``checkpoint.safetensors`` (every ``ckpt_every`` steps and at the end; the one it replaces stays as
``checkpoint.prev.safetensors``), ``model.safetensors`` and ``result.json`` (written last: its presence means
the run finished), optionally ``tensorboard/`` event files. Every file is written atomically.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, load_tensors, previous_path, save_checkpoint, save_model
from .errors import MyopiaError
from .io import MetricsLog, provenance, read_json, write_json

CHECKPOINT = "checkpoint.safetensors"
PREVIOUS_CHECKPOINT = previous_path(CHECKPOINT).name
RESULT = "result.json"
PRECISIONS = ("auto", "fp32", "bf16")
TIMING_KEYS = ("tokens_per_s", "elapsed_s", "train_time_s", "created")  # fields that differ between identical runs
PROGRESS_INTERVAL_S = 30.0  # plain progress lines (stderr not a terminal) at most this often
# Config keys that may change when a run is resumed (they do not affect the numbers).
_RESUMABLE_KEYS = ("resume", "progress", "tensorboard", "world_size", "debug")


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
    grad_clip: float = 1.0  # 0: no clipping
    eval_every: int = 250  # 0: only at the end
    ckpt_every: int = 500  # 0: only at the end
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto (cuda:LOCAL_RANK if a GPU is present, else cpu), cpu, cuda, cuda:1, ...
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere) | fp32 | bf16
    progress: bool = True
    compile: bool = False  # torch.compile the model's forward (nn.Module.compile: state-dict names unchanged)
    compile_backend: str = "inductor"
    tensorboard: bool = False  # also write TensorBoard event files to <out>/tensorboard

    def __post_init__(self) -> None:
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
        for name in ("progress", "compile", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise MyopiaError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise MyopiaError(f"compile-backend must be a backend name, got {self.compile_backend!r}")

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
# Devices, precision and processes (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)
# ------------------------------------------------------------------------------------------------------------


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); (0, 1, 0) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def is_main_process() -> bool:
    """True on rank 0 (and without torch.distributed): the process that writes files and prints results."""
    return dist_info()[0] == 0


def launched_world_size() -> int:
    """Processes started by the launcher (``WORLD_SIZE`` from torchrun), whether or not they joined yet."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_distributed(device: str = "auto") -> None:
    """Join the process group when launched by torchrun (nccl for CUDA devices, gloo for CPU); else no-op.

    The collective timeout is ``MYOPIA_DIST_TIMEOUT_MIN`` minutes (default 60): rank 0 evaluates and writes
    checkpoints while the others wait.
    """
    if launched_world_size() <= 1 or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if not torch.distributed.is_available():
        raise MyopiaError("launched with several processes, but this PyTorch build has no torch.distributed")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise MyopiaError(f"WORLD_SIZE is set but {var} is not: launch several processes with torchrun")
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise MyopiaError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs: lower --nproc_per_node")
        torch.cuda.set_device(local if device in ("auto", "cuda") else torch.device(device))
    timeout = datetime.timedelta(minutes=float(os.environ.get("MYOPIA_DIST_TIMEOUT_MIN", 60)))
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)


def shutdown_distributed() -> None:
    """Leave the process group (end of a command)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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


def _mark_all_ranks(exc: BaseException) -> BaseException:
    """Flag an error raised identically on every rank, so that only rank 0 prints it."""
    exc.all_ranks = True
    return exc


def _on_all_ranks(fn, world: int, *, share: bool = False):
    """Run ``fn`` on every rank; if it fails with a user error on any rank, every rank raises one.

    This keeps ranks from waiting forever in a collective for a process that has already stopped. With
    ``share``, every rank returns rank 0's value (``fn`` may return None elsewhere).
    """
    value, error = None, None
    try:
        value = fn()
    except MyopiaError as exc:
        error = exc
    except OSError as exc:
        error = MyopiaError(f"{exc.filename or 'I/O'}: {exc.strerror or exc}")
        error.__cause__ = exc
    if world == 1:
        if error is not None:
            raise error
        return value
    rank = torch.distributed.get_rank()
    payload: list = [None] * world
    mine = (None if error is None else str(error), value if share and rank == 0 else None)
    torch.distributed.all_gather_object(payload, mine)
    failed = [(r, msg) for r, (msg, _) in enumerate(payload) if msg is not None]
    if failed:
        first, msg = failed[0]
        if error is not None and first == rank:
            raise _mark_all_ranks(error)
        raise _mark_all_ranks(MyopiaError(msg if first == 0 else f"process {first}: {msg}"))
    return payload[0][1] if share else value


def _share(obj, world: int):
    """Rank 0's ``obj`` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _broadcast_state(model: torch.nn.Module, world: int) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if world > 1:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                torch.distributed.broadcast(t.data, src=0)


_BUCKET_BYTES = 64 << 20


def _sum_step_over_ranks(params: list[torch.Tensor], loss_sum: torch.Tensor, world: int) -> float:
    """Sum the gradients and the loss over ranks; returns the global loss sum.

    A parameter with a gradient on some rank but not on another gets zeros there; one with no gradient on any
    rank keeps ``grad=None`` (AdamW skips it), exactly as in a single process.
    """
    if world == 1:
        return loss_sum.item()
    has_grad = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64, device=loss_sum.device)
    head = torch.cat([loss_sum.reshape(1), has_grad])
    torch.distributed.all_reduce(head)
    live = [p for p, n in zip(params, head[1:].tolist()) if n > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.Tensor] = []
    size = 0
    for p in live + [None]:
        if bucket and (p is None or p.grad.dtype != bucket[0].grad.dtype or size >= _BUCKET_BYTES):
            flat = torch.cat([q.grad.reshape(-1) for q in bucket])
            torch.distributed.all_reduce(flat)
            offset = 0
            for q in bucket:
                q.grad.copy_(flat[offset : offset + q.numel()].view_as(q.grad))
                offset += q.numel()
            bucket, size = [], 0
        if p is not None:
            bucket.append(p)
            size += p.grad.numel() * p.grad.element_size()
    return head[0].item()


def _sum_over_ranks(value: float, device: torch.device, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.item()


def _rng_states(device: torch.device, rank: int, world: int) -> dict[str, torch.Tensor]:
    """Every rank's CPU (and CUDA) generator state, gathered on all ranks: ``torch.r<rank>``, ``cuda.r<rank>``."""
    mine = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    gathered = [mine]
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
    return {f"{kind}.r{r}": state for r, states in enumerate(gathered) for kind, state in states.items()}


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


def _config_mismatch(saved: dict, current: dict) -> str:
    """First differing key between two configs (ignoring keys that may change on resume), or ''."""

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k in _RESUMABLE_KEYS:
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

    return walk(json.loads(json.dumps(saved, default=str)), json.loads(json.dumps(current, default=str)), "")


def _mismatch_message(what: str, mismatch: str) -> str:
    if "vocab_size" in mismatch or "tokenizer" in mismatch:
        return (f"cannot resume {what}: the data's vocabulary differs from the one it was trained with "
                f"({mismatch}); was the data tokenized with another tokenizer?")
    return f"cannot resume {what}: its config differs from this run ({mismatch})"


def _plan_run(out: Path, full_config: dict, resume: bool) -> dict:
    """Rank 0: a new run, or a continuation from which checkpoint. Reads files, writes nothing."""
    if out.exists() and not out.is_dir():
        raise MyopiaError(f"--out {out} exists and is not a folder")
    latest, prev = out / CHECKPOINT, out / PREVIOUS_CHECKPOINT
    existing = [p for p in (out / "config.json", out / "metrics.jsonl", latest, prev, out / RESULT) if p.exists()]
    if not resume:
        if existing:
            raise MyopiaError(f"{out} already holds a run; use --resume to continue it or choose another --out")
        return {"checkpoint": None, "step": 0, "fresh": True, "notes": []}
    if not existing:
        note = f"nothing to resume in {out}: starting a new run"
        return {"checkpoint": None, "step": 0, "fresh": True, "notes": [note]}
    if (out / "config.json").exists():
        mismatch = _config_mismatch(read_json(out / "config.json"), full_config)
        if mismatch:
            raise MyopiaError(_mismatch_message(str(out), mismatch))
    failures: list[str] = []
    for path in (latest, prev):
        if not path.exists():
            continue
        try:
            _, meta = load_tensors(path)
            step = int(meta["step"])
        except MyopiaError as exc:
            failures.append(str(exc))
            continue
        except (KeyError, TypeError, ValueError):
            failures.append(f"checkpoint {path} records no step")
            continue
        mismatch = _config_mismatch(meta.get("config", {}), full_config)
        if mismatch:
            raise MyopiaError(_mismatch_message(f"from checkpoint {path} (written by a different run)", mismatch))
        notes = [f"{f}; resuming from the previous checkpoint {path.name} (step {step}) instead" for f in failures]
        return {"checkpoint": str(path), "step": step, "fresh": False, "notes": notes}
    if failures:
        failed = "; ".join(failures)
        raise MyopiaError(f"{failed}; no usable checkpoint is left in {out} (move it away and start again)")
    note = f"{out} holds no checkpoint yet: restarting at step 0"
    return {"checkpoint": None, "step": 0, "fresh": False, "notes": [note]}


# ------------------------------------------------------------------------------------------------------------
# Progress on stderr and TensorBoard
# ------------------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Progress:
    """A tqdm bar when stderr is a terminal; otherwise a plain line every PROGRESS_INTERVAL_S and at evaluations."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start, self.enabled = total, start, enabled
        self.bar = None
        self.t0 = self.last = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=True)

    def step(self, done: int, train_loss: float | None, tokens_per_s: float | None) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if train_loss is not None:
                self.bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self.bar.update(1)
            return
        now = time.perf_counter()
        if now - self.last >= PROGRESS_INTERVAL_S and train_loss is not None:
            self.last = now
            elapsed = now - self.t0
            eta = elapsed / max(done - self.start, 1) * (self.total - done)
            self.line(f"step {done}/{self.total}  train {train_loss:.4f}  {tokens_per_s:,.0f} tok/s  "
                      f"elapsed {_duration(elapsed)}  eta {_duration(eta)}")

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Board:
    """TensorBoard scalars under ``<out>/tensorboard`` (events after a resumed checkpoint's step are purged)."""

    def __init__(self, out: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides earlier events with step >= it; those *at* the checkpoint's step stay valid
        purge = start_step + 1 if start_step else None
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=purge)

    def add(self, prefix: str, record: dict, step: int) -> None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


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


def _nan_message(step: int, out: Path, what: str = "loss") -> str:
    kept = [p for p in (out / CHECKPOINT, out / PREVIOUS_CHECKPOINT) if p.exists()]
    keep = f"; the last good checkpoint {kept[0]} is kept (continue with --resume)" if kept else ""
    return f"non-finite {what} at step {step} (NaN or inf): stopping{keep}. Try a lower --lr"


def _all_finite(params: list[torch.Tensor]) -> bool:
    with torch.no_grad():
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def _compile_error(exc: BaseException) -> bool:
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover
        return False
    from_compiler = type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))
    return isinstance(exc, TorchDynamoException) or from_compiler


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
) -> dict:
    """Train ``model`` on ``task``; write config.json, metrics.jsonl, checkpoints and result.json to ``out_dir``.

    ``run_config`` is everything needed to rebuild the run (model config, task settings, CLI arguments); it is
    stored in config.json and a resumed run must present the same one. ``on_checkpoint(step, model)``, if
    given, is called on the main process after each checkpoint is written (e.g. to keep weight snapshots).
    ``stop_when(step, eval_loss) -> bool``, if given (one process only), is asked after every evaluation; True
    ends training there (a final checkpoint, model and result with the steps actually taken).
    Returns the result dict (the same on every rank). Under torchrun it joins the process group itself; only
    rank 0 writes.
    """
    cfg.validate()
    init_distributed(cfg.device)
    rank, world, _ = dist_info()
    is_main = rank == 0
    out = Path(out_dir)

    # ---- everything a user can get wrong, checked on every rank before any work ---------------------------
    def check_inputs():
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        if cfg.batch_size < world:
            raise MyopiaError(f"batch-size {cfg.batch_size} is smaller than the number of processes ({world})")
        _check_compile(cfg)
        _check_tensorboard(cfg, is_main)
        validate_model_task(model, task)
        return device, precision

    if stop_when is not None and world > 1:
        raise MyopiaError("stopping at a validation plateau is supported on one process only")
    device, precision = _on_all_ranks(check_inputs, world)
    full_config = {"run": run_config, "train": cfg.to_dict(), "task": task.describe(), "world_size": world,
                   "precision": precision}
    plan = _on_all_ranks(lambda: _plan_run(out, full_config, resume) if is_main else None, world, share=True)
    start_step = plan["step"]

    model.to(device)
    optimizer = make_optimizer(model, cfg)
    if world > 1 and start_step == 0:  # distinct random streams per rank (dropout), reproducible
        torch.manual_seed(cfg.seed * 100_003 + rank + 1)
    if plan["checkpoint"]:
        _on_all_ranks(lambda: load_checkpoint(plan["checkpoint"], model, optimizer, rank=rank, device=device), world)
    _broadcast_state(model, world)

    log = MetricsLog(out / "metrics.jsonl")

    def prepare_folder():
        if not is_main:
            return
        for note in plan["notes"]:
            print(f"warning: {note}", file=sys.stderr, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        if plan["fresh"] or not (out / "config.json").exists():
            write_json(out / "config.json", full_config)
        if not plan["fresh"]:
            log.truncate_after(start_step)

    _on_all_ranks(prepare_folder, world)

    if cfg.compile:
        model.compile(backend=cfg.compile_backend)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = autocast_context(device, precision)
    slices = _rank_slices(cfg.batch_size, world, rank, cfg.micro_batch_size)
    tokens_per_step = cfg.batch_size * task.tokens_per_example
    last_eval: dict = {}
    t_start = time.perf_counter()
    progress = _Progress(cfg.steps, start_step, cfg.progress and is_main)
    board = _Board(out, start_step) if cfg.tensorboard and is_main else None
    tokens_window, t_window = 0, time.perf_counter()
    step = start_step
    steps_done = cfg.steps

    def record(rec: dict, prefix: str) -> None:
        log.append(rec)
        if board is not None:
            board.add(prefix, rec, rec["step"])

    try:
        for step in range(start_step, cfg.steps):
            done = step + 1
            lr = lr_at(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            optimizer.zero_grad(set_to_none=True)
            base = step * cfg.batch_size
            batches = [task.examples(np.arange(base + a, base + b), device) for a, b in slices]
            total = _sum_over_ranks(float(sum(task.count(b) for b in batches)), device, world)
            if total <= 0:
                raise _mark_all_ranks(MyopiaError(f"step {done}: the global batch holds no loss terms"))
            loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
            for batch in batches:
                with autocast:
                    loss = task.loss(model, batch)
                (loss / total).backward()
                loss_sum += loss.detach().double()
            train_loss = _sum_step_over_ranks(params, loss_sum, world) / total
            if not math.isfinite(train_loss):
                raise _mark_all_ranks(MyopiaError(_nan_message(done, out)))
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else 1e30)
            if not torch.isfinite(grad_norm):
                raise _mark_all_ranks(MyopiaError(_nan_message(done, out, what="gradient norm")))
            optimizer.step()

            tokens_window += tokens_per_step
            logged = None
            if is_main and (done % max(1, cfg.log_every) == 0 or done == cfg.steps):
                now = time.perf_counter()
                tps = tokens_window / max(now - t_window, 1e-9)
                tokens_window, t_window = 0, now
                logged = tps
                record({"step": done, "train_loss": train_loss, "lr": lr, "grad_norm": grad_norm.item(),
                        "tokens": done * tokens_per_step, "tokens_per_s": tps, "elapsed_s": now - t_start}, "train")
            progress.step(done, train_loss if logged is not None else None, logged)
            if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
                if is_main:
                    last_eval = _evaluate(model, task, device, autocast)
                    record({"step": done, **{f"eval_{k}": v for k, v in last_eval.items()}}, "eval")
                    progress.line(f"step {done}/{cfg.steps}  train {train_loss:.4f}  eval {last_eval['loss']:.4f}")
            stop = bool(last_eval) and stop_when is not None and done % max(1, cfg.eval_every) == 0 \
                and done < cfg.steps and stop_when(done, last_eval["loss"])
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps or stop:
                if not _all_finite(params):
                    raise _mark_all_ranks(MyopiaError(_nan_message(done, out, what="parameters")))
                rng = _rng_states(device, rank, world)
                if is_main:
                    meta = {"step": done, "examples_seen": done * cfg.batch_size, "world_size": world, "lr": lr,
                            "config": full_config}
                    save_checkpoint(out / CHECKPOINT, model, optimizer, meta, rng_states=rng, keep_previous=True)
                    if on_checkpoint is not None:
                        on_checkpoint(done, model)
            if stop:
                steps_done = done
                break
    except torch.OutOfMemoryError:
        raise MyopiaError(f"out of memory at step {step + 1} on {device}: lower --micro-batch-size "
                          "(gradient accumulation keeps the global batch)") from None
    except Exception as exc:
        if cfg.compile and _compile_error(exc):
            raise MyopiaError(f"torch.compile (backend {cfg.compile_backend}) failed on this model: "
                              f"{_first_line(exc)}; run without --compile") from exc
        raise
    finally:
        progress.close()
        if board is not None:
            board.close()

    result = {}
    if is_main:
        if not last_eval:  # resumed a finished run
            last_eval = _evaluate(model, task, device, autocast)
        elapsed = time.perf_counter() - t_start
        result = {
            "config": full_config,
            "seed": cfg.seed,
            "steps": steps_done,
            "tokens_seen": steps_done * tokens_per_step,
            "examples_seen": steps_done * cfg.batch_size,
            "flops": None if flops_per_example is None else flops_per_example * steps_done * cfg.batch_size,
            "final_eval": last_eval,
            "eval_loss": last_eval["loss"],
            "train_time_s": elapsed,
            "world_size": world,
            "precision": precision,
            "resumed_from_step": start_step or None,
            **({"stopped_early": True, "max_steps": cfg.steps} if steps_done < cfg.steps else {}),
            **provenance(),
        }
        save_model(out / "model.safetensors", model, {"config": full_config, "step": steps_done})
        write_json(out / RESULT, result)
    return _share(result, world)


def _evaluate(model, task, device, autocast) -> dict:
    model.eval()
    try:
        with autocast:
            return task.evaluate(model, device)
    finally:
        model.train()
