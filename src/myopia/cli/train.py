"""myopia train: one model, one gradient setting."""

from __future__ import annotations

from ..errors import MyopiaError
from .common import add_gradient_args, add_model_args, add_train_args, model_config, train_config


def register(sub) -> None:
    """Add the ``myopia train`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("train", help="train one GPT on a corpus with a chosen gradient setting",
                       description="Train a GPT (next-token prediction) on a text file, a folder of text files "
                       "or a .npy token file. Writes config.json, metrics.jsonl, checkpoints/, "
                       "model.safetensors and result.json to --out.")
    p.add_argument("--data", required=True, help="text file, folder of text files, or .npy token ids")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--eval-tokens", type=int, default=65536, help="held-out tokens per evaluation")
    add_model_args(p)
    add_gradient_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia train`` with the parsed arguments; returns the exit status."""
    from ..lm import train_lm
    from ..train import init_distributed, is_main_process

    if args.eval_tokens < 1:
        raise MyopiaError(f"eval-tokens must be a positive integer, got {args.eval_tokens}")
    init_distributed(args.device)
    result = train_lm(args.data, args.out, model_config(args), train_config(args), resume=args.resume,
                      eval_tokens=args.eval_tokens)
    if result and is_main_process():
        print(f"{args.gradient}: eval loss {result['eval_loss']:.4f} nats/token after {result['tokens_seen']:,} "
              f"tokens ({result['train_time_s']:.0f} s) -> {args.out}")
    return 0
