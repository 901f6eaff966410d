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
from ..analysis.competence import competence
from ..analysis.heldout import HeldOut, document_windows, evaluate_per_token
from ..analysis.stats import HierarchicalBootstrap, Resampled, holm, masked_means, null_gap
from ..data.cache import is_cache
from ..errors import MyopiaError
from ..io import exclusive_writer, provenance, read_json, write_json
from ..pairdir import PairDir
from ..rundir import GAP_JSON, is_run, load_model, load_run_model, parse_runs, run_tokenizer, training_corpus

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
        """Seeds per arm (the baseline's)."""
        return len(self.paths[self.baseline])

    def load(self, arm: str, s: int, device="cpu"):
        """The model of ``arm`` for its ``s``-th seed (eval mode, on ``device``)."""
        return load_any(self.paths[arm][s], device)


def load_any(path: Path, device="cpu"):
    """The model of a run folder of ours or of ``myopia finetune``, or of a Hugging Face model directory."""
    path = Path(path)
    if is_run(path):
        return load_run_model(path, device=device, finished=True)
    return load_model(path, device=device)[0]


def load_tokenizer(path: Path):
    """The tokenizer of a run folder (bytes, a finetune's saved one) or of a Hugging Face model directory."""
    from ..hf.tokenizer import load_hf_tokenizer

    path = Path(path)
    if is_run(path):
        return run_tokenizer(path)
    return load_hf_tokenizer(path)


def pair_arms(pair_dir, data=None, split="test", drop_overlap: bool = False) -> ArmSet:
    """The trained arms and seeds of a pair folder, on its own held-out split or on foreign ``data`` (refused when
    a document overlaps the pair's training documents)."""
    pair = PairDir(pair_dir)
    corpus, own = pair.eval_corpus(data)
    arms, seeds, skipped = pair.trained_arms()
    fingerprint = pair.check_same_data(arms, seeds)
    if corpus is not own and split == "all":
        corpus.doc_split = np.full(corpus.n_docs, 2, dtype=np.int8)
        split = "test"
    elif corpus is own and split in ("all", "train"):
        raise MyopiaError("the suite is scored on held-out documents: use --split test or val (--split all only "
                          "with --data OTHER)")
    kept, overlap = pair.check_overlap(corpus, corpus.split_docs(split), what=f"myopia tasks ({split} documents)",
                                       drop=drop_overlap)
    _exclude_dropped(corpus, split, kept)
    return ArmSet(arms, pair.run_paths(arms, seeds), "vanilla", corpus, split, pair.seq_len,
                  {"pair_dir": str(pair.path), "seeds": seeds, "skipped_arms": skipped,
                   "scoring": pair.scoring_context(arms, seeds), "overlap": overlap, "data_fingerprint": fingerprint,
                   "data": str(data) if data else "pair corpus", "corpus": corpus.describe()})


def _exclude_dropped(corpus, split: str, kept) -> None:
    """Take the scored documents of ``split`` that are not ``kept`` out of every split (in memory)."""
    from ..data.overlap import EXCLUDED

    dropped = np.setdiff1d(corpus.split_docs(split), kept)
    if len(dropped):
        corpus.doc_split = np.asarray(corpus.doc_split, dtype=np.int8).copy()
        corpus.doc_split[dropped] = EXCLUDED


def runs_arms(runs: list[str], baseline: str | None, data, split="test", drop_overlap: bool = False) -> ArmSet:
    """The arms of ``--runs`` (run folders or Hugging Face directories; several paths are seeds of one arm) on
    ``data``, checked for overlap with the baseline's training split when that is one of our token caches."""
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
    train = training_corpus(paths[baseline][0])
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
    overlap = _runs_overlap(paths, corpus, split, data, drop_overlap)
    arms = [baseline] + [a for a in paths if a != baseline]
    return ArmSet(arms, paths, baseline, corpus, split, seq_len,
                  {"runs": {a: [str(p) for p in ps] for a, ps in paths.items()}, "data": str(data),
                   "overlap": overlap, "corpus": corpus.describe()})


def _runs_overlap(paths: dict, corpus, split: str, data, drop_overlap: bool) -> dict | str:
    """Check the scored documents against the training split of EVERY run of ours among ``paths`` (arms trained
    on different corpora each get their own pass); runs whose training data is unknown (Hugging Face models) are
    named as unchecked. Refuses in one line unless ``drop_overlap``."""
    from ..data.overlap import check_corpus_overlap

    known = {}
    for arm, ps in paths.items():
        for i, path in enumerate(ps):
            train = training_corpus(path)
            if train is not None:
                known[f"{arm}[{i}]"] = train
    unknown = [f"{arm}[{i}]" for arm, ps in paths.items() for i in range(len(ps)) if f"{arm}[{i}]" not in known]
    if not known:
        return "not checked: no run's training corpus is known (not runs of ours with their token cache)"
    same = {k: c for k, c in known.items() if c is corpus}
    others = {k: c for k, c in known.items() if c is not corpus}
    if same and split not in ("test", "val"):
        raise MyopiaError("the suite is scored on held-out documents of the runs' own corpus: --split test or val")
    kept, summary = check_corpus_overlap(corpus, corpus.split_docs(split), {**same, **others}, drop=drop_overlap,
                                         what=f"myopia tasks --runs (--data {data})")
    _exclude_dropped(corpus, split, kept)
    summary["unchecked_runs"] = unknown
    return summary


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
    """{task name: items} of the user task files (two files of one name are refused)."""
    out = {}
    for f in files or []:
        name = T.user_task_name(f)
        if name in out:
            raise MyopiaError(f"{f}: two user task files share the name {name}")
        out[name] = T.read_user_task(f)
    return out


@dataclass
class TokenSets:
    """What the suite scores: the held-out windows, the induction sequences ([eos, span, span]) of held-out text
    and of random tokens, the short-context windows, and each user task's (with context, without context)."""

    held: HeldOut
    span_len: int
    spans: np.ndarray
    rand: np.ndarray
    induction: dict  # "text"/"random" -> (HeldOut of the doubled spans, first scored position)
    short: HeldOut | None  # None: no requested task reads the value of context on the held-out text
    short_idx: np.ndarray | None
    user: dict  # name -> (HeldOut with context, HeldOut without)


# the text tasks whose value of context compares the baseline with its context cut to the suite's short_context
# (one short window per held-out token: most of the suite's scoring time); induction and user tasks have their own
SHORT_CONTEXT_TASKS = ("repeat-mention", "long-range", "closing", "word-continuation")


def token_sets(arms: ArmSet, suite: dict, user_items: dict, short: bool = True) -> TokenSets:
    """Build every token set the suite scores (no model is run); ``short=False`` leaves out the short-context
    windows (when no task of :data:`SHORT_CONTEXT_TASKS` is requested)."""
    tok, V = arms.corpus.tokenizer, int(arms.corpus.vocab_size)
    eos = int(tok.eos_id)
    held = capped_held_out(arms, int(suite["max_docs"]), int(suite["max_tokens"]))
    ind = suite["induction"]
    span_len = min(int(ind["span_len"]), (arms.seq_len - 1) // 2)
    spans, span_doc = T.induction_spans(held, span_len, int(ind["n_spans"]), int(ind["seed"]))
    rand = T.random_spans(V, eos, span_len, int(ind["n_spans"]), int(ind["random_seed"]))
    ind_held = {}
    for key, sp, unit in (("text", spans, span_doc), ("random", rand, np.arange(len(rand)))):
        inputs, second, first = T.doubled(sp, eos, int(ind["score_from"]))
        ind_held[key] = (T.sequences(inputs, np.maximum(second, first), unit), span_len + int(ind["score_from"]))
    short_held, short_idx = T.short_context_windows(held, int(suite["short_context"])) if short else (None, None)
    user_held = {}
    for name, items in user_items.items():
        ic, tc, inn, tn = T.user_windows(items, tok, arms.seq_len)
        user_held[name] = (T.sequences(ic, tc, np.arange(len(items))), T.sequences(inn, tn, np.arange(len(items))))
    return TokenSets(held, span_len, spans, rand, ind_held, short_held, short_idx, user_held)


def score_seeds(arms: ArmSet, sets: TokenSets, device: str, progress: bool) -> tuple[dict, dict]:
    """(rows, ctx_free): per token set a list over seeds of :func:`score`'s output ("short": the baseline's
    per-token loss with the context cut; empty when ``sets.short`` is None), and per user task the baseline's loss
    without the context."""
    V, S = int(arms.corpus.vocab_size), arms.n_seeds
    rows = {k: [] for k in ["full", "short", "ind-text", "ind-random"] + list(sets.user)}
    ctx_free = {k: [] for k in sets.user}
    for s in range(S):
        models = {a: arms.load(a, s, device) for a in arms.arms}
        for m in models.values():
            if int(m.cfg.vocab_size) != V:
                raise MyopiaError(f"a model has vocabulary {m.cfg.vocab_size}, the data {V}")
        base = {arms.baseline: models[arms.baseline]}
        rows["full"].append(score(models, sets.held, V, device))
        if sets.short is not None:
            short = rows["full"][-1][arms.baseline]["loss"].copy()
            if sets.short.n_tokens:
                short[sets.short_idx] = score(base, sets.short, V, device, batch_size=512)[arms.baseline]["loss"]
            rows["short"].append(short)
        rows["ind-text"].append(score(models, sets.induction["text"][0], V, device))
        rows["ind-random"].append(score(models, sets.induction["random"][0], V, device))
        for name, (hc, hn) in sets.user.items():
            rows[name].append(score(models, hc, V, device))
            ctx_free[name].append(score(base, hn, V, device)[arms.baseline]["loss"])
        if progress:
            print(f"[tasks] seed {s + 1}/{S}: " + ", ".join(
                f"{a} {rows['full'][-1][a]['loss'].mean():.4f}" for a in arms.arms), file=sys.stderr, flush=True)
    return rows, ctx_free


def induction_record(sets: TokenSets, rows: dict, A: list[str], B: str, S: int, n_boot: int, seed: int,
                     ind: dict) -> dict:
    """The induction task (held-out spans, documents as units) with its variant of random spans (spans as
    units): the second copy's tokens, value of context = first copy minus second copy (baseline)."""
    start = sets.induction["text"][1]
    doc_ids = np.unique(sets.held.doc)

    def ind_scores(key, unit_of):
        h = sets.induction[key][0]
        sec, fir = h.position >= start, h.position < start
        lo = _stack(rows[f"ind-{key}"], "loss", A)
        co = _stack(rows[f"ind-{key}"], "correct", A)
        return Scores({a: v[:, sec] for a, v in lo.items()}, {a: v[:, sec] for a, v in co.items()},
                      lo[B][:, fir] - lo[B][:, sec], np.ones(int(sec.sum()), bool), unit_of(h.doc[sec]))

    boot = HierarchicalBootstrap(len(doc_ids), S, n_boot, seed)
    rec = task_record(boot, ind_scores("text", lambda d: np.searchsorted(doc_ids, d)), A, B)
    rboot = HierarchicalBootstrap(len(sets.rand), S, n_boot, seed)
    rrec = task_record(rboot, ind_scores("random", lambda d: d), A, B)
    rec.update(n=len(sets.spans), n_tokens=rec["n"], unit="document")
    rrec.update(n=len(sets.rand), n_tokens=rrec["n"], unit="span")
    rec["variants"] = {"random": rrec}
    rec["definition"] = (f"[eos, span, span] with held-out spans of {sets.span_len} tokens; loss on the second "
                         f"copy's tokens {ind['score_from']}..{sets.span_len - 1}; value of context = first copy "
                         "minus second copy (vanilla); variant random: uniformly random tokens")
    return rec


def user_record(name: str, items: list, sets: TokenSets, rows: dict, ctx_free: dict, A: list[str], B: str, S: int,
                n_boot: int, seed: int) -> dict:
    """A user task: total loss per item of the continuation after its context, items as units."""
    hc, hn = sets.user[name]
    n_items = len(items)
    lo = {a: T.per_item(_stack(rows[name], "loss", A)[a], hc.window, n_items) for a in A}
    co = {a: T.per_item(_stack(rows[name], "correct", A)[a], hc.window, n_items, "all") for a in A}
    nctx = T.per_item(np.stack(ctx_free[name]), hn.window, n_items)
    uboot = HierarchicalBootstrap(n_items, S, n_boot, seed)
    rec = task_record(uboot, Scores(lo, co, nctx - lo[B], np.ones(n_items, bool), np.arange(n_items)), A, B)
    rec["definition"] = ("total negative log-likelihood (nats/item) of the continuation after the context; "
                         "accuracy: greedy exact match; value of context: continuation after [eos] alone "
                         "minus after its context")
    rec["unit"] = "item"
    labels = [it.label for it in items]
    if any(lab is not None for lab in labels):
        rec["labels"] = sorted({lab for lab in labels if lab is not None})
    return rec


def suite_records(names: list[str], arms: ArmSet, sets: TokenSets, rows: dict, ctx_free: dict, user_items: dict,
                  suite: dict, n_boot: int) -> dict[str, dict]:
    """{task: record} of every requested task of the suite and every user task (Holm not yet applied)."""
    A, B, S = arms.arms, arms.baseline, arms.n_seeds
    tok, V, K = arms.corpus.tokenizer, int(arms.corpus.vocab_size), int(suite["short_context"])
    seed = int(suite["bootstrap_seed"])
    held = sets.held
    _, doc_unit = np.unique(held.doc, return_inverse=True)
    boot = HierarchicalBootstrap(len(np.unique(held.doc)), S, n_boot, seed)
    loss, correct = _stack(rows["full"], "loss", A), _stack(rows["full"], "correct", A)
    value = np.stack(rows["short"]) - loss[B] if rows["short"] else None
    masks = T.window_masks(held, T.vocab_texts(tok, V), int(suite["repeat-mention"]["min_chars"]),
                           int(suite["closing"]["min_distance"]))

    def text_task(mask):
        if value is None:
            raise AssertionError("a text task was scored without the short-context rows (SHORT_CONTEXT_TASKS)")
        return task_record(boot, Scores(loss, correct, value, mask, doc_unit), A, B)

    results: dict[str, dict] = {}
    if "induction" in names:
        results["induction"] = induction_record(sets, rows, A, B, S, n_boot, seed, suite["induction"])
    if "repeat-mention" in names:
        rec = text_task(masks["repeat-mention"])
        rec["variants"] = {"first_mentions": text_task(masks["first-mention"])}
        rec["definition"] = (f"non-initial tokens of multi-token words of >= {suite['repeat-mention']['min_chars']} "
                             "characters already seen earlier in the window; variant first_mentions: the same "
                             "tokens of words not seen before")
        results["repeat-mention"] = rec
    if "long-range" in names:
        lr = suite["long-range"]
        rec = text_task(T.long_range(loss[B], np.stack(rows["short"]), float(lr["threshold_nats"])))
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
    for name, items in user_items.items():
        results[name] = user_record(name, items, sets, rows, ctx_free, A, B, S, n_boot, seed)
    return results


def tasks_competence(gap_dir: Path | None, results: dict, seeds, split: str) -> dict:
    """tasks.json's ``competence``: vanilla's value of context on induction (scored here) with vanilla against the
    count 4-gram from the pair's gap.json (``gap_dir``: the pair directory, whatever ``--out`` is) when it was
    scored on the same seeds and split (else not measured)."""
    vs_4gram = None
    gap_path = None if gap_dir is None else Path(gap_dir) / GAP_JSON
    if gap_path is not None and gap_path.is_file():
        g = read_json(gap_path)
        if (seeds is None or g.get("seeds") == list(seeds)) and g.get("split", split) == split:
            vs_4gram = (g.get("competence") or {}).get("vanilla_minus_4gram")
    return competence(vs_4gram, (results.get("induction") or {}).get("value_of_context"))


def run_tasks(pair_dir=None, *, runs=None, baseline=None, out=None, data=None, split="test", user=None,
              tasks=None, n_boot: int = 2000, device: str = "cpu", progress: bool = True,
              drop_overlap: bool = False) -> dict:
    """Score the suite; write OUT/tasks.json (everything is checked before anything is scored or written: the
    runs' data fingerprints, the scored documents against every arm's training split, one writer at a time)."""
    names = T.check_task_names(tasks)
    user_items = read_user_files(user)
    if (pair_dir is None) == (not runs):
        raise MyopiaError("give either a pair directory or --runs (exactly one of them)")
    if runs and out is None:
        raise MyopiaError("--runs needs --out (the folder for tasks.json)")
    arms = (pair_arms(pair_dir, data, split, drop_overlap) if pair_dir is not None
            else runs_arms(runs, baseline, data, split, drop_overlap))
    out = Path(out if out is not None else pair_dir)
    gap_dir = Path(pair_dir) if pair_dir is not None and data is None else None  # another corpus: not its tokens
    with exclusive_writer(out, "tasks results"):
        return _score_suite_and_write(arms, out, names, user_items, user, n_boot, device, progress, gap_dir)


def _score_suite_and_write(arms: ArmSet, out: Path, names, user_items, user, n_boot, device, progress,
                           gap_dir: Path | None = None) -> dict:
    """Score the suite on every arm and seed, and write OUT/tasks.json (under the folder's writer lock)."""
    suite = T.SUITE
    if arms.corpus.tokenizer is None:
        raise MyopiaError("the suite needs decodable text: the corpus has no tokenizer (raw token ids)")
    sets = token_sets(arms, suite, user_items, short=any(n in SHORT_CONTEXT_TASKS for n in names))
    held = sets.held
    if progress:
        print(f"[tasks] {len(arms.arms)} arms x {arms.n_seeds} seeds; {held.n_tokens:,} held-out tokens "
              f"({len(np.unique(held.doc))} documents), {len(sets.spans)} induction spans of {sets.span_len}, "
              f"{len(user_items)} user file(s)", file=sys.stderr, flush=True)
    rows, ctx_free = score_seeds(arms, sets, device, progress)
    results = suite_records(names, arms, sets, rows, ctx_free, user_items, suite, n_boot)
    family = apply_holm(results)
    result = {
        "kind": "myopia-tasks",
        "suite": {**suite, "induction": {**suite["induction"], "span_len_used": sets.span_len}},
        "tasks": results,
        "competence": tasks_competence(gap_dir, results, arms.source.get("seeds"), arms.split),
        "arms": arms.arms,
        "baseline": arms.baseline,
        "n_seeds": arms.n_seeds,
        "holm_family_size": family,
        "held_out": {"split": arms.split, "n_tokens": int(held.n_tokens), "n_docs": int(len(np.unique(held.doc))),
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
