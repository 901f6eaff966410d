"""myopia report: Markdown + self-contained HTML report of a results directory."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="write DIR/report.md and DIR/report.html from the results in DIR",
                       description="Render every result DIR holds (pair.json: training curves; gap.json: the gap "
                       "by position, slice, token class and top contexts; bonus.json: the local myopia bonus) "
                       "into report.md (figures in report_files/) and a self-contained report.html.")
    p.add_argument("dir", help="results directory, e.g. a pair directory")
    p.add_argument("--title", default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report import build_report

    r = build_report(args.dir, title=args.title)
    print(f"{r['markdown']} and {r['html']} ({len(r['sections'])} sections: {', '.join(r['sections'])}; "
          f"{r['figures']} figures)")
    return 0
