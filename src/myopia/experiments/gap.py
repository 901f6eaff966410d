"""``myopia gap DIR``: evaluate a pair's models on held-out documents and locate the myopia gap.

Writes ``DIR/gap.json`` (the summary: gaps with seed-inclusive 95% intervals in nats/token, bits per byte and as
a fraction of the value of context, overall, by position, slice and token class, the vanilla-vs-vanilla null,
top contexts and their null, config and provenance; see :mod:`myopia.analysis.gap`) and
``DIR/gap/per_token.npz`` (per-token arrays: ``loss.<arm>`` and ``kl.<arm>`` of shape (seeds, N), and
``target``, ``prev``, ``doc``, ``position``, ``window``, ``token_class``, ``count_bigram``, ``bytes``,
``seeds``). Each checkpoint is scored in one pass over the held-out tokens.

Data other than the pair's own split (``--data``) is refused when any of its evaluated documents has the
content of one of the pair's training documents (:meth:`myopia.pairdir.PairDir.check_overlap`), before anything
is scored or written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..analysis.gap import analyse_gap
from ..analysis.heldout import HeldOut, count_bigram_losses, evaluate_per_token, model_scorer
from ..analysis.token_classes import CLASSES, classify_tokens
from ..analysis.units import bytes_of_tokens
from ..errors import MyopiaError
from ..io import provenance, write_json
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
            top_k: int = 20, device: str = "cpu", progress: bool = True, reuse_scores: bool = False) -> dict:
    """Evaluate every arm of the pair on held-out documents; write gap.json and per-token arrays.

    ``reuse_scores``: take the per-token losses from an earlier ``gap/per_token.npz`` of exactly these tokens, seeds
    and arms instead of scoring again (refused when a model is newer than those scores), e.g. to re-analyse."""
    pair = PairDir(pair_dir)
    corpus, own_corpus = pair.eval_corpus(data)
    arms, seeds, skipped = pair.trained_arms()
    held = pair.held_out(corpus, split, max_docs)
    overlap = pair.check_overlap(corpus, held.doc, what=f"myopia gap --data {data}")
    if overlap.get("same_content_as_training") and progress:
        print(f"warning: {overlap['same_content_as_training']} of {overlap['documents']} {split} documents have the "
              "content of a training document (duplicates in the corpus)", file=sys.stderr)
    if progress:
        print(f"[gap] {len(arms)} arms x {len(seeds)} seeds on {held.n_tokens:,} {split} tokens "
              f"({len(np.unique(held.doc))} documents)", file=sys.stderr, flush=True)
    if reuse_scores:
        losses, kls = reused_scores(pair, held, arms, seeds)
    else:
        losses, kls = score_arms(pair, arms, seeds, held, corpus, device, progress)
    token_class = classify_tokens(held.target, held.prev, corpus.tokenizer, corpus.vocab_size)
    bigram = count_bigram_losses(own_corpus, held)
    token_bytes, bytes_method = bytes_of_tokens(held.target, corpus.tokenizer, corpus.vocab_size)
    summary = analyse_gap(losses, kls, held, doc_slices=corpus.doc_slices, token_class=token_class,
                          tokenizer=corpus.tokenizer, count_bigram=bigram, token_bytes=token_bytes, n_boot=n_boot,
                          top_k=top_k)
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
        "overlap": overlap,
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
    pair.save_arrays(ARRAYS, arrays)
    write_json(pair.path / GAP_JSON, result)
    return result
