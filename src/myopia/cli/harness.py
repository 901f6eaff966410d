"""myopia harness: a pair's arms through lm-evaluation-harness, per-document paired gaps (optional extra)."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``myopia harness`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("harness", help="run every arm through lm-evaluation-harness; paired gaps per task",
                       description="Evaluate every arm and seed (our runs exported to transformers, fine-tune arms "
                       "from their hf/ folders) with lm_eval.simple_evaluate and sample logging; pair per-sample "
                       "metrics across arms by document id; write OUT/harness.json. Needs the eval extra: "
                       'pip install -e ".[eval]".')
    p.add_argument("dir", nargs="?", default=None, help="pair directory (made by myopia pair)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--include-path", default=None, help="folder of extra lm-eval task YAMLs")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents of each task")
    p.add_argument("--runs", nargs="+", default=None, metavar="[NAME=]PATH[,PATH...]",
                   help="instead of a pair: run folders or Hugging Face model directories, one arm each")
    p.add_argument("--baseline", default=None, help="the --runs arm the others are compared with (default: first)")
    p.add_argument("--out", default=None, help="folder for harness.json (default: the pair directory)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per evaluation batch (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia harness``: run every arm and seed through lm-evaluation-harness, print the paired gaps, write
    OUT/harness.json; returns the exit status."""
    from pathlib import Path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..analysis.stats import Estimate
    from ..experiments.harness import HARNESS_JSON, run_harness

    r = run_harness(args.dir, tasks=args.tasks, runs=args.runs, baseline=args.baseline, out=args.out,
                    include_path=args.include_path, limit=args.limit, batch_size=args.batch_size,
                    device=args.device, n_boot=args.bootstrap, progress=not args.no_progress)
    print(f"lm-evaluation-harness {r['harness_version']}; baseline {r['baseline']}")
    for task, rec in r["tasks"].items():
        for metric, m in rec["metrics"].items():
            better = {True: "higher is better", False: "lower is better"}.get(m.get("higher_is_better"),
                                                                             "direction unknown")
            print(f"{task:<24} {metric:<16} n={m['n']:<6} {r['baseline']} {m['baseline']['mean']:.4f} ({better})")
            for arm, g in m["gap"].items():
                print(f"{'':<24} {'':<16} {'':<8} {arm:<16} {m['value'][arm]['mean']:.4f}, gap "
                      f"{Estimate.from_dict(g).format(4)} p_holm "
                      f"{g['p_holm'] if g['p_holm'] is None else format(g['p_holm'], '.3g')}")
    print(f"-> {Path(args.out or args.dir) / HARNESS_JSON}")
    return 0
