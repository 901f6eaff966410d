"""Report sections for the pre-registered task suite (tasks.json) and the lm-evaluation-harness route
(harness.json): numbers in, tables and a forest plot out (no statistics computed here)."""

from __future__ import annotations

from pathlib import Path

from ..analysis.stats import Estimate
from ..arms import PRIMARY_FIRST
from ..io import read_json
from . import register_section
from .blocks import Figure, Heading, Paragraph, Table

SIDE_BY_SIDE = PRIMARY_FIRST  # hidden-state myopia first: the primary measure of pre-caching


def _num(x, digits=4, signed=True):
    return "n/a" if x is None else (f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}")


def _ci(g: dict | None, digits=4) -> str:
    est = Estimate.from_dict(g or {})
    if not est.known:
        return "n/a"
    return est.format(digits, missing="n/a", seed_note=" (1 seed: training noise not measured)")


def _p(x) -> str:
    return "n/a" if x is None else (f"{x:.2g}" + (" *" if x < 0.05 else ""))


def _frac(g) -> str:
    f = (g or {}).get("fraction_of_context_value")
    return "n/a" if f is None else f"{100 * f:+.0f}%"


def _arms(result: dict) -> list[str]:
    others = [a for a in result["arms"] if a != result["baseline"]]
    return [a for a in SIDE_BY_SIDE if a in others] + [a for a in others if a not in SIDE_BY_SIDE]


@register_section("tasks", order=25, applies=lambda d: (d / "tasks.json").is_file())
def tasks_section(d: Path) -> list:
    """The pre-registered suite of DIR/tasks.json: per task the value of context and each arm's gap (loss and
    accuracy) with its interval, share of the value of context and Holm-adjusted p; a forest plot."""
    from ..plots.tasks import forest_plot, forest_rows

    r = read_json(d / "tasks.json")
    arms = _arms(r)
    h = r["held_out"]
    blocks = [Heading("Pre-registered task suite"), Paragraph(
        f"Suite version {r['suite']['version']} (definitions fixed in code and written into tasks.json). "
        f"Held-out {h['split']} split: {h['n_docs']} documents, {h['n_tokens']:,} tokens (context "
        f"{h['seq_len']}); {r['n_seeds']} seed(s). Gap = loss(arm) - loss({r['baseline']}) in nats/token (user "
        f"tasks: nats/item), 95% intervals include training noise (seeds) and evaluation noise (documents); "
        f"'of context' = gap / the task's value of context for {r['baseline']}; p-values Holm-adjusted over "
        f"all {r['holm_family_size']} p-values of the suite (* p_holm < 0.05).")]
    header = ["task", "n", f"value of context ({r['baseline']})", "null sd (vanilla seeds)"]
    for a in arms:
        header += [f"{a} gap [95% CI]", f"{a} of context", f"{a} p_holm", f"{a} accuracy gap"]
    rows = []

    def add(label, rec):
        null = rec.get("null")
        row = [label, f"{rec['n']:,}", _ci(rec.get("value_of_context"), 3),
               "n/a" if not null else _num(null.get("sd"), 4, signed=False)]
        for a in arms:
            g = rec["gap"].get(a)
            acc = (g or {}).get("accuracy")
            row += [_ci(g), _frac(g), _p((g or {}).get("p_holm")), _ci(acc, 3) if acc else "n/a"]
        rows.append(row)

    for name, rec in r["tasks"].items():
        add(name, rec)
        for v, sub in rec.get("variants", {}).items():
            add(f"{name} ({v.replace('_', ' ')})", sub)
    blocks.append(Table(header, rows))
    blocks.append(Figure("tasks_forest", forest_plot(forest_rows(r)),
                         "Gap per task and arm with seed-inclusive 95% intervals; vertical line: no gap; filled "
                         "markers: Holm-adjusted p < 0.05."))
    defs = [[name, rec.get("definition", "")] for name, rec in r["tasks"].items()]
    blocks.append(Table(["task", "definition"], defs))
    return blocks


@register_section("harness", order=26, applies=lambda d: (d / "harness.json").is_file())
def harness_section(d: Path) -> list:
    """The lm-evaluation-harness route of DIR/harness.json: per task and metric the baseline and each arm's paired
    gap with its interval and Holm-adjusted p."""
    r = read_json(d / "harness.json")
    arms = _arms(r)
    blocks = [Heading("lm-evaluation-harness tasks"), Paragraph(
        f"lm-evaluation-harness {r['harness_version']} (model type hf; our runs exported to GPT-NeoX). Per-sample "
        f"metrics paired across arms by document; gap = arm - {r['baseline']}, 95% intervals seed-inclusive "
        f"({r['n_seeds']} seed(s)); p-values Holm-adjusted over every gap in harness.json.")]
    header = ["task", "metric", "n", f"{r['baseline']}"] + [f"{a} gap [95% CI]" for a in arms] + \
             [f"{a} p_holm" for a in arms]
    rows = []
    for task, rec in r["tasks"].items():
        for metric, m in rec["metrics"].items():
            rows.append([task, metric, str(m["n"]), _num(m["baseline"]["mean"], 4, signed=False)]
                        + [_ci(m["gap"].get(a)) for a in arms] + [_p((m["gap"].get(a) or {}).get("p_holm"))
                                                                  for a in arms])
    blocks.append(Table(header, rows))
    return blocks
