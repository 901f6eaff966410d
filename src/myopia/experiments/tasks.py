"""``myopia tasks``: score every arm and seed on the pre-registered suite (:mod:`myopia.analysis.tasks`).

Writes ``OUT/tasks.json`` (default OUT: the pair directory): ``suite`` (the frozen definitions), per task ``n``
(items), the loss and accuracy of each arm, the value of context, the vanilla-vs-vanilla null and, per arm, the
gap with its seed-inclusive interval, ``p``, ``p_holm`` (Holm over every p-value of the file) and
``fraction_of_context_value``. Models come from a pair directory (its arms and seeds) or from ``--runs``
(run folders or Hugging Face model directories, several comma-separated paths being seeds of one arm).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis import tasks as T
from ..analysis.heldout import HeldOut, document_windows, evaluate_per_token
from ..analysis.stats import HierarchicalBootstrap, Resampled, holm, masked_means, null_gap
from ..data.cache import is_cache, open_cache
from ..data.overlap import refuse_overlap
from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from .gap import pair_corpus, scoring_context, trained_arms
from .pair import read_manifest, run_dir

TASKS_JSON = "tasks.json"


# --------------------------------------------------------------------------------------------------------------
# Where the models come from
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ArmSet:
    """Arms (baseline first) x seeds of model locations, the tokenizer and held-out corpus they are scored on."""

    arms: list[str]
    paths: dict[str, list[Path]]  # arm -> one path per seed
    baseline: str
    corpus: object  # the TokenCorpus to evaluate on
    split: str
    seq_len: int
    source: dict = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return len(self.paths[self.baseline])

    def load(self, arm: str, s: int, device="cpu"):
        return load_any(self.paths[arm][s], device)


def load_any(path: Path, device="cpu"):
    """The model of a run folder of ours or of ``myopia finetune``, or of a Hugging Face model directory."""
    from ..rundir import is_run, load_model, load_run_model

    path = Path(path)
    if is_run(path):
        return load_run_model(path, device=device, finished=True)
    return load_model(path, device=device)[0]


def load_tokenizer(path: Path):
    """The tokenizer of a run folder (bytes, a finetune's saved one) or of a Hugging Face model directory."""
    from ..hf.tokenizer import load_hf_tokenizer
    from ..rundir import is_run, run_tokenizer

    path = Path(path)
    if is_run(path):
        return run_tokenizer(path)
    return load_hf_tokenizer(path)


def pair_arms(pair_dir, data=None, split="test") -> ArmSet:
    pair_dir = Path(pair_dir)
    manifest = read_manifest(pair_dir)
    corpus, own = pair_corpus(pair_dir, manifest, data)
    arms, seeds, skipped = trained_arms(manifest, pair_dir)
    if corpus is not own:
        if split == "all":
            corpus.doc_split = np.full(corpus.n_docs, 2, dtype=np.int8)
            split = "test"
        refuse_overlap(own, corpus, corpus.split_docs(split), what=f"--data {data}")
    elif split in ("all", "train"):
        raise MyopiaError("the suite is scored on held-out documents: use --split test or val (--split all only "
                          "with --data OTHER)")
    paths = {a: [run_dir(pair_dir, a, s) for s in seeds] for a in arms}
    return ArmSet(arms, paths, "vanilla", corpus, split, int(manifest["model"]["seq_len"]),
                  {"pair_dir": str(pair_dir), "seeds": seeds, "skipped_arms": skipped,
                   "scoring": scoring_context(pair_dir, arms, seeds),
                   "data": str(data) if data else "pair corpus", "corpus": corpus.describe()})


def parse_runs(specs: list[str]) -> dict[str, list[Path]]:
    """``[NAME=]PATH[,PATH...]`` per arm (several paths: seeds of one arm); NAME defaults to the folder name."""
    out: dict[str, list[Path]] = {}
    for spec in specs:
        name, _, rest = spec.partition("=") if "=" in spec else ("", "", spec)
        paths = [Path(p) for p in rest.split(",") if p]
        if not paths:
            raise MyopiaError(f"--runs {spec!r}: no path")
        name = name or paths[0].name
        if name in out:
            raise MyopiaError(f"--runs: arm {name!r} given twice (name them NAME=PATH)")
        for p in paths:
            if not p.exists():
                raise MyopiaError(f"--runs: {p} does not exist")
        out[name] = paths
    return out


def _training_corpus(path: Path):
    """The token cache a run of ours was trained on, when its config names one that still exists."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = read_json(cfg_path)
    for cand in (cfg.get("task", {}).get("corpus", {}).get("cache"), cfg.get("run", {}).get("data")):
        if cand and not str(cand).startswith("hf:") and is_cache(cand):
            return open_cache(cand)
    return None


def runs_arms(runs: list[str], baseline: str | None, data, split="test") -> ArmSet:
    from ..data import load_corpus

    paths = parse_runs(runs)
    baseline = baseline or next(iter(paths))
    if baseline not in paths:
        raise MyopiaError(f"--baseline {baseline!r} is not one of the --runs arms ({', '.join(paths)})")
    counts = {len(v) for v in paths.values()}
    if len(counts) != 1:
        raise MyopiaError("--runs: every arm needs the same number of seeds (comma-separated paths)")
    if data is None:
        raise MyopiaError("--runs needs --data (the held-out text to score)")
    train = _training_corpus(paths[baseline][0])
    model = load_any(paths[baseline][0])
    tok = train.tokenizer if train is not None and train.tokenizer is not None else load_tokenizer(paths[baseline][0])
    seq_len = int(model.cfg.seq_len)
    for arm, ps in paths.items():
        for p in ps:
            m = load_any(p)
            seq_len = min(seq_len, int(m.cfg.seq_len))
            if int(m.cfg.vocab_size) != int(model.cfg.vocab_size):
                raise MyopiaError(f"{p}: vocabulary {m.cfg.vocab_size} differs from the baseline's "
                                  f"{model.cfg.vocab_size}")
    same = train is not None and is_cache(data) and Path(data).resolve() == Path(train.info.get("cache", "")).resolve()
    corpus = train if same else load_corpus(data, tok)
    if not same:
        corpus.doc_split = np.full(corpus.n_docs, 2, dtype=np.int8)
        split = "test"
    overlap = "not checked: the training corpus of the baseline is unknown (not one of our runs)"
    if train is not None:
        if not same:
            refuse_overlap(train, corpus, corpus.split_docs(split), what=f"--data {data}")
        overlap = "checked against the baseline's training split"
    arms = [baseline] + [a for a in paths if a != baseline]
    return ArmSet(arms, paths, baseline, corpus, split, seq_len,
                  {"runs": {a: [str(p) for p in ps] for a, ps in paths.items()}, "data": str(data),
                   "overlap": overlap, "corpus": corpus.describe()})


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------


def score(models: dict, held: HeldOut, vocab_size: int, device="cpu", batch_size=None) -> dict:
    """{arm: {"loss": (N,), "correct": (N,) bool}}: :func:`evaluate_per_token`'s losses, plus whether each token
    is the model's greedy (argmax) prediction, recorded from the same forward passes."""
    argmax: dict[str, list] = {a: [] for a in models}

    def scorer(arm, model):
        def f(x):
            logits = model(x)
            argmax[arm].append(logits.argmax(-1).cpu().numpy())
            return logits
        return f

    res = evaluate_per_token({a: scorer(a, m) for a, m in models.items()}, held, vocab_size=vocab_size,
                             device=device, batch_size=batch_size)
    out = {}
    for a in models:
        pred = np.concatenate(argmax[a])[held.window, held.position]
        out[a] = {"loss": res[a]["loss"].astype(np.float64), "correct": pred == held.target}
    return out


def capped_held_out(arms: ArmSet, max_docs: int, max_tokens: int) -> HeldOut:
    """The first ``max_docs`` held-out documents (corpus order), fewer if they hold more than ``max_tokens``
    tokens (at least one)."""
    docs = arms.corpus.split_docs(arms.split)
    if len(docs) == 0:
        raise MyopiaError(f"the {arms.split} split holds no documents")
    cum = np.cumsum(arms.corpus.doc_lengths[docs])
    n_docs = max(1, min(int(max_docs), int(np.searchsorted(cum, max_tokens, side="right"))))
    return document_windows(arms.corpus, arms.split, arms.seq_len, max_docs=n_docs)


@dataclass
class Scores:
    """Per-seed arrays of one set of scored tokens: loss/correct {arm: (S, N)}, value (S, N) (vanilla's value of
    context per token), mask (S, N) or (N,), unit (N,) bootstrap unit indices."""

    loss: dict
    correct: dict
    value: np.ndarray
    mask: np.ndarray
    unit: np.ndarray


def _stack(rows: list[dict], key: str, arms) -> dict:
    return {a: np.stack([r[a][key] for r in rows]).astype(np.float64) for a in arms}


# --------------------------------------------------------------------------------------------------------------
# Statistics of one task
# --------------------------------------------------------------------------------------------------------------


def _gap_entry(gap: Resampled, value: Resampled) -> dict:
    s = gap.summary()
    frac = (gap / value).summary()
    s["fraction_of_context_value"] = frac["mean"]
    s["fraction_of_context_value_ci95"] = frac["ci95"]
    s["p_holm"] = None  # filled in by the suite-wide Holm adjustment
    return s


def task_record(boot: HierarchicalBootstrap, sc: Scores, arms: list[str], baseline: str, *,
                accuracy: bool = True) -> dict:
    """n, loss/accuracy per arm, value of context, null and gaps (loss; accuracy) per arm for one token set."""
    mask = np.atleast_2d(sc.mask)
    if mask.shape[0] == 1:
        mask = np.repeat(mask, boot.n_seeds, axis=0)

    def mean(values):
        return masked_means(boot, values, mask, sc.unit)

    value = mean(sc.value)
    per_seed_n = mask.sum(1)
    rec = {"n": int(np.median(per_seed_n)), "n_per_seed": [int(x) for x in per_seed_n],
           "n_units": int(len(np.unique(sc.unit[mask.any(0)]))),
           "loss": {a: mean(sc.loss[a]).summary() for a in arms},
           "value_of_context": value.summary()}
    if accuracy:
        rec["accuracy"] = {a: mean(sc.correct[a]).summary() for a in arms}
    common = mask.all(0)
    rec["null"] = (null_gap(sc.loss[baseline][:, common], sc.unit[common], n_boot=boot.n_boot)
                   if common.any() and boot.n_seeds > 1 else None)
    rec["gap"] = {}
    for a in arms:
        if a == baseline:
            continue
        g = mean(sc.loss[a] - sc.loss[baseline])
        entry = _gap_entry(g, value)
        if accuracy:
            acc = mean(sc.correct[a] - sc.correct[baseline]).summary()
            acc["p_holm"] = None
            entry["accuracy"] = acc
        rec["gap"][a] = entry
    return rec


def apply_holm(tasks: dict) -> int:
    """Holm-adjust every gap p-value in ``tasks`` (loss and accuracy, tasks and their variants) as one family;
    writes ``p_holm`` in place and returns the family size."""
    slots = []

    def visit(rec):
        for g in rec.get("gap", {}).values():
            slots.append(g)
            if "accuracy" in g:
                slots.append(g["accuracy"])
        for v in rec.get("variants", {}).values():
            visit(v)

    for rec in tasks.values():
        visit(rec)
    adjusted = holm([s.get("p") for s in slots])
    for s, p in zip(slots, adjusted):
        s["p_holm"] = p
    return sum(p is not None for p in adjusted)


# --------------------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------------------


def read_user_files(files) -> dict[str, list]:
    out = {}
    for f in files or []:
        name = T.user_task_name(f)
        if name in out:
            raise MyopiaError(f"{f}: two user task files share the name {name}")
        out[name] = T.read_user_task(f)
    return out


def run_tasks(pair_dir=None, *, runs=None, baseline=None, out=None, data=None, split="test", user=None,
              tasks=None, n_boot: int = 2000, device: str = "cpu", progress: bool = True) -> dict:
    """Score the suite; write OUT/tasks.json (everything is checked before anything is scored or written)."""
    names = T.check_task_names(tasks)
    user_items = read_user_files(user)
    if (pair_dir is None) == (not runs):
        raise MyopiaError("give either a pair directory or --runs (exactly one of them)")
    if runs and out is None:
        raise MyopiaError("--runs needs --out (the folder for tasks.json)")
    arms = pair_arms(pair_dir, data, split) if pair_dir is not None else runs_arms(runs, baseline, data, split)
    out = Path(out if out is not None else pair_dir)
    suite = T.SUITE
    tok, V, S = arms.corpus.tokenizer, int(arms.corpus.vocab_size), arms.n_seeds
    if tok is None:
        raise MyopiaError("the suite needs decodable text: the corpus has no tokenizer (raw token ids)")
    eos = int(tok.eos_id)
    K = int(suite["short_context"])
    held = capped_held_out(arms, int(suite["max_docs"]), int(suite["max_tokens"]))
    texts = T.vocab_texts(tok, V)
    ind = suite["induction"]
    span_len = min(int(ind["span_len"]), (arms.seq_len - 1) // 2)
    spans, span_doc = T.induction_spans(held, span_len, int(ind["n_spans"]), int(ind["seed"]))
    rand = T.random_spans(V, eos, span_len, int(ind["n_spans"]), int(ind["random_seed"]))
    ind_held = {}
    for key, sp, unit in (("text", spans, span_doc), ("random", rand, np.arange(len(rand)))):
        inputs, second, first = T.doubled(sp, eos, int(ind["score_from"]))
        ind_held[key] = (T.sequences(inputs, np.maximum(second, first), unit), span_len + int(ind["score_from"]))
    short_held, short_idx = T.short_context_windows(held, K)
    user_held = {}
    for name, items in user_items.items():
        ic, tc, inn, tn = T.user_windows(items, tok, arms.seq_len)
        user_held[name] = (T.sequences(ic, tc, np.arange(len(items))), T.sequences(inn, tn, np.arange(len(items))))
    if progress:
        print(f"[tasks] {len(arms.arms)} arms x {S} seeds; {held.n_tokens:,} held-out tokens "
              f"({len(np.unique(held.doc))} documents), {len(spans)} induction spans of {span_len}, "
              f"{len(user_items)} user file(s)", file=sys.stderr, flush=True)

    rows = {k: [] for k in ["full", "short", "ind-text", "ind-random"] + list(user_held)}
    ctx_free = {k: [] for k in user_held}
    for s in range(S):
        models = {a: arms.load(a, s, device) for a in arms.arms}
        for m in models.values():
            if int(m.cfg.vocab_size) != V:
                raise MyopiaError(f"a model has vocabulary {m.cfg.vocab_size}, the data {V}")
        base = {arms.baseline: models[arms.baseline]}
        rows["full"].append(score(models, held, V, device))
        full_loss = rows["full"][-1][arms.baseline]["loss"]
        short = full_loss.copy()
        if short_held.n_tokens:
            short[short_idx] = score(base, short_held, V, device, batch_size=512)[arms.baseline]["loss"]
        rows["short"].append(short)
        rows["ind-text"].append(score(models, ind_held["text"][0], V, device))
        rows["ind-random"].append(score(models, ind_held["random"][0], V, device))
        for name, (hc, hn) in user_held.items():
            rows[name].append(score(models, hc, V, device))
            ctx_free[name].append(score(base, hn, V, device)[arms.baseline]["loss"])
        if progress:
            print(f"[tasks] seed {s + 1}/{S}: " + ", ".join(
                f"{a} {rows['full'][-1][a]['loss'].mean():.4f}" for a in arms.arms), file=sys.stderr, flush=True)

    A, B = arms.arms, arms.baseline
    seed = int(suite["bootstrap_seed"])
    _, doc_unit = np.unique(held.doc, return_inverse=True)
    doc_ids = np.unique(held.doc)
    boot = HierarchicalBootstrap(len(doc_ids), S, n_boot, seed)
    loss, correct = _stack(rows["full"], "loss", A), _stack(rows["full"], "correct", A)
    value = np.stack(rows["short"]) - loss[B]
    results: dict[str, dict] = {}
    masks = T.window_masks(held, texts, int(suite["repeat-mention"]["min_chars"]),
                           int(suite["closing"]["min_distance"]))

    def text_task(mask):
        return task_record(boot, Scores(loss, correct, value, mask, doc_unit), A, B)

    if "induction" in names:
        start = ind_held["text"][1]

        def ind_scores(key, unit_of):
            h = ind_held[key][0]
            sec, fir = h.position >= start, h.position < start
            lo = _stack(rows[f"ind-{key}"], "loss", A)
            co = _stack(rows[f"ind-{key}"], "correct", A)
            return Scores({a: v[:, sec] for a, v in lo.items()}, {a: v[:, sec] for a, v in co.items()},
                          lo[B][:, fir] - lo[B][:, sec], np.ones(int(sec.sum()), bool), unit_of(h.doc[sec]))

        rec = task_record(boot, ind_scores("text", lambda d: np.searchsorted(doc_ids, d)), A, B)
        rboot = HierarchicalBootstrap(len(rand), S, n_boot, seed)
        rrec = task_record(rboot, ind_scores("random", lambda d: d), A, B)
        rec.update(n=len(spans), n_tokens=rec["n"], unit="document")
        rrec.update(n=len(rand), n_tokens=rrec["n"], unit="span")
        rec["variants"] = {"random": rrec}
        rec["definition"] = (f"[eos, span, span] with held-out spans of {span_len} tokens; loss on the second "
                             f"copy's tokens {ind['score_from']}..{span_len - 1}; value of context = first copy "
                             "minus second copy (vanilla); variant random: uniformly random tokens")
        results["induction"] = rec
    if "repeat-mention" in names:
        rec = text_task(masks["repeat-mention"])
        rec["variants"] = {"first_mentions": text_task(masks["first-mention"])}
        rec["definition"] = (f"non-initial tokens of multi-token words of >= {suite['repeat-mention']['min_chars']} "
                             "characters already seen earlier in the window; variant first_mentions: the same "
                             "tokens of words not seen before")
        results["repeat-mention"] = rec
    if "long-range" in names:
        lr = suite["long-range"]
        sel = T.long_range(loss[B], np.stack(rows["short"]), float(lr["threshold_nats"]))
        rec = text_task(sel)
        rec["definition"] = (f"tokens whose vanilla loss with the context cut to the last {K} "
                             f"tokens exceeds the full-context loss by >= {lr['threshold_nats']} nats "
                             + ("(selected for each seed by the other vanilla seeds)" if S > 1 else
                                "(selected by the same vanilla model that is compared: 1 seed, selection bias "
                                "not removed)"))
        results["long-range"] = rec
    if "closing" in names:
        rec = text_task(masks["closing"])
        rec["definition"] = (f"closing brackets and quotes whose opener is >= {suite['closing']['min_distance']} "
                             "tokens back in the window")
        results["closing"] = rec
    if "word-continuation" in names:
        rec = text_task(T.word_continuations(held, tok, V))
        rec["definition"] = f"non-initial tokens of words ({tok.kind} tokenizer)"
        results["word-continuation"] = rec
    for name, (hc, hn) in user_held.items():
        n_items = len(user_items[name])
        lo = {a: T.per_item(_stack(rows[name], "loss", A)[a], hc.window, n_items) for a in A}
        co = {a: T.per_item(_stack(rows[name], "correct", A)[a], hc.window, n_items, "all") for a in A}
        nctx = T.per_item(np.stack(ctx_free[name]), hn.window, n_items)
        uboot = HierarchicalBootstrap(n_items, S, n_boot, seed)
        rec = task_record(uboot, Scores(lo, co, nctx - lo[B], np.ones(n_items, bool), np.arange(n_items)), A, B)
        rec["definition"] = ("total negative log-likelihood (nats/item) of the continuation after the context; "
                             "accuracy: greedy exact match; value of context: continuation after [eos] alone "
                             "minus after its context")
        rec["unit"] = "item"
        labels = [it.label for it in user_items[name]]
        if any(lab is not None for lab in labels):
            rec["labels"] = sorted({lab for lab in labels if lab is not None})
        results[name] = rec
    family = apply_holm(results)
    result = {
        "kind": "myopia-tasks",
        "suite": {**suite, "induction": {**ind, "span_len_used": span_len}},
        "tasks": results,
        "arms": A,
        "baseline": B,
        "n_seeds": S,
        "holm_family_size": family,
        "held_out": {"split": arms.split, "n_tokens": int(held.n_tokens), "n_docs": int(len(doc_ids)),
                     "seq_len": int(arms.seq_len)},
        "units": {"loss": "nats/token (user tasks: nats/item)", "accuracy": "fraction of items"},
        "definition": "gap = loss(arm) - loss(baseline) on the same items, same seed (positive: the arm is worse); "
                      "accuracy gap = accuracy(arm) - accuracy(baseline); fraction_of_context_value = gap / "
                      "the baseline's value of context on the task (replicate by replicate)",
        "config": {**arms.source, "n_boot": n_boot, "tasks": names, "user_files": [str(f) for f in user or []]},
        **provenance(),
    }
    write_json(out / TASKS_JSON, result)
    return result
