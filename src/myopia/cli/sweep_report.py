"""myopia sweep-report: an alias of ``myopia report`` (kept for scripts and docs that name it)."""

from __future__ import annotations

from . import report


def register(sub) -> None:
    p = sub.add_parser("sweep-report", help="alias of `myopia report` (for a sweep or horizon-sweep folder)",
                       description="Same as `myopia report DIR`: renders DIR/sweep.json and/or DIR/horizon.json "
                       "(and any other results DIR holds) into DIR/report.md (figures in DIR/report_files/) and "
                       "a self-contained DIR/report.html.")
    report.add_arguments(p)
