"""myopia train: one model, one gradient setting."""

from __future__ import annotations

from ..errors import MyopiaError
from .common import (add_data_args, add_gradient_args, add_model_args, add_train_args, data_options, model_config,
                     train_config)


def register(sub) -> None:
    """Add the ``myopia train`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("train", help="train one GPT on a corpus with a chosen gradient setting",
                       description="Train a GPT (next-token prediction) on a text file, a folder of text files "
                       "or a .npy token file. Writes config.json, metrics.jsonl, checkpoints/, "
                       "model.safetensors and result.json to --out.")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint; options not given are read from its "
                   "config.json (so `myopia train --out DIR --resume` is enough)")
    p.add_argument("--eval-tokens", type=int, default=65536, help="held-out tokens per evaluation")
    add_data_args(p, required=False)
    add_model_args(p)
    add_gradient_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia train`` with the parsed arguments; returns the exit status."""
    from ..lm import train_lm
    from ..train import init_distributed, is_main_process

    _resume_defaults(args)
    if args.data is None:
        raise MyopiaError("myopia train needs --data (or --resume on a run folder that has a config.json)")
    if args.eval_tokens < 1:
        raise MyopiaError(f"eval-tokens must be a positive integer, got {args.eval_tokens}")
    init_distributed(args.device)
    result = train_lm(args.data, args.out, model_config(args), train_config(args), resume=args.resume,
                      eval_tokens=args.eval_tokens, tokenizer=args.tokenizer, data_opts=data_options(args))
    if result and is_main_process():
        print(f"{args.gradient}: eval loss {result['eval_loss']:.4f} nats/token after {result['tokens_seen']:,} "
              f"tokens ({result['train_time_s']:.0f} s) -> {args.out}")
    return 0


def _resume_defaults(args) -> None:
    """With --resume on a folder that holds a run, options not typed come from its config.json."""
    from pathlib import Path

    from ..io import read_json
    from ..rundir import CONFIG
    from .common import GRADIENT_OPTIONS, MODEL_OPTIONS, SCALE_OUT_OPTIONS, TRAIN_OPTIONS, fill_from_saved_run

    config = Path(args.out) / CONFIG
    if args.resume and config.is_file():
        fill_from_saved_run(args, read_json(config), ("gradient", *GRADIENT_OPTIONS, *MODEL_OPTIONS),
                            (*TRAIN_OPTIONS, *SCALE_OUT_OPTIONS))
