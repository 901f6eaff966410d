"""Report sections for natural-language pairs: training curves, the myopia gap and the local myopia bonus."""

from __future__ import annotations

from pathlib import Path

from ..arms import MYOPIC_ARMS as SIDE_BY_SIDE
from ..io import read_json, read_jsonl
from ..rundir import METRICS
from ..plots.report import gap_bars, gap_by_position, loss_bars
from ..plots.training import pair_training_curves
from . import register_section
from .blocks import Figure, Heading, Paragraph, Table

TOP_IN_REPORT = 10
FEW_DOCS = 5


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ci(d: dict | None, digits: int = 3, signed: bool = False) -> str:
    if not d or d.get("mean") is None:
        return "not trained"
    lo, hi = d.get("ci95") or [None, None]
    f = (lambda v: "n/a" if v is None else f"{v:+.{digits}f}") if signed else (lambda v: fmt(v, digits))
    return f"{f(d['mean'])} [{f(lo)}, {f(hi)}]"


def visible(text: str) -> str:
    """Whitespace made visible for a one-token cell: space ␣, line break ⏎, tab →."""
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "→")


def _contrast_arms(arms: list[str]) -> list[str]:
    """The arms compared to vanilla, myopic and myopic-hidden first (always, even if untrained)."""
    rest = [a for a in arms if a not in SIDE_BY_SIDE and a != "vanilla"]
    return list(SIDE_BY_SIDE) + rest


# ------------------------------------------------------------------------------------------------------------
# Pair: what was trained, and training curves
# ------------------------------------------------------------------------------------------------------------


@register_section("pair", order=10, applies=lambda d: (d / "pair.json").is_file())
def pair_section(d: Path) -> list:
    m = read_json(d / "pair.json")
    model, train = m["model"], m["train"]
    corpus = m["data"]["corpus"]
    tok = corpus.get("tokenizer", {})
    blocks = [Heading("Paired training runs"), Paragraph(
        f"Data `{m['data']['spec']}` ({corpus['documents']['train']} training / {corpus['documents']['val']} "
        f"validation / {corpus['documents']['test']} test documents; {corpus['tokens']['train']:,} training "
        f"tokens; tokenizer {tok.get('kind', '?')}, vocabulary {model['vocab_size']}). Model: {model['n_layer']} "
        f"layers x width {model['d_model']} x {model['n_head']} heads, context {model['seq_len']}. Training: "
        f"{train['steps']} steps x batch {train['batch_size']} sequences, AdamW lr {train['lr']} (cosine to "
        f"{train['min_lr_ratio']}x), weight decay {train['weight_decay']}. Within a seed every arm starts from "
        f"the same weights and reads the same examples in the same order.")]
    rows, curves = [], {}
    for arm in [a["name"] for a in m["arms"]]:
        for seed, run in sorted(m.get("runs", {}).get(arm, {}).items(), key=lambda kv: int(kv[0])):
            rows.append([arm, seed, fmt(run.get("eval_loss"), 4), f"{run.get('tokens_seen') or 0:,}",
                         f"{(run.get('train_time_s') or 0) / 60:.1f}"])
            path = d / run["dir"] / METRICS
            if path.is_file():
                recs = read_jsonl(path)
                tr = [r for r in recs if "train_loss" in r]
                ev = [r for r in recs if "eval_loss" in r]
                curves.setdefault(arm, []).append({
                    "seed": seed, "step": [r["step"] for r in tr], "train_loss": [r["train_loss"] for r in tr],
                    "eval_step": [r["step"] for r in ev], "eval_loss": [r["eval_loss"] for r in ev]})
    blocks.append(Table(["arm", "seed", "final validation loss", "tokens seen", "train minutes"], rows))
    if curves:
        blocks.append(Figure("training_curves", pair_training_curves(curves),
                             "Training loss (smoothed) and validation loss of every arm; faint lines: other seeds."))
    return blocks


# ------------------------------------------------------------------------------------------------------------
# Gap
# ------------------------------------------------------------------------------------------------------------


@register_section("gap", order=20, applies=lambda d: (d / "gap.json").is_file())
def gap_section(d: Path) -> list:
    g = read_json(d / "gap.json")
    arms = _contrast_arms(g["arms"])
    trained = [a for a in arms if g["gap"].get(a)]
    blocks = [Heading("The myopia gap"), Paragraph(
        f"Held-out {g['split']} split: {g['n_docs']} documents, {g['n_tokens']:,} tokens, each predicted once "
        f"(documents cut into windows of {g['seq_len']}); {g['n_seeds']} seed(s). Gap = loss(arm) - "
        f"loss(vanilla) in nats/token, 95% intervals by bootstrap over {g['bootstrap']['unit']}s "
        f"({g['bootstrap']['replicates']} replicates).")]
    rows = [["vanilla", fmt_ci(g["loss"]["vanilla"]), "-", "-", "-"]]
    for a in arms:
        gap = g["gap"].get(a)
        rel = (gap or {}).get("relative")
        kl = (gap or {}).get("kl_from_vanilla")
        rows.append([a, fmt_ci(g["loss"].get(a)), fmt_ci(gap, signed=True), _percent_ci(rel) if gap else
                     "not trained", fmt_ci(kl, 4) if kl else "-"])
    if g.get("count_bigram"):
        rows.append(["count bigram (reference)", fmt_ci(g["count_bigram"]), "-", "-", "-"])
    blocks.append(Table(["model", "loss", "gap vs vanilla", "relative gap", "KL(vanilla ‖ arm)"], rows))
    if g["n_seeds"] > 1:
        blocks.append(Table(["arm", "gap per seed"], [[a, ", ".join(fmt(x, 4) for x in g["gap"][a]["per_seed"])]
                                                      for a in trained]))

    blocks.append(Heading("Gap by position in the context", 3))
    blocks.append(Figure("gap_by_position", gap_by_position(g["by_position"], trained),
                         "Left: gap per position with 95% bands. Right: each arm's loss per position."))
    blocks.append(_group_table(g["by_position_bucket"], arms, "positions"))

    blocks.append(Heading("Gap by slice", 3))
    blocks.append(_group_table(g["by_slice"], arms, "slice"))
    if g["by_slice"]:
        blocks.append(Figure("gap_by_slice", gap_bars(g["by_slice"], trained, "gap by slice (95% CI)")))

    blocks.append(Heading("Gap by token class", 3))
    blocks.append(Paragraph("Classes come from each token's decoded text and the token before it: word-start "
                            "(a letter after whitespace, punctuation or a line break), word-continuation (a letter "
                            "right after a letter or digit), digit, punctuation, whitespace, newline."))
    blocks.append(_group_table(g["by_class"], arms, "class", shares=True))
    blocks.append(Figure("gap_by_class", gap_bars(g["by_class"], trained, "gap by token class (95% CI)")))

    if g.get("top_contexts"):
        blocks.append(Heading("Where vanilla beats the myopic models most", 3))
        for a in [x for x in arms if x in g["top_contexts"]]:
            for key, what in (("by_loss_diff", "loss difference"), ("by_kl", "KL(vanilla ‖ arm)")):
                rows = [[r["slice"], r["position"], r["context"][-70:].replace("\n", "⏎"), visible(r["target"]),
                         r["after"][:25].replace("\n", "⏎"),
                         fmt(r["loss_diff"]), fmt(r["kl"])] for r in g["top_contexts"][a][key][:TOP_IN_REPORT]]
                if rows:
                    blocks.append(Table(["slice", "pos", "context", "target", "then", "loss diff", "KL"], rows,
                                        caption=f"**{a}**: top {len(rows)} tokens by {what} "
                                                "(⏎ line break, ␣ space)"))
    return blocks


def _percent_ci(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    lo, hi = d.get("ci95") or [None, None]
    if lo is None or hi is None:
        return f"{100 * d['mean']:+.1f}%"
    return f"{100 * d['mean']:+.1f}% [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _group_table(rows: dict, arms: list[str], label: str, shares: bool = False) -> Table:
    header = [label, "docs", "tokens"] + (["token share"] if shares else []) + ["vanilla loss"]
    for a in arms:
        header += [f"{a} gap [95% CI]"] + ([f"{a} share of gap"] if shares else [])
    out, few = [], False
    for name, r in rows.items():
        few |= r["docs"] < FEW_DOCS
        row = [name, f"{r['docs']}{'*' if r['docs'] < FEW_DOCS else ''}", f"{r['tokens']:,}"] + ([f"{100 * r['token_share']:.1f}%"] if shares else [])
        row.append(fmt(r["vanilla"]["mean"]))
        for a in arms:
            row.append(fmt_ci(r.get(a), signed=True))
            if shares:
                share = (r.get(a) or {}).get("gap_share")
                row.append("-" if share is None else f"{100 * share:.1f}%")
        out.append(row)
    note = (f"* fewer than {FEW_DOCS} documents: the bootstrap interval understates the uncertainty." if few
            else "")
    return Table(header, out, caption=note)


# ------------------------------------------------------------------------------------------------------------
# Bonus
# ------------------------------------------------------------------------------------------------------------


@register_section("bonus", order=30, applies=lambda d: (d / "bonus.json").is_file())
def bonus_section(d: Path) -> list:
    b = read_json(d / "bonus.json")
    cfg = b["config"]
    blocks = [Heading("The local myopia bonus"), Paragraph(
        f"The local model re-trains the present-position computation while every earlier position's keys and "
        f"values come from the frozen vanilla model (init {cfg.get('init', '?')}, {cfg.get('steps', '?')} steps, "
        f"lr {cfg.get('lr', '?')}). Bonus = loss(vanilla) - loss(local). `continued` is vanilla trained on the "
        f"same extra examples with its ordinary gradient: bonus vs continued separates freezing the past from "
        f"extra training.")]
    blocks.append(Table(["model", "held-out loss [95% CI]"], [[n, fmt_ci(v)] for n, v in b["loss"].items()]))
    for name, t in b["trainees"].items():
        rows = [["bonus = vanilla - " + name, fmt_ci(t["bonus"], signed=True)]]
        if t.get("relative_bonus"):
            rows.append(["relative bonus", f"{100 * t['relative_bonus']['mean']:+.2f}%"])
        if t.get("bonus_vs_continued"):
            rows.append(["bonus vs continued = continued - " + name, fmt_ci(t["bonus_vs_continued"], signed=True)])
        blocks.append(Table(["quantity", "nats/token [95% CI]"], rows, caption=f"**{name}**"))
        drows = []
        for arm in list(SIDE_BY_SIDE) + [a for a in t["decomposition"] if a not in SIDE_BY_SIDE]:
            dec = t["decomposition"].get(arm)
            if dec is None:
                drows.append([arm, "not trained", "not trained", "not trained"])
            else:
                drows.append([arm, fmt_ci(dec["myopic_minus_local"], signed=True),
                              fmt_ci(dec["vanilla_minus_local"], signed=True), fmt_ci(dec["gap"], signed=True)])
        blocks.append(Table(["arm", "arm - local", "vanilla - local", "gap = difference"], drows,
                            caption=f"Decomposition of the gap through **{name}**"))
    blocks.append(Figure("bonus_losses", loss_bars(b["loss"], "held-out loss (95% CI)")))
    return blocks
