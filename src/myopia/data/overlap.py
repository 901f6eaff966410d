"""No silent leakage: refuse to evaluate on documents that a model was trained on.

Documents are compared by content: the SHA-1 of each document's token ids (end-of-document token excluded, ids as
little-endian uint32), so a re-split or re-built cache of the same text is recognised whatever its document order
or split seed. Both corpora must use the same tokenizer (they must anyway, for the model to score them).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import MyopiaError
from .corpus import TokenCorpus


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
