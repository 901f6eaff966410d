"""One-process trainer throughput, this tree against an earlier commit's trainer, paired in one process.

Both trainers train the same GPT (the benchmark's 10.6M-non-embedding-parameter step: d_model 384, 6 layers,
6 heads, context 256, batch 8, vocabulary 8192) on the same token stream, one process, no evaluation or
checkpoint until the end. Runs alternate old, new, old, new, ... in this process; each run's throughput is the
median of its per-step ``tokens_per_s`` records (the first step, warm-up, left out), and the result is the median
over rounds of new / old. The earlier trainer is imported from ``git archive <commit>`` as package ``myopia_old``
(its own checkpoint and I/O modules); the model and task are this tree's, so only the trainer differs.

    python benchmarks/bench_trainer.py --old 12f8c91 --rounds 3 --steps 4 --json benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def old_trainer(commit: str, where: Path):
    """The ``myopia.train`` module of ``commit``, importable as ``myopia_old.train``."""
    data = subprocess.run(["git", "archive", commit, "src/myopia"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(where, filter="data")
    (where / "src" / "myopia").rename(where / "myopia_old")
    sys.path.insert(0, str(where))
    return importlib.import_module("myopia_old.train")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="12f8c91", help="commit of the earlier trainer")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpt", default="384,6,6,256,8", help="d_model,n_layer,n_head,seq_len,batch")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    import myopia.train as new
    from myopia.data import LMTask
    from myopia.data.load import load_corpus
    from myopia.io import provenance, read_jsonl, write_json
    from myopia.model import GPT, GPTConfig

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    old = old_trainer(args.old, tmp / "old")
    tokens = np.random.default_rng(0).integers(0, 8192, size=400_000)
    np.save(tmp / "tokens.npy", tokens)
    corpus = load_corpus(tmp / "tokens.npy")
    d_model, n_layer, n_head, seq_len, batch = (int(x) for x in args.gpt.split(","))
    cfg = GPTConfig(vocab_size=8192, n_layer=n_layer, n_head=n_head, d_model=d_model, seq_len=seq_len)
    train_kw = dict(steps=args.steps, batch_size=batch, lr=1e-4, eval_every=0, ckpt_every=0, log_every=1, device="cpu",
                    precision="fp32", progress=False)
    per_round = []
    runs = {"old": [], "new": []}
    for r in range(args.rounds):
        ratio = {}
        for name, trainer in (("old", old), ("new", new)):
            torch.manual_seed(0)
            model = GPT(cfg)
            task = LMTask(corpus, cfg.seq_len, eval_tokens=2048)
            out = tmp / f"{name}{r}"
            t0 = time.perf_counter()
            trainer.train(model, task, trainer.TrainConfig(**train_kw), out, run_config={"bench": name})
            wall = time.perf_counter() - t0
            tps = [rec["tokens_per_s"] for rec in read_jsonl(out / "metrics.jsonl") if "tokens_per_s" in rec][1:]
            runs[name].append({"tokens_per_s_median": statistics.median(tps), "per_step": tps, "wall_s": wall})
            ratio[name] = statistics.median(tps)
            print(f"round {r} {name}: {ratio[name]:,.0f} tok/s (median of {len(tps)} steps), run {wall:.1f} s",
                  flush=True)
        per_round.append(ratio["new"] / ratio["old"])
    result = {"ratio_new_over_old": statistics.median(per_round), "per_round": per_round, "runs": runs,
              "old_commit": args.old, "model": cfg.to_dict(), "train": train_kw, "threads": args.threads,
              "non_embedding_params": GPT(cfg).num_params(non_embedding=True), **provenance()}
    print(f"throughput new/old: {result['ratio_new_over_old']:.3f} (per round {', '.join(f'{x:.3f}' for x in per_round)})")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
