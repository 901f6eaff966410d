"""The scale-out engine: torchrun process groups, DDP / FSDP2 around the task's loss, sharded-evaluation sums.

**Processes.** Under ``torchrun`` (``WORLD_SIZE`` > 1, or a 1-process torchrun with ``--shard``),
:func:`init_distributed` joins the process group (nccl on GPUs, gloo on CPUs) and ties the worker's life to its
launcher (:func:`die_with_launcher`: ``PR_SET_PDEATHSIG`` on Linux, a watchdog thread elsewhere), so a killed
``torchrun`` never leaves workers finishing a run on their own. :func:`shutdown_distributed` ends it: a barrier
(no rank tears down while a peer is still inside a collective), ``destroy_process_group`` while the interpreter
is fully alive, then the objects holding the group (DDP's reducer, FSDP state, pending work) are collected; the
command line then ends a torchrun worker with ``os._exit``. The abort seen before (``terminate called without an
active exception`` after rank 0 had printed its result) is a C++ thread of the communication stack being torn
down during interpreter finalisation; it was not reproduced here in 24 two-process runs of the earlier code
(both ranks pinned to one core, 18 of them next to a busy loop on that core), so the fix is by construction: nothing of the group is left for finalisation, and
``tests/test_multiprocess.py`` runs the 2-process command line five times in a row.

**The engine.** :class:`TaskLoss` is a small module whose ``forward(batch)`` is the task's summed loss, so every
model call a task makes (``trunk``, ``past_kv=``, Hugging Face keyword arguments) happens inside one call of
the wrapped module and goes through the engine. :class:`Engine` wraps it in

- nothing (one process, ``--shard none``),
- ``DistributedDataParallel`` (several processes, ``--shard none``; ``no_sync`` on all but the last
  micro-batch), or
- FSDP2 ``fully_shard`` on every transformer block plus the root (``--shard grad``: parameters stay
  gathered from forward to backward, ZeRO-2-like; ``--shard full``: gathered per block and freed, ZeRO-3-like;
  bf16 parameters with fp32 gradient reduction under ``--precision bf16``).

Both engines average gradients over ranks, so the trainer scales each rank's loss by ``world / global count``:
the gradient is the sum over the global batch divided by its global count, as in one process (gloo has no
``set_gradient_divide_factor``; scaling the loss works on every backend, and is exact for world size 1 and 2).

**Sharded evaluation.** A task whose ``evaluate`` takes ``shard=`` scores its share of the evaluation batches
(:meth:`EvalShard.spans`: batch i on rank i mod world, every rank running the same number of forward passes)
and :meth:`EvalShard.gather` returns every batch's numbers in global order, so the sums equal a single
process's bit for bit. Other tasks are evaluated whole: on rank 0 alone under DDP, on every rank under FSDP.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import inspect
import math
import os
import signal
import sys
import threading

import torch
import torch.nn as nn

from .errors import MyopiaError

SHARD_MODES = ("none", "grad", "full")


# ------------------------------------------------------------------------------------------------------------
# Process group and process lifecycle (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)
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


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "MASTER_ADDR" in os.environ)


_PR_SET_PDEATHSIG = 1
_watchdog_started = False


def die_with_launcher() -> None:
    """Make this worker end when its launcher (the parent, ``torchrun``) dies, even by SIGKILL.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (the kernel signals us when the parent exits; re-checked after
    the call, in case the parent died first). Elsewhere: a daemon thread that exits when the parent pid changes.
    """
    global _watchdog_started
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                if os.getppid() != parent or parent == 1:  # the launcher died before prctl took effect
                    os._exit(143)
                return
        except (OSError, AttributeError):
            pass
    if _watchdog_started:
        return

    def watch():
        while True:
            if os.getppid() != parent:
                print(f"error: the launcher (pid {parent}) died; stopping this worker", file=sys.stderr, flush=True)
                os._exit(143)
            threading.Event().wait(1.0)

    threading.Thread(target=watch, name="myopia-launcher-watchdog", daemon=True).start()
    _watchdog_started = True


def init_distributed(device: str = "auto", *, force: bool = False) -> None:
    """Join the process group when launched by torchrun (nccl for CUDA devices, gloo for CPU); else no-op.

    ``force`` joins even a 1-process torchrun (FSDP needs a group). The collective timeout is
    ``MYOPIA_DIST_TIMEOUT_MIN`` minutes (default 60).
    """
    if launched_by_torchrun():
        die_with_launcher()  # also a 1-process torchrun worker that needs no group
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    if launched_world_size() <= 1 and not (force and launched_by_torchrun()):
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
    kwargs = {"device_id": torch.device("cuda", torch.cuda.current_device())} if use_cuda else {}
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout, **kwargs)


def shutdown_distributed(*, clean: bool = True) -> None:
    """Leave the process group at the end of a command.

    ``clean`` (the command succeeded on this rank): wait at a barrier so that no rank destroys its group while a
    peer is still inside the last collective, then ``destroy_process_group`` and collect the objects (DDP
    reducers, pending work) that hold the group, all while the interpreter is fully alive. A group left to be
    torn down during interpreter finalisation, or destroyed under a peer's feet, is what made finished runs
    abort (``terminate called without an active exception``). After an error the barrier is skipped (a peer may
    never arrive).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if clean and torch.distributed.get_world_size() > 1:
        try:
            torch.distributed.barrier()
        except Exception:  # a peer failed: tear down anyway
            pass
    torch.distributed.destroy_process_group()
    gc.collect()


def mark_all_ranks(exc: BaseException) -> BaseException:
    """Flag an error raised identically on every rank, so that only rank 0 prints it."""
    exc.all_ranks = True
    return exc


def on_all_ranks(fn, world: int, *, share: bool = False):
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
            raise mark_all_ranks(error)
        raise mark_all_ranks(MyopiaError(msg if first == 0 else f"process {first}: {msg}"))
    return payload[0][1] if share else value


def share(obj, world: int):
    """Rank 0's ``obj`` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, world: int) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world == 1:
        return [obj]
    out: list = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def sum_over_ranks(values: list[float], device: torch.device, world: int) -> list[float]:
    """Element-wise float64 sums over ranks."""
    if world == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


# ------------------------------------------------------------------------------------------------------------
# Sharded evaluation
# ------------------------------------------------------------------------------------------------------------


class EvalShard:
    """This rank's share of an evaluation: batch i of n goes to rank i mod world (see the module docstring)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def spans(self, n: int, batch_size: int) -> list[tuple[int, int] | None]:
        """This rank's batches ``[a, b)`` of ``range(n)``; ``None`` marks a round where this rank has no batch
        and must still run one (discarded) forward pass, so that FSDP's collectives line up."""
        starts = list(range(0, n, batch_size))
        rounds = math.ceil(len(starts) / self.world)
        out: list = []
        for r in range(rounds):
            i = r * self.world + self.rank
            out.append((starts[i], min(starts[i] + batch_size, n)) if i < len(starts) else None)
        return out

    def gather(self, per_span: list) -> list:
        """Every batch's value (one per non-None span, from every rank) in global batch order."""
        everyone = gather(per_span, self.world)
        ordered = []
        for i in range(max(len(v) for v in everyone) * self.world):
            rank, slot = i % self.world, i // self.world
            if slot < len(everyone[rank]):
                ordered.append(everyone[rank][slot])
        return ordered


def accepts_shard(task) -> bool:
    """Whether ``task.evaluate`` takes a ``shard=`` argument (sharded evaluation)."""
    try:
        return "shard" in inspect.signature(task.evaluate).parameters
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------------------
# The module the engine wraps, and the engine
# ------------------------------------------------------------------------------------------------------------


class TaskLoss(nn.Module):
    """``forward(batch)``: the task's summed loss; ``forward(evaluate=kwargs)``: the task's evaluation.

    Every model call a task makes happens inside this forward, so DDP's and FSDP's hooks see one call per
    micro-batch whatever model methods the task uses.
    """

    def __init__(self, model: nn.Module, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch=None, *, evaluate: dict | None = None):
        if evaluate is not None:
            return self.task.evaluate(self.model, **evaluate)
        return self.task.loss(self.model, batch)


def transformer_blocks(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, block) of each transformer block: our GPT's ``blocks``, or the decoder layers
    of a Hugging Face model (its ``_no_split_modules`` classes)."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return [(blocks, str(i), b) for i, b in enumerate(blocks)]
    hf = getattr(model, "hf", model)
    names = set(getattr(hf, "_no_split_modules", None) or [])
    found = []
    for parent in model.modules():
        if isinstance(parent, nn.ModuleList):
            for i, child in enumerate(parent):
                if type(child).__name__ in names:
                    found.append((parent, str(i), child))
    return found


def apply_activation_checkpointing(model: nn.Module) -> list[nn.Module]:
    """Recompute each transformer block's activations in the backward pass (non-reentrant checkpointing).

    The block's forward runs again with the same inputs and gradient mode, so every gradient setting is
    unchanged (tested). Parameter names in state dicts are unchanged. Returns the wrapped blocks.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    blocks = transformer_blocks(model)
    if not blocks:
        raise mark_all_ranks(MyopiaError(f"--activation-checkpointing: found no transformer blocks in "
                                         f"{type(model).__name__}"))
    wrapped = []
    for parent, name, block in blocks:
        wrapped.append(checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                                          checkpoint_fn=_checkpoint_block))
        parent.register_module(name, wrapped[-1])
    return wrapped


def _checkpoint_block(block: nn.Module, *args, **kwargs):
    """Non-reentrant checkpoint of one block whose recomputation sees the forward pass's myopia settings.

    A Hugging Face model's ``past_kv`` lives in its :class:`myopia.hf.attention.MyopiaSettings` only while the
    model call runs; the backward pass recomputes the block later, so the values of the forward pass are put back
    for the recomputation (and keys/values are not collected twice).
    """
    from torch.utils.checkpoint import checkpoint

    settings = next((m._myopia for m in block.modules() if getattr(m, "_myopia", None) is not None), None)

    def contexts():
        if settings is None:
            return contextlib.nullcontext(), contextlib.nullcontext()
        past = settings.past_kv

        @contextlib.contextmanager
        def as_in_forward():
            before = (settings.past_kv, settings.kv_out)
            settings.past_kv, settings.kv_out = past, None
            try:
                yield
            finally:
                settings.past_kv, settings.kv_out = before

        return contextlib.nullcontext(), as_in_forward()

    return checkpoint(block, *args, use_reentrant=False, context_fn=contexts, **kwargs)


class Engine:
    """How the model runs: ``single`` (one process), ``ddp`` or ``fsdp`` (several; see the module docstring).

    ``engine.model`` is the task's model (its parameters, sharded under FSDP, are what the optimizer updates);
    ``engine.loss(batch, last=...)`` runs one micro-batch's forward through the engine; ``engine.evaluate()``
    gives the task's held-out metrics (rank 0's; sharded when the task supports it).
    """

    def __init__(self, model: nn.Module, task, *, device: torch.device, precision: str, shard: str,
                 activation_checkpointing: bool, world: int, rank: int):
        if shard not in SHARD_MODES:
            raise MyopiaError(f"shard must be one of {', '.join(SHARD_MODES)}, got {shard!r}")
        self.model, self.task, self.device, self.precision = model, task, device, precision
        self.world, self.rank, self.shard = world, rank, shard
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.kind = "fsdp" if shard != "none" and distributed else "ddp" if world > 1 else "single"
        model.to(device)
        self.blocks = [b for _, _, b in transformer_blocks(model)]
        if activation_checkpointing:
            self.blocks = apply_activation_checkpointing(model)
        self.inner = TaskLoss(model, task)
        if self.kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            # buffers are deterministic constants (RoPE tables): no per-forward broadcast
            self.module = DistributedDataParallel(self.inner, device_ids=ids, forward_sync_buffers=False,
                                                  gradient_as_bucket_view=True)
        elif self.kind == "fsdp":
            self.module = self._fully_shard()
        else:
            self.module = self.inner

    def _fully_shard(self) -> nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if self.precision == "bf16" else MixedPrecisionPolicy())
        reshard = self.shard == "full"
        if not self.blocks:
            raise mark_all_ranks(MyopiaError(f"--shard {self.shard}: found no transformer blocks in "
                                             f"{type(self.model).__name__}"))
        self._check_identical_on_ranks()
        for block in self.blocks:
            fully_shard(block, reshard_after_forward=reshard, mp_policy=mp)
        return fully_shard(self.inner, reshard_after_forward=reshard, mp_policy=mp)

    def _check_identical_on_ranks(self) -> None:
        """FSDP shards each rank's own copy (it does not broadcast, unlike DDP): refuse models that differ."""
        if self.world == 1:
            return
        with torch.no_grad():
            mine = [float(p.detach().double().sum()) for p in self.model.parameters()]
        names = [n for n, _ in self.model.named_parameters()]
        everyone = gather(mine, self.world)
        for r, theirs in enumerate(everyone):
            for name, a, b in zip(names, everyone[0], theirs):
                if a != b:
                    raise mark_all_ranks(MyopiaError(
                        f"--shard {self.shard}: the model differs between processes 0 and {r} ({name}): build it "
                        "identically on every rank (same seed, same weights) before train()"))

    @property
    def description(self) -> str:
        return {"single": "one process", "ddp": f"DDP over {self.world} processes",
                "fsdp": f"FSDP2 --shard {self.shard} over {self.world} process{'es' if self.world > 1 else ''}"}[self.kind]

    def micro_batch(self, last: bool):
        """Context for one micro-batch's forward and backward: gradients are synchronised only on the last."""
        if self.kind == "ddp" and not last:
            return self.module.no_sync()
        if self.kind == "fsdp":
            self.module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def loss(self, batch) -> torch.Tensor:
        return self.module(batch)

    def evaluate(self) -> dict:
        """The task's held-out metrics (the same dict on every rank that computed it; rank 0 always does)."""
        sharded = self.world > 1 and accepts_shard(self.task)
        kwargs = {"device": self.device, **({"shard": EvalShard(self.rank, self.world)} if sharded else {})}
        if self.kind == "fsdp":  # every rank takes part in every forward pass
            try:
                return self.module(evaluate=kwargs)
            finally:
                self._reshard()
        if sharded:
            return self.task.evaluate(self.model, **kwargs)
        return self.task.evaluate(self.model, self.device) if self.rank == 0 else {}

    def _reshard(self) -> None:
        from torch.distributed.fsdp import FSDPModule

        for m in self.module.modules():
            if isinstance(m, FSDPModule):
                m.reshard()

    def parameters(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective under FSDP), a plain tensor unchanged."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


# ------------------------------------------------------------------------------------------------------------
# Memory plan: what each process will hold
# ------------------------------------------------------------------------------------------------------------

_GB = 1024**3


def available_memory_bytes() -> int | None:
    """Memory this machine can give a new process without swapping: Linux's MemAvailable (page cache that can be
    dropped included), else free physical pages; None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_plan(model: nn.Module, *, shard: str, world: int, precision: str, micro_batch: int, seq_len: int,
                activation_checkpointing: bool, device: torch.device, device_memory_gb: float = 0.0) -> dict:
    """Bytes each process holds for parameters, gradients, AdamW state and (estimated) activations.

    fp32 master parameters, fp32 gradients, two fp32 AdamW moments. ``none``: everything replicated.
    ``grad``: parameters, gradients and moments sharded over ``world``, plus the gathered (compute-dtype)
    parameters, which stay from forward to backward. ``full``: the same shards plus two blocks gathered at a
    time. Activations: about 34 d bytes per token per block in bf16 (Korthikanti et al. 2022; twice in fp32),
    only the block inputs with activation checkpointing, plus the logits and their gradient. Refuses with one
    line when the total exceeds ``device_memory_gb`` (0: the CUDA device's own memory; on CPU the machine's
    available memory shared by this machine's processes, :func:`available_memory_bytes`).
    """
    n = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "cfg", None)
    d = int(getattr(cfg, "d_model", 0) or 0)
    layers = int(getattr(cfg, "n_layer", 0) or 0)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    compute = 2 if precision == "bf16" else 4
    sharded = shard != "none"
    w = world if sharded else 1
    params, grads, optim = 4 * n / w, 4 * n / w, 8 * n / w
    gathered = 0.0
    if sharded and shard == "grad":
        gathered = compute * n
    elif sharded and shard == "full":
        gathered = compute * 2 * n / max(layers, 1)
    tokens = micro_batch * seq_len
    per_block = (tokens * d * compute) if activation_checkpointing else 34 * tokens * d * compute / 2
    activations = layers * per_block + (34 * tokens * d * compute / 2 if activation_checkpointing else 0)
    activations += 3 * tokens * vocab * 4  # logits (fp32), their softmax and gradient
    total = params + grads + optim + gathered + activations
    limit_gb = float(device_memory_gb)
    if limit_gb <= 0 and device.type == "cuda":
        limit_gb = torch.cuda.get_device_properties(device).total_memory / _GB
    if limit_gb <= 0 and device.type == "cpu":  # the processes on this machine share its available memory
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world) or 1)
        limit_gb = (available_memory_bytes() or 0) / _GB / max(local, 1)
    plan = {"parameters_gb": params / _GB, "gradients_gb": grads / _GB, "optimizer_gb": optim / _GB,
            "gathered_parameters_gb": gathered / _GB, "activations_gb": activations / _GB, "total_gb": total / _GB,
            "device_memory_gb": limit_gb or None, "n_params": n, "shard": shard, "world_size": world}

    def gb(x):
        return f"{x / _GB:.2f} GB" if x >= 0.01 * _GB else f"{x / 1024**2:.1f} MB"

    parts = (f"parameters {gb(params)}, gradients {gb(grads)}, optimizer {gb(optim)}"
             + (f", gathered parameters {gb(gathered)}" if gathered else "") + f", activations ~{gb(activations)}")
    plan["summary"] = (f"memory per process: {parts}; total ~{gb(total)}"
                       + (f" of {limit_gb:.1f} GB" if limit_gb else ""))
    if limit_gb and total > limit_gb * _GB:
        hint = "use --shard full" if shard != "full" else "use more processes"
        raise MyopiaError(f"the run does not fit: each process needs ~{gb(total)} ({parts}) but has "
                          f"{limit_gb:.1f} GB; {hint}, --activation-checkpointing or a smaller --micro-batch-size")
    return plan
