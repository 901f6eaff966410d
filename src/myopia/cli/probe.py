"""myopia probe: future-token linear probes, vanilla vs myopic (vs myopic-hidden)."""

from __future__ import annotations

from ..errors import MyopiaError
from .common import add_data_args, data_options


def register(sub) -> None:
    """Add the ``myopia probe`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser(
        "probe",
        help="future-token linear probes (layer-l state at t -> token at t+k) compared across models",
        description="Train linear probes from each model's layer-l hidden state at position t to the token at "
        "t+k (k = 1..4) on one held-out split and score them on another. Models: --pair DIR (its vanilla, "
        "myopic and myopic-hidden runs) and/or --model NAME=CHECKPOINT. Writes OUT/probe.json and OUT/probe.png.",
    )
    p.add_argument("--pair", default=None, help="a pair or finetune directory (arms as subdirectories)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT",
                   help="a model to probe (run dir, weights file, HF directory or hub name); repeatable")
    p.add_argument("--out", required=True, help="output directory")
    add_data_args(p, tokenizer_help="the models' own tokenizer (default); if given it must be theirs (checked)")
    p.add_argument("--layers", default="all", help="'all' or comma-separated layer indices (0 = embeddings)")
    p.add_argument("--ks", default="1,2,3,4", help="future offsets (default %(default)s)")
    p.add_argument("--train-split", default="val", choices=["train", "val", "test"],
                   help="split whose windows train the probes (default %(default)s)")
    p.add_argument("--eval-split", default="test", choices=["train", "val", "test"],
                   help="split whose windows score the probes (default %(default)s)")
    p.add_argument("--windows", type=int, default=64, help="windows per split (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per window (default %(default)s)")
    p.add_argument("--classes", type=int, default=1024, help="probe classes incl. 'other' (default %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="L-BFGS iterations per probe fit, at most "
                   "(default %(default)s)")
    p.add_argument("--lr", type=float, default=1.0, help="scale of L-BFGS's first step (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes' initialisation (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="write probe.json only (no probe.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia probe`` with the parsed arguments; returns the exit status."""
    from transformers.utils import logging as hf_logging

    from ..experiments.probe import pair_models, probe_comparison

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    models = pair_models(args.pair) if args.pair else {}
    for item in args.model:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise MyopiaError(f"--model expects NAME=CHECKPOINT, got {item!r}")
        models[name] = spec
    if not models:
        raise MyopiaError("give --pair DIR and/or --model NAME=CHECKPOINT")
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise MyopiaError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    summary = probe_comparison(models, args.data, args.out, layers=args.layers, ks=ks, train_split=args.train_split,
                               eval_split=args.eval_split, windows=args.windows, seq_len=args.seq_len,
                               classes=args.classes, steps=args.steps, lr=args.lr, seed=args.seed,
                               device=args.device, plot=not args.no_plot,
                               data_opts=data_options(args), tokenizer_spec=args.tokenizer)
    for name, res in summary["models"].items():
        last = max(res["layers"], key=int)
        accs = "  ".join(f"k={k}: {res['layers'][last][str(k)]['accuracy']:.3f}" for k in summary["ks"])
        print(f"{name:>14} (layer {last}): accuracy {accs}")
    print(f"-> {args.out}/probe.json")
    return 0
