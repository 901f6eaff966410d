"""GPU check of the masked attention paths: FlexAttention (impl="flex") against the blockwise path on CUDA.

Documents + sliding window + padding + soft-cap + ALiBi, strict / beta / horizon and hidden-state myopia, fp32:
outputs and every gradient must agree. Also times one forward+backward of each (paired, same process). Exit 1 on
a mismatch. ``--dry-run`` runs the same comparison on CPU with the eager reference in flex's place.

    python benchmarks/gpu_check_masked.py [--seq 1024] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from myopia.masked_attention import (
    AttentionStructure,
    alibi_slopes,
    masked_myopic_attention,
    masked_myopic_attention_split,
)


def _timed(fn, reps=3):
    fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args()
    if not a.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (use --dry-run on CPU)", file=sys.stderr)
        return 2
    dev, other = ("cpu", "eager") if a.dry_run else ("cuda", "flex")
    T = 64 if a.dry_run else a.seq
    B, H, D = 2, 4, 64
    torch.manual_seed(0)
    q, k, v, g = (torch.randn(B, H, T, D, device=dev) for _ in range(4))
    docs = (torch.arange(T, device=dev) // max(1, T // 3)).expand(B, T).contiguous()
    valid = torch.ones(B, T, dtype=torch.bool, device=dev)
    valid[0, : T // 8] = False
    st = AttentionStructure(doc_ids=docs, window=T // 2, key_valid=valid, softcap=20.0,
                            alibi=alibi_slopes(H).to(dev))
    worst = 0.0
    for name, kw, split in [("strict", {}, False), ("beta0.3-h2", {"beta": 0.3, "horizon": 2}, False),
                            ("hidden", {}, True)]:
        res = {}
        for impl in ("blockwise", other):
            ins = [t.clone().requires_grad_() for t in ((q, k, v, k, v) if split else (q, k, v))]
            fn = masked_myopic_attention_split if split else masked_myopic_attention

            def step(ins=ins, fn=fn, impl=impl):
                out = fn(*ins, st, impl=impl, **kw)
                return out, torch.autograd.grad((out * g).sum(), ins)

            res[impl] = step()
            res[impl + "_s"] = _timed(lambda: step()) if not a.dry_run else None
        diffs = [(res["blockwise"][0] - res[other][0]).abs().max().item()]
        diffs += [(x - y).abs().max().item() for x, y in zip(res["blockwise"][1], res[other][1])]
        worst = max(worst, max(diffs))
        timing = "" if a.dry_run else f"  blockwise {res['blockwise_s'] * 1e3:.1f} ms, flex {res['flex_s'] * 1e3:.1f} ms"
        print(f"{name:<12} max |blockwise - {other}| = {max(diffs):.2e}{timing}")
    ok = worst < 1e-3
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
