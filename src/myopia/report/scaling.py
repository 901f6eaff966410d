"""Report sections for an IsoFLOP sweep (``sweep.json``: the recipe, verdicts, frontier gaps and slopes, the joint
fit, the pilot, three figures) and a horizon/beta sweep (``horizon.json``: loss against the gradient horizon and
against beta, one figure).

Numbers come from the result files written by :mod:`myopia.experiments.isoflop` and
:mod:`myopia.experiments.horizon_sweep`; figures from :mod:`myopia.plots.frontier` and :mod:`myopia.plots.scaling`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..arms import MYOPIC_ARMS
from ..io import read_json
from ..plots.scaling import plot_horizon
from ..rundir import HORIZON_JSON as HORIZON_FILE
from ..rundir import SWEEP_JSON as SWEEP_FILE
from . import register_section
from .blocks import Figure, Heading, Paragraph, Table



def _incomplete(pending: list[str], shown: int, tail: str = "") -> Paragraph:
    """The 'Incomplete sweep' line: how many runs are pending, the first ``shown`` of them."""
    more = ", …" if len(pending) > shown else ""
    return Paragraph(f"**Incomplete sweep**: {len(pending)} runs pending ({', '.join(pending[:shown])}{more}){tail}.")


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
    st = s.get("settings") or {}
    if s.get("design") == "isoflop" and st.get("schedule") == "wsd":
        return frontier_section(s)
    return [Heading("Scaling sweep"), Paragraph(
        f"`{d}` holds a sweep of a design retired in myopia 0.2.0 (the fixed-token ladder, or the IsoFLOP design "
        "with an lr grid per cell and a cosine schedule); this version does not report it. Rerun the sweep with "
        "`myopia sweep` (docs/scaling.md) or use myopia < 0.2.0 to read it.")]


@register_section("horizon", order=50, applies=lambda d: (d / HORIZON_FILE).is_file())
def horizon_section(d: Path) -> list:
    s = read_json(d / HORIZON_FILE)
    blocks = [Heading("How far ahead are activations shaped for? (horizon and beta sweep)"), Paragraph(
        f"Size {s['size']} ({si(s['params_non_embedding'])} non-embedding parameters), {si(s['tokens'])} tokens "
        f"({s['steps']} steps), context {s['settings']['seq_len']}, data `{s.get('data')}`. Vanilla loss "
        f"{fmt(s['vanilla']['loss'])} nats/token ({_horizon_split(s)}). {_horizon_lr(s)}Gap = loss − vanilla "
        f"loss [95% interval; {_horizon_noise(s)}].")]
    if not s["complete"]:
        blocks.append(Paragraph(f"**Incomplete**: {len(s['pending'])} runs pending."))
    lr_cols = bool((s.get("lr") or {}).get("grid"))
    blocks.append(_by_setting_table(s["horizon"], "horizon", "horizon h", str, lr_cols))
    blocks.append(_by_setting_table(s["beta"], "beta", "beta", lambda b: f"{b:g}", lr_cols))
    if s.get("holm_family_size"):
        blocks.append(Paragraph(_horizon_holm(s)))
    blocks.append(Figure("horizon_sweep", plot_horizon(s),
                         "Held-out loss vs the gradient horizon h (left) and vs beta (right), both myopic "
                         "variants; dashed: vanilla."))
    if s.get("provenance"):
        blocks.append(provenance_line(s["provenance"]))
    return blocks


def _horizon_split(s: dict) -> str:
    """The split the horizon sweep's losses are measured on (validation in sweeps written before the test split)."""
    return "test split" if s.get("split") == "test" else "validation split"


def _horizon_lr(s: dict) -> str:
    """One sentence on how each arm's learning rate was set (nothing for sweeps written before it was recorded)."""
    lr = s.get("lr")
    if not lr:
        return ""
    if not lr.get("grid"):
        lrs = sorted(set((lr.get("choice") or {}).values()))
        return f"One lr for every arm ({', '.join(f'{x:g}' for x in lrs)}), not tuned per arm. "
    van = (lr.get("choice") or {}).get("vanilla")
    text = (f"Lr per arm from the grid {', '.join(f'{x:g}' for x in lr['grid'])} on the validation split of seeds "
            f"{', '.join(map(str, lr['seeds']))} (never reported); vanilla {fmt(van, '{:g}')}.")
    if lr.get("diverged"):
        text += f" {len(lr['diverged'])} tuning run(s) diverged."
    return text + " "


def _horizon_holm(s: dict) -> str:
    """The points whose gap survives Holm across the sweep, by sign, and what a negative one means."""
    seen, by_reading = set(), {}
    for curve, key in ((s["horizon"], "horizon"), (s["beta"], "beta")):
        for arm in MYOPIC_ARMS:
            for p in curve.get(arm, []):
                label = f"{arm} {'h' if key == 'horizon' else 'beta'} = {p[key]:g}"
                ident = (arm, p.get("horizon", 0), p.get("beta", 0.0))
                if p.get("reading") and ident not in seen:
                    seen.add(ident)
                    by_reading.setdefault(p["reading"], []).append(f"{label} (p_Holm {p['p_holm']:.3g})")
    text = f"Holm across the sweep's {s['holm_family_size']} gaps: "
    parts = [f"{r}: {', '.join(by_reading[r])}" for r in ("worse than vanilla", "better than vanilla")
             if r in by_reading]
    text += "; ".join(parts) if parts else "no gap is distinguishable from 0"
    if "better than vanilla" in by_reading:
        text += (". A negative gap that survives says the stop-gradient changes optimisation itself (the myopic "
                 "model trains better at this lr and scale), by at least as much as the gap: a hidden-state gap of "
                 "that size cannot be told apart from it")
    return text + "."


def _horizon_noise(s: dict) -> str:
    """What the horizon sweep's intervals include (one seed: training noise not measured), and the null."""
    n = s.get("n_seeds", s.get("vanilla", {}).get("seeds", 1))
    docs = f"{_horizon_split(s).split()[0]} documents"
    if n <= 1:
        return f"1 seed, training noise not measured: {docs} resampled only"
    null = s.get("null_gap")
    text = f"seed-inclusive over {n} seeds and {docs}"
    if null:
        text += f"; null (vanilla vs vanilla across seeds): sd {null['sd']:.4f} nats/token"
    return text


def _by_setting_table(points: dict, key: str, label: str, show, lr_cols: bool = False) -> Table:
    """One row per horizon (or beta), loss and gap of myopic and myopic-hidden side by side (and each point's
    chosen lr when ``lr_cols``)."""
    by_value = {a: {p[key]: p for p in points.get(a, [])} for a in MYOPIC_ARMS}
    header = [label]
    for a in MYOPIC_ARMS:
        header += [f"{a} loss", f"{a} gap"] + ([f"{a} lr"] if lr_cols else [])
    rows = []
    for value in sorted(set().union(*[set(v) for v in by_value.values()])):
        row = [show(value)]
        for a in MYOPIC_ARMS:
            p = by_value[a].get(value, {})
            row += [fmt(p.get("loss")), fmt(p.get("gap"), "{:+.3f}") + fmt_ci(p.get("gap_ci"), "{:+.3f}")]
            row += [fmt(p.get("lr"), "{:g}")] if lr_cols else []
        rows.append(row)
    return Table(header, rows)


# ------------------------------------------------------------------------------------------------------------
# IsoFLOP sweep: the compute-optimal frontier
# ------------------------------------------------------------------------------------------------------------

CONSTANT_GAP_CAVEAT = (
    "Why the null matters: with L = E + A·C^−α, a gap that stays *constant* already makes k = C*/C fall as C grows "
    "(k → 0), because the vanilla curve flattens. A falling k is therefore not evidence that the gap grows; k "
    "falling faster than the constant-gap null (equivalently, a positive slope of Δ(C)) is.")


def _ci_or_dash(ci, spec="{:.3f}") -> str:
    return " [–]" if not ci else fmt_ci(ci, spec)


def frontier_section(s: dict) -> list:
    """The IsoFLOP report: design, verdicts, Δ(C) / N* / k table, slopes, lr selection, cross-check, figures."""
    from ..plots.frontier import plot_frontiers, plot_isoflop_profiles, plot_k_vs_null

    st = s["settings"]
    fr = s.get("frontier")
    tok = (s.get("corpus") or {}).get("tokenizer", {}).get("kind", "?")
    blocks = [Heading("Scaling on the compute-optimal frontier (IsoFLOP)"), Paragraph(
        f"Data `{s.get('data')}` ({tok} tokens); context {st['seq_len']}, batch {st['batch_size']}. Budgets "
        f"{', '.join(f'{b:.2g}' for b in st['budgets'])} FLOPs; {st['n_sizes']} sizes per budget at "
        f"~{st['ratio_range'][0]:g}–{st['ratio_range'][1]:g} tokens per non-embedding parameter; arms "
        f"{', '.join(st['gradients'])}"
        + (f" (+ strict myopic at {', '.join(f'{b:.2g}' for b in st['strict_budgets'])})" if st['strict_budgets']
           else "")
        + f". {_recipe_sentence(s)} Reported loss: nats/token on the test split (not used for any choice). "
        f"{s['data_repeat']['note'].capitalize()}. Training: {s.get('total_train_flops', 0):.3g} FLOPs, wall "
        f"time {s['total_train_wall_s'] / 60:.1f} min.")]
    if not s["complete"]:
        blocks.append(_incomplete(s["pending"], shown=4, tail="; the analysis covers the finished runs"))
    if not fr:
        blocks.append(Paragraph("No finished runs yet."))
        return blocks
    for arm, g in fr["gaps"].items():
        if g.get("verdict_sentence"):
            blocks.append(Paragraph(f"**Verdict ({arm}):** {g['verdict_sentence']}"))
    blocks.append(Paragraph(_edges_sentence(s)))
    blocks += [gap_table(fr), slope_table(fr), Paragraph(
        "L*: the minimum over the measured sizes of a parabola in log10 N fitted to the runs of a budget; N*: its "
        "argmin (an optimum at the edge of the measured sizes is marked *edge*: a bound, not an estimate). "
        f"Intervals: 95%, {_method(fr)}; both arms' replicates are paired, so gap intervals include both arms' "
        "noise. No interval (–) where a fit has fewer than 2 residual degrees of freedom or, for a parabola, "
        "fewer than 4 sizes. k = C*/C with C* on the measured vanilla frontier (piecewise log-linear): no "
        "extrapolation; – where C* would lie outside the measured compute. Null: the k a constant gap equal to "
        "the smallest budget's gap would give."), Paragraph(CONSTANT_GAP_CAVEAT), pilot_table(s)]
    jf = joint_fit_table(fr)
    if jf is not None:
        blocks += jf
    cc = frontier_chinchilla_table(fr)
    if cc is not None:
        blocks.append(cc)
    if fr.get("extrapolation"):
        blocks.append(Paragraph("Extrapolation requested (`--extrapolate`): "
                                + "; ".join(f"{a}: L* = {e['E']:g} + {e['A']:.3g}·C^−{e['alpha']:.3f} "
                                            f"({e['note']})" for a, e in fr["extrapolation"].items())))
    blocks += [
        Figure("isoflop_profiles", plot_isoflop_profiles(s),
               "IsoFLOP profiles of every arm: runs (dots, one per seed), the parabola in log N per budget, and "
               "the optimum (star; open where it lies at the edge of the measured sizes)."),
        Figure("isoflop_frontiers", plot_frontiers(s),
               "Left: the frontiers L*(C) with 95% intervals. Right: the frontier gap Δ(C) with 95% intervals "
               "and the fitted slope per decade."),
        Figure("isoflop_k_vs_null", plot_k_vs_null(s),
               "k(C) between the measured frontiers (95% band) and the constant-gap null (dashed)."),
        provenance_line(s.get("provenance", {})),
    ]
    return blocks


def _method(fr: dict) -> str:
    n = fr.get("n_units") or 0
    return (f"bootstrap over seeds and {n} held-out documents" if n
            else "residual bootstrap of the run-level parabolas (no per-document losses)")


def gap_table(fr: dict) -> Table:
    """One row per (budget, arm): the two frontier losses, Δ, N* of both and their ratio, k and its null."""
    van = {round(f["flops"], -6): f for f in fr["frontiers"][fr["baseline"]]}
    rows = []
    for arm, g in fr["gaps"].items():
        mine = fr["frontiers"][arm]
        k = g.get("k") or {}
        for j, b in enumerate(g["budgets"]):
            fv = min(van.values(), key=lambda f: abs(math.log(f["flops"] / b["flops"])))
            fa = min(mine, key=lambda f: abs(math.log(f["flops"] / b["flops"])))

            def n_star(f):
                return si(f["n_opt"]) + ("" if f.get("interior") else " (edge)")

            kk = k.get("k", [None] * (j + 1))[j] if "k" in k else None
            kci = (k.get("k_ci95") or [None] * (j + 1))[j] if "k" in k else None
            kn = k.get("k_null", [None] * (j + 1))[j] if "k" in k else None
            knci = (k.get("k_null_ci95") or [None] * (j + 1))[j] if "k" in k else None
            rows.append([si(b["flops"]), arm, fmt(fv["loss_opt"]) + _ci_or_dash(fv["loss_opt_ci95"]),
                         fmt(fa["loss_opt"]) + _ci_or_dash(fa["loss_opt_ci95"]),
                         fmt(b["gap"], "{:+.4f}") + _ci_or_dash(b["gap_ci95"], "{:+.4f}"),
                         n_star(fv), n_star(fa),
                         fmt(b["n_opt_ratio"], "{:.2f}") + _ci_or_dash(b["n_opt_ratio_ci95"], "{:.2f}"),
                         fmt(kk, "{:.2f}") + _ci_or_dash(kci, "{:.2f}"),
                         fmt(kn, "{:.2f}") + _ci_or_dash(knci, "{:.2f}")])
    return Table(["budget (FLOPs)", "arm", "L* vanilla [95% CI]", "L* arm [95% CI]", "Δ(C) [95% CI]", "N* vanilla",
                  "N* arm", "N* arm / vanilla [95% CI]", "k [95% CI]", "k constant-gap null [95% CI]"], rows,
                 caption="The frontier gap per budget (nats/token):")


def slope_table(fr: dict) -> Table:
    rows = []
    for arm, g in fr["gaps"].items():
        ci = g.get("slope_ci95")
        rows.append([arm, str(g["n_budgets"]), fmt(g.get("slope_per_decade"), "{:+.4f}") + _ci_or_dash(ci, "{:+.4f}"),
                     g["verdict"], g.get("slope_note") or ("wider of bootstrap and t-interval" if ci else "")])
    return Table(["arm", "budgets", "slope of Δ per decade of C [95% CI]", "verdict", "note"], rows,
                 caption="Growth of the frontier gap (slope of Δ against log10 C, within the measured range):")


def _edges_sentence(s: dict) -> str:
    """How often the design's edges bound the answer: optima at the edge of the measured sizes (per arm and
    budget) and learning rates at the edge of the grid (all cells, and the best measured size of each arm)."""
    fr = s.get("frontier") or {}
    fronts = [(arm, f) for arm, fs in (fr.get("frontiers") or {}).items() for f in fs if f.get("n_opt") is not None]
    edge = [(arm, f["flops"]) for arm, f in fronts if not f.get("interior")]
    text = (f"Edges of the design: the optimum N* lies at the edge of the measured sizes in {len(edge)} of "
            f"{len(fronts)} (arm, budget) profiles"
            + (f" ({', '.join(f'{a} {c:.2g}' for a, c in edge)}: there L* is a bound)" if edge else
               " (every optimum bracketed)") + ".")
    choice = (s.get("pilot") or {}).get("choice")
    grid = s["settings"].get("pilot_lr_grid") or []
    if choice and grid and choice["lr"] in (min(grid), max(grid)):
        text += f" The pilot's lr {choice['lr']:g} lies at the edge of its grid."
    if s.get("diverged"):
        text += (f" {len(s['diverged'])} run(s) diverged (non-finite loss; a diverged grid lr loses the choice): "
                 + ", ".join(s["diverged"][:6]) + ("…" if len(s["diverged"]) > 6 else "") + ".")
    if s.get("document_mask") is False:
        text += (" Runs trained without document masks (the folder's first runs predate --document-mask; "
                 "every run of the sweep follows them).")
    return text


def _recipe_sentence(s: dict) -> str:
    st = s["settings"]
    pilot = s.get("pilot") or {}
    choice = pilot.get("choice")
    chosen = (f"batch {choice['batch_size']} sequences and base lr {choice['lr']:g}" if choice
              else "batch and base lr not yet chosen")
    return (f"Recipe: warmup-stable-decay ({st['decay_frac']:.0%} {st['decay_shape']} cooldown to "
            f"{st['min_lr_ratio']:g}×, warmup max({st['warmup_frac']:.0%} of a shape's shortest run, "
            f"{st['warmup_min']} steps)), AdamW β2 {st['adam_beta2']:g}, "
            + (f"hidden-matrix lr × {st['mup_base_width']}/width; " if st.get("mup_base_width") else "one lr for every "
               "parameter; ")
            + f"one run per (shape, arm, seed) to its largest budget, cooldowns branched at the smaller ones; "
            f"{chosen} from the pilot on seeds {pilot.get('seeds')} (never reported; rule: {pilot.get('rule')}); "
            f"seeds {st['seeds']} at every cell." + _edge_sentence(s))


def _edge_sentence(s: dict) -> str:
    """What the edge rule added after the first pass (sweep.json ``edge_shapes``), or ""."""
    e = s.get("edge_shapes") or {}
    if not e.get("enabled"):
        return ""
    if e.get("added") is None:
        return " Shapes beyond edge optima: pending (decided after the first pass)."
    got = [f"{a['size']} at {a['budget']:.2g} ({a['side']} edge of {', '.join(a['triggered_by'])})"
           for a in e["added"] if a["size"]]
    none = [f"{a['budget']:.2g} ({a['side']})" for a in e["added"] if not a["size"]]
    return (" After the first pass, by the edge rule (validation losses; every arm of the budget): "
            + ("added " + "; ".join(got) if got else "no shape added")
            + (f"; no candidate shape beyond the edge at {', '.join(none)}" if none else "") + ".")


def pilot_table(s: dict) -> Table:
    pilot = s.get("pilot") or {}
    rows = [[k, "diverged" if v is None else f"{v:.4f}"]
            for k, v in (pilot.get("val_loss") or {}).items()]
    return Table(["batch, lr", "mean validation loss"], rows,
                 caption="Pilot (unreported seeds, validation split):")


def joint_fit_table(fr: dict) -> list | None:
    """The joint fit per arm and its frontier gap next to the parabolas' (``frontier_fit``, ``frontier_fit_gap``)."""
    fits = fr.get("frontier_fit") or {}
    if not fits:
        return None
    rows = []
    for arm, f in fits.items():
        if "error" in f:
            rows.append([arm, f["error"], "", "", "", ""])
            continue
        ci = f.get("ci95") or {}
        rows.append([arm] + [f"{f[k]:.3g} {fmt_ci(ci.get(k), '{:.3g}')}" for k in ("E", "A", "alpha", "B", "beta")])
    out = [Table(["arm", "E", "A", "alpha", "B", "beta"], rows,
                 caption="Joint fit L(N, D) = E + A/N^alpha + B/D^beta per arm (Huber in log space, seed bootstrap "
                         "95% intervals): a second estimator of L*(C):")]
    gap_rows = [[arm, f"{r['flops']:.2g}", f"{r['gap']:+.4f} {fmt_ci(r['gap_ci95'], '{:+.4f}')}",
                 "–" if r.get("parabola_gap") is None else f"{r['parabola_gap']:+.4f}",
                 "yes" if r.get("disagree") else "no"]
                for arm, rs in (fr.get("frontier_fit_gap") or {}).items() for r in rs]
    if gap_rows:
        out.append(Table(["arm", "C (FLOPs)", "gap (joint fit)", "gap (parabolas)", "intervals disjoint"], gap_rows,
                         caption="Frontier gap by the two estimators (disjoint intervals: they disagree):"))
    return out


def frontier_chinchilla_table(fr: dict) -> Table | None:
    cc = fr.get("chinchilla_cross_check") or {}
    if not cc:
        return None
    rows = []
    for arm, fd in cc.items():
        if "error" in fd:
            rows.append([arm, fd["error"], "", "", "", ""])
            continue
        rows.append([arm, fmt(fd["E"]), f"{fd['A']:.3g}", fmt(fd["a"]), f"{fd['B']:.3g}", fmt(fd["b"])])
    return Table(["arm", "E", "A", "a", "B", "b"], rows,
                 caption="Cross-check only: L(N, D) = E + A/N^a + B/D^b over every run of an arm (its E is not "
                         "identified by a few budgets; the frontier numbers above do not use it):")
