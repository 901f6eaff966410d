"""myopia bonus: the local myopia bonus of a pair's vanilla model and the gap decomposition."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``myopia bonus`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("bonus", help="train the local-myopic trainee and report the local myopia bonus",
                       description="Train a trainee whose present-position computation learns while every earlier "
                       "position's keys/values come from the frozen vanilla model; report bonus = "
                       "loss(vanilla) - loss(local) with a 95% CI and the decomposition gap = "
                       "(myopic - local) - (vanilla - local). Writes DIR/bonus.json.")
    p.add_argument("dir", help="pair directory (made by myopia pair)")
    p.add_argument("--init", choices=["vanilla", "scratch"], default="vanilla",
                   help="start from the vanilla weights (default) or from scratch like the pair's arms")
    p.add_argument("--steps", type=int, default=None,
                   help="cap on the bonus phase's steps (default: 1/4 of the pair's steps from vanilla, all of "
                   "them from scratch); with --patience > 0 each run stops earlier at a validation plateau")
    p.add_argument("--patience", type=int, default=3,
                   help="stop when the best validation loss improved by < --min-delta over this many evaluations "
                   "(constant lr after warmup); 0: exactly --steps with the pair's cosine schedule")
    p.add_argument("--min-delta", type=float, default=0.002, help="plateau threshold, nats/token (default %(default)s)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="validation evaluations every N steps (default: the pair's, at most steps / 10)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the pair's lr / 4 from vanilla, the pair's lr from scratch)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control (vanilla trained on the same examples with the same rule)")
    p.add_argument("--split", default="test", choices=["test", "val"], help="held-out split scored (default %(default)s)")
    p.add_argument("--max-docs", type=int, default=None, help="score at most this many documents (default: all)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the intervals (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia bonus``: train the local trainee (and its control) of every seed, print the bonus with its interval,
    write DIR/bonus.json; returns the exit status."""
    from ..analysis.stats import Estimate
    from ..experiments.bonus import run_bonus

    b = run_bonus(args.dir, init=args.init, steps=args.steps, lr=args.lr, control=not args.no_control,
                  split=args.split, max_docs=args.max_docs, n_boot=args.bootstrap, patience=args.patience,
                  min_delta=args.min_delta, eval_every=args.eval_every, device=args.device,
                  progress=not args.no_progress)
    print(f"{b['n_seeds']} seed(s); intervals: 95%, training noise {b['training_noise']}")
    for name, t in b["trainees"].items():
        phase = b["config"].get("phases", {}).get(name, {})
        if phase:
            print(f"{name}: bonus phase {phase['stopping']}; steps taken {phase['steps_taken']}; stopped at the "
                  f"plateau {phase.get('stopped_at_plateau')}")
            for seed, fresh in (phase.get("data") or {}).items():
                if isinstance(fresh, dict) and not fresh.get("unseen", True):
                    print(f"{name}: seed {seed}: {fresh['note']}")
        print(f"{name}: bonus {Estimate.from_dict(t['bonus']).format(4)} nats/token")
        if "bonus_vs_control" in t:
            print(f"{name}: bonus vs {t['control']} {Estimate.from_dict(t['bonus_vs_control']).format(4)}")
        if "bonus_vs_control_vanilla_past" in t:
            print(f"{name}: bonus vs {t['control']} scored with vanilla's past "
                  f"{Estimate.from_dict(t['bonus_vs_control_vanilla_past']).format(4)}")
        for arm, dec in t["decomposition"].items():
            if dec is not None:
                print(f"  {arm:<22} gap {dec['gap']['mean']:+.4f} = (arm - local) "
                      f"{dec['myopic_minus_local']['mean']:+.4f} - (vanilla - local) "
                      f"{dec['vanilla_minus_local']['mean']:+.4f}")
    print(f"-> {args.dir}/bonus.json")
    return 0
