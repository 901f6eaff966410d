"""Markdown sections (with figures) for a scaling sweep and a horizon sweep.

``render_scaling_section(run_dir)`` reads ``run_dir/sweep.json``, draws its figures into ``run_dir/figures/`` and
returns Markdown that links them relative to ``run_dir``; ``render_horizon_section`` does the same for
``horizon.json``. ``write_report(run_dir)`` writes ``run_dir/report.md`` with whichever sections apply (what
``myopia sweep-report`` does; ``myopia report`` can call the render functions directly).
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import MyopiaError
from .experiments.horizon_sweep import HORIZON_FILE, load_horizon
from .experiments.sweep import MYOPIC_ARMS, SWEEP_FILE, load_sweep
from .io import atomic_write_bytes
from .scaling_plots import plot_gap_vs_params, plot_horizon, plot_loss_vs_compute, plot_multiplier


def _f(x, fmt="{:.3f}") -> str:
    if x is None:
        return "–"
    x = float(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return fmt.format(x)


def _ci(ci, fmt="{:.3f}") -> str:
    return "" if not ci else f" [{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]"


def _si(x: float) -> str:
    for unit, div in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def render_scaling_section(run_dir, image_dir=None, heading_level: int = 2) -> str:
    """Markdown for the sweep in ``run_dir`` (table, fits, k, figures). Figures go to ``image_dir``
    (default ``run_dir/figures``) and are linked relative to ``run_dir``."""
    run_dir = Path(run_dir)
    s = load_sweep(run_dir)
    image_dir = Path(image_dir) if image_dir is not None else run_dir / "figures"
    h = "#" * heading_level
    figs = {
        "loss": plot_loss_vs_compute(s, image_dir / "scaling_loss_vs_compute.png"),
        "gap": plot_gap_vs_params(s, image_dir / "scaling_gap_vs_params.png"),
        "k": plot_multiplier(s, image_dir / "scaling_compute_multiplier.png"),
    }
    st = s["settings"]
    lines = [f"{h} Scaling: the cost of myopia", ""]
    corpus = s.get("corpus") or {}
    tok = corpus.get("tokenizer", {}).get("kind", "?")
    lines.append(
        f"Data `{s.get('data')}` ({tok} tokens); context {st['seq_len']}, batch {st['batch_size']}, "
        f"lr {st['lr']:g}{' (scaled by width)' if st.get('lr_ref_width') else ''}, seeds {st['seeds']}, "
        f"budgets {', '.join(st['tokens'])}. Loss: nats/token on held-out validation windows. "
        f"Total training wall time {s['total_train_wall_s'] / 60:.1f} min."
    )
    if not s["complete"]:
        lines += ["", f"**Incomplete sweep**: {len(s['pending'])} runs pending ({', '.join(s['pending'][:5])}"
                      f"{', …' if len(s['pending']) > 5 else ''})."]
    lines += ["", "| size | N non-emb | N total | tokens | FLOPs | vanilla | myopic | myopic-hidden | "
                  "gap myopic [95% CI] | gap myopic-hidden [95% CI] | k myopic [95% CI] | k myopic-hidden [95% CI] |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in s["table"]:
        loss = e["loss"]
        cells = [e["size"], _si(e["params_non_embedding"]), _si(e["params_total"]), _si(e["tokens"]),
                 _si(e["flops"]), _f(loss.get("vanilla")), _f(loss.get("myopic")), _f(loss.get("myopic-hidden"))]
        cells += [_f(e["gap"][a], "{:+.3f}") + _ci(e["gap_ci"][a], "{:+.3f}") for a in MYOPIC_ARMS]
        cells += [_f(e["k"][a], "{:.2f}") + _ci(e["k_ci"][a], "{:.2f}") for a in MYOPIC_ARMS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Gap intervals: paired bootstrap over held-out documents (evaluation noise; the seed spread is "
                  "reported in sweep.json when there are several seeds). k = C*/C, C* the compute at which the "
                  "vanilla curve of the same token budget reaches the myopic loss; k < 1: myopia wastes compute; "
                  "intervals: residual bootstrap of the vanilla fit.", ""]
    lines += ["L(C) = E + A·C^(−α) per token budget (over the sizes trained on that many tokens):", "",
              "| budget | arm | E [95% CI] | A | alpha [95% CI] | points |", "|---|---|---|---|---|---|"]
    for budget, by_arm in s["fits"].items():
        for arm, fd in by_arm.items():
            if fd is None:
                lines.append(f"| {budget} | {arm} | no fit (fewer than 3 sizes) | | | |")
                continue
            iv = fd.get("intervals", {})
            lines.append(f"| {budget} | {arm} | {_f(fd['E'])}{_ci(iv.get('E'))} | {fd['A']:.3g} | "
                         f"{_f(fd['alpha'], '{:.3f}')}{_ci(iv.get('alpha'), '{:.3f}')} | {fd['n_points']} |")
    k_lines = []
    for budget, by_arm in (s.get("k_curve") or {}).items():
        for arm in MYOPIC_ARMS:
            curve = by_arm.get(arm)
            if not curve:
                continue
            c = curve["compute"]
            lo_c, hi_c = curve["measured_range"]
            picks = [("smallest measured", lo_c), ("largest measured", hi_c), ("10x beyond", 10 * hi_c),
                     ("100x beyond", 100 * hi_c)]
            parts = []
            for label, target in picks:
                i = min(range(len(c)), key=lambda j: abs(math.log(c[j]) - math.log(target)))
                parts.append(f"{label} ({_si(c[i])} FLOPs): k = {_f(curve['k'][i], '{:.2f}')} "
                             f"[{_f(curve['lo'][i], '{:.2f}')}, {_f(curve['hi'][i], '{:.2f}')}]")
            k_lines.append(f"- **{arm}**, D = {budget}: " + "; ".join(parts))
    if k_lines:
        lines += ["", "Fitted k(C) = C*_vanilla(L_arm(C)) / C from the two fitted curves of a budget (paired "
                      "bootstrap band):", ""]
        lines += k_lines
    ch = {a: v for a, v in (s.get("chinchilla") or {}).items() if v}
    if ch:
        lines += ["", "L(N, D) = E + A/N^a + B/D^b fits (N non-embedding parameters, D tokens):", "",
                  "| arm | E | A | a | B | b |", "|---|---|---|---|---|---|"]
        for arm, fd in ch.items():
            if "error" in fd:
                lines.append(f"| {arm} | {fd['error']} | | | | |")
            else:
                iv = fd.get("intervals", {})
                lines.append(f"| {arm} | {_f(fd['E'])}{_ci(iv.get('E'))} | {fd['A']:.3g} | {_f(fd['a'])}"
                             f"{_ci(iv.get('a'))} | {fd['B']:.3g} | {_f(fd['b'])}{_ci(iv.get('b'))} |")
    lines += ["", f"![loss vs compute]({_rel(figs['loss'], run_dir)})",
              f"![gap vs parameters]({_rel(figs['gap'], run_dir)})",
              f"![compute multiplier]({_rel(figs['k'], run_dir)})", ""]
    prov = s.get("provenance", {})
    git = prov.get("git", {})
    lines.append(f"<sub>myopia {prov.get('versions', {}).get('myopia')}, git {str(git.get('commit'))[:10]}"
                 f"{' (dirty)' if git.get('dirty') else ''}, {prov.get('machine', {}).get('cpu_count')} CPUs, "
                 f"{prov.get('created')}</sub>")
    return "\n".join(lines) + "\n"


def render_horizon_section(run_dir, image_dir=None, heading_level: int = 2) -> str:
    """Markdown for the horizon/beta sweep in ``run_dir`` (tables and a figure)."""
    run_dir = Path(run_dir)
    s = load_horizon(run_dir)
    image_dir = Path(image_dir) if image_dir is not None else run_dir / "figures"
    fig = plot_horizon(s, image_dir / "horizon_sweep.png")
    h = "#" * heading_level
    st = s["settings"]
    lines = [f"{h} How far ahead are activations shaped for? (horizon and beta sweep)", "",
             f"Size {s['size']} ({_si(s['params_non_embedding'])} non-embedding parameters), {_si(s['tokens'])} "
             f"tokens ({s['steps']} steps), context {st['seq_len']}, data `{s.get('data')}`. Vanilla loss "
             f"{_f(s['vanilla']['loss'])} nats/token. Gap = loss − vanilla loss [95% document-bootstrap CI]."]
    if not s["complete"]:
        lines += ["", f"**Incomplete**: {len(s['pending'])} runs pending."]
    lines += ["", "| horizon h | myopic loss | myopic gap | myopic-hidden loss | myopic-hidden gap |",
              "|---|---|---|---|---|"]
    by_h = {a: {p["horizon"]: p for p in s["horizon"].get(a, [])} for a in MYOPIC_ARMS}
    for hz in sorted(set().union(*[set(v) for v in by_h.values()])):
        cells = [str(hz)]
        for a in MYOPIC_ARMS:
            p = by_h[a].get(hz, {})
            cells += [_f(p.get("loss")), _f(p.get("gap"), "{:+.3f}") + _ci(p.get("gap_ci"), "{:+.3f}")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| beta | myopic loss | myopic gap | myopic-hidden loss | myopic-hidden gap |",
              "|---|---|---|---|---|"]
    by_b = {a: {p["beta"]: p for p in s["beta"].get(a, [])} for a in MYOPIC_ARMS}
    for b in sorted(set().union(*[set(v) for v in by_b.values()])):
        cells = [f"{b:g}"]
        for a in MYOPIC_ARMS:
            p = by_b[a].get(b, {})
            cells += [_f(p.get("loss")), _f(p.get("gap"), "{:+.3f}") + _ci(p.get("gap_ci"), "{:+.3f}")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![horizon and beta sweep]({_rel(fig, run_dir)})", ""]
    return "\n".join(lines) + "\n"


def write_report(run_dir) -> Path:
    """``run_dir/report.md`` with the scaling and/or horizon sections (whichever result files exist)."""
    run_dir = Path(run_dir)
    parts = []
    if (run_dir / SWEEP_FILE).exists():
        parts.append(render_scaling_section(run_dir))
    if (run_dir / HORIZON_FILE).exists():
        parts.append(render_horizon_section(run_dir))
    if not parts:
        raise MyopiaError(f"{run_dir} holds neither {SWEEP_FILE} nor {HORIZON_FILE}")
    path = run_dir / "report.md"
    atomic_write_bytes(path, ("# myopia sweep report\n\n" + "\n".join(parts)).encode())
    return path
