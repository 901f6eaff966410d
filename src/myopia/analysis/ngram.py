"""Count n-gram baselines on exactly the held-out tokens the arms are scored on: unigram, bigram, Kneser-Ney 4-gram.

A null gap only means something if the models use their context; the yardstick is what counting does with the
same context. Models are fitted on token ids of the pair's *training* documents, each read as its own sequence
``[eos] + document`` (a document's tokens end with the end-of-document token), so no n-gram crosses a document
boundary: the context a document-masked model sees, and the one the held-out documents are scored with
(:mod:`myopia.analysis.heldout`).

Scoring takes a :class:`~myopia.analysis.heldout.HeldOut` and uses its windows: the token at window position p is
predicted from the window's inputs 0..p only (the last ``order - 1`` of them), so a window that restarts inside a
long document restarts the n-gram context too, exactly as it restarts the arms' context. Losses are nats per
token, (N,) in the held-out token order; bits per byte follow as for the arms (total nats / bytes / ln 2).

Estimators (V = vocabulary size, counts over predicted training tokens, i.e. every token but each sequence's
leading end-of-document token):

- ``unigram``: add-one, p(w) = (c(w) + 1) / (N + V);
- ``bigram``: the count bigram of :func:`myopia.analysis.heldout.count_bigram_losses`,
  p(b | a) = (c(a b) + 10 u(b)) / (c(a) + 10) with u the add-one unigram;
- ``4gram``: interpolated Kneser-Ney (one absolute discount per order and count kind,
  D = n1 / (n1 + 2 n2) from the counts-of-counts). At order k with context h (k - 1 tokens) and counts a(·):

      P_k(w | h) = max(a(h w) - D_k, 0) / a(h ·) + D_k N1+(h ·) / a(h ·) · P_{k-1}(w | h')

  where h' drops h's first token, a(h ·) = Σ_w a(h w), N1+(h ·) = #{w : a(h w) > 0}, and P_k = P_{k-1} when
  a(h ·) = 0 (an unseen context); P_0 = 1 / V. The highest order used for a token (``order``, or fewer when the
  window holds fewer earlier tokens) counts raw occurrences; every lower order counts continuation occurrences:
  the number of distinct tokens seen before the n-gram, plus its occurrences at a sequence start (where nothing
  can precede it; KenLM's rule for n-grams that begin with the start token).

N-grams are identified without hashing collisions: the id of a k-gram is the rank of (id of its first k - 1
tokens) · V + last token among all k-grams of the training sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MyopiaError
from .heldout import HeldOut
from .units import LN2

BASELINES = ("unigram", "bigram", "4gram")
BIGRAM_STRENGTH = 10.0


@dataclass
class NGramModel:
    """Counts of every k-gram (k = 1..order) of training sequences, and the Kneser-Ney statistics built on them.

    Per order k (index k - 1 of each list): ``codes`` (M_k,) sorted int64 (k = 1: the token ids 0..V-1),
    ``raw``/``cont`` (M_k,) raw and continuation counts, and per context (a (k-1)-gram id; k = 1: one empty
    context) the denominators ``den_*`` and numbers of continuations ``n1p_*``, discounts ``d_raw``/``d_cont``.
    """

    order: int
    vocab_size: int
    n_tokens: int
    codes: list = field(default_factory=list)
    raw: list = field(default_factory=list)
    cont: list = field(default_factory=list)
    den_raw: list = field(default_factory=list)
    n1p_raw: list = field(default_factory=list)
    den_cont: list = field(default_factory=list)
    n1p_cont: list = field(default_factory=list)
    d_raw: list = field(default_factory=list)
    d_cont: list = field(default_factory=list)


def _discount(counts: np.ndarray) -> float:
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    return n1 / (n1 + 2.0 * n2) if n1 > 0 and n2 > 0 else 0.5


def _context_stats(codes: np.ndarray, counts: np.ndarray, k: int, V: int, n_ctx: int) -> tuple:
    """(a(h ·) (n_ctx,), N1+(h ·) (n_ctx,)) for the k-grams ``codes`` with counts ``counts``."""
    ctx = np.zeros(len(codes), dtype=np.int64) if k == 1 else codes // V
    den = np.bincount(ctx, weights=counts.astype(np.float64), minlength=n_ctx)
    n1p = np.bincount(ctx, weights=(counts > 0).astype(np.float64), minlength=n_ctx)
    return den, n1p


def training_sequences(corpus, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(tokens (L,) int64, starts (L,) bool): the ``split`` documents of a TokenCorpus, each as ``[eos] + doc``."""
    docs = corpus.split_docs(split)
    if len(docs) == 0:
        raise MyopiaError(f"the {split} split holds no documents to fit n-gram baselines on")
    eos = corpus.tokenizer.eos_id if corpus.tokenizer is not None else int(corpus.vocab_size) - 1
    offsets = np.asarray(corpus.doc_offsets, dtype=np.int64)
    pieces = [np.concatenate([[eos], np.asarray(corpus.tokens[offsets[d]:offsets[d + 1]], dtype=np.int64)])
              for d in docs]
    tokens = np.concatenate(pieces)
    starts = np.zeros(len(tokens), dtype=bool)
    starts[np.cumsum([0] + [len(p) for p in pieces[:-1]])] = True
    return tokens, starts


def _gram_ids(tokens: np.ndarray, run: np.ndarray, order: int, V: int) -> tuple[list, list]:
    """Training k-gram ids ending at each position (-1 where the sequence holds fewer than k tokens) and the
    sorted codes of each order."""
    ids, codes = [tokens.copy()], [np.arange(V, dtype=np.int64)]
    for k in range(2, order + 1):
        valid = run >= k - 1
        prev = np.concatenate([[-1], ids[-1][:-1]])
        code = np.where(valid, prev * V + tokens, -1)
        uniq, inv = np.unique(code[valid], return_inverse=True)
        g = np.full(len(tokens), -1, dtype=np.int64)
        g[valid] = inv
        ids.append(g)
        codes.append(uniq)
    return ids, codes


def fit_ngram(tokens, starts, vocab_size: int, order: int = 4) -> NGramModel:
    """Fit counts on sequences: tokens (L,) int ids, starts (L,) bool, True where a sequence begins."""
    tokens = np.asarray(tokens, dtype=np.int64)
    starts = np.asarray(starts, dtype=bool)
    V = int(vocab_size)
    if tokens.shape != starts.shape or len(tokens) < 2 or not starts[0]:
        raise MyopiaError("n-gram fitting needs tokens and sequence starts of equal length, starting a sequence")
    if tokens.min() < 0 or tokens.max() >= V:
        raise MyopiaError(f"token ids must lie in [0, {V})")
    if order < 1:
        raise MyopiaError("the n-gram order must be at least 1")
    idx = np.arange(len(tokens))
    run = idx - np.maximum.accumulate(np.where(starts, idx, 0))  # position within the sequence
    ids, codes = _gram_ids(tokens, run, order, V)
    m = NGramModel(order, V, int(np.sum(run >= 1)), codes=codes)
    for k in range(1, order + 1):
        g = ids[k - 1]
        sel = (run >= max(k - 1, 1)) & (g >= 0)  # k-grams that end at a predicted token
        raw = np.bincount(g[sel], minlength=len(codes[k - 1])).astype(np.float64)
        cont = np.zeros(len(codes[k - 1]))
        if k < order:  # distinct left extensions: one per (k+1)-gram type, which fixes its suffix
            up = ids[k]
            first = np.unique(up[up >= 0], return_index=True)[1]
            where = np.flatnonzero(up >= 0)[first]
            cont += np.bincount(g[where], minlength=len(cont))
        if k >= 2:  # occurrences at a sequence start cannot be extended to the left
            cont += np.bincount(g[(run == k - 1) & (g >= 0)], minlength=len(cont))
        n_ctx = 1 if k == 1 else len(codes[k - 2])
        for kind, counts in (("raw", raw), ("cont", cont)):
            getattr(m, kind).append(counts)
            den, n1p = _context_stats(codes[k - 1], counts, k, V, n_ctx)
            getattr(m, f"den_{kind}").append(den)
            getattr(m, f"n1p_{kind}").append(n1p)
            getattr(m, f"d_{kind}").append(_discount(counts[counts > 0]))
    return m


def _lookup(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Ids of ``query`` codes in sorted ``codes``; -1 where absent (or where the query is negative)."""
    if len(codes) == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    i = np.clip(np.searchsorted(codes, query), 0, len(codes) - 1)
    return np.where((codes[i] == query) & (query >= 0), i, -1)


def window_gram_ids(model: NGramModel, inputs: np.ndarray) -> list[np.ndarray]:
    """Training ids of the j-grams (j = 1..order-1) ending at each window position, each (W, T); -1 where the
    window holds fewer than j tokens there or the j-gram never occurred in training."""
    inputs = np.asarray(inputs, dtype=np.int64)
    out = [np.where((inputs >= 0) & (inputs < model.vocab_size), inputs, -1)]
    for j in range(2, model.order):
        prev = np.full(inputs.shape, -1, dtype=np.int64)
        prev[:, 1:] = out[-1][:, :-1]
        query = np.where(prev >= 0, prev * model.vocab_size + inputs, -1)
        out.append(_lookup(model.codes[j - 1], query))
    return out


def kn_probs(model: NGramModel, contexts: list[np.ndarray], top: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Interpolated Kneser-Ney p(target | context) (N,) float64.

    contexts[j-1] (N,): training id of the j-gram of the last j context tokens (-1: unseen or unavailable),
    j = 1..order-1; top (N,): the highest order used per query (raw counts there); target (N,) token ids.
    """
    V = model.vocab_size
    target = np.asarray(target, dtype=np.int64)
    p = np.full(len(target), 1.0 / V)
    out = np.zeros(len(target))
    for k in range(1, model.order + 1):
        ctx = np.zeros(len(target), dtype=np.int64) if k == 1 else contexts[k - 2]
        gram = target if k == 1 else _lookup(model.codes[k - 1], np.where(ctx >= 0, ctx * V + target, -1))
        levels = {}
        for kind in ("raw", "cont"):
            counts, den, n1p = (getattr(model, kind)[k - 1], getattr(model, f"den_{kind}")[k - 1],
                                getattr(model, f"n1p_{kind}")[k - 1])
            d = getattr(model, f"d_{kind}")[k - 1]
            c = np.where(gram >= 0, counts[np.maximum(gram, 0)], 0.0)
            a = np.where(ctx >= 0, den[np.maximum(ctx, 0)], 0.0)
            n = np.where(ctx >= 0, n1p[np.maximum(ctx, 0)], 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                interp = np.maximum(c - d, 0.0) / a + d * n / a * p
            levels[kind] = np.where(a > 0, interp, p)
        out = np.where(top == k, levels["raw"], out)
        p = levels["cont"]
    return out


def heldout_contexts(model: NGramModel, held: HeldOut) -> tuple[list[np.ndarray], np.ndarray]:
    """(contexts, top) of :func:`kn_probs` for every held-out token: the j-grams ending at its window position,
    and top = min(order, position + 2) (the window holds position + 1 earlier tokens)."""
    grams = window_gram_ids(model, held.inputs)
    contexts = [g[held.window, held.position] for g in grams]
    top = np.minimum(model.order, np.asarray(held.position, dtype=np.int64) + 2)
    return contexts, top


def kn_losses(model: NGramModel, held: HeldOut) -> np.ndarray:
    """Interpolated Kneser-Ney loss (nats) of every held-out token (N,)."""
    contexts, top = heldout_contexts(model, held)
    return -np.log(kn_probs(model, contexts, top, held.target))


def unigram_losses(model: NGramModel, held: HeldOut) -> np.ndarray:
    """Add-one unigram loss (nats) of every held-out token (N,)."""
    V = model.vocab_size
    return -np.log((model.raw[0][held.target] + 1.0) / (model.n_tokens + V))


def bigram_losses(model: NGramModel, held: HeldOut, strength: float = BIGRAM_STRENGTH) -> np.ndarray:
    """Count-bigram loss (nats) (N,): p(b | a) = (c(a b) + strength u(b)) / (c(a) + strength), u add-one."""
    if model.order < 2:
        raise MyopiaError("a bigram needs a model of order >= 2")
    V = model.vocab_size
    uni = (model.raw[0] + 1.0) / (model.n_tokens + V)
    prev, target = np.asarray(held.prev, dtype=np.int64), np.asarray(held.target, dtype=np.int64)
    gram = _lookup(model.codes[1], prev * V + target)
    c_ab = np.where(gram >= 0, model.raw[1][np.maximum(gram, 0)], 0.0)
    c_a = model.den_raw[1][prev]
    return -np.log((c_ab + strength * uni[target]) / (c_a + strength))


def distribution(model: NGramModel, context) -> np.ndarray:
    """Kneser-Ney p(w | context) for every w (V,), ``context`` the earlier tokens of one window (oldest first;
    at least one token, as every scored position has)."""
    ctx = np.asarray(context, dtype=np.int64)[None, :]
    if ctx.shape[1] == 0:
        raise MyopiaError("a scored position has at least one context token")
    grams = window_gram_ids(model, ctx)
    V = model.vocab_size
    contexts = [np.full(V, g[0, -1]) for g in grams]
    top = np.full(V, min(model.order, ctx.shape[1] + 1))
    return kn_probs(model, contexts, top, np.arange(V))


def baseline_losses(corpus, held: HeldOut, order: int = 4) -> dict[str, np.ndarray]:
    """{unigram, bigram, 4gram: (N,) float64 nats} for the held-out tokens, fitted on ``corpus``'s training split."""
    tokens, starts = training_sequences(corpus, "train")
    model = fit_ngram(tokens, starts, int(corpus.vocab_size), order)
    return {"unigram": unigram_losses(model, held), "bigram": bigram_losses(model, held),
            f"{order}gram": kn_losses(model, held)}


def baseline_summary(losses: dict[str, np.ndarray], held: HeldOut, token_bytes=None, *, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """{name: {loss (nats/token), ci95 (documents resampled), bits_per_byte, n_tokens}} for gap.json's
    ``baselines``; bits per byte = total nats / total bytes / ln 2 (None without bytes)."""
    from .stats import HierarchicalBootstrap

    _, unit = np.unique(held.doc, return_inverse=True)
    boot = HierarchicalBootstrap(int(unit.max()) + 1, 1, n_boot, seed)
    total_bytes = None if token_bytes is None else float(np.sum(token_bytes))
    out = {}
    for name, v in losses.items():
        s = boot.means(np.asarray(v, dtype=np.float64), unit).summary()
        bpb = float(np.sum(v)) / total_bytes / LN2 if total_bytes else None
        out[name] = {"loss": s["mean"], "ci95": s["ci95"], "bits_per_byte": bpb, "n_tokens": int(len(v)),
                     "fitted_on": "training split, each document as [eos] + document"}
    return out
