"""How close 2-process DDP / FSDP2 runs are to one process on CPU (gloo): the table in docs/multi-gpu.md.

Runs every configuration of ``tests/_dist_worker.py`` (our GPT in each gradient mode under DDP, ``--shard grad``
and ``--shard full``; a tiny Hugging Face Llama with grouped-query attention; activation checkpointing) with
``torchrun --nproc_per_node=2``, the same configurations in one process, and prints per configuration the largest
relative difference of the training losses and gradient norms and the largest absolute weight difference.

    OMP_NUM_THREADS=1 python benchmarks/equivalence_cpu.py --json benchmarks/results/equivalence-cpu.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch
    from _dist_worker import RUNS, build, task, train_config

    from myopia.checkpoint import load_model_state
    from myopia.io import provenance, read_jsonl, write_json
    from myopia.train import train

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="equivalence-"))
    data = tmp / "tokens.npy"
    np.save(data, np.random.default_rng(0).integers(0, 41, size=20_000))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT / 'src'}")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(ROOT / "tests" / "_dist_worker.py"), str(tmp / "two"), str(data)], env=env, check=True,
                   capture_output=True)
    for kind, gradient in sorted({(k, g) for _, k, g, _, _ in RUNS}):
        train(build(kind, gradient), task(data), train_config(), tmp / "one" / f"{kind}-{gradient}",
              run_config={"kind": kind, "gradient": gradient})

    def curve(run, key):
        return np.array([r[key] for r in read_jsonl(run / "metrics.jsonl") if key in r])

    rows = []
    for name, kind, gradient, shard, ac in RUNS:
        a, b = tmp / "two" / name, tmp / "one" / f"{kind}-{gradient}"
        wa, wb = load_model_state(a / "model.safetensors")[0], load_model_state(b / "model.safetensors")[0]
        row = {"run": name, "model": kind, "gradient": gradient, "shard": shard, "activation_checkpointing": ac,
               "train_loss_max_rel_diff": float(np.max(np.abs(curve(a, "train_loss") / curve(b, "train_loss") - 1))),
               "grad_norm_max_rel_diff": float(np.max(np.abs(curve(a, "grad_norm") / curve(b, "grad_norm") - 1))),
               "weights_max_abs_diff": max(float((wa[k] - wb[k]).abs().max()) for k in wb),
               "weights_max_abs_change": max(float((wb[k] - build(kind, gradient).state_dict()[k]).abs().max())
                                             for k in wb)}
        rows.append(row)
        print(f"{name:30s} loss {row['train_loss_max_rel_diff']:.1e}  grad-norm {row['grad_norm_max_rel_diff']:.1e}  "
              f"weights {row['weights_max_abs_diff']:.1e} (moved {row['weights_max_abs_change']:.1e})", flush=True)
    if args.json:
        write_json(args.json, {"rows": rows, "steps": 3, "world_size": 2, "backend": "gloo", **provenance()})


if __name__ == "__main__":
    main()
