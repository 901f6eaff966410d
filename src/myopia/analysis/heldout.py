"""Per-token evaluation on held-out documents: every token predicted exactly once, with its context position.

Each document is scored on its own, as the sequence ``[eos] + tokens`` (the end-of-document token stands in
for the previous document's end, as in training), cut into consecutive windows of ``seq_len`` inputs. Token
t of a window is predicted from the window's tokens 0..t, so its *position* is the number of context tokens
minus one; a document longer than ``seq_len`` restarts its context at every window (like training windows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.corpus import TokenCorpus
from ..errors import MyopiaError


@dataclass
class HeldOut:
    """Windows (W, T) and, per evaluated token (N of them, window-major order), where it sits."""

    inputs: np.ndarray  # (W, T) int64 token ids, 0-padded
    targets: np.ndarray  # (W, T) int64, -1 where padded
    target: np.ndarray  # (N,) the predicted token
    prev: np.ndarray  # (N,) the token just before it (the input at the same position)
    doc: np.ndarray  # (N,) document id in the corpus
    position: np.ndarray  # (N,) position in the window, 0..T-1
    window: np.ndarray  # (N,) window index
    split: str = "test"

    @property
    def n_tokens(self) -> int:
        return len(self.target)

    @property
    def seq_len(self) -> int:
        return self.inputs.shape[1]


def document_windows(corpus: TokenCorpus, split: str, seq_len: int, *, max_docs: int | None = None) -> HeldOut:
    """All tokens of the ``split`` documents (the first ``max_docs`` of them, in corpus order) as windows."""
    docs = corpus.split_docs(split)
    if max_docs is not None:
        docs = docs[:max_docs]
    if len(docs) == 0:
        raise MyopiaError(f"the {split} split holds no documents")
    eos = corpus.tokenizer.eos_id if corpus.tokenizer is not None else int(corpus.vocab_size) - 1
    ins, outs = [], []
    for d in docs:
        toks = np.asarray(corpus.tokens[corpus.doc_offsets[d] : corpus.doc_offsets[d + 1]], dtype=np.int64)
        seq = np.concatenate([[eos], toks])
        n = len(toks)
        n_win = -(-n // seq_len)
        x = np.zeros(n_win * seq_len, dtype=np.int64)
        y = np.full(n_win * seq_len, -1, dtype=np.int64)
        x[:n], y[:n] = seq[:-1], seq[1:]
        ins.append(x.reshape(n_win, seq_len))
        outs.append(y.reshape(n_win, seq_len))
    inputs, targets = np.concatenate(ins), np.concatenate(outs)
    window_doc = np.concatenate([np.full(len(x), d, dtype=np.int64) for x, d in zip(ins, docs)])
    w_idx, pos = np.nonzero(targets >= 0)
    return HeldOut(inputs=inputs, targets=targets, target=targets[w_idx, pos], prev=inputs[w_idx, pos],
                   doc=window_doc[w_idx], position=pos.astype(np.int64), window=w_idx.astype(np.int64),
                   split=split)


Scorer = Callable[[torch.Tensor], torch.Tensor]  # inputs (B, T) -> logits (B, T, vocab)


@torch.no_grad()
def evaluate_per_token(scorers: dict[str, Scorer], held: HeldOut, *, reference: str | None = None,
                       batch_size: int | None = None, vocab_size: int = 1024,
                       device="cpu") -> dict[str, dict[str, np.ndarray]]:
    """Loss (nats) of every held-out token under each scorer, and KL(reference || scorer) per token.

    Returns {name: {"loss": (N,) float32, "kl": (N,) float32 (absent for the reference)}}. Scorers run on
    the same batches in the same order, so results are deterministic for fixed models. The default batch keeps
    a batch's logits near 2^24 floats (``vocab_size`` sets it), at most 64 windows.
    """
    if reference is not None and reference not in scorers:
        raise MyopiaError(f"reference {reference!r} is not among the scorers")
    W, T = held.inputs.shape
    names = ([reference] if reference else []) + [n for n in scorers if n != reference]
    out = {n: {"loss": np.zeros((W, T), dtype=np.float32)} for n in names}
    for n in names:
        if n != reference and reference is not None:
            out[n]["kl"] = np.zeros((W, T), dtype=np.float32)
    bs = batch_size or max(1, min(64, (1 << 24) // (T * max(1, vocab_size))))
    for start in range(0, W, bs):
        stop = min(W, start + bs)
        x = torch.from_numpy(held.inputs[start:stop]).to(device)
        y = torch.from_numpy(held.targets[start:stop]).to(device)
        ref_lp = None
        for n in names:
            logits = scorers[n](x).float()
            if not torch.isfinite(logits).all():
                raise MyopiaError(f"{n}: non-finite logits on held-out data")
            lp = F.log_softmax(logits, dim=-1)
            nll = -lp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            out[n]["loss"][start:stop] = nll.masked_fill(y < 0, 0.0).cpu().numpy()
            if n == reference:
                ref_lp = lp
            elif ref_lp is not None:
                kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1).clamp(min=0.0)
                out[n]["kl"][start:stop] = kl.masked_fill(y < 0, 0.0).cpu().numpy()
    return {n: {k: v[held.window, held.position] for k, v in d.items()} for n, d in out.items()}


def model_scorer(model) -> Scorer:
    model.eval()
    return lambda x: model(x)


def count_bigram_losses(corpus: TokenCorpus, held: HeldOut, *, strength: float = 10.0) -> np.ndarray:
    """Loss (nats) of each held-out token under a count bigram model of ``corpus``'s training split.

    p(b | a) = (c(a, b) + strength * u(b)) / (c(a) + strength), with u the add-one unigram distribution of the
    training tokens (documents back to back, each ending with the end-of-document token, as in training).
    """
    V = int(corpus.vocab_size)
    train = np.asarray(corpus.split_tokens("train"), dtype=np.int64)
    if len(train) < 2:
        raise MyopiaError("the training split is too small for a bigram reference")
    uni = (np.bincount(train, minlength=V) + 1.0) / (len(train) + V)
    codes, pair_counts = np.unique(train[:-1] * V + train[1:], return_counts=True)
    ctx_counts = np.bincount(train[:-1], minlength=V).astype(np.float64)
    query = held.prev * V + held.target
    idx = np.clip(np.searchsorted(codes, query), 0, len(codes) - 1)
    c_ab = np.where(codes[idx] == query, pair_counts[idx], 0).astype(np.float64)
    p = (c_ab + strength * uni[held.target]) / (ctx_counts[held.prev] + strength)
    return (-np.log(p)).astype(np.float32)
