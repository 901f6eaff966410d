"""``myopia arithmetic``: multiplication with filler tokens, seeds × gradient × filler settings, the interaction."""

from __future__ import annotations

from .common import add_train_args


def register(sub) -> None:
    """Add the ``myopia arithmetic`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("arithmetic", help="multiplication with filler tokens: gradient × filler grid and interaction",
                       description="a × b = c with N-digit operands written least-significant digit first, F "
                       "filler zeros after each operand, loss on the answer digits only; greedy exact match on "
                       "every held-out unordered pair once; the filler × gradient interaction with a seed-inclusive "
                       "interval; a filler-mask ablation at evaluation.")
    p.add_argument("--out", required=True, help="result folder")
    p.add_argument("--preset", default=None, choices=("cpu-N3", "cpu-N4", "gpu-N5"),
                   help="a measured configuration (docs/synthetic.md); explicit options override it")
    p.add_argument("--digits", type=int, default=None, help="operand digits N (default 3)")
    p.add_argument("--fillers", default=None, help="comma-separated filler counts F, the first the baseline "
                   "(default 0,6)")
    p.add_argument("--gradients", default="vanilla,myopic-hidden,myopic",
                   help="comma-separated gradient settings (default %(default)s)")
    p.add_argument("--seeds", default="0,1,2",
                   help="comma-separated training seeds, each trains every arm (default %(default)s)")
    p.add_argument("--heldout-pairs", type=int, default=None,
                   help="held-out unordered pairs {a, b}, each evaluated once (default: the preset's, 500 on CPU)")
    p.add_argument("--no-mask-filler", action="store_true", help="skip the filler-mask ablation")
    g = p.add_argument_group("model")
    g.add_argument("--n-layer", type=int, default=None, help="default 2")
    g.add_argument("--n-head", type=int, default=None, help="default 4")
    g.add_argument("--d-model", type=int, default=None, help="default 64")
    g.add_argument("--mlp-ratio", type=int, default=4, help="MLP width / d_model (default %(default)s)")
    add_train_args(p, steps=None, batch_size=None, lr=None)
    p.set_defaults(func=run)


def parse_ints(text: str, flag: str, lo: int = 0) -> list[int]:
    """Distinct integers >= ``lo`` from the comma-separated value of ``flag``; a clear error otherwise."""
    from ..errors import MyopiaError

    try:
        values = [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise MyopiaError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < lo or len(set(values)) != len(values):
        raise MyopiaError(f"{flag} takes distinct comma-separated integers >= {lo}, got {text!r}")
    return values


def run(args) -> int:
    """Run ``myopia arithmetic``: train the gradient × filler grid of the multiplication task, print the grid and the
    interaction, write OUT/result.json; returns the exit status."""
    from ..experiments.arithmetic import PRESETS, run_arithmetic_grid
    from ..model import GPTConfig
    from .common import train_config
    from .demo import parse_gradients

    preset = dict(PRESETS["cpu-N3"] if args.preset is None else PRESETS[args.preset])
    for name in ("digits", "n_layer", "n_head", "d_model", "steps", "batch_size", "lr", "heldout_pairs"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    fillers = preset["fillers"] if args.fillers is None else parse_ints(args.fillers, "--fillers")
    seeds = parse_ints(args.seeds, "--seeds")
    model_cfg = GPTConfig(vocab_size=12, n_layer=args.n_layer, n_head=args.n_head, d_model=args.d_model,
                          mlp_ratio=args.mlp_ratio, seq_len=8)
    result = run_arithmetic_grid(args.digits, fillers, parse_gradients(args.gradients), model_cfg,
                                 train_config(args), args.out, seeds=seeds, heldout_pairs=args.heldout_pairs,
                                 mask_filler=not args.no_mask_filler)
    print(result["table"])
    print(f"-> {args.out}/result.json")
    return 0
