"""``myopia synthetic``: one regression task (precache or control), several gradient settings, paired runs."""

from __future__ import annotations

from .common import add_train_args


def register(sub) -> None:
    """Add the ``myopia synthetic`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("synthetic", help="train regressors on a synthetic pre-caching task, paired by gradient",
                       description="Sequence regression y_n = z_n Σ sin(ω x_{n-i}) + (1-z_n) x_n (see the docs, "
                       "'Concepts: the synthetic tasks'). Writes OUT/<task>-<gradient>[-seedS]/ runs and "
                       "OUT/result.json.")
    p.add_argument("--task", choices=["precache", "control"], required=True, help="precache (the feature is needed only later) or control (also needed at once)")
    p.add_argument("--out", required=True, help="result folder")
    p.add_argument("--gradients", default="vanilla,myopic-hidden,myopic,bigram",
                   help="comma-separated gradient settings (default %(default)s)")
    p.add_argument("--omega", type=float, default=3.0, help="frequency ω (default %(default)s)")
    p.add_argument("--window", type=int, default=8, help="window w (default %(default)s)")
    p.add_argument("--p", type=float, default=1.0, help="Bernoulli p of z_n (default %(default)s)")
    p.add_argument("--n-seeds", type=int, default=1, help="paired repetitions with seeds seed..seed+n-1")
    p.add_argument("--eval-sequences", type=int, default=2048, help="fresh held-out sequences (default %(default)s)")
    p.add_argument("--probe", action="store_true", help="also fit lookback probes (R² tables in result.json)")
    p.add_argument("--probe-max-lag", type=int, default=20, help="largest lag probed for the feature (default %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--seq-len", type=int, default=16, help="positions per sequence (default %(default)s)")
    g.add_argument("--n-layer", type=int, default=2, help="transformer blocks (default %(default)s)")
    g.add_argument("--n-head", type=int, default=4, help="attention heads (default %(default)s)")
    g.add_argument("--d-model", type=int, default=64, help="residual width (default %(default)s)")
    add_train_args(p, steps=1500, batch_size=128, lr=3e-3)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia synthetic``: train the regressors of a synthetic pre-caching task paired by gradient, write
    OUT/result.json and print each loss and gap; returns the exit status."""
    from pathlib import Path

    from ..errors import MyopiaError
    from ..experiments.regression import compare_regression
    from ..io import provenance, write_json
    from ..rundir import RESULT
    from ..synthetic.regression import RegressionSpec, regressor_config
    from .common import train_config
    from ..analysis.stats import Estimate
    from .demo import parse_gradients

    if args.n_seeds < 1:
        raise MyopiaError(f"--n-seeds must be >= 1, got {args.n_seeds}")
    out = Path(args.out)
    if (out / RESULT).exists():
        raise MyopiaError(f"{out} already holds a result; choose another --out")
    spec = RegressionSpec(task=args.task, omega=args.omega, window=args.window, p=args.p, seq_len=args.seq_len)
    model_cfg = regressor_config(n_layer=args.n_layer, n_head=args.n_head, d_model=args.d_model, seq_len=args.seq_len)
    train_cfg = train_config(args)
    seeds = list(range(args.seed, args.seed + args.n_seeds))
    summary, _ = compare_regression(spec, parse_gradients(args.gradients), model_cfg, train_cfg, out, seeds=seeds,
                                    eval_sequences=args.eval_sequences, probe=args.probe,
                                    probe_max_lag=args.probe_max_lag)
    result = {"command": "synthetic", "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
              args.task: summary, **provenance()}
    write_json(out / RESULT, result)
    print(f"{args.task}: held-out Huber/p (fraction of trivial), {args.eval_sequences} sequences, seeds {seeds}")
    for g in ["trivial", *parse_gradients(args.gradients)]:
        gap = summary.get("gap", {}).get(g)
        extra = f"   gap {Estimate.from_dict(gap).format(4)}" if gap else ""
        print(f"  {g:14s} {summary[g]:.4f} ({summary['fraction_of_trivial'][g]:.3f}){extra}")
    print(f"-> {out}/result.json")
    return 0
