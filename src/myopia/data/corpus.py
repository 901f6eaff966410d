"""A tokenized corpus: documents concatenated (each ends with the end-of-document token), split by document."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MyopiaError
from .text import Deduplicator, Document
from .tokenizer import make_tokenizer

SPLITS = ("train", "val", "test")
TOKEN_FILE_BLOCK = 4096  # a raw token file has no documents: it is split in blocks of this many tokens


@dataclass
class TokenCorpus:
    """``tokens`` (N,) int array; document d is ``tokens[doc_offsets[d]:doc_offsets[d+1]]``.

    ``doc_split[d]`` is 0 (train), 1 (val) or 2 (test); ``doc_slices[d]`` a label such as a genre.
    """

    tokens: np.ndarray
    doc_offsets: np.ndarray
    doc_slices: list[str]
    doc_split: np.ndarray
    vocab_size: int
    tokenizer: Any = None
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def n_docs(self) -> int:
        """Number of documents."""
        return len(self.doc_offsets) - 1

    def split_docs(self, split: str) -> np.ndarray:
        """Ids of the documents in ``split`` (train, val or test), ascending."""
        if split not in SPLITS:
            raise MyopiaError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.doc_split == SPLITS.index(split))

    @property
    def doc_lengths(self) -> np.ndarray:
        """Tokens per document (each includes its end-of-document token), (n_docs,) int64."""
        return np.diff(np.asarray(self.doc_offsets, dtype=np.int64))

    def split_tokens(self, split: str) -> np.ndarray:
        """The split's documents back to back, in the stored dtype (a view when they are contiguous)."""
        docs = self.split_docs(split)
        if len(docs) == 0:
            return np.zeros(0, dtype=self.tokens.dtype)
        if np.all(np.diff(docs) == 1):
            return self.tokens[self.doc_offsets[docs[0]] : self.doc_offsets[docs[-1] + 1]]
        return np.concatenate([self.tokens[self.doc_offsets[d] : self.doc_offsets[d + 1]] for d in docs])

    def slice_names(self) -> list[str]:
        """Distinct slice labels in order of first appearance."""
        return list(dict.fromkeys(self.doc_slices))

    def stream(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The split's documents back to back: tokens (M,) and the document id of each token (M,)."""
        docs = self.split_docs(split)
        if len(docs) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pieces = [self.tokens[self.doc_offsets[d] : self.doc_offsets[d + 1]] for d in docs]
        ids = [np.full(self.doc_offsets[d + 1] - self.doc_offsets[d], d, dtype=np.int64) for d in docs]
        return np.concatenate(pieces).astype(np.int64), np.concatenate(ids)

    def describe(self) -> dict:
        """Source, vocabulary, documents and tokens per split, the tokenizer and any extra info."""
        counts = {s: int((self.doc_split == i).sum()) for i, s in enumerate(SPLITS)}
        per_split = np.bincount(np.asarray(self.doc_split, dtype=np.int64), weights=self.doc_lengths, minlength=3)
        tokens = {s: int(per_split[i]) for i, s in enumerate(SPLITS)}
        out = {"source": self.source, "vocab_size": self.vocab_size, "documents": counts, "tokens": tokens}
        if self.tokenizer is not None and hasattr(self.tokenizer, "describe"):
            out["tokenizer"] = self.tokenizer.describe()
        out.update(self.info)
        return out


def describe_documents(corpus: TokenCorpus, context_len: int | None = None,
                       mode: str = "blank-lines") -> tuple[str, str | None]:
    """One line saying how many documents a corpus holds, how they were made (``mode``: a ``--documents`` mode,
    ``records``, ``blocks``, ``cache``) and how long they are (median, in tokens, end-of-document token included),
    with the documents per split; and a warning (or None) when the median document is shorter than
    ``context_len`` (with document masks no position would see a full context)."""
    lengths = corpus.doc_lengths
    median = int(np.median(lengths)) if len(lengths) else 0
    counts = "/".join(str(int((corpus.doc_split == i).sum())) for i in range(len(SPLITS)))
    line = (f"data: {corpus.source or 'corpus'}: {corpus.n_docs:,} documents ({mode}), median {median:,} tokens, "
            f"{len(corpus.tokens):,} tokens in all; train/val/test documents {counts}")
    warning = None
    if context_len is not None and median < context_len:
        hint = " (--documents file or stream reads a text file as one continuous text)" \
            if mode == "blank-lines" else ""
        warning = (f"warning: the median document ({median} tokens) is shorter than the context window "
                   f"({context_len}); with document masks most positions see less than a full context{hint}")
    return line, warning


def assign_splits(n_docs: int, val_frac: float, test_frac: float, seed: int) -> np.ndarray:
    """Document-level split: a seeded permutation; at least one validation and test document when n >= 3."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise MyopiaError(f"val/test fractions must be in [0, 1) and sum below 1, got {val_frac}, {test_frac}")
    n_val = int(round(val_frac * n_docs))
    n_test = int(round(test_frac * n_docs))
    if n_docs >= 3:
        n_val = max(n_val, 1 if val_frac > 0 else 0)
        n_test = max(n_test, 1 if test_frac > 0 else 0)
    if n_val + n_test >= n_docs:
        raise MyopiaError(f"corpus has only {n_docs} documents: too few to hold out validation and test documents")
    order = np.random.default_rng(seed).permutation(n_docs)
    split = np.zeros(n_docs, dtype=np.int8)
    split[order[:n_val]] = 1
    split[order[n_val : n_val + n_test]] = 2
    return split


def _train_texts(docs, split: np.ndarray):
    """A callable yielding the training documents' texts (what a BPE tokenizer is trained on)."""
    return lambda: (d.text for d, part in zip(docs, split) if part == 0)


def corpus_from_documents(docs, tokenizer=None, *, val_frac=0.05, test_frac=0.05, split_seed=0,
                          source="", dedup: bool = True) -> TokenCorpus:
    """Tokenize ``docs`` (objects with ``.text`` and ``.slice``) and split them by document.

    ``tokenizer`` is a tokenizer object or spec (default bytes); ``bpe:N`` is trained on the training documents.
    Exact duplicates (:func:`~myopia.data.text.dedup_key`) are removed before the split, and held-out documents
    that overlap the training split are excluded (:func:`~myopia.data.overlap.exclude_split_overlap`); both
    counts are in ``info`` (``duplicates_removed``, ``near_duplicates_excluded``). ``dedup=False`` keeps every
    document as given (constructed corpora, e.g. tests that need copies).
    """
    unique = Deduplicator()
    docs = list(unique(docs) if dedup else docs)
    if not docs:
        raise MyopiaError(f"corpus {source or '(documents)'} is empty: no non-blank documents")
    split = assign_splits(len(docs), val_frac, test_frac, split_seed)
    tokenizer = make_tokenizer(tokenizer or "bytes", _train_texts(docs, split))
    encoded = [e + [tokenizer.eos_id] for e in tokenizer.encode_batch([d.text for d in docs])]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.fromiter((t for e in encoded for t in e), dtype=token_dtype(tokenizer.vocab_size),
                         count=int(offsets[-1]))
    corpus = TokenCorpus(
        tokens=tokens,
        doc_offsets=offsets,
        doc_slices=[d.slice for d in docs],
        doc_split=split,
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer,
        source=source,
        info={"split": {"val_frac": float(val_frac), "test_frac": float(test_frac), "split_seed": int(split_seed)},
              **({"duplicates_removed": unique.removed} if dedup else {})},
    )
    if dedup:
        from .overlap import exclude_split_overlap  # overlap.py builds on this module

        exclude_split_overlap(corpus)
    return corpus


FINGERPRINT_CHUNK = 1 << 24  # tokens hashed per update


def data_fingerprint(corpus: TokenCorpus, split: str = "train") -> str:
    """A content hash of a split: ``"blake2b:<32 hex>"`` of its token ids in document order (end-of-document
    tokens included) as little-endian uint32, and the vocabulary size. Equal for the same tokens whatever the
    file, cache or stored dtype; any changed token, document or split assignment changes it."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(f"myopia-data-v1 vocab={int(corpus.vocab_size)};".encode())
    tokens = corpus.split_tokens(split)
    for start in range(0, len(tokens), FINGERPRINT_CHUNK):
        h.update(np.asarray(tokens[start:start + FINGERPRINT_CHUNK]).astype("<u4").tobytes())
    return f"blake2b:{h.hexdigest()}"


def token_dtype(vocab_size: int):
    """The smallest unsigned dtype that holds every id of a vocabulary (uint16 up to 65,536 ids)."""
    return np.uint16 if vocab_size <= 65536 else np.uint32


def corpus_from_token_file(path: Path, *, val_frac=0.05, test_frac=0.05, split_seed=0) -> TokenCorpus:
    """A ``.npy`` array of token ids; with no document boundaries, blocks of TOKEN_FILE_BLOCK act as documents."""
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise MyopiaError(f"cannot read token file {path}: {exc}") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise MyopiaError(f"token file {path} must hold a 1-D integer array, got {tokens.dtype} {tokens.shape}")
    if len(tokens) == 0:
        raise MyopiaError(f"token file {path} is empty")
    if tokens.min() < 0:
        raise MyopiaError(f"token file {path} holds negative token ids")
    offsets = np.unique(np.concatenate([np.arange(0, len(tokens), TOKEN_FILE_BLOCK), [len(tokens)]]))
    n = len(offsets) - 1
    return TokenCorpus(
        tokens=np.asarray(tokens),
        doc_offsets=offsets,
        doc_slices=[""] * n,
        doc_split=assign_splits(n, val_frac, test_frac, split_seed),
        vocab_size=int(tokens.max()) + 1,
        source=str(path),
        info={"documents_are_blocks_of": TOKEN_FILE_BLOCK},
    )


__all__ = ["TokenCorpus", "Document", "assign_splits", "describe_documents", "corpus_from_documents", "corpus_from_token_file", "SPLITS"]
