"""Myopic vs vanilla cost: attention forward+backward and a whole GPT training step, in one run.

Variants
  vanilla   PyTorch's fused causal attention (the flash kernel) with ordinary gradients
  myopic    our fused myopic attention (flash kernel + band-gradient backward), strict myopia
  hidden    hidden-state myopia (split projections + fused myopic attention); training step only
  eager     an eager myopic implementation that materialises the T x T matrix, as the paper's code does

Memory: each variant in a fresh subprocess; peak memory is the rise of the process's peak resident set
(ru_maxrss; on CUDA, torch.cuda.max_memory_allocated) during the first forward+backward, after the inputs exist.
Time ratios ("paired"): the variants run in ONE process on the same inputs, alternating blocks of steps, and the
ratio of their median step times is taken; the median over several such processes is reported. Timing each
variant in its own process (also printed, "separate": best of the rounds) swings by ±15% on a shared machine
with where a process's memory lands. Ratios, not absolute times, are the result.

    python benchmarks/bench_attention.py                 # horizon rows at T = 1024, attention at T = 256 ... 4096,
                                                         # then the GPT step
    python benchmarks/bench_attention.py --lengths none --gpt none --paths 64:near,64:complement  # horizons only
    python benchmarks/bench_attention.py --quick         # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_MEASURE_S = 1.0  # short steps are repeated until a measurement lasts about this long (medians of many)
MAX_ITERS = 300


# ------------------------------------------------------------------------------------------------------------
# Child: one measurement
# ------------------------------------------------------------------------------------------------------------


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _attention_fn(variant):
    """vanilla | myopic | eager | h<N> (strict myopia at horizon N, the path by the rule) | h<N>:<path>."""
    import myopia.attention as attention
    from myopia.attention import causal_attention, myopic_attention

    if variant.startswith("h"):
        horizon, _, path = variant[1:].partition(":")

        def fn(q, k, v):
            attention.FORCE_PATH = path or None  # read in backward; the step resets it afterwards
            return myopic_attention(q, k, v, horizon=int(horizon))

        return fn
    if variant == "vanilla":
        return lambda q, k, v: causal_attention(q, k, v)
    if variant == "myopic":
        return lambda q, k, v: myopic_attention(q, k, v)
    if variant == "eager":
        return lambda q, k, v: myopic_attention(q, k, v, impl="eager")
    raise ValueError(variant)


def _attention_steps(variants, T, B, H, D, device):
    """One forward+backward step per variant, all on the same (seeded) inputs: name -> callable."""
    import torch

    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device=device, requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, T, D, device=device)

    def make_step(fn):
        def step():
            fn(q, k, v).backward(g)
            q.grad = k.grad = v.grad = None
            import myopia.attention as attention

            attention.FORCE_PATH = None
        return step

    return {name: make_step(_attention_fn(name)) for name in variants}


def child_attention(variant, T, B, H, D, iters, device):
    import torch

    fn = _attention_fn(variant)
    _initialise_libraries(lambda: fn(*(torch.randn(1, 1, 16, D, device=device, requires_grad=True)
                                       for _ in range(3))).sum().backward())
    return _measure(_attention_steps([variant], T, B, H, D, device)[variant], iters, device)


def child_attention_paired(variants, T, B, H, D, device, seconds):
    """Time several variants in ONE process on the same inputs, alternating blocks of steps: the ratio then
    does not depend on where a process's memory happened to land, which moves single-process medians by
    up to ±20% on this machine."""
    return _paired_times(_attention_steps(variants, T, B, H, D, device), seconds, device)


def _paired_times(steps, seconds, device, block_s=0.1):
    """Median step time of each entry of ``steps`` (name -> callable), measured in rounds that run a block of
    each in turn (order reversed every other round); the first step of each block, which pays for the switch,
    is not counted."""
    for step in steps.values():  # warm-up, and a step-time estimate for the block length
        step()
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
    per_step = max(time.perf_counter() - t, 1e-6)
    block = max(2, int(block_s / per_step) + 1)
    times = {name: [] for name in steps}
    names = list(steps)
    start, r = time.perf_counter(), 0
    while r < 4 or time.perf_counter() - start < seconds:
        for name in (names if r % 2 == 0 else names[::-1]):
            for i in range(block):
                _sync(device)
                t = time.perf_counter()
                steps[name]()
                _sync(device)
                if i:
                    times[name].append(time.perf_counter() - t)
        r += 1
    return {name: {"time_s": statistics.median(ts), "steps": len(ts)} for name, ts in times.items()}


def _gpt_setup(variant, T, B, device, d_model, n_layer, n_head):
    import torch

    from myopia.model import GPT, GPTConfig

    gradient = {"vanilla": "vanilla", "myopic": "myopic", "hidden": "myopic-hidden", "eager": "myopic"}[variant]
    cfg = GPTConfig(vocab_size=8192, n_layer=n_layer, n_head=n_head, d_model=d_model, seq_len=T, gradient=gradient,
                    attention_impl="eager" if variant == "eager" else "auto")
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (B, T), device=device, generator=torch.Generator(device).manual_seed(1))

    def step():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step.model = model
    return step


def child_gpt_paired(variants, T, B, device, d_model, n_layer, n_head, seconds):
    """GPT training steps of several gradient variants timed in one process, alternating (see above)."""
    steps = {v: _gpt_setup(v, T, B, device, d_model, n_layer, n_head) for v in variants}
    return _paired_times(steps, seconds, device, block_s=0.0)


def child_gpt(variant, T, B, iters, device, d_model, n_layer, n_head):
    from myopia.model import flops_per_token

    def tiny_step():  # library set-up on a tiny model that lives only inside this call
        _gpt_setup(variant, 16, 1, device, d_model, 1, n_head)()

    _initialise_libraries(tiny_step)
    step = _gpt_setup(variant, T, B, device, d_model, n_layer, n_head)
    out = _measure(step, iters, device)
    out["tokens_per_s"] = B * T / out["time_s"]
    out["flops_per_token"] = flops_per_token(step.model.cfg)
    out["non_embedding_params"] = step.model.num_params(non_embedding=True)
    return out


def _initialise_libraries(fn):
    """Run a tiny instance first so that one-time library set-up does not count as the variant's memory."""
    fn()
    fn()


def _sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _measure(step, iters, device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        _sync(device)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _peak_bytes()
        step()
        peak = _peak_bytes() - base
    step()  # warm
    _sync(device)
    t = time.perf_counter()
    step()
    _sync(device)
    iters = max(iters, min(MAX_ITERS, int(MIN_MEASURE_S / max(time.perf_counter() - t, 1e-6))))
    times = []
    for _ in range(iters):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return {"time_s": statistics.median(times), "peak_bytes": peak}


def child_matmul_peak(device, n=2048, iters=10):
    """Measured fp32 matmul throughput (FLOP/s): the ceiling for model FLOP utilisation."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return {"flops_per_s": 2 * n**3 * iters / (time.perf_counter() - t)}


# ------------------------------------------------------------------------------------------------------------
# Parent: rounds of subprocesses
# ------------------------------------------------------------------------------------------------------------


def run_child(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps({"kind": kind, **kw})]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _fmt_mb(b):
    return f"{b / 2**20:8.1f}"


def bench_attention(lengths, rounds, iters, device, B, H, D, eager_max, paired_seconds):
    rows = []
    for T in lengths:
        variants = ["vanilla", "myopic"] + (["eager"] if T <= eager_max else [])
        samples = {v: [] for v in variants}
        for r in range(rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                samples[v].append(run_child("attention", variant=v, T=T, B=B, H=H, D=D, iters=iters, device=device))
        row = {"T": T}
        for v in variants:
            ok = [s for s in samples[v] if "error" not in s]
            if not ok:
                row[v] = {"error": samples[v][0]["error"]}
                continue
            row[v] = {"time_s": min(s["time_s"] for s in ok), "peak_bytes": min(s["peak_bytes"] for s in ok)}
        paired = [run_child("attention_paired", variants=["vanilla", "myopic"], T=T, B=B, H=H, D=D, device=device,
                            seconds=paired_seconds) for _ in range(rounds)]
        ratios = [p["myopic"]["time_s"] / p["vanilla"]["time_s"] for p in paired if "error" not in p]
        if ratios:
            row["paired_time_ratio"] = statistics.median(ratios)
            row["paired_time_ratios"] = ratios
        rows.append(row)
        _print_attention_row(row)
    return rows


def bench_horizons(T, horizons, rounds, device, B, H, D, paired_seconds, paths=()):
    """Strict myopia at each horizon against vanilla, all variants alternating in ONE process per round (the
    paths by the switch rule; ``paths`` adds pinned ones, e.g. "64:near"); median ratio over the rounds."""
    from myopia.attention import choose_path

    import torch

    variants = ["vanilla"] + [f"h{h}" for h in horizons] + [f"h{p}" for p in paths]
    per_round = [run_child("attention_paired", variants=variants, T=T, B=B, H=H, D=D, device=device,
                           seconds=paired_seconds * len(variants) / 2) for _ in range(rounds)]
    ok = [p for p in per_round if "error" not in p]
    if not ok:
        return {"error": per_round[0]["error"]}
    rows = []
    for name in variants[1:]:
        h, _, pinned = name[1:].partition(":")
        ratios = [p[name]["time_s"] / p["vanilla"]["time_s"] for p in ok]
        row = {"horizon": int(h), "path": pinned or choose_path(T, int(h), torch.float32), "pinned": bool(pinned),
               "paired_time_ratio": statistics.median(ratios), "paired_time_ratios": ratios,
               "time_s": statistics.median(p[name]["time_s"] for p in ok)}
        rows.append(row)
        print(f"T={T} h={row['horizon']:4d} ({row['path']:10s}{' pinned' if pinned else ''})  "
              f"{row['time_s'] * 1e3:7.1f} ms  x{row['paired_time_ratio']:.3f} vanilla "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
    van = statistics.median(p["vanilla"]["time_s"] for p in ok)
    print(f"T={T} vanilla {van * 1e3:7.1f} ms", flush=True)
    return {"T": T, "vanilla_time_s": van, "rows": rows}


def count_band_bytes(T=1024, B=1, H=12, D=64, dtype="bfloat16"):
    """Bytes moved per element of (B, H, T, D) by the h = 0 band correction, counted on meta tensors: every
    data-moving aten op's tensor inputs and outputs, each once (the plain loop), and the inputs + outputs of the
    fused pass (what one Inductor kernel touches: :func:`myopia.attention.band_grads` with the combine)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import myopia.attention as attention

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            ins = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            outs = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)
                    and not any(t is i for i in ins)]  # an in-place op's result is its input: count it once
            if func not in VIEW_OPS:  # views move no data
                self.bytes += sum(t.numel() * t.element_size() for t in ins + outs)
                self.ops += 1
            return out

    aten = torch.ops.aten
    VIEW_OPS = {aten.view.default, aten.slice.Tensor, aten.narrow.default, aten.unsqueeze.default,
                aten.expand.default, aten._unsafe_view.default, aten.alias.default, aten.t.default,
                aten.transpose.int, aten.select.int, aten.as_strided.default, aten.empty.memory_format,
                aten.empty_like.default, aten.empty_strided.default}
    dt = getattr(torch, dtype)
    q, k, v, o, g = (torch.empty(B, H, T, D, dtype=dt, device="meta") for _ in range(5))
    lse = torch.empty(B, H, T, device="meta")
    elems = B * H * T * D
    res = {"shape": [B, H, T, D], "dtype": dtype}
    for name, compiled in (("plain", False), ("fused", True)):
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        attention.BAND_COMPILE = False
        counter = Count()
        with counter:
            if compiled:  # the fused kernel (band, combine and cast in one): its inputs and outputs
                counter.bytes += sum(t.numel() * t.element_size() for t in (q, k, v, o, g, lse, dk, dv))
                counter.ops += 1
            else:
                attention._finish_band(dk, dv, q, k, v, o, lse, g, 0, 0.0, D**-0.5)
        attention.BAND_COMPILE = None
        res[name] = {"bytes_per_element": counter.bytes / elems, "kernels": counter.ops}
        print(f"band pass h=0 {dtype} {name:6s}: {counter.bytes / elems:6.1f} B/elem in {counter.ops} ops", flush=True)
    return res


def _print_attention_row(row):
    van, my = row["vanilla"], row["myopic"]
    line = (f"T={row['T']:5d}  vanilla {van['time_s'] * 1e3:8.1f} ms {_fmt_mb(van['peak_bytes'])} MB | "
            f"myopic {my['time_s'] * 1e3:8.1f} ms {_fmt_mb(my['peak_bytes'])} MB | "
            f"time x{row.get('paired_time_ratio', float('nan')):.3f} (separate processes x"
            f"{my['time_s'] / van['time_s']:.3f})  mem x{my['peak_bytes'] / max(van['peak_bytes'], 1):.3f}")
    if "eager" in row and "time_s" in row["eager"]:
        ea = row["eager"]
        line += (f" | eager T×T {ea['time_s'] * 1e3:8.1f} ms {_fmt_mb(ea['peak_bytes'])} MB "
                 f"(fused myopic {ea['time_s'] / my['time_s']:.1f}x faster, {ea['peak_bytes'] / max(my['peak_bytes'], 1):.1f}x less memory)")
    print(line, flush=True)


def bench_gpt(rounds, iters, device, T, B, d_model, n_layer, n_head, peak, paired_seconds):
    variants = ["vanilla", "myopic", "hidden", "eager"]
    samples = {v: [] for v in variants}
    for r in range(rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            samples[v].append(run_child("gpt", variant=v, T=T, B=B, iters=iters, device=device, d_model=d_model,
                                        n_layer=n_layer, n_head=n_head))
    out = {}
    for v in variants:
        ok = [s for s in samples[v] if "error" not in s]
        if not ok:
            out[v] = {"error": samples[v][0]["error"]}
            print(f"  {v:8s} failed: {out[v]['error']}")
            continue
        best = min(ok, key=lambda s: s["time_s"])
        best["paired_time_ratio"] = 1.0 if v == "vanilla" else float("nan")
        best["peak_bytes"] = min(s["peak_bytes"] for s in ok)
        best["mfu"] = best["flops_per_token"] * best["tokens_per_s"] / peak
        out[v] = best
    paired = [run_child("gpt_paired", variants=["vanilla", "myopic", "hidden"], T=T, B=B, device=device,
                        d_model=d_model, n_layer=n_layer, n_head=n_head, seconds=3 * paired_seconds)
              for _ in range(rounds)]
    paired = [p for p in paired if "error" not in p]
    for v in ("myopic", "hidden"):
        ratios = [p[v]["time_s"] / p["vanilla"]["time_s"] for p in paired]
        if ratios and "error" not in out[v]:
            out[v]["paired_time_ratio"], out[v]["paired_time_ratios"] = statistics.median(ratios), ratios
    base = out["vanilla"]
    print(f"GPT step: d_model={d_model} n_layer={n_layer} n_head={n_head} T={T} batch={B} "
          f"({base['non_embedding_params'] / 1e6:.1f}M non-embedding parameters)")
    for v in variants:
        s = out[v]
        if "error" in s:
            continue
        print(f"  {v:8s} {s['time_s'] * 1e3:8.1f} ms/step {s['tokens_per_s']:9.0f} tok/s  MFU {100 * s['mfu']:5.1f}%  "
              f"peak {_fmt_mb(s['peak_bytes'])} MB   time x{s.get('paired_time_ratio', float('nan')):.3f} "
              f"(separate x{s['time_s'] / base['time_s']:.3f})  "
              f"mem x{s['peak_bytes'] / max(base['peak_bytes'], 1):.3f}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--lengths", default="256,1024,2048,4096")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--eager-max", type=int, default=4096, help="longest T for the eager T×T variant")
    ap.add_argument("--gpt", default="384,6,6,256,8", help="d_model,n_layer,n_head,seq_len,batch of the GPT step; 'none' skips it")
    ap.add_argument("--paired-seconds", type=float, default=4.0,
                    help="length of each paired-timing process (the variants alternate in blocks inside it)")
    ap.add_argument("--horizons", default="0,8,64,256", help="horizon rows (strict myopia); 'none' skips them")
    ap.add_argument("--horizon-T", type=int, default=1024, help="sequence length of the horizon rows")
    ap.add_argument("--paths", default="", help="extra pinned rows for the horizon table, e.g. 64:near,64:complement")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test")
    ap.add_argument("--json", help="also write all numbers to this file")
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        kind = spec.pop("kind")
        fn = {"attention": child_attention, "attention_paired": child_attention_paired, "gpt": child_gpt,
              "gpt_paired": child_gpt_paired, "matmul": child_matmul_peak}[kind]
        print(json.dumps(fn(**spec)))
        return
    if args.quick:
        args.lengths, args.rounds, args.iters, args.gpt = "64,128", 1, 2, "64,2,2,64,2"
        args.paired_seconds, args.horizon_T, args.horizons = 0.3, 128, "0,8,64"
    import torch

    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths != "none" else []
    print(f"machine: {platform.platform()} | {os.cpu_count()} CPUs | torch {torch.__version__} "
          f"threads {torch.get_num_threads()} | device {args.device} | {time.strftime('%Y-%m-%d %H:%M')}")
    peak = max(run_child("matmul", device=args.device)["flops_per_s"] for _ in range(2))
    print(f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"attention forward+backward, batch {args.batch} x {args.heads} heads x head_dim {args.head_dim}, fp32:")
    band_bytes = count_band_bytes()
    horizons = None
    if args.horizons != "none":
        print(f"horizon rows, T = {args.horizon_T}, paired against vanilla in one process per round:")
        horizons = bench_horizons(args.horizon_T, [int(h) for h in args.horizons.split(",")], args.rounds,
                                  args.device, args.batch, args.heads, args.head_dim, args.paired_seconds,
                                  [p for p in args.paths.split(",") if p])
    att = []
    if args.lengths != "none":
        att = bench_attention(lengths, args.rounds, args.iters, args.device, args.batch, args.heads,
                              args.head_dim, args.eager_max, args.paired_seconds)
    gpt = None
    if args.gpt != "none":
        d_model, n_layer, n_head, T, B = (int(x) for x in args.gpt.split(","))
        gpt = bench_gpt(args.rounds, max(2, args.iters // 2), args.device, T, B, d_model, n_layer, n_head, peak,
                        args.paired_seconds)
    if args.json:
        from myopia.io import provenance, write_json

        write_json(args.json, {"matmul_peak_flops": peak, "attention": att, "horizons": horizons,
                               "band_bytes": band_bytes, "gpt": gpt, "args": vars(args),
                               "note": "2-core machine shared with other engineers' work during the run",
                               "provenance": provenance()})


def _cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
