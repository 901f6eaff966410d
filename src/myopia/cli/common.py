"""Argument groups shared by several subcommands (model size, gradient setting, optimisation)."""

from __future__ import annotations

import argparse

from ..model import GRADIENTS, GPTConfig
from ..train import TrainConfig


def add_model_args(p: argparse.ArgumentParser, *, d_model=128, n_layer=4, n_head=4, seq_len=128) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=d_model, help="residual width (default %(default)s)")
    g.add_argument("--n-layer", type=int, default=n_layer, help="transformer blocks (default %(default)s)")
    g.add_argument("--n-head", type=int, default=n_head, help="attention heads (default %(default)s)")
    g.add_argument("--seq-len", type=int, default=seq_len, help="context length in tokens (default %(default)s)")
    g.add_argument("--mlp-ratio", type=int, default=4, help="MLP width / d_model (default %(default)s)")
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--attention-impl", choices=["auto", "fused", "eager"], default="auto")


def add_gradient_args(p: argparse.ArgumentParser, *, default="vanilla", single=True) -> None:
    g = p.add_argument_group("gradient")
    if single:
        g.add_argument("--gradient", choices=GRADIENTS, default=default, help="gradient setting (default %(default)s)")
    g.add_argument("--beta", type=float, default=0.0, help="weight of the off-band past gradient (0 = myopic)")
    g.add_argument("--horizon", type=int, default=0, help="earlier positions that get the full gradient")


def add_train_args(p: argparse.ArgumentParser, *, steps=1000, batch_size=32, lr=1e-3) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="global batch, sequences (default %(default)s)")
    g.add_argument("--micro-batch-size", type=int, default=0, help="per-process micro-batch (0 = whole share)")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    g.add_argument("--min-lr-ratio", type=float, default=0.1)
    g.add_argument("--warmup-steps", type=int, default=-1, help="-1: 1%% of the steps")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument("--eval-every", type=int, default=250)
    g.add_argument("--ckpt-every", type=int, default=500)
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (auto: cuda:LOCAL_RANK if a GPU)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU (default %(default)s)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow start; CUDA mostly)")
    g.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default %(default)s)")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events to OUT/tensorboard")
    g.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")
    g.add_argument("--document-mask", action=argparse.BooleanOptionalAction, default=True,
                   help="keep attention inside documents: no position attends across an end-of-document "
                        "boundary, in every gradient mode (default on; --no-document-mask: the old behaviour)")
    g = p.add_argument_group("scale-out (under torchrun; see docs/multi-gpu.md)")
    g.add_argument("--shard", choices=["none", "grad", "full"], default="none",
                   help="none: DDP; grad: FSDP2, ZeRO-2-like; full: FSDP2, ZeRO-3-like (default %(default)s)")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block's activations in the backward pass (less memory, ~1/3 more compute)")
    g.add_argument("--async-checkpoint", action="store_true", help="write checkpoints in the background")
    g.add_argument("--device-memory-gb", type=float, default=0.0,
                   help="refuse a run whose memory plan exceeds this per process (default: the GPU's own)")


def model_config(args, vocab_size: int = 256, gradient: str | None = None) -> GPTConfig:
    return GPTConfig(
        vocab_size=vocab_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        d_model=args.d_model,
        seq_len=args.seq_len,
        gradient=gradient or args.gradient,
        beta=args.beta,
        horizon=args.horizon,
        mlp_ratio=args.mlp_ratio,
        dropout=args.dropout,
        attention_impl=args.attention_impl,
    )


def train_config(args) -> TrainConfig:
    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        lr=args.lr,
        min_lr_ratio=args.min_lr_ratio,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        eval_every=args.eval_every,
        ckpt_every=args.ckpt_every,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
        compile=getattr(args, "compile", False),
        compile_backend=getattr(args, "compile_backend", "inductor"),
        tensorboard=getattr(args, "tensorboard", False),
        document_mask=getattr(args, "document_mask", True),
        shard=getattr(args, "shard", "none"),
        activation_checkpointing=getattr(args, "activation_checkpointing", False),
        async_checkpoint=getattr(args, "async_checkpoint", False),
        device_memory_gb=getattr(args, "device_memory_gb", 0.0),
    )


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--data and how to read and tokenize it (see myopia.data.sources / myopia.data.tokenizer)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required,
                   help="text file, folder (file stem = slice), .jsonl/.parquet, a datasets save_to_disk folder, "
                   "hf:NAME, or a token cache folder")
    g.add_argument("--tokenizer", default=None,
                   help="bytes (default), bpe:N (train a byte-level BPE), a tokenizer.json, hf:NAME or a folder")
    g.add_argument("--text-field", default="text", help="text field of JSON/Parquet/datasets records")
    g.add_argument("--label-field", default=None, help="record field used as the slice label")
    g.add_argument("--hf-config", default=None, help="Hugging Face dataset configuration")
    g.add_argument("--hf-split", default=None, help="Hugging Face dataset split(s) to read (default: all)")
    g.add_argument("--val-frac", type=float, default=0.05, help="fraction of documents held out for validation")
    g.add_argument("--test-frac", type=float, default=0.05, help="fraction of documents held out for testing")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the document-level split")


def data_options(args) -> dict:
    """Keyword arguments of myopia.data.load_corpus from add_data_args' flags (tokenizer and cache excluded)."""
    return {"text_field": args.text_field, "label_field": args.label_field, "hf_config": args.hf_config,
            "hf_split": args.hf_split, "val_frac": args.val_frac, "test_frac": args.test_frac,
            "split_seed": args.split_seed}
