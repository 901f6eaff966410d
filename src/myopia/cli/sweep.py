"""myopia sweep: model sizes x token budgets x gradient settings x seeds, with scaling-law fits."""

from __future__ import annotations

import argparse

from ..errors import MyopiaError
from ..scaling_presets import PRESETS, isoflop_presets
from .common import add_data_args, data_options

PRESET_HELP = "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())
RETIRED_IN = "0.2.0"


def _isoflop_presets() -> dict:
    """The IsoFLOP presets (recipes/isoflop.toml), or {} when the recipe folder cannot be read."""
    try:
        return isoflop_presets()
    except MyopiaError:
        return {}


def add_sweep_args(p: argparse.ArgumentParser, *, default_gradients: str | None = "vanilla,myopic,myopic-hidden",
                   isoflop: bool = False):
    """Arguments shared by `sweep` and `horizon-sweep`: the preset and what may override it."""
    add_data_args(p)
    p.add_argument("--out", required=True, help="sweep folder: one subfolder per run, plus the summary JSON")
    iso = _isoflop_presets() if isoflop else {}
    choices = sorted(PRESETS) + sorted(iso)
    iso_help = "; ".join(f"{name}: {t.get('description', '')}" for name, t in iso.items())
    help_ = PRESET_HELP + ("; IsoFLOP designs (recipes/isoflop.toml): " + iso_help if iso else "")
    p.add_argument("--preset", choices=choices, default=None,
                   help=f"defaults to start from (ladder: cpu; isoflop: cpu-isoflop) ({help_})")
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
    g.add_argument("--seq-len", type=int, help="context length in tokens (default: the preset's)")
    g.add_argument("--batch-size", type=int, help="global batch in sequences")
    g.add_argument("--micro-batch-size", type=int, default=0, help="sequences per forward/backward; 0 = the whole batch (default %(default)s)")
    g.add_argument("--lr", type=float, help="peak learning rate (at --lr-ref-width when that is set)")
    g.add_argument("--lr-ref-width", type=int, help="scale lr by sqrt(ref / width); 0 = constant lr")
    g.add_argument("--eval-tokens", type=int, help="held-out tokens evaluated per run")
    g.add_argument("--ckpt-every", type=int, default=200, help="checkpoint interval in steps (for resuming)")
    g.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, ... (default %(default)s)")
    g.add_argument("--precision", choices=["fp32", "bf16"], help="training precision (default: the preset's)")
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
    from ..sweep_grid import SweepSettings, ladder, parse_list, parse_sizes, parse_tokens

    if getattr(args, "threads", None) is not None:
        import torch

        if args.threads < 1:
            raise MyopiaError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset or "cpu"]
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
        "sweep", help="IsoFLOP sweep: compute budgets x shapes x arms x seeds, the compute-optimal frontiers and gaps",
        description="Train an IsoFLOP design with one recipe (pilot for batch and base lr on unreported seeds, "
        "warmup-stable-decay, one run per shape, arm and seed with cooldowns branched at the smaller budgets, "
        "width-scaled lr), skip finished runs and resume partial ones, then measure each arm's compute-optimal "
        "frontier, the frontier gap and its slope with compute. Writes DIR/<run>/ and DIR/sweep.json "
        "(docs/scaling.md).",
    )
    add_sweep_args(p, isoflop=True)
    g = p.add_argument_group("design")
    g.add_argument("--design", choices=["isoflop", "ladder"], default=None,
                   help="isoflop (the default and, since 0.2.0, the only design; ladder, the fixed-token design, "
                   "was retired)")
    g.add_argument("--budgets", help="isoflop: compute budgets in FLOPs, comma separated (e.g. 1e11,3e11,1e12)")
    g.add_argument("--strict-budgets", help="isoflop: budgets that also train strict `myopic` (comma separated; "
                   "'none' for none)")
    g.add_argument("--n-sizes", type=int, help="isoflop: model sizes per budget")
    g.add_argument("--ratio-range", help="isoflop: LO,HI tokens per non-embedding parameter the sizes of each "
                   "budget are log-spaced over (default: the preset's)")
    g.add_argument("--edge-shapes", action=argparse.BooleanOptionalAction, default=None,
                   help="isoflop: after the first pass, one more shape beyond the measured sizes at every budget where "
                   "an arm's profile has its optimum at an edge (the rule in docs/scaling.md; default: the preset's)")
    g.add_argument("--lr-grid", help="isoflop: the pilot's base learning rates, comma separated (the pilot's "
                   "lowest mean validation loss wins; 'none': no pilot, --lr as given)")
    g.add_argument("--batch-grid", help="isoflop: the pilot's batch sizes in sequences, comma separated ('none': "
                   "--batch-size as given)")
    g.add_argument("--schedule", choices=["cosine", "wsd"], help="isoflop: the learning-rate schedule (wsd only: "
                   "its cooldowns branch from one run per shape)")
    g.add_argument("--decay-frac", type=float, help="isoflop: fraction of each run's steps spent in the cooldown")
    g.add_argument("--shard", help="isoflop: train only shard K/N of the trunks (each with its cooldown branches), "
                   "e.g. 0/2 and 1/2 in two processes started together: they split the pilot and wait for each other "
                   "where the design needs the whole pilot or the whole first pass; each writes sweep.json of what "
                   "has finished")
    g.add_argument("--extrapolate", action="store_true",
                   help="isoflop: also extrapolate the frontiers beyond the measured compute; requires --asymptote")
    g.add_argument("--asymptote", type=float, help="the irreducible loss E (nats/token) constrained independently "
                   "of this sweep (e.g. from a larger study); used only with --extrapolate")
    p.add_argument("--report", action="store_true",
                   help="also write DIR/report.md and DIR/report.html (as `myopia report DIR`)")
    p.set_defaults(func=run)


def design_of(args) -> str:
    """The sweep's design: ``isoflop`` (the only one since 0.2.0); one line for a retired one or a bad pairing."""
    iso = _isoflop_presets()
    if args.design == "ladder" or (args.preset is not None and args.preset in PRESETS):
        raise MyopiaError(f"the fixed-token ladder design of `myopia sweep` was retired in myopia {RETIRED_IN} "
                          f"(see docs/scaling.md); IsoFLOP presets: {', '.join(iso) or 'none found'}")
    if args.extrapolate and args.asymptote is None:
        raise MyopiaError("--extrapolate needs --asymptote E: the frontier's few budgets do not identify the "
                          "irreducible loss, so extrapolating beyond the measured compute needs it constrained "
                          "independently")
    if args.asymptote is not None and not args.extrapolate:
        raise MyopiaError("--asymptote is used only with --extrapolate")
    return "isoflop"


def _grid(text: str | None, kind, flag: str):
    from ..sweep_grid import parse_list

    return [] if text.strip() == "none" else parse_list(text, kind, flag)


def isoflop_settings_from_args(args):
    """IsoFlopSettings from an IsoFLOP preset (recipes/isoflop.toml) and the command line's overrides."""
    from ..experiments.isoflop import IsoFlopSettings
    from ..scaling_presets import isoflop_preset_settings
    from ..sweep_grid import parse_list

    if getattr(args, "threads", None) is not None:
        import torch

        if args.threads < 1:
            raise MyopiaError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for flag in ("sizes", "widths", "tokens", "lr_ref_width"):
        if getattr(args, flag, None) is not None:
            raise MyopiaError(f"--{flag.replace('_', '-')} belongs to the size ladder of `myopia horizon-sweep` "
                              "(the ladder design of `myopia sweep` was retired in 0.2.0; isoflop picks shapes per "
                              "budget and the recipe from its pilot)")
    kw = isoflop_preset_settings(args.preset or "cpu-isoflop")
    if args.ratio_range:
        rr = parse_list(args.ratio_range, float, "--ratio-range")
        if len(rr) != 2:
            raise MyopiaError(f"--ratio-range {args.ratio_range!r} must be LO,HI (e.g. 15,1000)")
        kw["ratio_range"] = tuple(rr)
    if args.budgets:
        kw["budgets"] = parse_list(args.budgets, float, "--budgets")
        kw["pilot_budget"] = None  # the pilot runs at the middle one of the given budgets
    if args.strict_budgets:
        kw["strict_budgets"] = _grid(args.strict_budgets, float, "--strict-budgets")
    if args.lr_grid:
        kw["pilot_lr_grid"] = _grid(args.lr_grid, float, "--lr-grid")
    if args.batch_grid:
        kw["pilot_batch_grid"] = _grid(args.batch_grid, int, "--batch-grid")
    if args.seeds:
        kw["seeds"] = parse_list(args.seeds, int, "--seeds")
    if args.gradients:
        kw["gradients"] = parse_list(args.gradients, str, "--gradients")
    for flag in ("n_sizes", "aspect", "head_dim", "seq_len", "batch_size", "eval_tokens", "precision", "lr",
                 "schedule", "decay_frac", "edge_shapes"):
        if getattr(args, flag, None) is not None:
            kw[flag] = getattr(args, flag)
    kw.update(micro_batch_size=args.micro_batch_size, ckpt_every=args.ckpt_every, device=args.device)
    return IsoFlopSettings(**kw)


def _dry_run(s, corpus, out, shard) -> int:
    """Print the pilot and the plan (the planned runs at the pilot's choice when it has finished, else at the
    first grid values) and the FLOPs they cost."""
    from pathlib import Path

    from ..experiments.isoflop import pilot_choice, pilot_runs, plan_runs, shard_runs
    from ..sweep_grid import sweep_run_status

    train_tokens = len(corpus.split_tokens("train"))
    pilot = pilot_runs(s, corpus.vocab_size, train_tokens)
    choice = pilot_choice(pilot, Path(out))[0] if pilot else None
    choice = choice or {"batch_size": (s.pilot_batch_grid or [s.batch_size])[0],
                        "lr": (s.pilot_lr_grid or [s.lr])[0]}
    runs = pilot + shard_runs(plan_runs(s, corpus.vocab_size, train_tokens, **choice, out=Path(out)), shard)
    for r in runs:
        src = f" <- {r.trunk} @ {r.branch_step}" if r.trunk else ""
        print(f"{r.name:44s} {r.stage:6s} N={r.params_non_embedding:>9,d} tokens={r.tokens:>11,d} "
              f"({r.tokens / r.params_non_embedding:6.1f}/param, {r.epochs:.2f} epochs) steps={r.train_cfg.steps:>6d} "
              f"warmup={r.train_cfg.warmup:>4d} FLOPs={r.trained_flops:.3e} [{sweep_run_status(Path(out) / r.name)}]{src}")
    print(f"{len(runs)} runs ({len(pilot)} pilot, {sum(r.stage == 'trunk' for r in runs)} trunks, "
          f"{sum(r.stage == 'branch' for r in runs)} cooldown branches at batch {choice['batch_size']}), "
          f"{sum(r.trained_flops for r in runs):.3e} training FLOPs in all")
    return 0


def run_isoflop_cli(args) -> int:
    from ..data import load_corpus
    from ..experiments.isoflop import parse_shard, run_isoflop

    s = isoflop_settings_from_args(args)
    shard = parse_shard(args.shard)
    corpus = load_corpus(args.data, args.tokenizer, **data_options(args))
    if args.dry_run:
        return _dry_run(s, corpus, args.out, shard)
    summary = run_isoflop(args.data, args.out, s, corpus=corpus, max_runs=args.max_runs, shard=shard,
                          n_boot=max(args.bootstrap, 0), extrapolate_E=args.asymptote if args.extrapolate else None)
    _print_frontier(summary)
    if args.report:
        from .report import write_and_print

        write_and_print(args.out)
    return 0


def _print_frontier(s: dict) -> None:
    from ..report.scaling import fmt, fmt_ci

    fr = s.get("frontier") or {}
    for arm, g in (fr.get("gaps") or {}).items():
        for b in g["budgets"]:
            print(f"{arm:>14} C={b['flops']:.2e}  gap {fmt(b['gap'], '{:+.4f}')}{fmt_ci(b['gap_ci95'], '{:+.4f}')}")
        if g.get("verdict_sentence"):
            print(g["verdict_sentence"])
    state = "complete" if s["complete"] else f"{len(s['pending'])} runs pending"
    print(f"sweep {state}; {s['total_train_wall_s'] / 60:.1f} min of training; {s['data_repeat']['note']}")


def run(args) -> int:
    """Run ``myopia sweep`` (the IsoFLOP design) with the parsed arguments; returns the exit status."""
    from ..train import init_distributed

    design_of(args)
    init_distributed()
    return run_isoflop_cli(args)
