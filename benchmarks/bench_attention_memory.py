"""Peak memory of one attention forward+backward: myopic paths against vanilla SDPA, each in a fresh process.

In each child process q, k, v and the output gradient g are made and touched first (and a tiny instance runs, so
one-time library set-up is not counted); then the rise of the process's peak resident set (``ru_maxrss``, or
``torch.cuda.max_memory_allocated`` on CUDA) over one forward+backward is recorded. Memory is deterministic, so
this can run on a shared machine (one child at a time). Prints a table; ``--json`` writes every number with the
machine, versions and git revision.

    PYTHONPATH=src python benchmarks/bench_attention_memory.py --seq 8192 --batch 4 --heads 8 \\
        --horizons 0,8,64,256,1024 --betas 0,0.5 --json results/attention-memory.json

Rows: ``vanilla`` is PyTorch's ``F.scaled_dot_product_attention(is_causal=True)``; ``h:beta[:path]`` is
``myopia.attention.myopic_attention`` with that horizon and beta (the path the rule picks, or the one pinned);
``hidden:h:beta[:path]`` is myopic-hidden (``myopic_attention_split``: the full-gradient copies k, v and the
myopic copies of equal value, which exist before the call, so it returns two more gradient tensors than vanilla).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(spec: str, B: int, H: int, T: int, D: int, device: str, threads: int) -> dict:
    """Rise of peak memory (bytes) over one fwd+bwd of the variant ``spec`` ("vanilla" or "h:beta[:path]")."""
    import torch
    import torch.nn.functional as F

    import myopia.attention as A

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    q, k, v, g = (torch.randn(B, H, T, D, device=dev) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    path = None
    hidden = spec.startswith("hidden:")
    kx = vx = None
    if spec == "vanilla":
        def fn(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        h, beta, *rest = spec.removeprefix("hidden:").split(":")
        path = rest[0] if rest else None
        if hidden:  # myopic-hidden: the second copies of k, v (their own gradients) exist before the call
            kx, vx = (t.detach().clone().requires_grad_() for t in (k, v))

        def fn(q, k, v):
            if hidden:
                kx_, vx_ = (kx, vx) if k.shape == kx.shape else (t.detach().clone().requires_grad_() for t in (k, v))
                return A.myopic_attention_split(q, k, v, kx_, vx_, horizon=int(h), beta=float(beta))
            return A.myopic_attention(q, k, v, horizon=int(h), beta=float(beta))
        A.FORCE_PATH = path
        path = path or A.choose_path(T, int(h), q.dtype)
    # one-time set-up (kernels, allocator, the op registry) on a tiny instance that lives only here
    small = [t[..., :64, :].detach().clone().requires_grad_() for t in (q, k, v)]
    fn(*small).backward(torch.ones_like(small[0]))
    del small
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    else:
        before = _peak_bytes()
    fn(q, k, v).backward(g)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        rise = torch.cuda.max_memory_allocated(dev) - before
    else:
        rise = _peak_bytes() - before
    return {"spec": spec, "path": path, "rise_bytes": rise, "tensor_bytes": q.numel() * q.element_size()}


def measure(spec: str, B: int, H: int, T: int, D: int, device: str = "cpu", threads: int = 1,
            env: dict | None = None) -> dict:
    """:func:`child` in a fresh process (this file run with ``--child``)."""
    cmd = [sys.executable, __file__, "--child", spec, "--seq", str(T), "--batch", str(B), "--heads", str(H),
           "--head-dim", str(D), "--device", device, "--threads", str(threads)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--horizons", default="0,8,64,256,1024")
    p.add_argument("--betas", default="0,0.5")
    p.add_argument("--paths", default="", help="extra pinned rows, e.g. 64:0:complement,256:0:near")
    p.add_argument("--hidden", default="", help="myopic-hidden rows h:beta, e.g. 0:0,64:0,1024:0")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each child (0: torch's default)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.batch, a.heads, a.seq, a.head_dim, a.device, a.threads)))
        return 0
    specs = ["vanilla"] + [f"{h}:{b}" for b in a.betas.split(",") for h in a.horizons.split(",") if h]
    specs += [s for s in a.paths.split(",") if s] + [f"hidden:{s}" for s in a.hidden.split(",") if s]
    rows, van = [], None
    for spec in specs:
        res = measure(spec, a.batch, a.heads, a.seq, a.head_dim, a.device, a.threads)
        van = res["rise_bytes"] if spec == "vanilla" else van
        res["ratio"] = res["rise_bytes"] / van
        rows.append(res)
        print(f"{spec:<18} path {str(res['path']):<11} rise {res['rise_bytes'] / 2**20:8.1f} MiB   "
              f"ratio {res['ratio']:.3f}", flush=True)
    if a.json:
        import torch

        from myopia.io import provenance, write_json

        write_json(a.json, {"args": vars(a), "rows": rows, "machine": platform.processor() or platform.machine(),
                            "torch": torch.__version__,
                            "method": "rise of peak memory over one forward+backward, fresh process each",
                            **provenance()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
