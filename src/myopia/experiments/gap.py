"""``myopia gap DIR``: evaluate a pair's models on held-out documents and locate the myopia gap.

Writes ``DIR/gap.json`` (the summary: gaps with seed-inclusive 95% intervals in nats/token, bits per byte and as
a fraction of the value of context, overall, by position, slice and token class, the vanilla-vs-vanilla null,
top contexts and their null, config and provenance; see :mod:`myopia.analysis.gap`) and
``DIR/gap/per_token.npz`` (per-token arrays: ``loss.<arm>`` and ``kl.<arm>`` of shape (seeds, N), and
``target``, ``prev``, ``doc``, ``position``, ``window``, ``token_class``, ``count_bigram``, ``bytes``,
``seeds``). Each checkpoint is scored in one pass over the held-out tokens.

Data other than the pair's own split (``--data``) is refused when any of its evaluated documents has the
content of one of the pair's training documents (:func:`myopia.data.overlap.refuse_overlap`), before anything
is scored or written.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from ..analysis.gap import analyse_gap
from ..analysis.heldout import HeldOut, count_bigram_losses, document_windows, evaluate_per_token, model_scorer
from ..analysis.token_classes import CLASSES, classify_tokens
from ..analysis.units import bytes_of_tokens
from ..data import load_corpus
from ..data.cache import is_cache, open_cache
from ..data.overlap import overlapping_documents, refuse_overlap
from ..data.sources import DataSource
from ..errors import MyopiaError
from ..io import atomic_write_bytes, provenance, read_json, write_json
from ..rundir import MODEL, load_run_model
from .pair import read_manifest, resolve_cache, run_dir

GAP_JSON = "gap.json"
ARRAYS = Path("gap") / "per_token.npz"


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise MyopiaError(f"{path} does not exist; run myopia gap first")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def pair_corpus(pair_dir: Path, manifest: dict, data=None):
    """(corpus to evaluate on, the pair's own corpus): ``data`` is tokenized with the pair's tokenizer.

    Data with the source fingerprint, split settings (and tokenizer) of the pair's own corpus *is* the pair's
    corpus.
    """
    own = open_cache(resolve_cache(pair_dir, manifest))
    if data is None:
        return own, own
    split = own.info.get("split") or {}
    if not str(data).startswith("hf:") and is_cache(data):
        other = open_cache(data)
        same = (other.info.get("source_fingerprint") == own.info.get("source_fingerprint")
                and other.tokenizer.fingerprint() == own.tokenizer.fingerprint())
    else:
        same = DataSource.from_spec(data).fingerprint() == own.info.get("source_fingerprint")
        other = None if same else load_corpus(data, own.tokenizer, **split)
    if same and (other is None or other.info.get("split") == split):
        return own, own
    return other, own


def trained_arms(manifest: dict, pair_dir: Path) -> tuple[list[str], list[int], list[str]]:
    """(arms finished for every seed that has vanilla, those seeds, arms skipped)."""
    names = [a["name"] for a in manifest["arms"]]
    seeds = [s for s in manifest["seeds"] if (run_dir(pair_dir, "vanilla", s) / MODEL).is_file()]
    if not seeds:
        raise MyopiaError(f"{pair_dir}: no finished vanilla run; train the pair first (myopia pair)")
    arms = [a for a in names if all((run_dir(pair_dir, a, s) / MODEL).is_file() for s in seeds)]
    return arms, seeds, [a for a in names if a not in arms]


def held_out(corpus, split: str, seq_len: int, own_corpus: bool, max_docs=None) -> HeldOut:
    if split == "all":
        if own_corpus:
            raise MyopiaError("--split all would evaluate on training documents; use it only with --data OTHER")
        corpus.doc_split = np.full(corpus.n_docs, 2, dtype=np.int8)  # every document of a foreign corpus
        split = "test"
    if split == "train":
        raise MyopiaError("the gap is measured on held-out documents: use --split test or val")
    return document_windows(corpus, split, seq_len, max_docs=max_docs)


def reused_scores(pair_dir: Path, held: HeldOut, arms: list[str], seeds: list[int]) -> tuple[dict, dict]:
    """(losses, kls) from ``DIR/gap/per_token.npz`` when it holds exactly these tokens, arms and seeds and no model
    is newer than it; else MyopiaError."""
    path = pair_dir / ARRAYS
    a = load_arrays(path)
    same = (a["seeds"].tolist() == list(seeds) and len(a["doc"]) == held.n_tokens
            and all(np.array_equal(a[k], getattr(held, k)) for k in ("doc", "position", "target"))
            and all(f"loss.{arm}" in a for arm in arms) and all(f"kl.{arm}" in a for arm in arms if arm != "vanilla"))
    if not same:
        raise MyopiaError(f"{path} holds scores of other tokens, seeds or arms; run myopia gap without reusing them")
    stamp = path.stat().st_mtime
    newer = [str(run_dir(pair_dir, arm, s)) for arm in arms for s in seeds
             if (run_dir(pair_dir, arm, s) / MODEL).stat().st_mtime > stamp]
    if newer:
        raise MyopiaError(f"{newer[0]} was trained after {path} was scored; run myopia gap without reusing scores")
    return ({arm: a[f"loss.{arm}"] for arm in arms}, {arm: a[f"kl.{arm}"] for arm in arms if arm != "vanilla"})


def check_overlap(own_corpus, corpus, held: HeldOut, own: bool, *, what: str) -> dict:
    """Refuse (MyopiaError naming how many overlap) held-out documents of foreign data whose content is one of the
    pair's training documents; returns what was checked, for the result file."""
    eval_docs = np.unique(held.doc)
    if own:  # the pair's own split: documents are disjoint by construction; duplicates of content still count
        n_dup = len(overlapping_documents(own_corpus, corpus, eval_docs))
        return {"checked": True, "data": "pair corpus", "documents": int(len(eval_docs)),
                "same_content_as_training": n_dup}
    refuse_overlap(own_corpus, corpus, eval_docs, what=what)
    return {"checked": True, "data": "other corpus", "documents": int(len(eval_docs)), "overlapping": 0,
            "training_documents": int(len(own_corpus.split_docs("train")))}


def scoring_context(pair_dir: Path, arms: list[str], seeds: list[int]) -> dict:
    """How held-out tokens are scored, and whether each arm trained with document masks (runs saved before
    ``document_mask`` existed trained without)."""
    masked = {a: all(read_json(run_dir(pair_dir, a, s) / "config.json").get("train", {}).get("document_mask", False)
                     for s in seeds) for a in arms}
    note = ("each held-out document is scored on its own ([eos] + document, windows of seq_len): exactly the "
            "attention of document-masked training")
    if not all(masked.values()):
        unmasked = ", ".join(a for a in arms if not masked[a])
        note += (f"; trained without document masks (attending across document boundaries): {unmasked}, whose "
                 "training context differed from this scoring context at document starts")
    return {"document_mask": masked, "note": note}


def run_gap(pair_dir, *, split: str = "test", data=None, max_docs: int | None = None, n_boot: int = 2000,
            top_k: int = 20, device: str = "cpu", progress: bool = True, reuse_scores: bool = False) -> dict:
    """Evaluate every arm of the pair on held-out documents; write gap.json and per-token arrays.

    ``reuse_scores``: take the per-token losses from an earlier ``gap/per_token.npz`` of exactly these tokens, seeds
    and arms instead of scoring again (refused when a model is newer than those scores), e.g. to re-analyse."""
    pair_dir = Path(pair_dir)
    manifest = read_manifest(pair_dir)
    corpus, own_corpus = pair_corpus(pair_dir, manifest, data)
    own = corpus is own_corpus
    arms, seeds, skipped = trained_arms(manifest, pair_dir)
    seq_len = int(manifest["model"]["seq_len"])
    held = held_out(corpus, split, seq_len, own, max_docs)
    overlap = check_overlap(own_corpus, corpus, held, own, what=f"myopia gap --data {data}")
    if overlap.get("same_content_as_training") and progress:
        print(f"warning: {overlap['same_content_as_training']} of {overlap['documents']} {split} documents have the "
              "content of a training document (duplicates in the corpus)", file=sys.stderr)
    if progress:
        print(f"[gap] {len(arms)} arms x {len(seeds)} seeds on {held.n_tokens:,} {split} tokens "
              f"({len(np.unique(held.doc))} documents)", file=sys.stderr, flush=True)
    losses = {a: np.zeros((len(seeds), held.n_tokens), dtype=np.float32) for a in arms}
    kls = {a: np.zeros((len(seeds), held.n_tokens), dtype=np.float32) for a in arms if a != "vanilla"}
    if reuse_scores:
        losses, kls = reused_scores(pair_dir, held, arms, seeds)
    for si, seed in enumerate([] if reuse_scores else seeds):
        models = {a: load_run_model(run_dir(pair_dir, a, seed), device=device, corpus=corpus, finished=True)
                  for a in arms}
        res = evaluate_per_token({a: model_scorer(m) for a, m in models.items()}, held, reference="vanilla",
                                 vocab_size=corpus.vocab_size, device=device)
        for a in arms:
            losses[a][si] = res[a]["loss"]
            if a in kls:
                kls[a][si] = res[a]["kl"]
        if progress:
            print(f"[gap] seed {seed}: " + ", ".join(f"{a} {losses[a][si].mean():.4f}" for a in arms),
                  file=sys.stderr, flush=True)
    token_class = classify_tokens(held.target, held.prev, corpus.tokenizer, corpus.vocab_size)
    bigram = count_bigram_losses(own_corpus, held)
    token_bytes, bytes_method = bytes_of_tokens(held.target, corpus.tokenizer, corpus.vocab_size)
    summary = analyse_gap(losses, kls, held, doc_slices=corpus.doc_slices, token_class=token_class,
                          tokenizer=corpus.tokenizer, count_bigram=bigram, token_bytes=token_bytes, n_boot=n_boot,
                          top_k=top_k)
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
        "scoring": scoring_context(pair_dir, arms, seeds),
        "config": {"pair_dir": str(pair_dir), "split": split, "data": str(data) if data else "pair corpus",
                   "max_docs": max_docs, "n_boot": n_boot, "top_k": top_k,
                   "scores": f"reused from {ARRAYS}" if reuse_scores else "scored here",
                   "model": manifest["model"],
                   "train": manifest["train"], "corpus": corpus.describe(),
                   "runs": {a: {str(s): str(run_dir(pair_dir, a, s).relative_to(pair_dir)) for s in seeds}
                            for a in arms}},
        **provenance(),
    }
    arrays = {"target": held.target, "prev": held.prev, "doc": held.doc, "position": held.position,
              "window": held.window, "token_class": token_class, "seeds": np.asarray(seeds)}
    arrays["count_bigram"] = bigram
    arrays["bytes"] = token_bytes.astype(np.float32)
    arrays.update({f"loss.{a}": v for a, v in losses.items()})
    arrays.update({f"kl.{a}": v for a, v in kls.items()})
    save_arrays(pair_dir / ARRAYS, arrays)
    write_json(pair_dir / GAP_JSON, result)
    return result
