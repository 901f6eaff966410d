"""myopia gap: the myopia gap of a pair with confidence intervals, and where it lives."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``myopia gap`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("gap", help="evaluate a pair on held-out documents: the gap by position, slice, token class",
                       description="Score every held-out token with every arm of a pair; write DIR/gap.json "
                       "(gap with seed-inclusive 95% intervals in nats/token, bits/byte and as a fraction of "
                       "the value of context; the vanilla-vs-vanilla null with >= 2 seeds; by position, slice and "
                       "token class; top contexts) and DIR/gap/per_token.npz. --data other than the pair's own "
                       "split is refused if its documents overlap the training split.")
    p.add_argument("dir", help="pair directory (made by myopia pair)")
    p.add_argument("--split", default="test", choices=["test", "val", "all"],
                   help="held-out documents (all: every document of a different --data corpus)")
    p.add_argument("--data", default=None, help="evaluate on another corpus (tokenized with the pair's tokenizer)")
    p.add_argument("--max-docs", type=int, default=None, help="evaluate only the first N held-out documents")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default %(default)s)")
    p.add_argument("--top", type=int, default=20, help="top contexts kept per arm (default %(default)s)")
    p.add_argument("--drop-overlap", action="store_true",
                   help="leave out (and count) scored documents that overlap training text (exact or 13-gram "
                   "near-duplicates) instead of refusing to score them")
    p.add_argument("--reuse-scores", action="store_true",
                   help="re-analyse the per-token losses of an earlier run (DIR/gap/per_token.npz of the same tokens, "
                   "seeds and arms) instead of scoring again; refused if a model is newer than those scores")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia gap``: score the pair on held-out documents, print the gaps beside the null, write DIR/gap.json;
    returns the exit status."""
    from ..experiments.gap import run_gap

    g = run_gap(args.dir, split=args.split, data=args.data, max_docs=args.max_docs, n_boot=args.bootstrap,
                top_k=args.top, device=args.device, progress=not args.no_progress, reuse_scores=args.reuse_scores,
                drop_overlap=args.drop_overlap)
    for line in gap_lines(g):
        print(line)
    if "scoring" in g:
        print(f"scoring: {g['scoring']['note']}")
    print(f"-> {args.dir}/gap.json")
    return 0


def gap_lines(g: dict) -> list[str]:
    """The printed summary of a gap.json: every interval seed-inclusive, the null beside the gaps."""
    from ..analysis.stats import Estimate

    van = g["loss"]["vanilla"]
    bpb = (van.get("bits_per_byte") or {}).get("mean")
    lines = [f"vanilla loss {van['mean']:.4f} nats/token" + (f" ({bpb:.4f} bits/byte)" if bpb is not None else "")
             + f" on {g['n_tokens']:,} tokens ({g['n_docs']} documents), {g['n_seeds']} seed(s); intervals: "
             f"95%, training noise {g['training_noise']}"]
    null = g.get("null_gap")
    for arm, gap in g["gap"].items():
        if gap is None:
            lines.append(f"{arm:<24} not trained")
            continue
        text = f"{arm:<24} gap {Estimate.from_dict(gap).format(4)} nats/token"
        if gap.get("bits_per_byte"):  # a second unit of the same number: its seed note is already printed
            text += f" = {Estimate.from_dict(gap['bits_per_byte']).format(4, seed_note=None)} bits/byte"
        frac = gap.get("fraction_of_context_value")
        if frac and frac.get("mean") is not None:
            text += f", {100 * frac['mean']:+.1f}% of the value of context"
        if gap.get("against_null") is not None:
            text += f", {gap['against_null']:+.1f} null sd"
        lines.append(text)
    lines += competence_lines(g)
    if null:
        lines.append(f"{'null (vanilla vs vanilla)':<24} gap {null['mean']:+.4f} sd {null['sd']:.4f} "
                     f"{Estimate.from_dict(null).interval(4)} nats/token over {null['n_pairs']} seed pair(s)")
    else:
        lines.append(f"{'null (vanilla vs vanilla)':<24} not measured (1 seed): train more seeds "
                     "(myopia pair --seeds 0,1,2) to see what a gap looks like by chance")
    return lines


def competence_lines(g: dict) -> list[str]:
    """What each interval means: the count n-gram baselines beside vanilla, the competence gate, and per arm the
    reading (detected / no gap detected with the smallest detectable gap / not testable at this scale)."""
    lines = []
    base = g.get("baselines")
    if base:
        lines.append("count baselines on the same tokens: " + ", ".join(
            f"{name} {b['loss']:.4f}" for name, b in base.items()) + " nats/token")
    comp = g.get("competence")
    if comp:
        state = {True: "competent", False: "not competent", None: "competence not established"}[comp["competent"]]
        lines.append(f"{state}: {comp['reason']}")
    for arm, text in (g.get("reading") or {}).items():
        lines.append(f"{arm:<24} {text}")
    return lines
