"""The pre-registered task suite: where lookahead plausibly matters, fixed before anyone looks at a gap.

Every threshold, span length, cap and random seed lives in :data:`SUITE` and is written into each result, so a
result cannot be tuned after the fact. Tasks (an *item* is what one task scores; a *unit* what the bootstrap
resamples):

- ``induction``: held-out spans of ``span_len`` tokens shown twice, ``[eos, span, span]``; scored on the second
  occurrence (tokens 1.. of the copy: token 0 cannot be known to repeat). A variant with uniformly random tokens
  (``induction.random``) removes any help from memorised text. Value of context: first minus second occurrence.
- ``repeat-mention``: the non-initial tokens of a multi-token word of at least ``min_chars`` characters that
  already occurred earlier in the visible context (same window); the same tokens of first mentions are the
  contrast (``repeat-mention.first_mentions``).
- ``long-range``: tokens whose vanilla loss with the context cut to the last ``short_context`` tokens exceeds the
  full-context loss by at least ``threshold_nats``. With several seeds the selection for seed s uses the other
  vanilla seeds (leave-one-seed-out), so the noise of the vanilla model being compared does not select its own
  lucky tokens.
- ``closing``: closing brackets and quotation marks whose opener is at least ``min_distance`` tokens back in the
  visible context (the item is the token holding the closer's first character).
- ``word-continuation``: non-initial tokens of words (class ``word-continuation`` of
  :mod:`myopia.analysis.token_classes`), in the pair's own tokenizer.
- ``user:<stem>``: JSON Lines files of ``{"context": ..., "continuation": ...}`` (optional ``id``, ``label``);
  the loss is the continuation's total negative log-likelihood (nats per item) and accuracy is greedy exact match.
  Value of context: the continuation scored after the end-of-document token alone, minus with its context.

Held-out text tasks (all but induction's random variant and user files) share one scoring of the first
``max_docs`` held-out documents in corpus order (fewer if they exceed ``max_tokens`` tokens; a cap in documents,
so that pairs with different tokenizers score the same text) with the documents as units. For them the value of
context is the vanilla loss with the context cut to the last ``short_context`` tokens minus the full-context
loss, on the same tokens. Gaps are loss(arm) - loss(vanilla) (positive: the arm is worse) and accuracy(arm) -
accuracy(vanilla) (negative: the arm is worse).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MyopiaError
from .heldout import HeldOut
from .token_classes import WORD_CONT, classify_tokens

SUITE_VERSION = 1
TASKS = ("induction", "repeat-mention", "long-range", "closing", "word-continuation")

SUITE = {
    "version": SUITE_VERSION,
    "max_docs": 24,
    "max_tokens": 524288,
    "short_context": 16,
    "bootstrap_seed": 0,
    "induction": {"span_len": 32, "n_spans": 512, "seed": 14, "random_seed": 1414, "score_from": 1},
    "repeat-mention": {"min_chars": 5, "word": "maximal run of letters and digits in the decoded text"},
    "long-range": {"threshold_nats": 1.0, "short": "the suite's short_context",
                   "selection": "leave-one-seed-out vanilla"},
    "closing": {"min_distance": 16, "pairs": [["(", ")"], ["[", "]"], ["{", "}"], ["\u201c", "\u201d"],
                                              ["\u2018", "\u2019"]], "symmetric": ['"']},
    "word-continuation": {"class": "word-continuation (analysis.token_classes)"},
    "user": {"loss": "total negative log-likelihood of the continuation (nats/item)",
             "accuracy": "greedy exact match of every continuation token", "context": "left-truncated to fit"},
    "holm": "one family: every p-value in tasks.json (all tasks, variants, arms, loss and accuracy)",
}


def user_task_name(path) -> str:
    return f"user:{Path(path).stem}"


def check_task_names(names) -> list[str]:
    """The suite tasks requested (``None``: all); an unknown name is an error naming it."""
    if names is None:
        return list(TASKS)
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    bad = [n for n in names if n not in TASKS]
    if bad:
        raise MyopiaError(f"unknown task {bad[0]!r}: the suite has {', '.join(TASKS)} (user tasks: --user FILE)")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------------------------
# Decoded text of token sequences
# --------------------------------------------------------------------------------------------------------------


def vocab_texts(tokenizer, vocab_size: int) -> list[str]:
    """Decoded text of every vocabulary id on its own ('' for the end-of-document token and undecodable ids)."""
    out = []
    eos = getattr(tokenizer, "eos_id", None)
    for i in range(int(vocab_size)):
        if i == eos:
            out.append("")
            continue
        try:
            out.append(tokenizer.token_text(i))
        except Exception:
            out.append("")
    return out


def char_layout(ids, texts: list[str]) -> tuple[str, np.ndarray]:
    """(text of the sequence, token index of every character) for token ids (n,)."""
    pieces = [texts[int(i)] for i in ids]
    owner = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
    return "".join(pieces), owner


def _is_word_char(c: str) -> bool:
    return c.isalnum() and c != "\ufffd"


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges [a, b) of maximal runs of letters and digits."""
    spans, start = [], None
    for i, c in enumerate(text):
        if _is_word_char(c):
            if start is None:
                start = i
        elif start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


# --------------------------------------------------------------------------------------------------------------
# Item extraction on one visible token sequence (a window: its first input, then its targets)
# --------------------------------------------------------------------------------------------------------------


def repeat_mentions(ids, texts: list[str], min_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """(repeat, first): boolean masks over the sequence's tokens marking the non-initial tokens of multi-token
    words of >= ``min_chars`` characters that did (repeat) / did not (first) occur earlier in the sequence."""
    text, owner = char_layout(ids, texts)
    repeat = np.zeros(len(ids), dtype=bool)
    first = np.zeros(len(ids), dtype=bool)
    seen: set[str] = set()
    for a, b in word_spans(text):
        word = text[a:b]
        toks = np.unique(owner[a:b])
        if b - a >= min_chars and len(toks) >= 2:
            (repeat if word in seen else first)[toks[1:]] = True
        seen.add(word)
    return repeat, first


def closing_tokens(ids, texts: list[str], min_distance: int, pairs=None, symmetric=None) -> np.ndarray:
    """Token indices holding a closing bracket/quote whose opener is >= ``min_distance`` tokens earlier."""
    pairs = SUITE["closing"]["pairs"] if pairs is None else pairs
    symmetric = SUITE["closing"]["symmetric"] if symmetric is None else symmetric
    text, owner = char_layout(ids, texts)
    opens = {o: c for o, c in pairs}
    closes = {c: o for o, c in pairs}
    stacks: dict[str, list[int]] = {o: [] for o in list(opens) + list(symmetric)}
    out = []
    for i, ch in enumerate(text):
        if ch in symmetric:
            if stacks[ch]:
                j = stacks[ch].pop()
                if owner[i] - owner[j] >= min_distance:
                    out.append(owner[i])
            else:
                stacks[ch].append(i)
        elif ch in opens:
            stacks[ch].append(i)
        elif ch in closes and stacks[closes[ch]]:
            j = stacks[closes[ch]].pop()
            if owner[i] - owner[j] >= min_distance:
                out.append(owner[i])
    return np.unique(np.asarray(out, dtype=np.int64))


def window_masks(held: HeldOut, texts: list[str], min_chars: int, min_distance: int) -> dict[str, np.ndarray]:
    """Masks over ``held``'s tokens (N,) for repeat-mention, its first mentions and closing, extracted per window
    (what the model sees when it predicts the token)."""
    N = held.n_tokens
    masks = {k: np.zeros(N, dtype=bool) for k in ("repeat-mention", "first-mention", "closing")}
    index = np.full(held.targets.shape, -1, dtype=np.int64)
    index[held.window, held.position] = np.arange(N)
    for w in range(held.inputs.shape[0]):
        n = int((held.targets[w] >= 0).sum())
        seq = np.concatenate([held.inputs[w, :1], held.targets[w, :n]])  # visible token v predicts ... v+1
        rep, first = repeat_mentions(seq, texts, min_chars)
        close = closing_tokens(seq, texts, min_distance)
        for key, vis in (("repeat-mention", np.flatnonzero(rep)), ("first-mention", np.flatnonzero(first)),
                         ("closing", close)):
            vis = vis[vis >= 1]
            masks[key][index[w, vis - 1]] = True
    return masks


def word_continuations(held: HeldOut, tokenizer, vocab_size: int) -> np.ndarray:
    """Mask (N,) of held-out tokens of class word-continuation."""
    return classify_tokens(held.target, held.prev, tokenizer, vocab_size) == WORD_CONT


def long_range(full_loss, short_loss, threshold: float) -> np.ndarray:
    """Selection masks (S, N): token n is long-range for seed s when the mean over the *other* vanilla seeds
    (all seeds when there is one) of short-context minus full-context loss is >= ``threshold`` nats."""
    full = np.atleast_2d(np.asarray(full_loss, dtype=np.float64))
    short = np.atleast_2d(np.asarray(short_loss, dtype=np.float64))
    value = short - full
    S = value.shape[0]
    if S == 1:
        return value >= threshold
    total = value.sum(0)
    return np.stack([(total - value[s]) / (S - 1) >= threshold for s in range(S)])


# --------------------------------------------------------------------------------------------------------------
# Sequences to score
# --------------------------------------------------------------------------------------------------------------


def sequences(inputs: np.ndarray, targets: np.ndarray, unit: np.ndarray) -> HeldOut:
    """A :class:`HeldOut` over hand-built windows: inputs/targets (M, T) (targets -1 where not scored), unit (M,)
    the bootstrap unit of each window (stored as ``doc``)."""
    inputs = np.asarray(inputs, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    w, pos = np.nonzero(targets >= 0)
    return HeldOut(inputs=inputs, targets=targets, target=targets[w, pos], prev=inputs[w, pos],
                   doc=np.asarray(unit, dtype=np.int64)[w], position=pos.astype(np.int64), window=w.astype(np.int64),
                   split="task")


def short_context_windows(held: HeldOut, k: int) -> tuple[HeldOut, np.ndarray]:
    """(windows of the last ``k`` inputs before each held-out token whose context is longer than ``k``, the held-out
    token index of each). Tokens at positions < k already see at most k inputs: their short loss is their loss."""
    idx = np.flatnonzero(held.position >= k)
    w, p = held.window[idx], held.position[idx]
    cols = p[:, None] - k + 1 + np.arange(k)[None, :]
    inputs = held.inputs[w[:, None], cols]
    targets = np.full(inputs.shape, -1, dtype=np.int64)
    targets[:, -1] = held.target[idx]
    return sequences(inputs, targets, held.doc[idx]), idx


def induction_spans(held: HeldOut, span_len: int, n_spans: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(spans (M, span_len) of held-out text, document of each): up to ``n_spans`` non-overlapping spans without
    an end-of-document token, chosen uniformly (``seed``) among the aligned span slots of every document."""
    slots = []
    for d in np.unique(held.doc):
        toks = held.target[held.doc == d][:-1]  # the document's tokens, its end token dropped
        for s in range(len(toks) // span_len):
            slots.append((d, toks[s * span_len:(s + 1) * span_len]))
    if not slots:
        raise MyopiaError(f"no held-out document has {span_len} tokens for the induction task")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(slots), size=min(n_spans, len(slots)), replace=False))
    return np.stack([slots[i][1] for i in pick]), np.asarray([slots[i][0] for i in pick], dtype=np.int64)


def random_spans(vocab_size: int, eos_id: int, span_len: int, n_spans: int, seed: int) -> np.ndarray:
    """(n_spans, span_len) uniformly random token ids, never the end-of-document token."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size - 1, size=(n_spans, span_len))
    return ids + (ids >= eos_id)  # skip eos_id


def doubled(spans: np.ndarray, eos_id: int, score_from: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows ``[eos, span, span]`` for spans (M, n): (inputs (M, 2n), targets (M, 2n) scoring the second copy
    from its token ``score_from`` on, targets scoring the same tokens of the first copy)."""
    M, n = spans.shape
    seq = np.concatenate([np.full((M, 1), eos_id), spans, spans], axis=1)
    inputs, full = seq[:, :-1], seq[:, 1:]
    second = np.full(full.shape, -1, dtype=np.int64)
    first = np.full(full.shape, -1, dtype=np.int64)
    second[:, n + score_from:] = full[:, n + score_from:]
    first[:, score_from:n] = full[:, score_from:n]
    return inputs, second, first


# --------------------------------------------------------------------------------------------------------------
# User tasks
# --------------------------------------------------------------------------------------------------------------


@dataclass
class UserItem:
    context: str
    continuation: str
    id: str
    label: str | None = None


def read_user_task(path) -> list[UserItem]:
    """Items of a JSON Lines task file; a bad line or an empty file raises MyopiaError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise MyopiaError(f"{path}: no such user task file")
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MyopiaError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise MyopiaError(f"{path}:{lineno}: expected a JSON object with context and continuation")
            for key in ("context", "continuation"):
                if not isinstance(rec.get(key), str):
                    raise MyopiaError(f"{path}:{lineno}: missing or non-string {key!r}")
            if not rec["continuation"]:
                raise MyopiaError(f"{path}:{lineno}: empty 'continuation'")
            items.append(UserItem(rec["context"], rec["continuation"], str(rec.get("id", len(items))),
                                  None if rec.get("label") is None else str(rec["label"])))
    if not items:
        raise MyopiaError(f"{path}:1: empty user task file (expected JSON Lines with context and continuation)")
    return items


def user_windows(items: list[UserItem], tokenizer, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """(inputs, targets with context, inputs, targets without context), each (M, T): ``[eos] + context +
    continuation``, the context left-truncated so that it fits in ``seq_len``; only continuation tokens scored."""
    eos = tokenizer.eos_id
    rows_c, rows_n = [], []
    for it in items:
        ctx = tokenizer.encode(it.context) if it.context else []
        cont = tokenizer.encode(it.continuation)
        if len(cont) > seq_len - 1:
            raise MyopiaError(f"item {it.id}: the continuation has {len(cont)} tokens, more than the model's context "
                              f"allows ({seq_len - 1})")
        ctx = ctx[max(0, len(ctx) - (seq_len - len(cont))):]
        rows_c.append(([eos] + ctx, cont))
        rows_n.append(([eos], cont))

    def pack(rows):
        T = max(len(a) + len(b) - 1 for a, b in rows)
        inputs = np.zeros((len(rows), T), dtype=np.int64)
        targets = np.full((len(rows), T), -1, dtype=np.int64)
        for r, (a, b) in enumerate(rows):
            seq = np.asarray(a + b, dtype=np.int64)
            inputs[r, :len(seq) - 1] = seq[:-1]
            targets[r, len(a) - 1:len(seq) - 1] = seq[len(a):]
        return inputs, targets

    return (*pack(rows_c), *pack(rows_n))


def per_item(values: np.ndarray, window: np.ndarray, n_items: int, how: str = "sum") -> np.ndarray:
    """Per-window totals (``sum``) or all-true (``all``) of per-token values (..., N) -> (..., n_items)."""
    values = np.atleast_2d(values)
    if how == "sum":
        return np.stack([np.bincount(window, weights=v, minlength=n_items) for v in values])
    miss = np.stack([np.bincount(window, weights=(~v.astype(bool)).astype(float), minlength=n_items)
                     for v in values])
    return (miss == 0).astype(np.float64)
