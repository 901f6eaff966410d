"""myopia sweep-report: Markdown report with figures for a sweep or horizon-sweep folder."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("sweep-report", help="write DIR/report.md (tables and figures) for a sweep folder",
                       description="Render DIR/sweep.json and/or DIR/horizon.json as Markdown with figures "
                       "(DIR/figures/*.png) into DIR/report.md.")
    p.add_argument("dir", help="folder written by `myopia sweep` or `myopia horizon-sweep`")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..scaling_report import write_report

    print(write_report(args.dir))
    return 0
