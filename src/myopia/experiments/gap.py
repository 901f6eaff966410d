"""``myopia gap DIR``: evaluate a pair's models on held-out documents and locate the myopia gap.

Writes ``DIR/gap.json`` (the summary: gaps with seed-inclusive 95% intervals in nats/token, bits per byte and as
a fraction of the value of context, overall, by position, slice and token class, the vanilla-vs-vanilla null,
top contexts and their null, config and provenance; see :mod:`myopia.analysis.gap`) and
``DIR/gap/per_token.npz`` (per-token arrays: ``loss.<arm>`` and ``kl.<arm>`` of shape (seeds, N), and
``target``, ``prev``, ``doc``, ``position``, ``window``, ``token_class``, ``count_bigram``, ``bytes``,
``seeds``). Each checkpoint is scored in one pass over the held-out tokens.

Before anything is scored or written: every run must have trained on the same data (content fingerprints), and
the scored documents, of the pair's own held-out split or of other ``--data``, must not overlap the training
split exactly or as 13-gram near-duplicates (:meth:`myopia.pairdir.PairDir.check_overlap`; ``--drop-overlap``
leaves them out and counts them). gap.json also holds the count n-gram baselines on the same tokens, the
competence gate, the minimum detectable gap of every interval and its reading (:mod:`myopia.analysis.competence`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..analysis.competence import assess_gaps, competence, vanilla_vs_4gram
from ..analysis.gap import analyse_gap
from ..analysis.heldout import HeldOut, count_bigram_losses, evaluate_per_token, model_scorer
from ..analysis.ngram import baseline_losses, baseline_summary
from ..analysis.token_classes import CLASSES, classify_tokens
from ..analysis.units import bytes_of_tokens
from ..errors import MyopiaError
from ..io import exclusive_writer, provenance, write_json
from ..pairdir import GAP_ARRAYS as ARRAYS
from ..pairdir import PairDir
from ..rundir import GAP_JSON, MODEL, load_run_model


def reused_scores(pair: PairDir, held: HeldOut, arms: list[str], seeds: list[int]) -> tuple[dict, dict]:
    """(losses, kls) from ``DIR/gap/per_token.npz`` when it holds exactly these tokens, arms and seeds and no model
    is newer than it; else MyopiaError."""
    path = pair.path / ARRAYS
    if not path.is_file():
        pair.load_arrays(ARRAYS)  # the clear error: run myopia gap first
    a = pair.gap_scores(held, seeds, arms, with_kl=True)
    if a is None:
        raise MyopiaError(f"{path} holds scores of other tokens, seeds or arms; run myopia gap without reusing them")
    stamp = path.stat().st_mtime
    newer = [str(pair.run(arm, s)) for arm in arms for s in seeds if (pair.run(arm, s) / MODEL).stat().st_mtime > stamp]
    if newer:
        raise MyopiaError(f"{newer[0]} was trained after {path} was scored; run myopia gap without reusing scores")
    return ({arm: a[f"loss.{arm}"] for arm in arms}, {arm: a[f"kl.{arm}"] for arm in arms if arm != "vanilla"})


def score_arms(pair: PairDir, arms: list[str], seeds: list[int], held: HeldOut, corpus, device: str,
               progress: bool) -> tuple[dict, dict]:
    """(losses, kls): {arm: (seeds, N) float32} per-token losses of every arm and KL(vanilla || arm) of every arm
    but vanilla, each checkpoint scored in one pass over the held-out tokens."""
    losses = {a: np.zeros((len(seeds), held.n_tokens), dtype=np.float32) for a in arms}
    kls = {a: np.zeros((len(seeds), held.n_tokens), dtype=np.float32) for a in arms if a != "vanilla"}
    for si, seed in enumerate(seeds):
        models = {a: load_run_model(pair.run(a, seed), device=device, corpus=corpus, finished=True) for a in arms}
        res = evaluate_per_token({a: model_scorer(m) for a, m in models.items()}, held, reference="vanilla",
                                 vocab_size=corpus.vocab_size, device=device)
        for a in arms:
            losses[a][si] = res[a]["loss"]
            if a in kls:
                kls[a][si] = res[a]["kl"]
        if progress:
            print(f"[gap] seed {seed}: " + ", ".join(f"{a} {losses[a][si].mean():.4f}" for a in arms),
                  file=sys.stderr, flush=True)
    return losses, kls


def run_gap(pair_dir, *, split: str = "test", data=None, max_docs: int | None = None, n_boot: int = 2000,
            top_k: int = 20, device: str = "cpu", progress: bool = True, reuse_scores: bool = False,
            drop_overlap: bool = False) -> dict:
    """Evaluate every arm of the pair on held-out documents; write gap.json and per-token arrays.

    Everything is checked before anything is scored or written: every run trained on the same data (content
    fingerprints), the scored documents overlap no training document (exact or 13-gram near-duplicates; with
    ``drop_overlap`` they are left out and counted instead), and one process writes the folder's results at a time.
    ``reuse_scores``: take the per-token losses from an earlier ``gap/per_token.npz`` of exactly these tokens, seeds
    and arms instead of scoring again (refused when a model is newer than those scores), e.g. to re-analyse."""
    pair = PairDir(pair_dir)
    corpus, own_corpus = pair.eval_corpus(data)
    arms, seeds, skipped = pair.trained_arms()
    fingerprint = pair.check_same_data(arms, seeds)
    held = pair.held_out(corpus, split, max_docs)
    kept, overlap = pair.check_overlap(corpus, held.doc, what=f"myopia gap ({split} documents)", drop=drop_overlap)
    if len(kept) < len(np.unique(held.doc)):
        held = pair.keep_documents(corpus, split, kept, max_docs)
        if progress:
            print(f"[gap] dropped {overlap.get('dropped', 0)} documents that overlap training text",
                  file=sys.stderr, flush=True)
    with exclusive_writer(pair.path, "gap results"):
        return _score_and_write(pair, corpus, own_corpus, held, arms, seeds, skipped, overlap, fingerprint,
                                dict(split=split, data=data, max_docs=max_docs, n_boot=n_boot, top_k=top_k,
                                     device=device, progress=progress, reuse_scores=reuse_scores))


def baselines_and_competence(pair: PairDir, own_corpus, held: HeldOut, losses: dict, token_bytes, summary: dict,
                             seeds: list[int], n_boot: int) -> tuple[dict, dict, np.ndarray]:
    """(result entries, per-token arrays): the count n-gram baselines on exactly the scored tokens, the competence
    gate (vanilla against the 4-gram; induction from tasks.json when scored), stated power and the reading of every
    interval (:func:`myopia.analysis.competence.assess_gaps`)."""
    base_losses = baseline_losses(own_corpus, held)
    comp = competence(vanilla_vs_4gram(losses["vanilla"], base_losses["4gram"], held.doc, n_boot=n_boot),
                      pair.induction_value(seeds))
    entries = {"baselines": baseline_summary(base_losses, held, token_bytes, n_boot=n_boot),
               "competence": comp, **assess_gaps(summary, comp)}
    return entries, {f"baseline.{k}": v.astype(np.float32) for k, v in base_losses.items()}


def _score_and_write(pair: PairDir, corpus, own_corpus, held: HeldOut, arms, seeds, skipped, overlap, fingerprint,
                     opts: dict) -> dict:
    """Score (or reuse), analyse, and write gap.json and the per-token arrays (under the folder's writer lock)."""
    split, data, max_docs, n_boot, top_k = (opts[k] for k in ("split", "data", "max_docs", "n_boot", "top_k"))
    progress, reuse_scores = opts["progress"], opts["reuse_scores"]
    if progress:
        print(f"[gap] {len(arms)} arms x {len(seeds)} seeds on {held.n_tokens:,} {split} tokens "
              f"({len(np.unique(held.doc))} documents)", file=sys.stderr, flush=True)
    if reuse_scores:
        losses, kls = reused_scores(pair, held, arms, seeds)
    else:
        losses, kls = score_arms(pair, arms, seeds, held, corpus, opts["device"], progress)
    token_class = classify_tokens(held.target, held.prev, corpus.tokenizer, corpus.vocab_size)
    bigram = count_bigram_losses(own_corpus, held)
    token_bytes, bytes_method = bytes_of_tokens(held.target, corpus.tokenizer, corpus.vocab_size)
    summary = analyse_gap(losses, kls, held, doc_slices=corpus.doc_slices, token_class=token_class,
                          tokenizer=corpus.tokenizer, count_bigram=bigram, token_bytes=token_bytes, n_boot=n_boot,
                          top_k=top_k)
    entries, baseline_arrays = baselines_and_competence(pair, own_corpus, held, losses, token_bytes, summary, seeds,
                                                        n_boot)
    manifest = pair.manifest
    result = {
        "kind": "myopia-gap",
        **summary,
        "units": "nats/token",
        "units_also": {"bits_per_byte": f"total nats / UTF-8 bytes of the scored text / ln 2 (token bytes: "
                                        f"{bytes_method})",
                       "fraction_of_context_value": "gap / (count-bigram loss - vanilla loss), same tokens"},
        "definition": "gap = loss(arm) - loss(vanilla) on the same held-out tokens, same seed; mean over tokens "
                      "and seeds; relative = gap / loss(vanilla); null_gap = loss(vanilla seed i) - "
                      "loss(vanilla seed j), i < j; against_null = gap / null_gap.sd",
        **entries,
        "overlap": overlap,
        "data_fingerprint": fingerprint,
        "token_classes": list(CLASSES),
        "arms": arms,
        "seeds": seeds,
        "skipped_arms": skipped,
        "scoring": pair.scoring_context(arms, seeds),
        "config": {"pair_dir": str(pair.path), "split": split, "data": str(data) if data else "pair corpus",
                   "max_docs": max_docs, "n_boot": n_boot, "top_k": top_k,
                   "scores": f"reused from {ARRAYS}" if reuse_scores else "scored here",
                   "model": manifest["model"],
                   "train": manifest["train"], "corpus": corpus.describe(),
                   "runs": {a: {str(s): str(pair.run(a, s).relative_to(pair.path)) for s in seeds} for a in arms}},
        **provenance(),
    }
    arrays = {"target": held.target, "prev": held.prev, "doc": held.doc, "position": held.position,
              "window": held.window, "token_class": token_class, "seeds": np.asarray(seeds)}
    arrays["count_bigram"] = bigram
    arrays["bytes"] = token_bytes.astype(np.float32)
    arrays.update({f"loss.{a}": v for a, v in losses.items()})
    arrays.update({f"kl.{a}": v for a, v in kls.items()})
    arrays.update(baseline_arrays)
    pair.save_arrays(ARRAYS, arrays)
    write_json(pair.path / GAP_JSON, result)
    return result
