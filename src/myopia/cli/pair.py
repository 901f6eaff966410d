"""myopia pair: vanilla and myopic arms with identical initialisation, data order and budget."""

from __future__ import annotations

from .common import add_data_args, add_model_args, add_train_args, data_options, model_config, train_config


DEFAULT_SEEDS = 3


def register(sub) -> None:
    p = sub.add_parser("pair", help="train vanilla and myopic models on identical data, init and budget",
                       description="Train a vanilla GPT and myopic variants (default: myopic and myopic-hidden) "
                       "from the same initial weights on the same examples in the same order. Rerunning skips "
                       "finished runs and resumes interrupted ones. Next: myopia gap DIR, myopia bonus DIR, "
                       "myopia report DIR.")
    add_data_args(p)
    p.add_argument("--out", required=True, help="pair directory")
    p.add_argument("--variants", default="myopic,myopic-hidden",
                   help="arms besides vanilla: myopic, myopic-hidden, bigram, myopic-beta0.5, myopic-horizon8, "
                   "myopic-hidden-horizon8 (default %(default)s)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds (default: 3 seeds, --seed, --seed + 1, --seed + 2, so that every "
                   "interval includes training noise; one seed works and is flagged 'training noise not measured')")
    p.add_argument("--cache", default=None, help="token cache folder (default DIR/corpus)")
    p.add_argument("--eval-tokens", type=int, default=65536, help="validation tokens per evaluation")
    add_model_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.pair import run_pair

    import sys

    from ..analysis.stats import TRAINING_NOISE_ONE_SEED
    from ..experiments.pair import parse_seeds

    args.gradient, args.beta, args.horizon = "vanilla", 0.0, 0
    if args.seeds is None:
        args.seeds = ",".join(str(args.seed + i) for i in range(DEFAULT_SEEDS))
    if len(parse_seeds(args.seeds)) == 1:
        print(f"warning: one seed: training noise {TRAINING_NOISE_ONE_SEED}; the gap's intervals will be evaluation "
              "noise only (use --seeds 0,1,2)", file=sys.stderr)
    manifest = run_pair(args.data, args.out, model_config(args), train_config(args), arms=args.variants,
                        seeds=args.seeds, tokenizer=args.tokenizer, cache=args.cache, eval_tokens=args.eval_tokens,
                        data_opts=data_options(args), progress=not args.no_progress)
    for arm, runs in manifest["runs"].items():
        for seed, r in sorted(runs.items()):
            print(f"{arm:<24} seed {seed}: validation loss {r['eval_loss']:.4f}")
    print(f"-> {args.out} (next: myopia gap {args.out})")
    return 0
