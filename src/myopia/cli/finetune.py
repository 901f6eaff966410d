"""myopia finetune: continue training a Hugging Face model vanilla vs myopic on identical data (paper protocol)."""

from __future__ import annotations

from .common import add_data_args, add_train_args, data_options, train_config


def register(sub) -> None:
    """Add the ``myopia finetune`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser(
        "finetune",
        help="continue training a Hugging Face causal LM once per gradient setting on identical data",
        description="The paper's Pythia protocol: load a pretrained causal LM (hub name when online, local "
        "directory always) and continue training it once per arm (default: vanilla, myopic, myopic-hidden) from "
        "the same weights, on the same windows in the same order. Writes OUT/<arm>/ run directories "
        "(config.json, metrics.jsonl, checkpoints, result.json, tokenizer/, hf/) and OUT/finetune.json (test-"
        "split losses and gaps to vanilla with a paired bootstrap over test documents; one seed, so training noise is "
        "not measured).",
    )
    p.add_argument("--model", required=True, help="Hugging Face model name or local directory")
    p.add_argument("--out", required=True, help="output directory (one run directory per arm)")
    add_data_args(p, tokenizer_help="the model's own tokenizer (default); if given it must be the model's (checked)")
    p.add_argument("--arms", default="vanilla,myopic,myopic-hidden",
                   help="comma-separated gradient settings to train (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per training window (default %(default)s)")
    p.add_argument("--beta", type=float, default=0.0, help="off-band gradient weight of the myopic arms")
    p.add_argument("--horizon", type=int, default=0, help="earlier positions with full gradient (myopic arms)")
    p.add_argument("--eval-tokens", type=int, default=65536, help="held-out tokens per evaluation")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="keep the weights every N steps in <arm>/snapshots/ (a multiple of --ckpt-every)")
    p.add_argument("--resume", action="store_true", help="continue the arms' runs from their checkpoints")
    add_train_args(p, steps=1000, batch_size=32, lr=1e-4)
    p.set_defaults(func=run, precision=None)


def run(args) -> int:
    """Run ``myopia finetune`` with the parsed arguments; returns the exit status."""
    import torch
    from transformers.utils import logging as hf_logging

    from ..experiments.finetune import finetune
    from ..train import init_distributed

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    init_distributed()
    if args.precision is None:  # default: bf16 autocast on a GPU, fp32 on the CPU
        on_gpu = (args.device == "auto" and torch.cuda.is_available()) or args.device.startswith("cuda")
        args.precision = "bf16" if on_gpu else "fp32"
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    summary = finetune(args.model, args.data, args.out, train_config(args), seq_len=args.seq_len, arms=arms,
                       beta=args.beta, horizon=args.horizon, eval_tokens=args.eval_tokens, resume=args.resume,
                       snapshot_every=args.snapshot_every, data_opts=data_options(args),
                       tokenizer_spec=args.tokenizer)
    from ..analysis.stats import Estimate

    for arm, r in summary.get("arms", {}).items():
        gap = summary["gap_vs_vanilla"].get(arm)
        extra = f"  gap {Estimate.from_dict(gap).format(4)}" if gap else ""
        print(f"{arm:>14}: test loss {r['test_loss']:.4f} nats/token{extra}")
    if summary:
        print(f"-> {args.out}/finetune.json")
    return 0
