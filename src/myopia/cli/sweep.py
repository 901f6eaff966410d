"""myopia sweep: model sizes x token budgets x gradient settings x seeds, with scaling-law fits."""

from __future__ import annotations

import argparse

from ..experiments.scaling_presets import PRESETS

PRESET_HELP = "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())


def add_sweep_args(p: argparse.ArgumentParser, *, default_gradients: str | None = "vanilla,myopic,myopic-hidden"):
    """Arguments shared by `sweep` and `horizon-sweep`: the preset and what may override it."""
    p.add_argument("--data", required=True, help="text file, folder of text files, or .npy token ids")
    p.add_argument("--out", required=True, help="sweep folder: one subfolder per run, plus the summary JSON")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help=f"defaults to start from ({PRESET_HELP})")
    g = p.add_argument_group("size ladder (overrides the preset)")
    g.add_argument("--sizes", help="explicit sizes LAYERSxWIDTH[hHEADS], comma separated, e.g. 1x32,2x64,4x128h4")
    g.add_argument("--widths", help="ladder widths, comma separated (depth and heads follow --aspect, --head-dim)")
    g.add_argument("--aspect", type=int, help="width per layer: n_layer = max(1, round(width / aspect))")
    g.add_argument("--head-dim", type=int, help="target head size: heads = width // head-dim")
    g = p.add_argument_group("budget and training (override the preset)")
    g.add_argument("--tokens", help="training tokens per run: 2M, 500k, 1.5e6, or 20N (per non-embedding parameter); "
                   "comma separated for several budgets")
    if default_gradients is not None:
        g.add_argument("--gradients", default=None,
                       help=f"comma-separated gradient settings (default {default_gradients})")
    g.add_argument("--seeds", default=None, help="comma-separated seeds (initialisation and data order; default: the "
                   "preset's, 0,1,2 for cpu; one seed leaves training noise unmeasured)")
    g.add_argument("--seq-len", type=int)
    g.add_argument("--batch-size", type=int, help="global batch in sequences")
    g.add_argument("--micro-batch-size", type=int, default=0)
    g.add_argument("--lr", type=float, help="peak learning rate (at --lr-ref-width when that is set)")
    g.add_argument("--lr-ref-width", type=int, help="scale lr by sqrt(ref / width); 0 = constant lr")
    g.add_argument("--eval-tokens", type=int, help="held-out tokens evaluated per run")
    g.add_argument("--ckpt-every", type=int, default=200, help="checkpoint interval in steps (for resuming)")
    g.add_argument("--device", default="auto")
    g.add_argument("--precision", choices=["fp32", "bf16"])
    g.add_argument("--threads", type=int, help="CPU intra-op threads (default: torch's; 1 is faster when other "
                   "processes share the cores)")
    g = p.add_argument_group("running")
    g.add_argument("--max-runs", type=int, help="train at most this many pending runs, then summarise and stop "
                   "(run the same command again to continue)")
    g.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for intervals (default 200)")
    g.add_argument("--dry-run", action="store_true", help="print the plan (runs, parameters, tokens, FLOPs) and stop")


def settings_from_args(args, *, gradients_default=None):
    """SweepSettings from a preset and the command line's overrides."""
    from ..errors import MyopiaError
    from ..experiments.sweep import SweepSettings, ladder, parse_list, parse_sizes, parse_tokens

    if getattr(args, "threads", None) is not None:
        import torch

        if args.threads < 1:
            raise MyopiaError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    head_dim = args.head_dim or preset.head_dim
    if args.sizes and args.widths:
        raise MyopiaError("give either --sizes or --widths, not both")
    if args.sizes:
        sizes = parse_sizes(args.sizes, head_dim)
    else:
        widths = parse_list(args.widths, int, "--widths") if args.widths else preset.widths
        sizes = ladder(widths, args.aspect or preset.aspect, head_dim)
    gradients = getattr(args, "gradients", None)
    overrides = dict(
        sizes=sizes,
        tokens=parse_tokens(args.tokens) if args.tokens else None,
        gradients=parse_list(gradients, str, "--gradients") if gradients else gradients_default,
        seeds=parse_list(args.seeds, int, "--seeds") if args.seeds else None,
        seq_len=args.seq_len, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size, lr=args.lr,
        lr_ref_width=args.lr_ref_width, eval_tokens=args.eval_tokens, ckpt_every=args.ckpt_every,
        device=args.device, precision=args.precision,
    )
    settings = SweepSettings.from_preset(preset, **overrides)
    if len(settings.seeds) == 1:
        import sys

        print("warning: one seed: training noise not measured (1 seed); gap intervals are evaluation noise only "
              "(use --seeds 0,1,2)", file=sys.stderr)
    return settings


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="scaling sweep: sizes x budgets x gradient settings, power-law fits, compute multiplier",
        description="Train a ladder of model sizes with vanilla and myopic gradients (same initialisation and data "
        "order within a size), skip finished runs and resume partial ones, then fit L(C) = E + A C^-alpha per arm "
        "and the compute multiplier k = C*/C. Writes DIR/<run>/ and DIR/sweep.json.",
    )
    add_sweep_args(p)
    p.add_argument("--report", action="store_true",
                   help="also write DIR/report.md and DIR/report.html (as `myopia report DIR`)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..data import load_corpus
    from ..experiments.sweep import plan_runs, run_sweep
    from ..rundir import run_status
    from ..train import init_distributed

    settings = settings_from_args(args)
    corpus = load_corpus(args.data)
    if args.dry_run:
        runs = plan_runs(settings, corpus.vocab_size)
        for r in runs:
            print(f"{r.name:40s} N={r.params_non_embedding:>10,d}  total={r.params_total:>10,d}  "
                  f"tokens={r.tokens:>12,d}  steps={r.train_cfg.steps:>6d}  lr={r.train_cfg.lr:.2e}  "
                  f"FLOPs={r.flops:.3e}  [{run_status(Path(args.out) / r.name)}]")
        print(f"{len(runs)} runs, {sum(r.flops for r in runs):.3e} FLOPs in all")
        return 0
    init_distributed()
    summary = run_sweep(args.data, args.out, settings, corpus=corpus, max_runs=args.max_runs,
                        bootstrap=args.bootstrap)
    if not summary:
        return 0
    _print_table(summary)
    if args.report:
        from .report import write_and_print

        write_and_print(args.out)
    return 0


def _print_table(s: dict) -> None:
    def f(x, fmt="{:.3f}"):
        return "-" if x is None else fmt.format(float(x))

    print(f"{'size':>12} {'N':>10} {'FLOPs':>10} {'vanilla':>8} {'myopic':>8} {'m-hidden':>8} "
          f"{'gap':>7} {'gap-h':>7} {'k':>6} {'k-h':>6}")
    for e in s["table"]:
        print(f"{e['size']:>12} {e['params_non_embedding']:>10,d} {e['flops']:>10.2e} "
              f"{f(e['loss'].get('vanilla')):>8} {f(e['loss'].get('myopic')):>8} "
              f"{f(e['loss'].get('myopic-hidden')):>8} "
              f"{f(e['gap']['myopic'], '{:+.3f}'):>7} {f(e['gap']['myopic-hidden'], '{:+.3f}'):>7} "
              f"{f(e['k']['myopic'], '{:.2f}'):>6} {f(e['k']['myopic-hidden'], '{:.2f}'):>6}")
    state = "complete" if s["complete"] else f"{len(s['pending'])} runs pending"
    print(f"sweep {state}; {s['total_train_wall_s'] / 60:.1f} min of training")
