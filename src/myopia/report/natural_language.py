"""Report sections for natural-language pairs: training curves, the myopia gap and the local myopia bonus."""

from __future__ import annotations

from pathlib import Path

from ..analysis.stats import TRAINING_NOISE_ONE_SEED, Estimate
from ..arms import MYOPIC_ARMS as SIDE_BY_SIDE
from ..errors import MyopiaError
from ..io import read_json, read_jsonl
from ..pairdir import PairDir
from ..rundir import BONUS_JSON, GAP_JSON, METRICS
from ..plots.report import gap_bars, gap_by_position, loss_bars
from ..plots.training import pair_training_curves
from . import register_section
from .blocks import Figure, Heading, Paragraph, Table

TOP_IN_REPORT = 10
FEW_DOCS = 5


def fmt(x, digits: int = 3) -> str:
    """A number of a table cell: ``digits`` after the point, ``n/a`` when unknown."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ci(d: dict | None, digits: int = 3, signed: bool = False) -> str:
    """'mean [lo, hi]' of a result dict (the seed note is said once per section); ``not trained`` without one."""
    est = Estimate.from_dict(d or {})
    return est.format(digits, signed=signed, missing="n/a", seed_note=None) if est.known else "not trained"


def seed_note(n_seeds: int) -> str:
    """What every interval of a section includes, said once at its top."""
    if n_seeds <= 1:
        return (f"**Training noise {TRAINING_NOISE_ONE_SEED}**: every interval below is evaluation noise only "
                "(documents resampled); train more seeds (`myopia pair --seeds 0,1,2`) for the uncertainty of a gap.")
    return (f"Intervals are seed-inclusive ({n_seeds} seeds): a hierarchical bootstrap over seeds and documents"
            + (" and a t-interval over the per-seed values, the wider of the two" if n_seeds >= 3 else "")
            + "; the documents-only interval is `ci95_eval` in the JSON.")


def check_leakage(d: Path, g: dict) -> None:
    """Refuse to render a gap measured on data other than the pair's split unless it was checked (and is again,
    when the data is a token cache still on disk) for overlap with the pair's training documents."""
    data = (g.get("config") or {}).get("data", "pair corpus")
    if data == "pair corpus":
        return
    ov = g.get("overlap") or {}
    if not ov.get("checked"):
        raise MyopiaError(f"{d}/gap.json was measured on {data}, which was never checked for overlap with the "
                          f"pair's training documents; rerun myopia gap {d} --data {data}")
    from ..data.cache import is_cache, open_cache
    from ..data.overlap import refuse_overlap
    from ..pairdir import GAP_ARRAYS

    pair = PairDir(d)
    if pair.exists() and is_cache(data) and (d / GAP_ARRAYS).is_file():
        import numpy as np

        docs = np.unique(pair.load_arrays(GAP_ARRAYS, keys=["doc"])["doc"])
        refuse_overlap(pair.corpus(), open_cache(data), docs, what=f"report of {d}/gap.json (data {data})")


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


@register_section("pair", order=10, applies=lambda d: PairDir(d).exists())
def pair_section(d: Path) -> list:
    """The pair's data, model and training setup, each run's final validation loss and the training curves."""
    m = PairDir(d).manifest
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


@register_section("gap", order=20, applies=lambda d: (d / GAP_JSON).is_file())
def gap_section(d: Path) -> list:
    """The myopia gap of DIR/gap.json: losses and gaps with intervals beside the null, by position, slice and
    token class, and the top contexts (refused when foreign data was not checked for overlap)."""
    g = read_json(d / GAP_JSON)
    check_leakage(d, g)
    arms = _contrast_arms(g["arms"])
    trained = [a for a in arms if g["gap"].get(a)]
    n_seeds = g["n_seeds"]
    blocks = [Heading("The myopia gap"), Paragraph(
        f"Held-out {g['split']} split: {g['n_docs']} documents, {g['n_tokens']:,} tokens, each predicted once "
        f"(documents cut into windows of {g['seq_len']}); {n_seeds} seed(s). Gap = loss(arm) - "
        f"loss(vanilla) in nats/token, also in bits per byte (total nats over the scored text's UTF-8 bytes / ln 2) "
        f"and as a fraction of the value of context (gap / (count-bigram loss - vanilla loss)); 95% intervals "
        f"({g['bootstrap']['replicates']} bootstrap replicates over {g['bootstrap']['unit']}s)."),
        Paragraph(seed_note(n_seeds))]
    blocks += _gap_tables(g, arms, trained)
    blocks += _gap_breakdowns(g, arms, trained)
    if g.get("top_contexts"):
        blocks += _top_contexts(g, arms)
    return blocks


def _gap_tables(g: dict, arms: list[str], trained: list[str]) -> list:
    """The table of losses and gaps beside the null, whether each gap is distinguishable from it, and each gap's
    per-seed values and intervals."""
    blocks = []
    null = g.get("null_gap")
    rows = [["vanilla", fmt_ci(g["loss"]["vanilla"]), "-", "-", "-", "-", "-"]]
    for a in arms:
        gap = g["gap"].get(a)
        if not gap:
            rows.append([a, "not trained"] + ["not trained"] * 5)
            continue
        rel, kl = gap.get("relative"), gap.get("kl_from_vanilla")
        vs_null = "-" if gap.get("against_null") is None else f"{gap['against_null']:+.1f}"
        rows.append([a, fmt_ci(g["loss"].get(a)), fmt_ci(gap, 4, signed=True),
                     fmt_ci(gap.get("bits_per_byte"), 4, signed=True),
                     _percent_ci(gap.get("fraction_of_context_value")), _percent_ci(rel),
                     vs_null if null else "not measured (1 seed)"])
    if null:
        rows.append(["null: vanilla vs vanilla (other seed)", "-",
                     f"{fmt_ci(null, 4, signed=True)} (sd {null['sd']:.4f})",
                     fmt_ci(null.get("bits_per_byte"), 4, signed=True), "-", "-", "±1 by definition"])
    else:
        rows.append(["null: vanilla vs vanilla (other seed)", "-", "not measured (1 seed)", "-", "-", "-", "-"])
    if g.get("count_bigram"):
        rows.append(["count bigram (reference)", fmt_ci(g["count_bigram"]), "-", "-", "-", "-", "-"])
    blocks.append(Table(["model", "loss (nats/token)", "gap vs vanilla (nats/token)", "gap (bits/byte)",
                         "gap / value of context", "relative gap", "gap / null sd"], rows))
    if null:
        blocks.append(Paragraph(_distinguishable(g, trained)))
    if trained:
        blocks.append(Table(["arm", "KL(vanilla ‖ arm)", "gap per seed", "interval: bootstrap / t over seeds / "
                             "documents only"],
                            [[a, fmt_ci(g["gap"][a].get("kl_from_vanilla"), 4),
                              ", ".join(fmt(x, 4) for x in g["gap"][a]["per_seed"]),
                              " / ".join(_bare_interval(g["gap"][a].get(k))
                                         for k in ("ci95_bootstrap", "ci95_t", "ci95_eval"))]
                             for a in trained]))
    return blocks


def _gap_breakdowns(g: dict, arms: list[str], trained: list[str]) -> list:
    """The gap by position in the context, by slice and by token class."""
    blocks = [Heading("Gap by position in the context", 3)]
    blocks.append(Figure("gap_by_position", gap_by_position(g["by_position"], trained),
                         "Left: gap per position with 95% bands. Right: each arm's loss per position."))
    blocks.append(_group_table(g["by_position_bucket"], arms, "positions"))

    blocks.append(Heading("Gap by slice", 3))
    blocks.append(_group_table(g["by_slice"], arms, "slice"))
    if len(g["by_slice"]) > 1:  # one slice: the table says all a bar would
        blocks.append(Figure("gap_by_slice", gap_bars(g["by_slice"], trained, "gap by slice (95% CI)")))

    blocks.append(Heading("Gap by token class", 3))
    blocks.append(Paragraph("Classes come from each token's decoded text and the token before it: word-start "
                            "(a letter after whitespace, punctuation or a line break), word-continuation (a letter "
                            "right after a letter or digit), digit, punctuation, whitespace, newline."))
    blocks.append(_group_table(g["by_class"], arms, "class", shares=True))
    blocks.append(Figure("gap_by_class", gap_bars(g["by_class"], trained, "gap by token class (95% CI)")))

    return blocks


def _top_contexts(g: dict, arms: list[str]) -> list:
    """The tokens where vanilla beats each arm most, beside the same ranking of two vanilla seeds (the null)."""
    blocks = [Heading("Where vanilla beats the myopic models most", 3)]
    tn = g.get("top_contexts_null") or {}
    if tn.get("by_loss_diff"):
        mean_by_arm = tn.get("mean_top_loss_diff_by_arm") or {}
        blocks.append(Paragraph(
            "By chance: the same ranking applied to two vanilla seeds (below). Per single run, the top-"
            f"{len(tn['by_loss_diff'])} loss differences average {fmt(tn.get('mean_top_loss_diff'))} nats for "
            "vanilla vs vanilla and " + ", ".join(f"{fmt(v)} for {a}" for a, v in mean_by_arm.items())
            + " (each seed's arm vs its vanilla): top contexts far above the null's are evidence, the rest "
            "is what any two training runs disagree on."))
        rows = [[r["slice"], r["position"], r["context"][-70:].replace("\n", "⏎"), visible(r["target"]),
                 r["after"][:25].replace("\n", "⏎"), fmt(r["loss_diff"]), f"{r['seeds'][1]} vs {r['seeds'][0]}"]
                for r in _distinct(tn["by_loss_diff"])]
        blocks.append(Table(["slice", "pos", "context", "target", "then", "loss diff", "seeds"], rows,
                            caption="**null: vanilla vs vanilla** (another seed): top tokens by loss difference"))
    else:
        blocks.append(Paragraph("Top contexts by chance (vanilla vs vanilla): not measured (1 seed)."))
    for a in [x for x in arms if x in g["top_contexts"]]:
        for key, what in (("by_loss_diff", "loss difference"), ("by_kl", "KL(vanilla ‖ arm)")):
            rows = [[r["slice"], r["position"], r["context"][-70:].replace("\n", "⏎"), visible(r["target"]),
                     r["after"][:25].replace("\n", "⏎"),
                     fmt(r["loss_diff"]), fmt(r["kl"])] for r in _distinct(g["top_contexts"][a][key])]
            if rows:
                blocks.append(Table(["slice", "pos", "context", "target", "then", "loss diff", "KL"], rows,
                                    caption=f"**{a}**: top {len(rows)} tokens by {what} "
                                            "(⏎ line break, ␣ space)"))
    return blocks


def _distinct(records: list[dict], n: int = TOP_IN_REPORT) -> list[dict]:
    """The first ``n`` records with distinct (context, target): the same passage scored in several seeds is shown
    once, with its first (largest) difference."""
    seen, out = set(), []
    for r in records:
        key = (r["context"][-70:], r["target"])
        if key not in seen:
            seen.add(key)
            out.append(r)
        if len(out) == n:
            break
    return out


def _bare_interval(ci) -> str:
    return "-" if not ci or ci[0] is None else Estimate(None, ci).interval(4)


def _distinguishable(g: dict, trained: list[str]) -> str:
    """One sentence per arm, worded for what was tested: "interval excludes 0" says the gap is not zero; "differs
    from the null" needs more: the gap's interval clear of the interval of a vanilla-vs-vanilla null of the same
    seed count (gap.json's ``null_same_seeds``)."""
    null, same = g["null_gap"], g.get("null_same_seeds") or {}
    null_ci = same.get("ci95")
    parts = []
    for a in trained:
        gap = g["gap"][a]
        lo, hi = gap["ci95"]
        if lo is None or hi is None or lo <= 0 <= hi:
            parts.append(f"**{a}**: interval includes 0")
            continue
        text = f"**{a}**: interval excludes 0 ({gap['against_null']:+.1f} single-pair null sd)"
        if null_ci:
            clear = lo > null_ci[1] or hi < null_ci[0]
            text += ("; differs from the null of the same seed count" if clear else
                     "; overlaps the interval of the null of the same seed count")
        parts.append(text)
    return (f"Two vanilla seeds differ by sd {null['sd']:.4f} nats/token on these tokens "
            f"({null['n_pairs']} seed pair(s)). " + "; ".join(parts) + ".")


def _steps_taken(steps) -> str:
    """'local: 300, 300, 300 (seeds 0, 1, 2); continued: ...' for the per-trainee, per-seed step counts."""
    if not isinstance(steps, dict):
        return str(steps)
    parts = []
    for name, per_seed in steps.items():
        if isinstance(per_seed, dict):
            seeds = sorted(per_seed, key=int)
            parts.append(f"{name}: {', '.join(str(per_seed[k]) for k in seeds)} (seeds {', '.join(seeds)})")
        else:
            parts.append(f"{name}: {per_seed}")
    return "; ".join(parts)


def _plateau_note(phase: dict) -> str:
    """' (every run stopped at the cap: no plateau reached)' and the like."""
    flags = [v for runs in (phase.get("stopped_at_plateau") or {}).values() for v in runs.values()]
    if not flags or phase.get("stopping", "").startswith("fixed"):
        return ""
    if not any(flags):
        return " — **no run reached the plateau: every run stopped at the cap** (a longer cap may change the bonus)"
    return f" — {sum(flags)} of {len(flags)} runs stopped at the plateau, the rest at the cap"


PERCENT_NOISE = 1.0  # a fraction whose interval is wider than this (100 points) carries no information


def _percent_ci(d: dict | None) -> str:
    """A fraction as a percentage with its interval; "too noisy" when the interval spans more than 100 points
    (a ratio over a denominator near 0, e.g. the value of context on a slice that uses no context)."""
    est = Estimate.from_dict(d or {})
    if not est.known:
        return "n/a"
    if est.bounded and est.ci95[1] - est.ci95[0] > PERCENT_NOISE:
        return "too noisy to state"
    return (est if est.bounded else Estimate(est.mean)).format(1, scale=100, unit="%", seed_note=None)


def _group_table(rows: dict, arms: list[str], label: str, shares: bool = False) -> Table:
    header = [label, "docs", "tokens", "token share", "vanilla loss"]
    for a in arms:
        header += [f"{a} gap [95% CI]", f"{a} gap / value of context"] + ([f"{a} share of gap"] if shares else [])
    out, few = [], False
    for name, r in rows.items():
        few |= r["docs"] < FEW_DOCS
        row = [name, f"{r['docs']}{'*' if r['docs'] < FEW_DOCS else ''}", f"{r['tokens']:,}",
               f"{100 * r.get('token_share', 0):.1f}%", fmt(r["vanilla"]["mean"])]
        for a in arms:
            row.append(fmt_ci(r.get(a), signed=True))
            row.append(_percent_ci((r.get(a) or {}).get("fraction_of_context_value")))
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


@register_section("bonus", order=30, applies=lambda d: (d / BONUS_JSON).is_file())
def bonus_section(d: Path) -> list:
    """The local myopia bonus of DIR/bonus.json: the bonus phase, held-out losses, the bonus against its control
    and the gap decomposition."""
    b = read_json(d / BONUS_JSON)
    cfg = b["config"]
    n_seeds = b.get("n_seeds", len(b.get("seeds", [])) or 1)
    blocks = [Heading("The local myopia bonus"), Paragraph(
        "The local model re-trains the present-position computation while every earlier position's keys and "
        "values come from the frozen vanilla model. Bonus = loss(vanilla) - loss(local). Each trainee has a "
        "control (vanilla gradient, same start, examples, schedule and stopping rule): bonus vs control separates "
        "freezing the past from extra training; the control is also scored with the original vanilla's frozen "
        "past (`@vanilla-past`), so both sides of that comparison use the same past."), Paragraph(seed_note(n_seeds))]
    for name, phase in (cfg.get("phases") or {}).items():
        fresh = phase.get("data") or {}
        repeats = [f"seed {s}: {v['note']}" for s, v in fresh.items() if isinstance(v, dict) and "unseen" in v]
        blocks.append(Paragraph(
            f"**{name}** (init {phase['init']}): lr {phase['lr']}, {phase['schedule']}; {phase['stopping']} (cap "
            f"{phase['cap_steps']} steps, evaluations every {phase['eval_every']}); steps taken "
            f"{_steps_taken(phase['steps_taken'])}" + _plateau_note(phase) + ". Data: "
            + ("; ".join(repeats) if repeats else fresh.get("note", "?")) + f". Data order: {phase.get('data_order', '?')}."))
    blocks.append(Table(["model", "held-out loss [95% CI]"], [[n, fmt_ci(v)] for n, v in b["loss"].items()]))
    for name, t in b["trainees"].items():
        rows = [["bonus = vanilla - " + name, fmt_ci(t["bonus"], 4, signed=True)]]
        if t.get("relative_bonus"):
            rows.append(["relative bonus", _percent_ci(t["relative_bonus"])])
        control = t.get("control")
        if t.get("bonus_vs_control"):
            rows.append([f"bonus vs control = {control} - {name}", fmt_ci(t["bonus_vs_control"], 4, signed=True)])
        if t.get("bonus_vs_control_vanilla_past"):
            rows.append([f"bonus vs control on vanilla's past = {control}@vanilla-past - {name}",
                         fmt_ci(t["bonus_vs_control_vanilla_past"], 4, signed=True)])
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
