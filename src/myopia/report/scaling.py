"""Report sections for a scaling sweep (``sweep.json``: results table, L(C) fits, k(C), L(N, D), three figures)
and a horizon/beta sweep (``horizon.json``: loss against the gradient horizon and against beta, one figure).

Numbers come from the result files written by :mod:`myopia.experiments.sweep` and
:mod:`myopia.experiments.horizon_sweep`; figures from :mod:`myopia.plots.scaling`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..arms import MYOPIC_ARMS
from ..io import read_json
from ..plots.scaling import plot_gap_vs_params, plot_horizon, plot_loss_vs_compute, plot_multiplier
from . import register_section
from .blocks import Figure, Heading, Paragraph, Table

# The result files of myopia.experiments.sweep / .horizon_sweep (spelled here so that a report of a pair folder
# does not import the training stack; tests check they match).
SWEEP_FILE = "sweep.json"
HORIZON_FILE = "horizon.json"
K_PICKS = (("smallest measured", 0, 1), ("largest measured", 1, 1), ("10x beyond", 1, 10), ("100x beyond", 1, 100))


def fmt(x, spec: str = "{:.3f}") -> str:
    """A number from a result file: None / NaN -> "–", ±inf -> "∞" / "-∞" (JSON strings included)."""
    if x is None:
        return "–"
    x = float(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return spec.format(x)


def fmt_ci(ci, spec: str = "{:.3f}") -> str:
    """" [lo, hi]" or "" when there is no interval."""
    return "" if not ci else f" [{fmt(ci[0], spec)}, {fmt(ci[1], spec)}]"


def si(x: float) -> str:
    """3 significant digits with an SI prefix: 1.23M, 45.6G."""
    for unit, div in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def provenance_line(prov: dict) -> Paragraph:
    git = prov.get("git") or {}
    return Paragraph(f"Provenance: myopia {prov.get('versions', {}).get('myopia')}, git "
                     f"{str(git.get('commit'))[:10]}{' (dirty)' if git.get('dirty') else ''}, "
                     f"{prov.get('machine', {}).get('cpu_count')} CPUs, {prov.get('created')}.")


# ------------------------------------------------------------------------------------------------------------
# Scaling sweep
# ------------------------------------------------------------------------------------------------------------


@register_section("scaling", order=40, applies=lambda d: (d / SWEEP_FILE).is_file())
def scaling_section(d: Path) -> list:
    s = read_json(d / SWEEP_FILE)
    st = s["settings"]
    tok = (s.get("corpus") or {}).get("tokenizer", {}).get("kind", "?")
    blocks = [Heading("Scaling: the cost of myopia"), Paragraph(
        f"Data `{s.get('data')}` ({tok} tokens); context {st['seq_len']}, batch {st['batch_size']}, "
        f"lr {st['lr']:g}{' (scaled by width)' if st.get('lr_ref_width') else ''}, seeds {st['seeds']}, "
        f"budgets {', '.join(st['tokens'])}. Loss: nats/token on held-out validation windows. "
        f"Total training wall time {s['total_train_wall_s'] / 60:.1f} min.")]
    if not s["complete"]:
        pending = s["pending"]
        blocks.append(Paragraph(f"**Incomplete sweep**: {len(pending)} runs pending ({', '.join(pending[:5])}"
                                f"{', …' if len(pending) > 5 else ''})."))
    blocks += [results_table(s), Paragraph(
        "Gap intervals: paired bootstrap over held-out documents (evaluation noise; the seed spread is reported in "
        "sweep.json when there are several seeds). k = C*/C, C* the compute at which the vanilla curve of the same "
        "token budget reaches the myopic loss; k < 1: myopia wastes compute; intervals: residual bootstrap of the "
        "vanilla fit."), fit_table(s)]
    k_table = multiplier_table(s)
    if k_table is not None:
        blocks.append(k_table)
    nd_table = chinchilla_table(s)
    if nd_table is not None:
        blocks.append(nd_table)
    blocks += [
        Figure("scaling_loss_vs_compute", plot_loss_vs_compute(s),
               "Held-out loss vs training compute, every arm, with its fitted L(C) and 95% bootstrap band."),
        Figure("scaling_gap_vs_params", plot_gap_vs_params(s),
               "Myopia gap (loss - vanilla loss) vs non-embedding parameters, myopic and myopic-hidden, 95% CI."),
        Figure("scaling_compute_multiplier", plot_multiplier(s),
               "Compute multiplier k (the vanilla compute that reaches the myopic loss, over the compute spent): "
               "measured points (95% CI) and the fitted k(C) with its band; grey: extrapolation beyond the "
               "measured compute."),
        provenance_line(s.get("provenance", {})),
    ]
    return blocks


def results_table(s: dict) -> Table:
    """One row per size x budget: parameters, tokens, FLOPs, the three losses, gap and k of both myopic arms."""
    header = ["size", "N non-emb", "N total", "tokens", "FLOPs", "vanilla", "myopic", "myopic-hidden"]
    header += [f"gap {a} [95% CI]" for a in MYOPIC_ARMS] + [f"k {a} [95% CI]" for a in MYOPIC_ARMS]
    rows = []
    for e in s["table"]:
        loss = e["loss"]
        row = [e["size"], si(e["params_non_embedding"]), si(e["params_total"]), si(e["tokens"]), si(e["flops"]),
               fmt(loss.get("vanilla")), fmt(loss.get("myopic")), fmt(loss.get("myopic-hidden"))]
        row += [fmt(e["gap"][a], "{:+.3f}") + fmt_ci(e["gap_ci"][a], "{:+.3f}") for a in MYOPIC_ARMS]
        row += [fmt(e["k"][a], "{:.2f}") + fmt_ci(e["k_ci"][a], "{:.2f}") for a in MYOPIC_ARMS]
        rows.append(row)
    return Table(header, rows)


def fit_table(s: dict) -> Table:
    rows = []
    for budget, by_arm in s["fits"].items():
        for arm, fd in by_arm.items():
            if fd is None:
                rows.append([budget, arm, "no fit (fewer than 3 sizes)", "", "", ""])
                continue
            iv = fd.get("intervals", {})
            rows.append([budget, arm, fmt(fd["E"]) + fmt_ci(iv.get("E")), f"{fd['A']:.3g}",
                         fmt(fd["alpha"]) + fmt_ci(iv.get("alpha")), str(fd["n_points"])])
    return Table(["budget", "arm", "E [95% CI]", "A", "alpha [95% CI]", "points"], rows,
                 caption="L(C) = E + A·C^(−α) per token budget (over the sizes trained on that many tokens):")


def multiplier_table(s: dict) -> Table | None:
    """k(C) of the fitted curves at the smallest and largest measured compute and 10x / 100x beyond it."""
    rows = []
    for budget, by_arm in (s.get("k_curve") or {}).items():
        for arm in MYOPIC_ARMS:
            curve = by_arm.get(arm)
            if not curve:
                continue
            c = curve["compute"]
            row = [budget, arm]
            for _, end, factor in K_PICKS:
                target = factor * curve["measured_range"][end]
                i = min(range(len(c)), key=lambda j: abs(math.log(c[j]) - math.log(target)))
                row.append(f"{fmt(curve['k'][i], '{:.2f}')} [{fmt(curve['lo'][i], '{:.2f}')}, "
                           f"{fmt(curve['hi'][i], '{:.2f}')}] at {si(c[i])} FLOPs")
            rows.append(row)
    if not rows:
        return None
    return Table(["budget", "arm"] + [f"k(C) {label}" for label, _, _ in K_PICKS], rows,
                 caption="Fitted k(C) = C*_vanilla(L_arm(C)) / C from the two fitted curves of a budget "
                         "(paired bootstrap band):")


def chinchilla_table(s: dict) -> Table | None:
    fits = {a: v for a, v in (s.get("chinchilla") or {}).items() if v}
    if not fits:
        return None
    rows = []
    for arm, fd in fits.items():
        if "error" in fd:
            rows.append([arm, fd["error"], "", "", "", ""])
            continue
        iv = fd.get("intervals", {})
        rows.append([arm, fmt(fd["E"]) + fmt_ci(iv.get("E")), f"{fd['A']:.3g}", fmt(fd["a"]) + fmt_ci(iv.get("a")),
                     f"{fd['B']:.3g}", fmt(fd["b"]) + fmt_ci(iv.get("b"))])
    return Table(["arm", "E", "A", "a", "B", "b"], rows,
                 caption="L(N, D) = E + A/N^a + B/D^b fits (N non-embedding parameters, D tokens):")


# ------------------------------------------------------------------------------------------------------------
# Horizon and beta sweep
# ------------------------------------------------------------------------------------------------------------


@register_section("horizon", order=50, applies=lambda d: (d / HORIZON_FILE).is_file())
def horizon_section(d: Path) -> list:
    s = read_json(d / HORIZON_FILE)
    blocks = [Heading("How far ahead are activations shaped for? (horizon and beta sweep)"), Paragraph(
        f"Size {s['size']} ({si(s['params_non_embedding'])} non-embedding parameters), {si(s['tokens'])} tokens "
        f"({s['steps']} steps), context {s['settings']['seq_len']}, data `{s.get('data')}`. Vanilla loss "
        f"{fmt(s['vanilla']['loss'])} nats/token. Gap = loss − vanilla loss [95% interval; "
        f"{_horizon_noise(s)}].")]
    if not s["complete"]:
        blocks.append(Paragraph(f"**Incomplete**: {len(s['pending'])} runs pending."))
    blocks.append(_by_setting_table(s["horizon"], "horizon", "horizon h", str))
    blocks.append(_by_setting_table(s["beta"], "beta", "beta", lambda b: f"{b:g}"))
    blocks.append(Figure("horizon_sweep", plot_horizon(s),
                         "Held-out loss vs the gradient horizon h (left) and vs beta (right), both myopic "
                         "variants; dashed: vanilla."))
    if s.get("provenance"):
        blocks.append(provenance_line(s["provenance"]))
    return blocks


def _horizon_noise(s: dict) -> str:
    """What the horizon sweep's intervals include (one seed: training noise not measured), and the null."""
    n = s.get("n_seeds", s.get("vanilla", {}).get("seeds", 1))
    if n <= 1:
        return "1 seed, training noise not measured: validation documents resampled only"
    null = s.get("null_gap")
    text = f"seed-inclusive over {n} seeds and validation documents"
    if null:
        text += f"; null (vanilla vs vanilla across seeds): sd {null['sd']:.4f} nats/token"
    return text


def _by_setting_table(points: dict, key: str, label: str, show) -> Table:
    """One row per horizon (or beta), loss and gap of myopic and myopic-hidden side by side."""
    by_value = {a: {p[key]: p for p in points.get(a, [])} for a in MYOPIC_ARMS}
    header = [label]
    for a in MYOPIC_ARMS:
        header += [f"{a} loss", f"{a} gap"]
    rows = []
    for value in sorted(set().union(*[set(v) for v in by_value.values()])):
        row = [show(value)]
        for a in MYOPIC_ARMS:
            p = by_value[a].get(value, {})
            row += [fmt(p.get("loss")), fmt(p.get("gap"), "{:+.3f}") + fmt_ci(p.get("gap_ci"), "{:+.3f}")]
        rows.append(row)
    return Table(header, rows)
