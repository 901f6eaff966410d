"""One GPT language model trained on one corpus: the recipe shared by ``myopia train``, every arm of a pair and
every point of a sweep.

:func:`build_model` is the seeded initialisation (it depends only on the seed and the architecture, never on the
gradient setting, so the arms of a pair start from the same weights); :func:`train_lm` wires a corpus, the
next-token task (:class:`myopia.data.LMTask`) and that model into :func:`myopia.train.train`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .data import LMTask, load_corpus
from .model import GPT, GPTConfig, flops_per_token
from .train import TrainConfig, train


def build_model(model_cfg: GPTConfig, seed: int) -> GPT:
    """A freshly initialised GPT; the initialisation depends only on ``seed`` and the architecture."""
    torch.manual_seed(seed)
    return GPT(model_cfg)


_READING_DEFAULTS = {"tokenizer": None, "documents": "blank-lines", "text_field": "text", "label_field": None,
                     "hf_config": None, "hf_split": None, "val_frac": 0.05, "test_frac": 0.05, "split_seed": 0}


def _non_default_reading(tokenizer, data_opts: dict) -> dict:
    """The reading options (tokenizer, documents, split, ...) that differ from load_corpus's defaults."""
    given = {"tokenizer": tokenizer, **{k: v for k, v in data_opts.items() if k in _READING_DEFAULTS}}
    return {k: v for k, v in given.items() if v != _READING_DEFAULTS[k]}


def train_lm(
    data: str | Path,
    out: str | Path,
    model_cfg: GPTConfig,
    train_cfg: TrainConfig,
    *,
    resume: bool = False,
    eval_tokens: int = 65536,
    corpus=None,
    tokenizer: str | None = None,
    data_opts: dict | None = None,
    branch_at=(),
    branch_from=None,
) -> dict:
    """Train a GPT on ``data`` (any source :func:`myopia.data.load_corpus` reads) into the run folder ``out``.

    ``tokenizer`` (default bytes) and ``data_opts`` (load_corpus options: documents, split fractions, ...) say how
    to read it; the ones that differ from the defaults are recorded in the run's config, so ``--resume`` refuses
    others. ``corpus``: the already loaded corpus of ``data`` (skips loading it again); ``eval_tokens`` held-out
    tokens per evaluation; ``branch_at`` / ``branch_from``: cooldown branching (see :func:`myopia.train.train`).
    Returns the run's result dict (also written to ``out/result.json``).
    """
    corpus = corpus if corpus is not None else load_corpus(data, tokenizer, **(data_opts or {}))
    model_cfg = replace(model_cfg, vocab_size=corpus.vocab_size)
    task = LMTask(corpus, model_cfg.seq_len, seed=train_cfg.seed, eval_tokens=eval_tokens)
    model = build_model(model_cfg, train_cfg.seed)
    run_config = {"command": "train", "data": str(data), "model": model_cfg.to_dict(), "eval_tokens": eval_tokens}
    reading = _non_default_reading(tokenizer, data_opts or {})
    if reading:
        run_config["data_options"] = reading
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
