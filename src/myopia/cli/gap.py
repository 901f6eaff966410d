"""myopia gap: the myopia gap of a pair with confidence intervals, and where it lives."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("gap", help="evaluate a pair on held-out documents: the gap by position, slice, token class",
                       description="Score every held-out token with every arm of a pair; write DIR/gap.json "
                       "(gap with 95%% bootstrap CI overall, by position, slice and token class, top contexts) "
                       "and DIR/gap/per_token.npz.")
    p.add_argument("dir", help="pair directory (made by myopia pair)")
    p.add_argument("--split", default="test", choices=["test", "val", "all"],
                   help="held-out documents (all: every document of a different --data corpus)")
    p.add_argument("--data", default=None, help="evaluate on another corpus (tokenized with the pair's tokenizer)")
    p.add_argument("--max-docs", type=int, default=None, help="evaluate only the first N held-out documents")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default %(default)s)")
    p.add_argument("--top", type=int, default=20, help="top contexts kept per arm (default %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.gap import run_gap

    g = run_gap(args.dir, split=args.split, data=args.data, max_docs=args.max_docs, n_boot=args.bootstrap,
                top_k=args.top, device=args.device, progress=not args.no_progress)
    van = g["loss"]["vanilla"]
    print(f"vanilla loss {van['mean']:.4f} nats/token on {g['n_tokens']:,} tokens ({g['n_docs']} documents)")
    for arm, gap in g["gap"].items():
        if gap is None:
            print(f"{arm:<24} not trained")
        else:
            lo, hi = gap["ci95"]
            print(f"{arm:<24} gap {gap['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] nats/token "
                  f"({100 * gap['relative']['mean']:+.1f}%)")
    if "scoring" in g:
        print(f"scoring: {g['scoring']['note']}")
    print(f"-> {args.dir}/gap.json")
    return 0
