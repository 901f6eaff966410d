"""myopia bonus: the local myopia bonus of a pair's vanilla model and the gap decomposition."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bonus", help="train the local-myopic trainee and report the local myopia bonus",
                       description="Train a trainee whose present-position computation learns while every earlier "
                       "position's keys/values come from the frozen vanilla model; report bonus = "
                       "loss(vanilla) - loss(local) with a 95%% CI and the decomposition gap = "
                       "(myopic - local) - (vanilla - local). Writes DIR/bonus.json.")
    p.add_argument("dir", help="pair directory (made by myopia pair)")
    p.add_argument("--init", choices=["vanilla", "scratch"], default="vanilla",
                   help="start from the vanilla weights (default) or from scratch like the pair's arms")
    p.add_argument("--steps", type=int, default=None,
                   help="trainee steps (default: 1/4 of the pair's steps from vanilla, all of them from scratch)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the pair's lr / 4 from vanilla, the pair's lr from scratch)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the continued-vanilla control (init vanilla only)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.bonus import run_bonus

    b = run_bonus(args.dir, init=args.init, steps=args.steps, lr=args.lr, control=not args.no_control,
                  split=args.split, max_docs=args.max_docs, n_boot=args.bootstrap, device=args.device,
                  progress=not args.no_progress)
    for name, t in b["trainees"].items():
        lo, hi = t["bonus"]["ci95"]
        print(f"{name}: bonus {t['bonus']['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] nats/token")
        if "bonus_vs_continued" in t:
            c = t["bonus_vs_continued"]
            print(f"{name}: bonus vs continued vanilla {c['mean']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]")
        for arm, dec in t["decomposition"].items():
            if dec is not None:
                print(f"  {arm:<22} gap {dec['gap']['mean']:+.4f} = (arm - local) "
                      f"{dec['myopic_minus_local']['mean']:+.4f} - (vanilla - local) "
                      f"{dec['vanilla_minus_local']['mean']:+.4f}")
    print(f"-> {args.dir}/bonus.json")
    return 0
