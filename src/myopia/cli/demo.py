"""``myopia demo``: pre-caching vs breadcrumbs on synthetic regression, every gradient setting, in minutes."""

from __future__ import annotations

from ..model import GRADIENTS


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main demonstration: synthetic pre-caching task and control, vanilla vs myopic (< 5 min on CPU)",
        description="Train vanilla, myopic-hidden and myopic (strict) regressors on the pre-caching "
        "task and on its breadcrumbs control, probe their hidden states, print a table and a verdict.",
    )
    p.add_argument("--out", default=None, help="write DIR/result.json, plots and the run folders here")
    p.add_argument("--full", action="store_true", help="the paper-scale configuration (for a GPU)")
    p.add_argument("--cpu-long", action="store_true",
                   help="the CPU configuration that met the target in the search (window 4, MLP ratio 1, 2000 steps; "
                        "about 9 minutes on a 2-core CPU)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per model (default: the configuration's)")
    p.add_argument("--eval-sequences", type=int, default=None, help="held-out sequences per evaluation")
    p.add_argument("--gradients", default=None,
                   help=f"comma-separated subset of {','.join(GRADIENTS)} (default: vanilla,myopic-hidden,myopic)")
    p.add_argument("--seed", type=int, default=None, help="first initialisation and data seed (default 0)")
    p.add_argument("--n-seeds", type=int, default=None,
                   help="seeds per arm: seed, seed+1, ... (default 3; intervals include training noise from 2)")
    p.add_argument("--p", type=float, default=None, help="Bernoulli p of the z_n = 1 branch (default 1)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, ...")
    p.add_argument("--workers", type=int, default=None,
                   help="processes training the tasks side by side (default: one per task on a multi-core CPU)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_gradients(text: str | None) -> list[str] | None:
    from ..errors import MyopiaError

    if text is None:
        return None
    names = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in names if g not in GRADIENTS]
    if bad or not names:
        raise MyopiaError(f"--gradients takes a comma-separated subset of {','.join(GRADIENTS)}; got {text!r}")
    return names


def run(args) -> int:
    import sys

    import torch

    from ..experiments.demo import demo_config, run_demo

    gradients = parse_gradients(args.gradients)
    preset = "cpu-long" if args.cpu_long else None
    cfg = demo_config(args.full, preset=preset, steps=args.steps,
                      eval_sequences=args.eval_sequences, seed=args.seed, n_seeds=args.n_seeds, p=args.p,
                      device=args.device, gradients=gradients,
                      eval_every=None if args.steps is None else max(1, args.steps // 6))
    if args.full and not torch.cuda.is_available() and cfg.device in ("auto", "cpu"):
        print("note: --full is the paper-scale configuration, sized for a GPU; on this CPU it takes hours",
              file=sys.stderr)
    result = run_demo(cfg, args.out, full=args.full, plots=not args.no_plots, progress=not args.no_progress,
                      workers=args.workers, preset=preset)
    print(f"myopia demo ({result['preset']} configuration): ω={cfg.omega:g}, window {cfg.window}, "
          f"{cfg.seq_len} positions, p={cfg.p:g}; GPT {cfg.n_layer} layers × width {cfg.d_model}; "
          f"{cfg.steps} steps × batch {cfg.batch_size} per model; seeds {list(cfg.seeds)}; "
          f"{cfg.eval_sequences} fresh held-out sequences")
    print()
    print(result["table"])
    print()
    if result.get("probe_summary"):
        print(result["probe_summary"])
    print("Verdict:", result["verdict"])
    print(f"({result['wall_time_s']:.0f} s{'; wrote ' + str(args.out) + '/result.json' if args.out else ''})")
    return 0
