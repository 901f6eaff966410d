"""GPT training step with and without document masks, paired in one process (CPU).

Alternates blocks of forward+backward steps of one model on the same batch with ``doc_ids`` (the masked path)
and without (the fused causal path), for each gradient setting, and prints the ratio of median step times.

    python benchmarks/bench_document_mask_step.py [--seq 128] [--batch 16] [--seconds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from myopia.model import GPT, GPTConfig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--doc-len", type=int, default=48, help="tokens per document in the batch (default %(default)s)")
    p.add_argument("--seconds", type=float, default=6.0, help="paired measuring time per gradient setting")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (a.batch, a.seq))
    docs = (torch.arange(a.seq) // a.doc_len).expand(a.batch, a.seq).contiguous()
    print(f"GPT {a.n_layer}x{a.d_model}, batch {a.batch} x {a.seq}, documents of {a.doc_len}, "
          f"{a.threads} thread(s)")
    for gradient in ("vanilla", "myopic", "myopic-hidden"):
        model = GPT(GPTConfig(n_layer=a.n_layer, d_model=a.d_model, n_head=4, seq_len=a.seq, gradient=gradient))

        def step(doc_ids):
            model.zero_grad(set_to_none=True)
            logits = model(x, doc_ids=doc_ids)
            F.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()

        times = {"masked": [], "causal": []}
        step(docs), step(None)
        t_end = time.perf_counter() + a.seconds
        order = ["masked", "causal"]
        while time.perf_counter() < t_end:
            for which in order:
                for i in range(4):
                    t0 = time.perf_counter()
                    step(docs if which == "masked" else None)
                    if i:  # the first step of a block is not counted
                        times[which].append(time.perf_counter() - t0)
            order.reverse()
        m, c = statistics.median(times["masked"]), statistics.median(times["causal"])
        print(f"{gradient:<14} masked {m * 1e3:6.1f} ms  causal {c * 1e3:6.1f} ms  ratio {m / c:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
