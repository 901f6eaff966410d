"""myopia tasks: the myopia gap on a pre-registered task suite (induction, repeat-mention, long-range, ...)."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``myopia tasks`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("tasks", help="score a pair (or any runs) on the pre-registered task suite",
                       description="Score every arm and seed on the frozen suite (induction, repeat-mention, "
                       "long-range, closing, word-continuation, and user JSON Lines tasks); write OUT/tasks.json "
                       "with seed-inclusive intervals, the value of context and Holm-adjusted p-values.")
    p.add_argument("dir", nargs="?", default=None, help="pair directory (made by myopia pair)")
    p.add_argument("--runs", nargs="+", default=None, metavar="[NAME=]PATH[,PATH...]",
                   help="instead of a pair: run folders or Hugging Face model directories, one arm each "
                   "(comma-separated paths are seeds of one arm)")
    p.add_argument("--baseline", default=None, help="the --runs arm the others are compared with (default: first)")
    p.add_argument("--out", default=None, help="folder for tasks.json (default: the pair directory)")
    p.add_argument("--data", default=None, help="score another corpus (refused if it overlaps any arm's training "
                   "split)")
    p.add_argument("--drop-overlap", action="store_true",
                   help="leave out (and count) scored documents that overlap an arm's training text (exact or 13-gram "
                   "near-duplicates) instead of refusing")
    p.add_argument("--split", default="test", choices=["test", "val", "all"],
                   help="held-out documents (all: every document of a different --data corpus)")
    p.add_argument("--user", nargs="+", default=None, metavar="FILE.jsonl",
                   help="user tasks: JSON Lines of {\"context\": ..., \"continuation\": ...} (task user:<stem>)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the suite (default: all five)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def fmt_gap(g: dict | None) -> str:
    """'+0.0123 [+0.0100, +0.0150]' of a gap (with the one-seed note), ``-`` when there is none."""
    from ..analysis.stats import Estimate

    est = Estimate.from_dict(g or {})
    return est.format(4) if est.known else "-"


def print_table(result: dict) -> None:
    """Print one line per task and arm of a tasks.json: n, gap [95% CI], share of the value of context (only where
    that value's interval is above 0), p (Holm)."""
    def frac(x, value):  # a share of a value of context that may be 0 is no number at all
        ci = (value or {}).get("ci95") or [None, None]
        if x is None or ci[0] is None or ci[0] <= 0:
            return "-"
        return f"{100 * x:+.0f}%"

    def p(x):
        return "-" if x is None else f"{x:.3g}"

    rows = [(name, rec) for name, rec in result["tasks"].items()]
    rows += [(f"{name}.{v}", sub) for name, rec in result["tasks"].items() for v, sub in rec.get("variants", {}).items()]
    print(f"{'task':<30} {'n':>7}  {'arm':<16} {'gap (nats) [95% CI]':<36} {'of context':>10} {'p_holm':>8}")
    for name, rec in rows:
        for arm, g in rec["gap"].items():
            print(f"{name:<30} {rec['n']:>7}  {arm:<16} {fmt_gap(g):<36} "
                  f"{frac(g.get('fraction_of_context_value'), rec.get('value_of_context')):>10} "
                  f"{p(g.get('p_holm')):>8}")


def run(args) -> int:
    """Run ``myopia tasks``: score the pre-registered suite, print its table, write OUT/tasks.json; returns the exit
    status."""
    from pathlib import Path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..experiments.tasks import TASKS_JSON, run_tasks

    r = run_tasks(args.dir, runs=args.runs, baseline=args.baseline, out=args.out, data=args.data,
                  split=args.split, user=args.user, tasks=args.tasks, n_boot=args.bootstrap, device=args.device,
                  progress=not args.no_progress, drop_overlap=args.drop_overlap)
    print_table(r)
    comp = r.get("competence") or {}
    if comp:
        state = {True: "competent", False: "not competent", None: "competence not established"}[comp["competent"]]
        print(f"{state}: {comp['reason']}")
    print(f"-> {Path(args.out or args.dir) / TASKS_JSON}")
    return 0
