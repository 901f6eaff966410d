"""myopia report (alias: sweep-report): Markdown + self-contained HTML report of a results directory."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", aliases=["sweep-report"],
                       help="write DIR/report.md and DIR/report.html from the results in DIR",
                       description="Render every result DIR holds (pair.json: training curves; gap.json: the gap "
                       "by position, slice, token class and top contexts; bonus.json: the local myopia bonus; "
                       "sweep.json: the scaling sweep's table, fits, compute multipliers and figures; horizon.json: "
                       "the horizon/beta sweep) into report.md (figures in report_files/) and a self-contained "
                       "report.html. `myopia sweep-report` is the same command.")
    p.add_argument("dir", help="results directory, e.g. a pair, sweep or horizon-sweep directory")
    p.add_argument("--title", default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    write_and_print(args.dir, title=args.title)
    return 0


def write_and_print(directory, title: str | None = None) -> dict:
    """build_report, then one line naming what was written."""
    from ..report import build_report

    r = build_report(directory, title=title)
    print(f"{r['markdown']} and {r['html']} ({len(r['sections'])} sections: {', '.join(r['sections'])}; "
          f"{r['figures']} figures)")
    return r
