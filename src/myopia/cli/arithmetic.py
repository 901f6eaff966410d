"""``myopia arithmetic``: multiplication with filler tokens, a grid of gradient × filler settings."""

from __future__ import annotations

from .common import add_train_args


def register(sub) -> None:
    p = sub.add_parser("arithmetic", help="multiplication with filler tokens: gradient × filler accuracy grid",
                       description="a × b = c with N-digit operands written least-significant digit first, F "
                       "filler zeros after each operand, loss on the answer digits only; greedy exact match.")
    p.add_argument("--out", required=True, help="result folder")
    p.add_argument("--digits", type=int, default=3, help="operand digits N (default %(default)s)")
    p.add_argument("--fillers", default="0,3", help="comma-separated filler counts F (default %(default)s)")
    p.add_argument("--gradients", default="vanilla,myopic-hidden,myopic",
                   help="comma-separated gradient settings (default %(default)s)")
    p.add_argument("--eval-problems", type=int, default=1000, help="held-out problems (default %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--n-layer", type=int, default=4)
    g.add_argument("--n-head", type=int, default=4)
    g.add_argument("--d-model", type=int, default=128)
    g.add_argument("--mlp-ratio", type=int, default=4)
    add_train_args(p, steps=3000, batch_size=128, lr=1e-3)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import MyopiaError
    from ..experiments.arithmetic import run_arithmetic_grid
    from ..model import GPTConfig
    from .common import train_config
    from .demo import parse_gradients

    try:
        fillers = [int(f) for f in args.fillers.split(",") if f.strip()]
    except ValueError:
        raise MyopiaError(f"--fillers takes comma-separated integers, got {args.fillers!r}") from None
    if not fillers or min(fillers) < 0:
        raise MyopiaError(f"--fillers takes comma-separated integers >= 0, got {args.fillers!r}")
    model_cfg = GPTConfig(vocab_size=12, n_layer=args.n_layer, n_head=args.n_head, d_model=args.d_model,
                          mlp_ratio=args.mlp_ratio, seq_len=8)
    result = run_arithmetic_grid(args.digits, fillers, parse_gradients(args.gradients), model_cfg,
                                 train_config(args), args.out, eval_problems=args.eval_problems)
    print(result["table"])
    print(f"-> {args.out}/result.json")
    return 0
