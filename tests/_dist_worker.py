"""Worker of the multi-process tests: under torchrun, trains every configuration of RUNS with :func:`train`.

``python -m torch.distributed.run --nproc_per_node=2 tests/_dist_worker.py OUT DATA [KIND]`` writes one run directory
per configuration (of model KIND, default all) to OUT and, with our GPT, ``OUT/sharded_eval.json`` (sharded vs
single-process evaluation of the same weights).
The tests import ``build``, ``task`` and ``train_config`` to make the one-process references.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

# (name, model kind, gradient, shard, activation checkpointing)
RUNS = [
    *[(f"gpt-{g}-{s}", "gpt", g, s, False) for g in ("vanilla", "myopic", "myopic-hidden", "bigram")
      for s in ("none", "grad", "full")],
    *[(f"llama-{g}-none", "llama", g, "none", False) for g in ("vanilla", "myopic", "myopic-hidden")],
    ("llama-myopic-hidden-grad", "llama", "myopic-hidden", "grad", False),
    ("llama-myopic-hidden-full", "llama", "myopic-hidden", "full", False),
    ("gpt-myopic-hidden-full-ac", "gpt", "myopic-hidden", "full", True),
    ("llama-myopic-hidden-full-ac", "llama", "myopic-hidden", "full", True),
]


def build(kind: str, gradient: str):
    """The model of a configuration, identically initialised on every rank."""
    if kind == "gpt":
        from myopia.lm import build_model
        from myopia.model import GPTConfig

        return build_model(GPTConfig(vocab_size=41, n_layer=2, n_head=2, d_model=16, seq_len=16, gradient=gradient), 0)
    from _hf_tiny import tiny

    from myopia.hf.model import HFCausalLM

    model = HFCausalLM(tiny(kind, dtype=torch.float32).train())
    model.set_gradient(gradient)
    return model


def task(data):
    from myopia.data import LMTask, load_corpus

    return LMTask(load_corpus(data), 16, eval_tokens=96, eval_batch_size=2)


def train_config(shard: str = "none", activation_checkpointing: bool = False, **kw):
    from myopia.train import TrainConfig

    base = dict(steps=3, batch_size=6, micro_batch_size=2, lr=3e-3, eval_every=3, ckpt_every=0, log_every=1,
                device="cpu", progress=False, shard=shard, activation_checkpointing=activation_checkpointing)
    return TrainConfig(**{**base, **kw})


def main(out: str, data: str, kind_only: str | None = None) -> None:
    from myopia.checkpoint import load_model_state
    from myopia.distributed import EvalShard, dist_info, shutdown_distributed
    from myopia.train import train

    out_dir = Path(out)
    for name, kind, gradient, shard, ac in RUNS:
        if kind_only is not None and kind != kind_only:
            continue
        train(build(kind, gradient), task(data), train_config(shard, ac), out_dir / name,
              run_config={"kind": kind, "gradient": gradient})
    rank, world, _ = dist_info()
    if kind_only not in (None, "gpt"):
        shutdown_distributed()
        return
    model = build("gpt", "myopic")
    model.load_state_dict(load_model_state(out_dir / "gpt-myopic-none" / "model.safetensors")[0])
    t = task(data)
    sharded = t.evaluate(model, "cpu", shard=EvalShard(rank, world))
    if rank == 0:
        whole = t.evaluate(model, "cpu")
        (out_dir / "sharded_eval.json").write_text(json.dumps({"sharded": sharded, "whole": whole}))
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
