"""``myopia finetune``: the paper's Pythia protocol for any Hugging Face causal LM.

Each arm (vanilla, myopic, myopic-hidden) starts from the same pretrained weights and continues training on the
same tokenized corpus in the same window order (:class:`myopia.data.LMTask`, one data seed) with the same
optimiser settings; only the gradient differs. Each arm is an ordinary run directory written by
:func:`myopia.train.train` (config.json, metrics.jsonl, checkpoints/, model.safetensors, result.json)
plus ``tokenizer/`` and, at the end, ``hf/`` (the trained model as a transformers directory). ``finetune.json``
compares the arms on held-out *test* windows: mean loss per arm and the gap to vanilla with a paired bootstrap over
test documents (:mod:`myopia.analysis.stats`; one seed, so training noise is not measured and says so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.stats import HierarchicalBootstrap
from ..arms import PAIR_ARMS, GradientSetting
from ..checkpoint import save_model
from ..data import LMTask, load_corpus
from ..data.tokenizer import check_model_tokenizer
from ..errors import MyopiaError
from ..hf.model import HFCausalLM, load_hf_model
from ..hf.tokenizer import load_hf_tokenizer
from ..io import provenance, write_json
from ..rundir import SNAPSHOTS, load_run_model
from ..train import TrainConfig, dist_info, resolve_device, train

ARMS = PAIR_ARMS


@torch.no_grad()
def window_losses(model, task: LMTask, device, precision: str = "fp32", batch_size: int = 32) -> np.ndarray:
    """Mean next-token loss (nats/token) of each of the task's held-out windows, shape (n_windows,)."""
    x, y = task.eval_windows()
    docs = task.eval_docs()  # None unless the task masks documents
    model.eval()
    out = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        with autocast:
            logits = task.logits(model, xb, None if docs is None else docs[i : i + batch_size].to(device))
        loss = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="none").view_as(yb)
        out.append(loss.mean(1).double().cpu().numpy())
    return np.concatenate(out)


def window_docs(task: LMTask) -> np.ndarray:
    """The document of each held-out window (the document of its first token), (n_windows,)."""
    starts = np.arange(task.n_eval_windows, dtype=np.int64) * task.seq_len
    return np.asarray(task.eval_doc_ids, dtype=np.int64)[starts]


def window_gap(a: np.ndarray, b: np.ndarray, docs: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over paired held-out windows (equal length, so token-weighted) with the statistics module's
    interval: documents are the resampled unit (as in ``myopia gap``); one seed, so training noise is not measured."""
    _, unit = np.unique(np.asarray(docs), return_inverse=True)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    s = HierarchicalBootstrap(int(unit.max()) + 1, 1, n_boot, seed).means(d, unit).summary()
    return {**s, "windows": int(len(d)), "documents": int(unit.max()) + 1, "unit": "document",
            "resamples": n_boot}


def _arm_model(model_name: str, tokenizer, seq_len: int, setting: GradientSetting) -> HFCausalLM:
    """A fresh copy of the pretrained model, checked against the tokenizer and context, with ``setting``."""
    model = HFCausalLM(load_hf_model(model_name))
    if tokenizer.vocab_size > model.cfg.vocab_size:
        raise MyopiaError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                          f"{model.cfg.vocab_size} embeddings")
    if seq_len > model.cfg.seq_len:
        raise MyopiaError(f"seq-len {seq_len} exceeds the model's context {model.cfg.seq_len}")
    model.set_gradient(setting)
    return model


def finetune(
    model_name: str,
    data: str | Path,
    out: str | Path,
    train_cfg: TrainConfig,
    *,
    seq_len: int = 64,
    arms: tuple[str, ...] = ARMS,
    beta: float = 0.0,
    horizon: int = 0,
    eval_tokens: int = 65536,
    resume: bool = False,
    snapshot_every: int = 0,
    data_opts: dict | None = None,
    tokenizer_spec: str | None = None,
) -> dict:
    """Continue training ``model_name`` once per arm on ``data``; returns the summary written to finetune.json.

    ``data_opts`` are :func:`myopia.data.load_corpus` options; ``tokenizer_spec``, when given, must name the
    model's own tokenizer.

    ``beta``/``horizon`` apply to the myopic arms. ``snapshot_every`` > 0 keeps the weights every that many
    steps in ``<arm>/snapshots/step_XXXXXXX.safetensors`` (for ``myopia grad`` over training).
    """
    if not arms:
        raise MyopiaError("give at least one arm (vanilla, myopic, myopic-hidden, bigram)")
    settings = {a: GradientSetting() if a == "vanilla" else GradientSetting(a, beta, horizon) for a in arms}
    if snapshot_every and (not train_cfg.ckpt_every or snapshot_every % train_cfg.ckpt_every):
        raise MyopiaError("snapshot-every must be a multiple of ckpt-every (snapshots are taken at checkpoints)")
    out = Path(out)
    tokenizer = load_hf_tokenizer(model_name)
    check_model_tokenizer(tokenizer_spec, tokenizer, model_name)
    corpus = load_corpus(data, tokenizer, **(data_opts or {}))
    device = resolve_device(train_cfg.device)
    test_task = LMTask(corpus, seq_len, seed=train_cfg.seed, eval_split="test", eval_tokens=eval_tokens,
                       document_mask=train_cfg.document_mask)
    results, losses = {}, {}
    for arm in arms:
        model = _arm_model(model_name, tokenizer, seq_len, settings[arm])
        hf = model.hf
        task = LMTask(corpus, seq_len, seed=train_cfg.seed, eval_tokens=eval_tokens)
        run_dir = out / arm
        run_config = {"command": "finetune", "model_kind": "hf", "base_model": str(model_name),
                      **settings[arm].to_dict(), "seq_len": seq_len, "data": str(data), "eval_tokens": eval_tokens,
                      "attention_dropout": 0.0, "hf_config": hf.config.to_dict()}
        tokenizer.tok.save_pretrained(run_dir / "tokenizer")

        def snapshot(step, m, run_dir=run_dir):
            if snapshot_every and step % snapshot_every == 0:
                save_model(run_dir / SNAPSHOTS / f"step_{step:07d}.safetensors", m,
                           {"config": run_config, "step": step})

        torch.manual_seed(train_cfg.seed)
        results[arm] = train(model, task, train_cfg, run_dir, run_config=run_config, resume=resume,
                             flops_per_example=model.flops_per_token(seq_len) * seq_len, on_checkpoint=snapshot)
        if dist_info()[0] == 0:
            if train_cfg.shard != "none" and torch.distributed.is_initialized():
                model = load_run_model(run_dir)  # the trained model's parameters are left sharded over ranks
            model.hf.save_pretrained(run_dir / "hf")
            tokenizer.tok.save_pretrained(run_dir / "hf")
            losses[arm] = window_losses(model.to(device), test_task, device, train_cfg.precision)
        del model, hf
    if dist_info()[0] != 0:
        return {}
    summary = _summary(model_name, data, out, train_cfg, seq_len, arms, results, losses, test_task)
    write_json(out / "finetune.json", summary)
    return summary


def _summary(model_name: str, data, out: Path, train_cfg: TrainConfig, seq_len: int, arms, results: dict,
             losses: dict, test_task: LMTask) -> dict:
    """finetune.json: each arm's validation and test loss and each arm's gap to vanilla on the test windows."""
    return {
        "base_model": str(model_name),
        "data": str(data),
        "seq_len": seq_len,
        "seed": train_cfg.seed,
        "train": train_cfg.to_dict(),
        "eval_split": "test",
        "arms": {a: {"run_dir": str(out / a), "val_loss": results[a].get("eval_loss"),
                     "test_loss": float(losses[a].mean()), "test_windows": int(len(losses[a]))} for a in arms},
        "gap_vs_vanilla": ({a: window_gap(losses[a], losses["vanilla"], window_docs(test_task), seed=train_cfg.seed)
                            for a in arms if a != "vanilla"} if "vanilla" in arms else {}),
        "n_seeds": 1,
        "training_noise": "not measured (1 seed)",
        **provenance(),
    }
