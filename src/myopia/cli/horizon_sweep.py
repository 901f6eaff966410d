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
        "With --lr-grid, each arm first trains DIR/tune-<arm>-lr<lr>-s<seed>/ for every grid lr and --lr-seeds seed "
        "and takes the lr with the lowest mean validation loss. Reported runs DIR/<arm>-s<seed>/ are scored on the "
        "test split; DIR/horizon.json.",
    )
    add_sweep_args(p, default_gradients=None)
    p.add_argument("--horizons", help="comma-separated horizons (default 0,1,2,4,... below seq-len - 1)")
    p.add_argument("--betas", default="0.1,0.25,0.5,0.75", help="comma-separated betas in (0, 1); '' for none")
    p.add_argument("--lr-grid", help="comma-separated peak lrs: each arm takes the one with the lowest mean validation "
                   "loss over --lr-seeds (default: no grid, --lr for every arm)")
    p.add_argument("--lr-seeds", help="comma-separated seeds of the lr tuning runs, never reported (disjoint from "
                   "--seeds; default 100)")
    p.add_argument("--report", action="store_true",
                   help="also write DIR/report.md and DIR/report.html (as `myopia report DIR`)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia horizon-sweep``: train and evaluate the horizon (and beta) arms, print the gap by horizon, write
    OUT/horizon.json; returns the exit status."""
    from dataclasses import replace

    from ..data import load_corpus
    from ..experiments.horizon_sweep import check_lr_plan, horizon_arms, run_horizon_sweep, tuning_name
    from ..sweep_grid import parse_list

    settings = settings_from_args(args)
    if not args.sizes and not args.widths:  # default: the preset's largest size
        settings = replace(settings, sizes=[settings.sizes[-1]])
    settings = replace(settings, sizes=settings.sizes[:1], tokens=settings.tokens[:1])
    horizons = parse_list(args.horizons, int, "--horizons") if args.horizons else None
    betas = parse_list(args.betas, float, "--betas") if args.betas.strip() else []
    lr_grid = parse_list(args.lr_grid, float, "--lr-grid") if args.lr_grid else None
    lr_seeds = parse_list(args.lr_seeds, int, "--lr-seeds") if args.lr_seeds else None
    lr_grid, lr_seeds = check_lr_plan(settings.seeds, lr_grid, lr_seeds)
    arms = horizon_arms(settings.seq_len, horizons, betas)
    if args.dry_run:
        for a in arms:
            print(f"{a.name:28s} gradient={a.gradient:14s} horizon={a.horizon:<4d} beta={a.beta:g}")
        tuning = [tuning_name(a.name, lr, s) for s in lr_seeds for a in arms for lr in lr_grid or []]
        if tuning:
            print(f"tuning runs (lr chosen per arm on validation; seeds {','.join(map(str, lr_seeds))} never "
                  "reported):")
            for name in tuning:
                print(f"  {name}")
        lr = "its arm's chosen lr" if lr_grid else f"lr {settings.lr_for(settings.sizes[0]):g}"
        print(f"reported runs ({lr}; losses on the test split):")
        for s in settings.seeds:
            for a in arms:
                print(f"  {a.name}-s{s}")
        print(f"{len(tuning)} tuning + {len(arms) * len(settings.seeds)} reported runs at {settings.sizes[0].name}, "
              f"budget {settings.tokens[0].label}")
        return 0
    corpus = load_corpus(args.data, args.tokenizer, **data_options(args))
    s = run_horizon_sweep(args.data, args.out, settings, horizons=horizons, betas=betas, lr_grid=lr_grid,
                          lr_seeds=lr_seeds, corpus=corpus, max_runs=args.max_runs, bootstrap=args.bootstrap)
    if lr_grid and s["lr"]["choice"]:
        print("lr per arm (validation, seeds " + ",".join(map(str, lr_seeds)) + "): "
              + ", ".join(f"{a}={lr:g}" for a, lr in s["lr"]["choice"].items()))
    print(f"vanilla {s['vanilla']['loss']} test-split nats/token ({s['vanilla']['seeds']} seed(s); training noise "
          f"{s['training_noise']})")
    for v in MYOPIC_ARMS:
        pts = ", ".join(f"h={p['horizon']}: {p['loss']:.3f}" for p in s["horizon"][v] if p.get("loss") is not None)
        print(f"{v}: {pts}")
    print("complete" if s["complete"] else f"{len(s['pending'])} runs pending")
    if args.report:
        from .report import write_and_print

        write_and_print(args.out)
    return 0
