"""``myopia train``: one language model on one corpus with one gradient setting."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..data import LMTask, load_corpus
from ..model import GPT, GPTConfig, flops_per_token
from ..train import TrainConfig, train


def build_model(model_cfg: GPTConfig, seed: int) -> GPT:
    """A freshly initialised GPT; the initialisation depends only on ``seed`` and the architecture."""
    torch.manual_seed(seed)
    return GPT(model_cfg)


def train_lm(
    data: str | Path,
    out: str | Path,
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    *,
    resume: bool = False,
    eval_tokens: int = 65536,
    corpus=None,
    branch_at=(),
    branch_from=None,
) -> dict:
    """Train a GPT on ``data`` (text file, folder of text files or .npy tokens); returns the result dict.
    ``branch_at`` / ``branch_from``: cooldown branching (see :func:`myopia.train.train`)."""
    corpus = corpus if corpus is not None else load_corpus(data)
    model_cfg = replace(model_cfg, vocab_size=corpus.vocab_size)
    task = LMTask(corpus, model_cfg.seq_len, seed=train_cfg.seed, eval_tokens=eval_tokens)
    model = build_model(model_cfg, train_cfg.seed)
    run_config = {"command": "train", "data": str(data), "model": model_cfg.to_dict(), "eval_tokens": eval_tokens}
    return train(
        model,
        task,
        train_cfg,
        out,
        run_config=run_config,
        resume=resume,
        flops_per_example=flops_per_token(model_cfg) * model_cfg.seq_len,
        branch_at=branch_at,
        branch_from=branch_from,
    )
