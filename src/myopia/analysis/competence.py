"""The competence gate: a null gap only says "no gap" about models that use their context.

A pair is **competent** when (1) vanilla beats the count Kneser-Ney 4-gram (:mod:`myopia.analysis.ngram`) on the
same held-out tokens with its seed-inclusive interval, i.e. the upper end of the interval of
loss(vanilla) − loss(4-gram) is below 0, and (2) vanilla shows a positive in-context value on the ``induction``
task (:mod:`myopia.analysis.tasks`: loss on a span's first occurrence minus its second), the lower end of that
interval above 0. A pair that fails either is *not competent*; one where a part was not measured is *not
established* (``competent`` is None). A null gap of a pair that is not competent reads
"not testable at this scale", never "no gap" (:func:`read_null`).
"""

from __future__ import annotations

import numpy as np

from ..errors import MyopiaError
from .stats import HierarchicalBootstrap, null_interval, power_entry

NOT_TESTABLE = "not testable at this scale"


def vanilla_vs_4gram(vanilla_losses, fourgram_losses, doc, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Summary (:meth:`Resampled.summary`) of loss(vanilla) − loss(4-gram), nats/token, seeds × documents.

    vanilla_losses (S, N) per-token losses, one row per seed; fourgram_losses (N,); doc (N,) document ids."""
    v = np.atleast_2d(np.asarray(vanilla_losses, dtype=np.float64))
    f = np.asarray(fourgram_losses, dtype=np.float64)
    if v.shape[1] != f.shape[0] or np.shape(doc) != f.shape:
        raise MyopiaError(f"vanilla losses {v.shape}, 4-gram losses {f.shape} and documents {np.shape(doc)} "
                          "must cover the same tokens")
    _, unit = np.unique(np.asarray(doc), return_inverse=True)
    boot = HierarchicalBootstrap(int(unit.max()) + 1, v.shape[0], n_boot, seed)
    return boot.means(v - f[None, :], unit).summary()


def _ci(summary: dict | None):
    ci = (summary or {}).get("ci95")
    return None if not ci or ci[0] is None or ci[1] is None else [float(ci[0]), float(ci[1])]


def competence(vs_4gram: dict | None, induction_value: dict | None) -> dict:
    """``competence`` of gap.json / tasks.json from the summary of loss(vanilla) − loss(4-gram)
    (:func:`vanilla_vs_4gram`) and vanilla's value of context on ``induction`` (tasks.json's
    ``tasks.induction.value_of_context``); either may be None (not measured).

    Returns {beats_4gram, induction_value_ci95, competent, vanilla_minus_4gram, reason}: beats_4gram and
    competent are None where not measured (competent is False as soon as a measured part fails)."""
    v_ci, i_ci = _ci(vs_4gram), _ci(induction_value)
    beats = None if v_ci is None else v_ci[1] < 0
    copies = None if i_ci is None else i_ci[0] > 0
    reasons = []
    if beats is None:
        reasons.append("vanilla against the 4-gram not measured")
    elif not beats:
        reasons.append(f"vanilla does not beat the count 4-gram (vanilla − 4-gram {v_ci[0]:+.3f} to {v_ci[1]:+.3f} "
                       "nats/token)")
    if copies is None:
        reasons.append("in-context value on induction not measured")
    elif not copies:
        reasons.append(f"no positive in-context value on induction ({i_ci[0]:+.3f} to {i_ci[1]:+.3f} nats/token)")
    if beats is False or copies is False:
        competent = False
    elif beats is None or copies is None:
        competent = None
    else:
        competent = True
    return {"beats_4gram": beats, "induction_value_ci95": i_ci, "competent": competent,
            "vanilla_minus_4gram": None if vs_4gram is None else {"mean": vs_4gram.get("mean"), "ci95": v_ci},
            "reason": "; ".join(reasons) if reasons else "vanilla beats the 4-gram and copies in context"}


def read_null(gap: dict, comp: dict | None, power: dict | None = None, digits: int = 3) -> str:
    """How a gap interval reads: "detected ..." when it excludes 0; for a null, "no gap detected" only on a
    competent pair (with the minimum detectable gap of ``power`` when given), else "not testable at this scale"."""
    ci = _ci(gap)
    if ci is None:
        return "not measured"
    if ci[0] > 0:
        return "detected: the arm is worse than vanilla"
    if ci[1] < 0:
        return "detected: the arm is better than vanilla"
    comp = comp or {}
    if comp.get("competent") is not True:  # the reason is stated once, in ``competence.reason``
        state = "the models are not competent" if comp.get("competent") is False else "competence not established"
        return f"{NOT_TESTABLE} ({state}; see competence)"
    text = "no gap detected"
    if power and power.get("min_detectable_gap") is not None:
        text += f"; the smallest gap detectable at 80% power is {power['min_detectable_gap']:.{digits}f} nats/token"
        frac = power.get("min_detectable_fraction_of_context_value")
        if frac is not None:
            text += f" ({100 * frac:.0f}% of the value of context)"
    return text


def assess_gaps(summary: dict, comp: dict) -> dict:
    """What a gap summary (:func:`myopia.analysis.gap.analyse_gap`) means given the pair's competence:
    ``power.<arm>`` (:func:`~myopia.analysis.stats.power_entry`: the minimum detectable gap at 80% power beside
    every interval), ``null_same_seeds`` (the vanilla-vs-vanilla null of a mean over as many seeds as the gap,
    :func:`~myopia.analysis.stats.null_interval`) and ``reading.<arm>`` (:func:`read_null`)."""
    context = (summary.get("context_value") or {}).get("mean")
    gaps = {arm: g for arm, g in summary.get("gap", {}).items() if g is not None}
    power = {arm: power_entry(g, context) for arm, g in gaps.items()}
    return {"power": power,
            "null_same_seeds": null_interval(summary.get("null_gap"), int(summary.get("n_seeds") or 0)),
            "reading": {arm: read_null(g, comp, power[arm]) for arm, g in gaps.items()}}
