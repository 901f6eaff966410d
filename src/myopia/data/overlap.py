"""No silent leakage: refuse (or drop) scored documents that a model was trained on.

Two checks, both between every scored document and every arm's training split:

- **exact**: the SHA-1 of each document's token ids (end-of-document token excluded, ids as little-endian
  uint32), so a re-split or re-built cache of the same text is recognised whatever its document order or split
  seed (both corpora must use the same tokenizer, as they must anyway for the model to score them);
- **near-duplicate / contamination by word n-grams**, the convention of the GPT-3 paper (Brown et al. 2020,
  appendix C) and lm-evaluation-harness's decontamination: text lower-cased, ASCII punctuation deleted, split on
  whitespace; a scored document's n-grams are its windows of :data:`NGRAM` = 13 words (``min(13, L)`` for a
  document of L >= :data:`MIN_NGRAM` = 8 words; shorter ones are left to the exact check). Its *overlap* is the
  fraction of its n-grams that occur in some training document (n-grams never span two training documents);
  it is *flagged* when the overlap is at least :data:`OVERLAP_THRESHOLD` = 0.2 (fixed here, not a flag).

n-grams are compared as 64-bit polynomial hashes of word ids (vocabulary: the scored documents' words; a
training n-gram holding any other word cannot match), vectorised with numpy; a collision needs two different
13-grams with equal 64-bit hashes.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import MyopiaError
# TokenCorpus (myopia.data.corpus) appears in annotations only: corpus.py calls this module, so no import here.

NGRAM = 13  # words per n-gram (GPT-3 paper, lm-evaluation-harness)
MIN_NGRAM = 8  # documents with fewer words are checked exactly only (GPT-3's minimum n)
OVERLAP_THRESHOLD = 0.2  # a scored document with >= 20% of its n-grams in training text is flagged
EXCLUDED = 3  # doc_split code of a held-out document dropped as a near-duplicate of training text (in no split)
_DELETE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
_BASE = np.uint64(0x100000001B3)  # odd multiplier of the rolling hash (mod 2^64)
_BATCH_WORDS = 1 << 20  # training words hashed per numpy batch


def document_hashes(corpus: TokenCorpus, docs=None) -> list[str]:
    """Content hash (hex SHA-1 of the token ids without the trailing end-of-document token) of each of ``docs``
    (document indices; default all)."""
    docs = range(corpus.n_docs) if docs is None else docs
    off = np.asarray(corpus.doc_offsets, dtype=np.int64)
    out = []
    for d in docs:
        ids = np.asarray(corpus.tokens[off[d]:off[d + 1] - 1])  # every stored document ends with its end token
        out.append(hashlib.sha1(ids.astype("<u4").tobytes()).hexdigest())
    return out


def overlapping_documents(train: TokenCorpus, evaluation: TokenCorpus, eval_docs=None,
                          train_split: str = "train") -> np.ndarray:
    """Indices (into ``evaluation``) among ``eval_docs`` whose content equals a document of ``train``'s split."""
    eval_docs = np.arange(evaluation.n_docs) if eval_docs is None else np.asarray(eval_docs, dtype=np.int64)
    seen = set(document_hashes(train, train.split_docs(train_split)))
    hashes = document_hashes(evaluation, eval_docs)
    return np.asarray([d for d, h in zip(eval_docs, hashes) if h in seen], dtype=np.int64)


def refuse_overlap(train: TokenCorpus, evaluation: TokenCorpus, eval_docs=None, *, what: str = "evaluation data",
                   train_split: str = "train") -> None:
    """Raise MyopiaError ('... N of M documents overlap the training split ...') if any evaluation document was
    trained on. Call it before anything is written."""
    eval_docs = np.arange(evaluation.n_docs) if eval_docs is None else np.asarray(eval_docs, dtype=np.int64)
    bad = overlapping_documents(train, evaluation, eval_docs, train_split)
    if len(bad):
        raise MyopiaError(f"{what}: {len(bad)} of {len(eval_docs)} documents overlap the training split of the "
                          f"models being evaluated (same content); evaluate on held-out documents only")


# ------------------------------------------------------------------------------------------------------------
# Word n-gram overlap (near duplicates, contamination)
# ------------------------------------------------------------------------------------------------------------


def normalise_words(text: str) -> list[str]:
    """The words n-grams are made of: lower-cased, ASCII punctuation deleted, split on whitespace."""
    return text.translate(_DELETE).lower().split()


def _gram_hashes(ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (uint64) of the k-word windows of ``ids`` (int64, 0 = a word outside the vocabulary or a document
    boundary) and the start of each; windows holding a 0 are left out."""
    if len(ids) < k:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    a = ids.astype(np.uint64)
    m = len(ids) - k + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * _BASE + a[j:j + m]
    zeros = np.concatenate([[0], np.cumsum(ids == 0)])
    ok = zeros[k:] - zeros[:m] == 0
    return h[ok], np.flatnonzero(ok)


class _Scored:
    """The scored documents' n-grams for one n-gram length k: per document its hashes, and all unique ones."""

    def __init__(self, k: int, docs: list[int], grams: list[np.ndarray]):
        self.k, self.docs, self.grams = k, docs, grams
        self.unique = np.unique(np.concatenate(grams))


def _scored_grams(texts: Sequence[str], n: int) -> tuple[dict[str, int], list[_Scored]]:
    """The vocabulary of ``texts`` (word -> id >= 1) and their n-grams grouped by n-gram length."""
    vocab: dict[str, int] = {}
    by_k: dict[int, tuple[list[int], list[np.ndarray]]] = {}
    for i, text in enumerate(texts):
        ids = np.asarray([vocab.setdefault(w, len(vocab) + 1) for w in normalise_words(text)], dtype=np.int64)
        if len(ids) < MIN_NGRAM:
            continue
        k = min(n, len(ids))
        docs, grams = by_k.setdefault(k, ([], []))
        docs.append(i)
        grams.append(_gram_hashes(ids, k)[0])
    return vocab, [_Scored(k, d, g) for k, (d, g) in sorted(by_k.items())]


def _training_batches(training: Iterable[str], vocab: dict[str, int]):
    """Training text as word-id arrays of about _BATCH_WORDS words, documents separated by a 0."""
    batch: list[int] = []
    for text in training:
        batch.extend(vocab.get(w, 0) for w in normalise_words(text))
        batch.append(0)
        if len(batch) >= _BATCH_WORDS:
            yield np.asarray(batch, dtype=np.int64)
            batch = []
    if batch:
        yield np.asarray(batch, dtype=np.int64)


def ngram_overlap(scored: Sequence[str], training: Iterable[str], *, n: int = NGRAM) -> np.ndarray:
    """Per scored document (``len(scored)``,) float64: the fraction of its word n-grams that occur in some
    document of ``training`` (any iterable of texts, read once); NaN for documents under MIN_NGRAM words."""
    vocab, groups = _scored_grams(scored, n)
    found = [np.zeros(len(g.unique), dtype=bool) for g in groups]
    if groups:
        for ids in _training_batches(training, vocab):
            for g, f in zip(groups, found):
                f |= np.isin(g.unique, _gram_hashes(ids, g.k)[0])
    out = np.full(len(scored), np.nan)
    for g, f in zip(groups, found):
        for d, grams in zip(g.docs, g.grams):
            out[d] = f[np.searchsorted(g.unique, grams)].mean() if len(grams) else 0.0
    return out


@dataclass
class OverlapReport:
    """What :func:`check_overlap` found: per scored document, its overlap with each arm's training text."""

    per_arm: dict[str, np.ndarray]  # arm -> (n_scored,) overlap fraction (NaN: too short for n-grams)
    exact: dict[str, np.ndarray]  # arm -> indices (into the scored documents) equal to a training document
    flagged: np.ndarray  # indices of the scored documents flagged for any arm, ascending
    dropped: bool = False

    @property
    def n_scored(self) -> int:
        return len(next(iter(self.per_arm.values()))) if self.per_arm else 0

    def arm_flagged(self, arm: str) -> np.ndarray:
        """Indices flagged for ``arm``: overlap >= OVERLAP_THRESHOLD or an exact copy."""
        frac = np.nan_to_num(self.per_arm[arm], nan=0.0)
        return np.union1d(np.flatnonzero(frac >= OVERLAP_THRESHOLD), self.exact.get(arm, []))

    def summary(self) -> dict:
        """The counts a result file records (``overlap`` key)."""
        return {"ngram": NGRAM, "min_ngram": MIN_NGRAM, "threshold": OVERLAP_THRESHOLD,
                "scored_documents": self.n_scored, "overlapping": int(len(self.flagged)),
                "per_arm": {a: int(len(self.arm_flagged(a))) for a in self.per_arm},
                "dropped": int(len(self.flagged)) if self.dropped else 0}


def check_overlap(scored: Sequence[str], training: Mapping[str, Callable[[], Iterable[str]]], *,
                  drop: bool = False, what: str = "scored data",
                  exact: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, OverlapReport]:
    """Compare every scored text with every arm's training texts; ``(kept indices, report)``.

    ``training`` maps an arm to a zero-argument callable returning its training texts; arms given the *same*
    callable share one pass. ``exact`` (optional) maps an arm to indices already known to be exact copies.
    Without ``drop`` any flagged document is refused with one MyopiaError line naming the arms; with ``drop``
    the flagged documents are left out of the kept indices (``report.flagged`` says which).
    """
    per_arm, done = {}, {}
    for arm, texts in training.items():
        if id(texts) not in done:
            done[id(texts)] = ngram_overlap(scored, texts())
        per_arm[arm] = done[id(texts)]
    report = OverlapReport(per_arm, {a: np.asarray(v, dtype=np.int64) for a, v in (exact or {}).items()},
                           np.zeros(0, dtype=np.int64), dropped=drop)
    flagged = [report.arm_flagged(a) for a in per_arm]
    report.flagged = np.unique(np.concatenate(flagged)).astype(np.int64) if flagged else report.flagged
    if len(report.flagged) and not drop:
        arms = ", ".join(f"{a} {len(f)}" for a, f in zip(per_arm, flagged) if len(f))
        raise MyopiaError(
            f"{what}: {len(report.flagged)} of {len(scored)} documents overlap training text (arms: {arms}; exact "
            f"copies or >= {OVERLAP_THRESHOLD:.0%} of their word {NGRAM}-grams); score held-out documents only, "
            "or drop them with --drop-overlap")
    kept = np.setdiff1d(np.arange(len(scored)), report.flagged)
    return kept, report


# ------------------------------------------------------------------------------------------------------------
# The same on tokenized corpora
# ------------------------------------------------------------------------------------------------------------


def document_texts(corpus: TokenCorpus, docs) -> Iterable[str]:
    """The text of each of ``docs`` (decoded without its end-of-document token; token ids written as words when
    the corpus has no tokenizer, e.g. a ``.npy`` token file)."""
    off = np.asarray(corpus.doc_offsets, dtype=np.int64)
    for d in docs:
        ids = np.asarray(corpus.tokens[off[d]:off[d + 1] - 1]).tolist()
        yield corpus.tokenizer.decode(ids) if corpus.tokenizer is not None else " ".join(map(str, ids))


def check_corpus_overlap(evaluation: TokenCorpus, eval_docs, arms: Mapping[str, TokenCorpus], *,
                         drop: bool = False, what: str = "scored data",
                         train_split: str = "train") -> tuple[np.ndarray, dict]:
    """Scored documents ``eval_docs`` (indices into ``evaluation``) against each arm's training split.

    ``arms`` maps an arm name to the corpus it trained on (arms given the same corpus object share one pass).
    Returns ``(kept document ids, summary)``: ``summary`` (:meth:`OverlapReport.summary`) is what a result file
    records under ``overlap``. Refuses (one MyopiaError line) unless ``drop``.
    """
    eval_docs = np.arange(evaluation.n_docs) if eval_docs is None else np.asarray(eval_docs, dtype=np.int64)
    scored = list(document_texts(evaluation, eval_docs))
    sources, exact = {}, {}
    for arm, corpus in arms.items():
        if id(corpus) not in sources:
            sources[id(corpus)] = (lambda c=corpus: document_texts(c, c.split_docs(train_split)))
        bad = overlapping_documents(corpus, evaluation, eval_docs, train_split)
        exact[arm] = np.flatnonzero(np.isin(eval_docs, bad))
    kept, report = check_overlap(scored, {a: sources[id(c)] for a, c in arms.items()}, drop=drop, what=what,
                                 exact=exact)
    return eval_docs[kept], report.summary()


def exclude_split_overlap(corpus: TokenCorpus) -> int:
    """Move held-out (val/test) documents that overlap the training split out of every split (code EXCLUDED),
    in place; records and returns their number (``corpus.info["near_duplicates_excluded"]``)."""
    held = np.flatnonzero(np.isin(corpus.doc_split, (1, 2)))
    if len(held) and (corpus.doc_split == 0).any():
        kept, _ = check_corpus_overlap(corpus, held, {"train": corpus}, drop=True, what=corpus.source)
        dropped = np.setdiff1d(held, kept)
    else:
        dropped = np.zeros(0, dtype=np.int64)
    split = np.array(corpus.doc_split, dtype=np.int8)
    split[dropped] = EXCLUDED
    corpus.doc_split = split
    corpus.info["near_duplicates_excluded"] = int(len(dropped))
    return int(len(dropped))


def require_clean_split(corpus: TokenCorpus) -> None:
    """Refuse a corpus whose held-out documents overlap its own training split. Corpora built by this version
    were cleaned when built (``info["near_duplicates_excluded"]``); others (token caches of earlier versions)
    are checked here and refused with one line naming the count."""
    if "near_duplicates_excluded" in corpus.info:
        return
    held = np.flatnonzero(np.isin(corpus.doc_split, (1, 2)))
    if not len(held) or not (corpus.doc_split == 0).any():
        return
    try:
        check_corpus_overlap(corpus, held, {"train": corpus}, what=f"the held-out split of {corpus.source}")
    except MyopiaError as exc:
        raise MyopiaError(f"{str(exc).split('; score')[0]}; rebuild the data (myopia data build, or --data on the raw "
                          "text): this version drops duplicates and near-duplicates when it builds") from None
