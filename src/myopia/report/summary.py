"""The report's first screen: the answer, before any detail.

For a folder with ``gap.json`` it states, per myopic variant (hidden-state myopia first: the primary measure of
pre-caching), the gap with its seed-inclusive interval, what that interval supports (detected / no gap detected
with the smallest gap the design could detect / not testable at this scale), the null of the same seed count, the
competence of the models (vanilla against the count 4-gram, copying in context) and one sentence of verdict.
Numbers come from the result files; nothing is computed here.
"""

from __future__ import annotations

from pathlib import Path

from ..analysis.stats import Estimate
from ..io import read_json
from ..runfiles import GAP_JSON
from . import register_section
from .blocks import Heading, Paragraph, Table

ORDER = ("myopic-hidden", "myopic")  # the primary measure first, then strict myopia


def _interval(d: dict | None) -> str:
    return "n/a" if not d else Estimate.from_dict(d).format(3, signed=True, seed_note=None)


def _competence_line(g: dict) -> str:
    comp = g.get("competence") or {}
    base = g.get("baselines") or {}
    van = g["loss"]["vanilla"]["mean"]
    parts = [f"vanilla {van:.3f} nats/token"]
    parts += [f"{name} {b['loss']:.3f}" for name, b in base.items()]
    state = {True: "**Competent**", False: "**Not competent**", None: "**Competence not established**"}[
        comp.get("competent")] if comp else "**Competence not measured**"
    return f"{state}: {comp.get('reason', 'run myopia gap with this version')}. Losses on the scored tokens: " \
        + ", ".join(parts) + "."


def _verdict(g: dict, arms: list[str]) -> str:
    readings = g.get("reading") or {}
    if not arms:
        return "No myopic arm was trained."
    primary = arms[0]
    text = readings.get(primary) or "see the table"
    return (f"**Verdict** ({primary}, the primary measure of pre-caching; {g['n_seeds']} seed(s), "
            f"{g['n_tokens']:,} held-out tokens): {text}.")


@register_section("answer", order=0, applies=lambda d: (d / GAP_JSON).is_file())
def answer_section(d: Path) -> list:
    """The answer first: the gap per myopic variant with its interval, reading, power and null, the competence
    of the models, and a one-sentence verdict."""
    g = read_json(d / GAP_JSON)
    arms = [a for a in ORDER if (g.get("gap") or {}).get(a)] + \
        [a for a in g.get("gap", {}) if a not in ORDER and g["gap"][a]]
    null = g.get("null_same_seeds") or {}
    rows = []
    for arm in arms:
        power = (g.get("power") or {}).get(arm) or {}
        mdg = power.get("min_detectable_gap")
        rows.append([arm, _interval(g["gap"][arm]),
                     "n/a" if mdg is None else f"{mdg:.3f}",
                     "n/a" if not null.get("ci95") else f"±{null['ci95'][1]:.3f}",
                     (g.get("reading") or {}).get(arm, "")])
    return [Heading("The answer"), Paragraph(_verdict(g, arms)),
            Table(["arm", "gap = loss(arm) − loss(vanilla), nats/token [95% CI]", "smallest detectable gap (80%)",
                   f"null of {g['n_seeds']} seed(s) (95%)", "what the interval supports"], rows,
                  "Intervals include training noise (seeds) and held-out documents. Positive: the arm is worse."),
            Paragraph(_competence_line(g))]
