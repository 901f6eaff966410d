"""Peak memory of one attention forward+backward: the general masked path vs the fused causal path.

Each variant runs in a fresh process: inputs are made and touched, then the rise of the process's peak resident
set over one forward+backward is recorded (the method of bench_attention.py). Prints a table and, with --json,
writes every number with the machine, versions and git revision.

    python benchmarks/bench_masked_memory.py --seq 4096 --json results/masked-memory.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys

VARIANTS = {
    "fused causal (myopia.attention)": "fused",
    "general, plain causal structure": "general-causal",
    "general, 4 packed documents": "general-docs",
    "general, soft-cap 50 + window T/4": "general-softcap-window",
    "general, documents + ALiBi + padding": "general-all",
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(kind: str, B: int, H: int, T: int, D: int, gradient: str) -> dict:
    import torch

    from myopia.attention import myopic_attention, myopic_attention_split
    from myopia.masked_attention import (
        AttentionStructure,
        alibi_slopes,
        masked_myopic_attention,
        masked_myopic_attention_split,
    )

    torch.set_num_threads(2)
    torch.manual_seed(0)
    q, k, v, g = (torch.randn(B, H, T, D) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    kx, vx = k.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    docs = torch.arange(T).div(T // 4, rounding_mode="floor").expand(B, T)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[:, : T // 16] = False
    st = {
        "general-causal": AttentionStructure(),
        "general-docs": AttentionStructure(doc_ids=docs),
        "general-softcap-window": AttentionStructure(softcap=50.0, window=T // 4),
        "general-all": AttentionStructure(doc_ids=docs, alibi=alibi_slopes(H), key_valid=valid),
    }.get(kind)
    # warm the allocator and the kernels on a small problem, so only the big run's rise is counted
    small = [t[..., :64, :].detach().clone().requires_grad_() for t in (q, k, v)]
    myopic_attention(*small).sum().backward()
    before = _peak_mb()
    if kind == "fused":
        out = (myopic_attention_split(q, k, v, kx, vx) if gradient == "myopic-hidden"
               else myopic_attention(q, k, v))
    elif gradient == "myopic-hidden":
        out = masked_myopic_attention_split(q, k, v, kx, vx, st)
    else:
        # the general function goes through the blockwise path even for a plain causal structure
        out = masked_myopic_attention(q, k, v, st if kind != "general-causal" else AttentionStructure(window=T))
    (out * g).sum().backward()
    return {"rise_mb": _peak_mb() - before, "inputs_mb": 4 * B * H * T * D * 4 / 2**20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--gradients", default="myopic,myopic-hidden")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--gradient", default="myopic", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.batch, a.heads, a.seq, a.head_dim, a.gradient)))
        return 0
    rows = []
    for gradient in a.gradients.split(","):
        fused = None
        for label, kind in VARIANTS.items():
            cmd = [sys.executable, __file__, "--child", kind, "--gradient", gradient, "--seq", str(a.seq),
                   "--batch", str(a.batch), "--heads", str(a.heads), "--head-dim", str(a.head_dim)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            fused = res["rise_mb"] if kind == "fused" else fused
            rows.append({"gradient": gradient, "variant": label, **res, "ratio_to_fused": res["rise_mb"] / fused})
            print(f"{gradient:<14} {label:<40} rise {res['rise_mb']:7.1f} MB  ratio {rows[-1]['ratio_to_fused']:.2f}",
                  flush=True)
    if a.json:
        import torch

        from myopia.io import provenance

        info = {"args": vars(a), "rows": rows, "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__, "method": "rise of peak RSS over one forward+backward, fresh process",
                **provenance()}
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
