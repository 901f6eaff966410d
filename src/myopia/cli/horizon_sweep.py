"""myopia horizon-sweep: loss as a function of the gradient horizon h and of beta, at one model size."""

from __future__ import annotations

from ..arms import MYOPIC_ARMS
from .common import data_options
from .sweep import add_sweep_args, settings_from_args


def register(sub) -> None:
    """Add the ``myopia horizon-sweep`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser(
        "horizon-sweep", help="how far back may the training signal reach? loss vs horizon h and beta, one size",
        description="At one size (the first of --sizes, default the preset's largest) and one budget, train vanilla "
        "and, for myopic and myopic-hidden, each horizon h (0, 1, 2, 4, ... < seq-len - 1) and each beta. "
        "Writes DIR/<arm>-s<seed>/ and DIR/horizon.json.",
    )
    add_sweep_args(p, default_gradients=None)
    p.add_argument("--horizons", help="comma-separated horizons (default 0,1,2,4,... below seq-len - 1)")
    p.add_argument("--betas", default="0.1,0.25,0.5,0.75", help="comma-separated betas in (0, 1); '' for none")
    p.add_argument("--report", action="store_true",
                   help="also write DIR/report.md and DIR/report.html (as `myopia report DIR`)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia horizon-sweep``: train and evaluate the horizon (and beta) arms, print the gap by horizon, write
    OUT/horizon.json; returns the exit status."""
    from dataclasses import replace

    from ..data import load_corpus
    from ..experiments.horizon_sweep import horizon_arms, run_horizon_sweep
    from ..sweep_grid import parse_list

    settings = settings_from_args(args)
    if not args.sizes and not args.widths:  # default: the preset's largest size
        settings = replace(settings, sizes=[settings.sizes[-1]])
    settings = replace(settings, sizes=settings.sizes[:1], tokens=settings.tokens[:1])
    horizons = parse_list(args.horizons, int, "--horizons") if args.horizons else None
    betas = parse_list(args.betas, float, "--betas") if args.betas.strip() else []
    arms = horizon_arms(settings.seq_len, horizons, betas)
    if args.dry_run:
        for a in arms:
            print(f"{a.name:28s} gradient={a.gradient:14s} horizon={a.horizon:<4d} beta={a.beta:g}")
        print(f"{len(arms) * len(settings.seeds)} runs at {settings.sizes[0].name}, budget {settings.tokens[0].label}")
        return 0
    corpus = load_corpus(args.data, args.tokenizer, **data_options(args))
    s = run_horizon_sweep(args.data, args.out, settings, horizons=horizons, betas=betas, corpus=corpus,
                          max_runs=args.max_runs, bootstrap=args.bootstrap)
    print(f"vanilla {s['vanilla']['loss']} ({s['vanilla']['seeds']} seed(s); training noise {s['training_noise']})")
    for v in MYOPIC_ARMS:
        pts = ", ".join(f"h={p['horizon']}: {p['loss']:.3f}" for p in s["horizon"][v] if p.get("loss") is not None)
        print(f"{v}: {pts}")
    print("complete" if s["complete"] else f"{len(s['pending'])} runs pending")
    if args.report:
        from .report import write_and_print

        write_and_print(args.out)
    return 0
