"""The GPU check: does myopic training run exactly and at vanilla cost on this GPU? One command, <= 8 minutes (H200).

    PYTHONPATH=src python benchmarks/gpu_check.py --out "$OUT"             # on a GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run --out /tmp/gc   # every section at toy size on the CPU

Sections run in order, each with its own time budget (a section past its budget stops its loop and says so);
``gpu_check.json`` is rewritten after every section, so a run cut short keeps what it measured. Each section
has explicit pass/fail thresholds (``"pass"``: true/false; null where the issue sets none), and the top-level
``"pass"`` is true when every thresholded section passes.

1. environment       versions, device, which SDPA backends exist and which kernel our attention picks.
2. kernel_exactness  myopic attention against a float64 reference in bf16 and fp32: T in {1, 63, 300, 1024},
                     D in {64, 80, 128}, h in {0, 1, 7, 64}, beta in {0, 0.25}, grouped-query heads, the
                     hidden-state split and past tensors; each backward path pinned once at T = 1024, h = 64.
                     Pass: bf16 error <= 2x vanilla bf16's own error against fp64; fp32 error <= 1e-5
                     (error = max |a - b| / max |b| over dq, dk, dv).
3. model_exactness   HF GPT-2 / Pythia / Llama-GQA (fp32 on the device) and our GPT (fp32) against the float64
                     brute force of myopia.testing (CPU); our GPT's bf16-autocast gradients against fp64.
                     Pass: fp32 relative gradient error <= 1e-4; bf16 <= 2x vanilla bf16's error.
4. attention_speed   attention forward+backward at T in {1024, 2048}, bf16, B 8 x H 12 x D 64, h in
                     {0, 8, 64, 512} against vanilla on the SAME kernel family (our causal op: the same fused
                     kernel, forward and backward), plus PyTorch's own SDPA for reference; CUDA-event timing,
                     and beside each time the peak CUDA memory of one fwd+bwd (max_memory_allocated over what
                     was allocated before it) and its ratio to vanilla's and SDPA's.
                     Pass: h = 0 <= 1.10x (goal 1.03), other h <= 1.30x. Memory <= 1.05x is reported as
                     "memory_pass" (not yet part of "pass": no GPU has measured it).
5. gpt_step          our GPT-2-small (124M) training step at T = 1024, bf16 autocast, AdamW: vanilla, myopic,
                     myopic-hidden: step time, tokens/s, MFU, peak memory; one compiled pair (torch.compile)
                     with graph counts. Pass: myopic <= 1.10x, myopic-hidden <= 1.25x, myopic memory <= 1.05x.
6. pythia_1b         a Pythia-1B-like HF model (2048 wide, 16 layers) at T = 2048, bf16, every arm: step time
                     and peak memory (reported; no threshold).
7. torchrun          ``torchrun --nproc_per_node=1 -m myopia train`` (NCCL; ``--shard full`` where the CLI
                     has it), SIGKILL after a checkpoint, ``--resume``. Pass: the resumed run finishes from the
                     checkpoint.
8. finetune          the ``myopia finetune`` protocol for 3 steps (random Pythia-160M-like model, byte
                     tokenizer, three arms). Pass: it completes with finite losses.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import myopia.attention as attention  # noqa: E402
from myopia.io import provenance, write_json  # noqa: E402

SECTIONS = ("environment", "kernel_exactness", "model_exactness", "attention_speed", "gpt_step", "pythia_1b",
            "torchrun", "finetune")
BUDGET_S = {"environment": 10, "kernel_exactness": 60, "model_exactness": 40, "attention_speed": 50,
            "gpt_step": 160, "pythia_1b": 50, "torchrun": 60, "finetune": 40}  # 470 s in all; gpt_step holds two
# Inductor compiles (and, on CUDA with Triton, the fused band pass's first compile). Budgets are checked between
# steps, so a section can overrun by one step; past TOTAL_S the remaining sections are skipped (and say so).
TOTAL_S = 480
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


class Ctx:
    """Device, sizes and the running section's deadline."""

    def __init__(self, device: torch.device, dry: bool, budget_scale: float):
        self.device, self.dry, self.budget_scale = device, dry, budget_scale
        self.deadline = math.inf
        self.cut: list[str] = []

    def start(self, section: str) -> None:
        self.deadline = time.perf_counter() + BUDGET_S[section] * self.budget_scale
        self.cut = []

    def over(self, what: str) -> bool:
        """True (and noted) once the section's budget is spent: loops stop and the JSON says what was skipped."""
        if time.perf_counter() > self.deadline:
            self.cut.append(what)
            return True
        return False

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (b the reference)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def grads_err(got, ref) -> float:
    """max_i max |a_i - b_i| / max_i max |b_i|: each gradient's error on the scale of the problem's gradients
    (a gradient that is zero in exact arithmetic, such as dk at T = 1, has no relative error of its own)."""
    scale = max(float(b.detach().abs().max()) for b in ref)
    return max(float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max()) for a, b in zip(got, ref)) \
        / max(scale, 1e-300)


def timer(ctx: Ctx):
    """Milliseconds of one call of fn: CUDA events on the GPU, perf_counter on the CPU."""

    def time_ms(fn):
        if ctx.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(ctx.device)
            return start.elapsed_time(end)
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    return time_ms


# ------------------------------------------------------------------------------------------------------------
# 1. environment
# ------------------------------------------------------------------------------------------------------------


def environment(ctx: Ctx) -> dict:
    import importlib.util

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(ctx.device),
           "triton": importlib.util.find_spec("triton") is not None,
           "fused_band_pass": attention._compiled_band_for(ctx.device)}
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        out.update(name=props.name, capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / 2**30,
                   flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled(),
                   mem_efficient_sdp_enabled=torch.backends.cuda.mem_efficient_sdp_enabled(),
                   cudnn_sdp_enabled=torch.backends.cuda.cudnn_sdp_enabled())
    kernels = {}
    for dtype in (torch.bfloat16, torch.float32):
        for D in (64, 80, 128):
            q = torch.zeros(1, 4, 16, D, device=ctx.device, dtype=dtype)
            kv = torch.zeros(1, 2, 16, D, device=ctx.device, dtype=dtype)
            kernels[f"{str(dtype)[6:]}_D{D}"] = attention.kernel_for(q, kv, kv)
    out["our_kernel"] = kernels
    out["pass"] = None if ctx.dry else kernels["bfloat16_D64"] == "cuda_flash"
    return out


# ------------------------------------------------------------------------------------------------------------
# 2. kernel exactness
# ------------------------------------------------------------------------------------------------------------


def _grads(fn, inputs, g):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    return out.detach(), torch.autograd.grad((out * g.to(out.dtype)).sum(), inputs)


def kernel_exactness(ctx: Ctx) -> dict:
    from myopia.attention import causal_attention, myopic_attention, myopic_attention_split

    if ctx.dry:
        Ts, Ds, hs, betas = (1, 9, 20), (8,), (0, 1, 7), (0.0, 0.25)
    else:
        Ts, Ds, hs, betas = (1, 63, 300, 1024), (64, 80, 128), (0, 1, 7, 64), (0.0, 0.25)
    B, H, H_kv = 1, 4, 2
    rows, worst = [], {"bfloat16": 0.0, "float32": 0.0}
    ok = True
    for T in Ts:
        for D in Ds:
            if ctx.over(f"T={T} D={D}"):
                break
            gen = torch.Generator(device="cpu").manual_seed(T * 1000 + D)
            q64 = torch.randn(B, H, T, D, generator=gen, dtype=torch.float64).to(ctx.device)
            k64, v64 = (torch.randn(B, H_kv, T, D, generator=gen, dtype=torch.float64).to(ctx.device)
                        for _ in range(2))
            pk64, pv64 = (torch.randn(B, H_kv, T, D, generator=gen, dtype=torch.float64).to(ctx.device)
                          for _ in range(2))
            g64 = torch.randn(B, H, T, D, generator=gen, dtype=torch.float64).to(ctx.device)

            def eager(h, beta):
                return lambda q, k, v: myopic_attention(q, k, v, horizon=h, beta=beta, impl="eager")

            _, van_ref = _grads(eager(0, 1.0), (q64, k64, v64), g64)
            for dtype in (torch.bfloat16, torch.float32):
                name = str(dtype)[6:]
                q, k, v, pk, pv = (t.to(dtype) for t in (q64, k64, v64, pk64, pv64))
                _, van = _grads(lambda q, k, v: causal_attention(q, k, v), (q, k, v), g64)
                van_err = grads_err(van, van_ref)
                limit = 2 * van_err if dtype == torch.bfloat16 else 1e-5
                cases = [(h, beta) for h in hs for beta in betas]
                for h, beta in cases:
                    path = attention.choose_path(T, h, dtype) if h < T - 1 and beta < 1 else "vanilla"
                    _, ref = _grads(eager(h, beta), (q64, k64, v64), g64)
                    _, got = _grads(lambda q, k, v: myopic_attention(q, k, v, horizon=h, beta=beta), (q, k, v), g64)
                    err = grads_err(got, ref)
                    # hidden-state split: k_w/v_w the vanilla gradient, k_x/v_x the myopic one
                    _, sg = _grads(lambda q, kw, vw, kx, vx: myopic_attention_split(q, kw, vw, kx, vx, horizon=h,
                                                                                    beta=beta), (q, k, v, k, v), g64)
                    split_err = grads_err(sg, (ref[0], van_ref[1], van_ref[2], ref[1], ref[2]))
                    passed = err <= limit and split_err <= limit
                    ok &= passed
                    worst[name] = max(worst[name], err, split_err)
                    rows.append({"T": T, "D": D, "dtype": name, "horizon": h, "beta": beta, "path": path,
                                 "err": err, "split_err": split_err, "vanilla_err": van_err, "limit": limit,
                                 "pass": passed})
                # past tensors (local myopia bonus)
                _, pref = _grads(lambda q, k, v: myopic_attention(q, k, v, past_k=pk64, past_v=pv64, impl="eager"),
                                 (q64, k64, v64), g64)
                _, pgot = _grads(lambda q, k, v: myopic_attention(q, k, v, past_k=pk, past_v=pv), (q, k, v), g64)
                perr = grads_err(pgot, pref)
                passed = perr <= max(limit, 2e-5 if dtype == torch.float32 else limit)
                ok &= passed
                rows.append({"T": T, "D": D, "dtype": name, "past": True, "err": perr, "limit": limit,
                             "pass": passed})
    # every backward path pinned once (the rule picks one; the others must be exact too)
    T, D, h = (20, 8, 7) if ctx.dry else (1024, 64, 64)
    pinned = []
    gen = torch.Generator(device="cpu").manual_seed(7)
    q64, k64, v64, g64 = (torch.randn(B, H if i in (0, 3) else H_kv, T, D, generator=gen,
                                      dtype=torch.float64).to(ctx.device) for i in range(4))
    _, ref = _grads(lambda q, k, v: myopic_attention(q, k, v, horizon=h, impl="eager"), (q64, k64, v64), g64)
    for path in attention.PATHS:
        attention.FORCE_PATH = path
        try:
            _, got = _grads(lambda q, k, v: myopic_attention(q, k, v, horizon=h), (q64.float(), k64.float(),
                                                                                   v64.float()), g64)
        finally:
            attention.FORCE_PATH = None
        err = grads_err(got, ref)
        ok &= err <= 1e-5
        pinned.append({"path": path, "T": T, "D": D, "horizon": h, "dtype": "float32", "err": err,
                       "pass": err <= 1e-5})
    failed = [r for r in rows + pinned if not r["pass"]]
    return {"pass": ok, "worst_err": worst, "n_cases": len(rows) + len(pinned), "failed": failed[:20],
            "pinned_paths": pinned, "rows": rows}


# ------------------------------------------------------------------------------------------------------------
# 3. model exactness
# ------------------------------------------------------------------------------------------------------------


def _hf_models(dry: bool):
    import transformers as tr

    width = 16 if dry else 64
    torch.manual_seed(0)
    return {
        "gpt2": tr.GPT2LMHeadModel(tr.GPT2Config(vocab_size=97, n_positions=64, n_embd=width, n_layer=2, n_head=4,
                                                 attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)),
        "pythia": tr.GPTNeoXForCausalLM(tr.GPTNeoXConfig(vocab_size=97, hidden_size=width, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=2 * width)),
        "llama-gqa": tr.LlamaForCausalLM(tr.LlamaConfig(vocab_size=97, hidden_size=width, num_hidden_layers=2,
                                                        num_attention_heads=4, num_key_value_heads=2,
                                                        intermediate_size=2 * width)),
    }


def _param_err(got, want) -> float:
    return max(float((a.double().cpu() - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(got, want))


def model_exactness(ctx: Ctx) -> dict:
    import copy

    from myopia.hf import apply
    from myopia.model import GPT, GPTConfig
    from myopia.testing import brute_force_loss, gpt_brute_force_loss, hidden_brute_force_loss

    out, ok = {"hf": {}, "gpt": {}}, True
    x = torch.randint(0, 97, (1, 8) if ctx.dry else (2, 13), generator=torch.Generator().manual_seed(0))
    for name, model in _hf_models(ctx.dry).items():
        if ctx.over(f"hf {name}"):
            break
        model = model.float().eval()
        ref = copy.deepcopy(model).double()
        want = {"myopic": torch.autograd.grad(brute_force_loss(ref, x), list(ref.parameters())),
                "myopic-hidden": torch.autograd.grad(hidden_brute_force_loss(ref, x), list(ref.parameters()))}
        model = model.to(ctx.device)
        xd = x.to(ctx.device)
        with torch.no_grad():
            base_logits = model(xd[:, :-1], use_cache=False).logits
        out["hf"][name] = {}
        for mode in ("myopic", "myopic-hidden"):
            apply(model, mode)
            logits = model(xd[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.flatten(0, 1), xd[:, 1:].flatten(), reduction="sum")
            err = _param_err(torch.autograd.grad(loss, list(model.parameters())), want[mode])
            passed = err <= 1e-4
            ok &= passed
            out["hf"][name][mode] = {"grad_rel_err": err, "logits_max_abs_diff": rel_err(logits, base_logits),
                                     "pass": passed}
        apply(model, "vanilla")
    # our GPT: fp32 on the device and bf16 autocast, against the float64 brute force on the CPU
    cfg = dict(vocab_size=97, n_layer=2, n_head=4, d_model=32 if ctx.dry else 64, seq_len=32)
    T = 8 if ctx.dry else 32
    idx = torch.randint(0, 97, (2, T), generator=torch.Generator().manual_seed(1))
    target = idx[:, torch.arange(1, T + 1) % T]

    def loss_of(model, idx, target):
        return F.cross_entropy(model(idx).float().flatten(0, 1), target.flatten(), reduction="sum")

    van_bf16_err = None
    for mode in ("vanilla", "myopic", "myopic-hidden"):
        if ctx.over(f"gpt {mode}"):
            break
        torch.manual_seed(0)
        model = GPT(GPTConfig(**cfg, gradient=mode))
        ref = copy.deepcopy(model).double()
        ref_loss = loss_of(ref, idx, target) if mode == "vanilla" else gpt_brute_force_loss(ref, idx, mode)
        want = torch.autograd.grad(ref_loss, list(ref.parameters()))
        model = model.to(ctx.device)
        idx_d, tgt_d = idx.to(ctx.device), target.to(ctx.device)
        err32 = _param_err(torch.autograd.grad(loss_of(model, idx_d, tgt_d), list(model.parameters())), want)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            loss16 = loss_of(model, idx_d, tgt_d)
        err16 = _param_err(torch.autograd.grad(loss16, list(model.parameters())), want)
        if mode == "vanilla":
            van_bf16_err = err16
        passed = err32 <= 1e-4 and (mode == "vanilla" or err16 <= 2 * van_bf16_err)
        ok &= passed
        out["gpt"][mode] = {"fp32_grad_rel_err": err32, "bf16_grad_rel_err": err16,
                            "bf16_limit": None if mode == "vanilla" else 2 * van_bf16_err, "pass": passed}
    out["pass"] = ok
    return out


# ------------------------------------------------------------------------------------------------------------
# 4. attention speed
# ------------------------------------------------------------------------------------------------------------


def attention_speed(ctx: Ctx) -> dict:
    from myopia.attention import causal_attention, myopic_attention

    if ctx.dry:
        B, H, D, lengths, hs, warm, iters, dtype = 1, 2, 16, (64, 128), (0, 8, 64), 1, 3, torch.float32
    else:
        B, H, D, lengths, hs, warm, iters, dtype = 8, 12, 64, (1024, 2048), (0, 8, 64, 512), 3, 20, torch.bfloat16
    time_ms = timer(ctx)
    out, ok = {"shape": [B, H, "T", D], "dtype": str(dtype)[6:], "rows": []}, True
    for T in lengths:
        if ctx.over(f"T={T}"):
            break
        gen = torch.Generator(device="cpu").manual_seed(T)
        q, k, v, g = (torch.randn(B, H, T, D, generator=gen).to(ctx.device, dtype) for _ in range(4))
        q, k, v = (t.requires_grad_() for t in (q, k, v))

        def step(fn):
            def run():
                fn(q, k, v).backward(g)
                q.grad = k.grad = v.grad = None
            return run

        variants = {"vanilla": step(lambda q, k, v: causal_attention(q, k, v)),
                    "sdpa": step(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))}
        for h in hs:
            variants[f"h{h}"] = step(lambda q, k, v, h=h: myopic_attention(q, k, v, horizon=h))
        times = {name: [] for name in variants}
        for fn in variants.values():
            for _ in range(warm):
                fn()
        ctx.sync()
        for r in range(iters):  # interleaved: every variant once per round
            for name, fn in variants.items():
                times[name].append(time_ms(fn))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        peak = {name: peak_memory(ctx, fn) for name, fn in variants.items()}
        row = {"T": T, "vanilla_ms": med["vanilla"], "sdpa_ms": med["sdpa"], "kernel": attention.kernel_for(q, k, v),
               "vanilla_peak_mib": _mib(peak["vanilla"]), "sdpa_peak_mib": _mib(peak["sdpa"])}
        for h in hs:
            ratio = med[f"h{h}"] / med["vanilla"]
            limit = 1.10 if h == 0 else 1.30
            passed = ratio <= limit
            ok &= passed or ctx.dry
            mem = peak[f"h{h}"] / peak["vanilla"] if peak["vanilla"] else None
            row[f"h{h}"] = {"ms": med[f"h{h}"], "ratio": ratio, "ratio_vs_sdpa": med[f"h{h}"] / med["sdpa"],
                            "path": attention.choose_path(T, h, dtype) if h < T - 1 else "vanilla", "limit": limit,
                            "pass": passed, "peak_mib": _mib(peak[f"h{h}"]), "memory_ratio": mem,
                            "memory_ratio_vs_sdpa": peak[f"h{h}"] / peak["sdpa"] if peak["sdpa"] else None,
                            "memory_pass": None if mem is None else mem <= MEMORY_LIMIT}
        out["rows"].append(row)
        print(f"  T={T} vanilla {med['vanilla']:.2f} ms {row['vanilla_peak_mib']} MiB  " + "  ".join(
            f"h{h} x{row[f'h{h}']['ratio']:.3f} mem x{row[f'h{h}']['memory_ratio'] or float('nan'):.3f}"
            for h in hs), flush=True)
    out["memory_limit"] = MEMORY_LIMIT
    out["memory_pass"] = None if ctx.device.type != "cuda" else all(
        row[f"h{h}"]["memory_pass"] for row in out["rows"] for h in hs)
    out["pass"] = None if ctx.dry else ok
    return out


MEMORY_LIMIT = 1.05  # peak memory of a myopic fwd+bwd over vanilla's (reported as memory_pass; not part of "pass")


def _mib(b):
    return None if b is None else b / 2**20


def peak_memory(ctx: Ctx, fn):
    """Peak CUDA memory (bytes) one call of fn allocates beyond what was allocated before it; None off CUDA
    (the CPU's resident-set measurement is benchmarks/bench_attention_memory.py, one process per variant)."""
    if ctx.device.type != "cuda":
        return None
    torch.cuda.synchronize(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    base = torch.cuda.memory_allocated(ctx.device)
    fn()
    torch.cuda.synchronize(ctx.device)
    return torch.cuda.max_memory_allocated(ctx.device) - base


# ------------------------------------------------------------------------------------------------------------
# 5. our GPT-2-small training step
# ------------------------------------------------------------------------------------------------------------


def _peak_flops(ctx: Ctx):
    if ctx.device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(ctx.device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def _train_steps(ctx, model_fn, batch, warm, steps, autocast: bool):
    """Median step time (ms), peak memory (bytes, CUDA) and final loss of AdamW steps on one batch."""
    model = model_fn()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    time_ms = timer(ctx)
    loss_box = {}

    def step():
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch[:, :-1])
            logits = logits.logits if hasattr(logits, "logits") else logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_box["loss"] = loss.detach()

    for _ in range(warm):
        step()
    ctx.sync()
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    times = [time_ms(step) for _ in range(steps)]
    peak = torch.cuda.max_memory_allocated(ctx.device) if ctx.device.type == "cuda" else None
    res = {"step_ms": statistics.median(times), "step_ms_all": times, "peak_mem_bytes": peak,
           "loss": float(loss_box["loss"])}
    del model, opt
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def gpt_step(ctx: Ctx) -> dict:
    from myopia.model import GPT, GPTConfig, flops_per_token

    if ctx.dry:
        size, B, warm, steps, autocast, backend = dict(vocab_size=512, n_layer=1, n_head=2, d_model=64,
                                                       seq_len=64), 2, 1, 2, False, "aot_eager"
    else:
        size, B, warm, steps, autocast, backend = dict(vocab_size=50304, n_layer=12, n_head=12, d_model=768,
                                                       seq_len=1024), 8, 3, 10, True, "inductor"
    T = size["seq_len"]
    batch = torch.randint(0, size["vocab_size"], (B, T + 1), generator=torch.Generator().manual_seed(0))
    batch = batch.to(ctx.device)
    peak_flops = _peak_flops(ctx)
    out = {"config": {**size, "batch": B, "bf16_autocast": autocast}, "arms": {}}

    def make(mode, compiled=False):
        def build():
            torch.manual_seed(0)
            model = GPT(GPTConfig(**size, gradient=mode)).to(ctx.device)
            return torch.compile(model, backend=backend) if compiled else model
        return build

    for mode in ("vanilla", "myopic", "myopic-hidden"):
        if ctx.over(f"arm {mode}"):
            break
        res = _train_steps(ctx, make(mode), batch, warm, steps, autocast)
        res["tokens_per_s"] = B * T / (res["step_ms"] / 1e3)
        fpt = flops_per_token(GPTConfig(**size))
        res["mfu"] = fpt * res["tokens_per_s"] / peak_flops if peak_flops else None
        out["arms"][mode] = res
        print(f"  {mode:14s} {res['step_ms']:8.1f} ms/step  {res['tokens_per_s']:9.0f} tok/s", flush=True)
    arms = out["arms"]
    ok = None
    if {"vanilla", "myopic", "myopic-hidden"} <= set(arms):
        base = arms["vanilla"]
        for mode in ("myopic", "myopic-hidden"):
            arms[mode]["time_ratio"] = arms[mode]["step_ms"] / base["step_ms"]
            if base["peak_mem_bytes"]:
                arms[mode]["memory_ratio"] = arms[mode]["peak_mem_bytes"] / base["peak_mem_bytes"]
        ok = (arms["myopic"]["time_ratio"] <= 1.10 and arms["myopic-hidden"]["time_ratio"] <= 1.25
              and arms["myopic"].get("memory_ratio", 1.0) <= 1.05)
    # one compiled pair, with Dynamo's graph counts
    from torch._dynamo.utils import counters

    out["compiled"] = {}
    for mode in ("vanilla", "myopic"):
        if ctx.over(f"compiled {mode}"):
            break
        torch._dynamo.reset()
        counters.clear()
        res = _train_steps(ctx, make(mode, compiled=True), batch, max(warm, 2), steps, autocast)
        res["unique_graphs"] = int(counters["stats"]["unique_graphs"])
        res["graph_breaks"] = int(sum(counters["graph_break"].values()))
        out["compiled"][mode] = res
        print(f"  compiled {mode:8s} {res['step_ms']:8.1f} ms/step  graphs {res['unique_graphs']} "
              f"breaks {res['graph_breaks']}", flush=True)
    if len(out["compiled"]) == 2:
        c = out["compiled"]
        out["compiled"]["myopic_time_ratio"] = c["myopic"]["step_ms"] / c["vanilla"]["step_ms"]
        out["compiled"]["same_graph_count"] = c["myopic"]["unique_graphs"] == c["vanilla"]["unique_graphs"]
    out["pass"] = None if ctx.dry else ok
    return out


# ------------------------------------------------------------------------------------------------------------
# 6. a Pythia-1B-like HF model
# ------------------------------------------------------------------------------------------------------------


def pythia_1b(ctx: Ctx) -> dict:
    import transformers as tr

    from myopia.hf import apply

    if ctx.dry:
        size, T, B, warm, steps = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=256, vocab_size=512), 64, 1, 1, 2
    else:
        size, T, B, warm, steps = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=8,
                                       intermediate_size=8192, vocab_size=50304), 2048, 2, 2, 5
    cfg = tr.GPTNeoXConfig(**size, max_position_embeddings=max(2048, T), use_parallel_residual=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.25})
    batch = torch.randint(0, size["vocab_size"], (B, T + 1), generator=torch.Generator().manual_seed(0))
    batch = batch.to(ctx.device)
    out = {"config": {**size, "seq_len": T, "batch": B}, "arms": {}}
    for mode in ("vanilla", "myopic", "myopic-hidden"):
        if ctx.over(f"arm {mode}"):
            break

        def build(mode=mode):
            torch.manual_seed(0)
            with torch.device(ctx.device):  # initialise on the device: 1B parameters take seconds on a CPU
                model = tr.GPTNeoXForCausalLM(cfg)
            model.config.use_cache = False
            return apply(model, mode)

        res = _train_steps(ctx, build, batch, warm, steps, autocast=ctx.device.type == "cuda")
        out["arms"][mode] = res
        print(f"  {mode:14s} {res['step_ms']:8.1f} ms/step  peak {res['peak_mem_bytes']}", flush=True)
    base = out["arms"].get("vanilla")
    for mode in ("myopic", "myopic-hidden"):
        arm = out["arms"].get(mode)
        if base and arm:
            arm["time_ratio"] = arm["step_ms"] / base["step_ms"]
            if base["peak_mem_bytes"]:
                arm["memory_ratio"] = arm["peak_mem_bytes"] / base["peak_mem_bytes"]
    out["pass"] = None  # reported; the issue sets no threshold here
    return out


# ------------------------------------------------------------------------------------------------------------
# 7. torchrun: train, checkpoint, SIGKILL, resume
# ------------------------------------------------------------------------------------------------------------


def corpus_path(tmp: Path) -> Path:
    shared = Path(os.environ.get("MYOPIA_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if (shared / "tinyshakespeare.txt").exists():
        return shared / "tinyshakespeare.txt"
    import random

    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran far away from home at night".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 200))) for _ in range(400)]
    path = tmp / "generated.txt"
    path.write_text("\n\n".join(docs))
    return path


def _checkpoint_step(run: Path):
    """The newest complete checkpoint's step in a run directory (None if there is none yet)."""
    import myopia.checkpoint as ckpt

    if hasattr(ckpt, "checkpoint_steps"):  # folders checkpoints/step_N (distributed checkpoints)
        for step, path in ckpt.checkpoint_steps(run):
            try:
                ckpt.read_checkpoint_meta(path, verify=False)
                return step
            except Exception:  # still being written
                continue
        return None
    path = run / "checkpoint.safetensors"  # the single-file format
    try:
        return int(ckpt.load_tensors(path)[1]["step"]) if path.exists() else None
    except Exception:
        return None


def torchrun_section(ctx: Ctx, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if ctx.dry:
        env.setdefault("OMP_NUM_THREADS", "1")
    help_text = subprocess.run([sys.executable, "-m", "myopia", "train", "--help"], capture_output=True, text=True,
                               env=env, timeout=120).stdout
    shard = "--shard" in help_text
    data = corpus_path(tmp)
    run = tmp / "torchrun-run"
    if ctx.dry:
        size = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--seq-len", "16", "--batch-size", "4"]
        steps, every, device = 60, 4, "cpu"
    else:
        size = ["--d-model", "256", "--n-layer", "4", "--n-head", "4", "--seq-len", "256", "--batch-size", "16"]
        steps, every, device = 150, 25, "cuda"
    args = ["train", "--data", str(data), "--out", str(run), "--steps", str(steps), "--ckpt-every", str(every),
            "--eval-every", str(steps), "--eval-tokens", "2048", "--log-every", "1", "--device", device,
            "--gradient", "myopic", "--no-progress", *size]
    if shard:
        args += ["--shard", "full"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "myopia"]
    out = {"shard_flag_accepted": shard, "shard": "full" if shard else None, "backend": "nccl" if device == "cuda"
           else "gloo", "command": " ".join(cmd + args)}
    proc = subprocess.Popen(cmd + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: torchrun and its worker die together
    killed_at = None
    try:
        while proc.poll() is None and not ctx.over("waiting for a checkpoint"):
            step = _checkpoint_step(run) if run.exists() else None
            if step is not None and step >= 2 * every:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out["killed_at_step"] = killed_at
    if killed_at is None:
        out.update(error="the run ended or ran out of budget before a second checkpoint",
                   stderr=(proc.stderr.read() or "")[-2000:], returncode=proc.returncode)
        out["pass"] = False
        return out
    res = subprocess.run(cmd + args + ["--resume"], env=env, capture_output=True, text=True,
                         timeout=max(30, ctx.deadline - time.perf_counter()))
    out["resume_returncode"] = res.returncode
    result = run / "result.json"
    if res.returncode != 0 or not result.exists():
        out.update(stderr=res.stderr[-2000:])
        out["pass"] = False
        return out
    import json

    summary = json.loads(result.read_text())
    out["resumed_from_step"] = summary.get("resumed_from_step")
    out["world_size"] = summary.get("world_size")
    out["pass"] = (out["resumed_from_step"] or 0) >= killed_at
    return out


# ------------------------------------------------------------------------------------------------------------
# 8. the fine-tune protocol
# ------------------------------------------------------------------------------------------------------------


def finetune_section(ctx: Ctx, tmp: Path) -> dict:
    import transformers as tr

    from myopia.experiments.finetune import finetune
    from myopia.hf.tokenizer import bytes_tokenizer
    from myopia.train import TrainConfig

    width, layers = (32, 2) if ctx.dry else (768, 12)
    torch.manual_seed(0)
    base = tmp / "pythia-random"
    cfg = tr.GPTNeoXConfig(vocab_size=512 if ctx.dry else 50304, hidden_size=width, num_hidden_layers=layers,
                           num_attention_heads=4 if ctx.dry else 12, intermediate_size=4 * width,
                           max_position_embeddings=2048, use_parallel_residual=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.25})
    tr.GPTNeoXForCausalLM(cfg).save_pretrained(base)
    bytes_tokenizer().save_pretrained(base)
    train_cfg = TrainConfig(steps=3, batch_size=4 if ctx.dry else 32, lr=3e-4, eval_every=0, ckpt_every=0,
                            log_every=1, device=str(ctx.device), precision="fp32" if ctx.dry else "bf16",
                            progress=False)
    t0 = time.perf_counter()
    summary = finetune(str(base), corpus_path(tmp), tmp / "ft", train_cfg, seq_len=32 if ctx.dry else 256,
                       eval_tokens=2048 if ctx.dry else 65536)
    arms = summary["arms"]
    finite = all(math.isfinite(float(v)) for arm in arms.values() if isinstance(arm, dict)
                 for k, v in arm.items() if "loss" in k and isinstance(v, (int, float)))
    return {"wall_s": time.perf_counter() - t0, "arms": arms, "gap_vs_vanilla": summary.get("gap_vs_vanilla"),
            "pass": finite}


# ------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="output directory")
    p.add_argument("--dry-run", action="store_true", help="every section at toy size on the CPU")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--budget-scale", type=float, default=None,
                   help="multiply every section's time budget (default 1 on a GPU, 4 in a dry run)")
    args = p.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"error: unknown sections {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; use --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    scale = args.budget_scale if args.budget_scale is not None else (4.0 if args.dry_run else 1.0)
    ctx = Ctx(device, args.dry_run, scale)
    out = Path(args.out)
    report = {"dry_run": args.dry_run, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "budgets_s": {s: BUDGET_S[s] * scale for s in sections}, "sections": {}, **provenance()}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for section in sections:
            if time.perf_counter() - t_all > TOTAL_S * scale:  # a section overran: keep the 8-minute promise
                report["sections"][section] = {"pass": None, "skipped": f"total budget of {TOTAL_S * scale:.0f} s spent"}
                print(f"== {section}: skipped (total budget spent)", flush=True)
                write_json(out / "gpu_check.json", report)
                continue
            print(f"== {section} (budget {BUDGET_S[section] * scale:.0f} s)", flush=True)
            ctx.start(section)
            t0 = time.perf_counter()
            try:
                if section == "torchrun":
                    res = torchrun_section(ctx, Path(tmp))
                elif section == "finetune":
                    res = finetune_section(ctx, Path(tmp))
                else:
                    res = globals()[section](ctx)
            except Exception as exc:  # recorded, and the next section still runs
                res = {"pass": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            finally:
                attention.FORCE_PATH = None
            res["wall_s"] = time.perf_counter() - t0
            res["budget_cut"] = list(ctx.cut)
            report["sections"][section] = res
            verdict = {True: "PASS", False: "FAIL", None: "reported"}[res.get("pass")]
            print(f"   {section}: {verdict} in {res['wall_s']:.1f} s"
                  + (f" (budget cut: {', '.join(ctx.cut)})" if ctx.cut else "")
                  + (f" -- {res['error']}" if "error" in res else ""), flush=True)
            report["wall_s"] = time.perf_counter() - t_all
            verdicts = [r.get("pass") for r in report["sections"].values()]
            report["pass"] = all(v is not False for v in verdicts)
            write_json(out / "gpu_check.json", report)
    print(f"{'PASS' if report['pass'] else 'FAIL'} in {report['wall_s']:.0f} s -> {out / 'gpu_check.json'}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
