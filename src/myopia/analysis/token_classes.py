"""Token classes defined through the tokenizer's decoded text, so they mean the same for bytes and BPE.

Each vocabulary entry is decoded on its own (``tokenizer.token_text``). A predicted token's class depends on
its text and on the text of the token before it:

- ``end-of-document``: the end-of-document token;
- ``newline`` / ``whitespace``: only whitespace (with / without a line break);
- ``word-start``: first non-space character a letter, and the token either begins with whitespace (BPE's
  " the") or follows a token that does not end in a letter or digit (a space, punctuation, a line break, the
  document start);
- ``word-continuation``: first character a letter, right after a letter or digit (the rest of a word);
- ``digit``: first non-space character a digit;
- ``punctuation``: first non-space character punctuation or a symbol (Unicode categories P*, S*);
- ``other``: anything else, e.g. a byte that is only part of a UTF-8 character.
"""

from __future__ import annotations

import unicodedata

import numpy as np

CLASSES = ("word-start", "word-continuation", "digit", "punctuation", "whitespace", "newline",
           "end-of-document", "other")
_WORDISH = -1
(WORD_START, WORD_CONT, DIGIT, PUNCT, SPACE, NEWLINE, EOD, OTHER) = range(len(CLASSES))


def _classify_text(text: str) -> tuple[int, bool, bool]:
    """(class or -1 for letter-initial tokens, starts with whitespace, ends in a letter/digit)."""
    if not text or "\ufffd" in text:
        return OTHER, False, False
    ends_alnum = text[-1].isalnum()
    if text.isspace():
        return (NEWLINE if ("\n" in text or "\r" in text) else SPACE), True, False
    core = text.lstrip()
    lead_space = len(core) < len(text)
    c = core[0]
    if c.isalpha():
        return _WORDISH, lead_space, ends_alnum
    if c.isdigit():
        return DIGIT, lead_space, ends_alnum
    if unicodedata.category(c)[0] in "PS":
        return PUNCT, lead_space, ends_alnum
    return OTHER, lead_space, ends_alnum


def vocab_tables(tokenizer, vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per vocabulary id: base class (-1 = letter-initial), starts-with-space flag, ends-in-alnum flag."""
    V = int(vocab_size or tokenizer.vocab_size)
    base = np.full(V, OTHER, dtype=np.int64)
    lead = np.zeros(V, dtype=bool)
    ends = np.zeros(V, dtype=bool)
    for i in range(V):
        if i == tokenizer.eos_id:
            base[i] = EOD
            continue
        try:
            text = tokenizer.token_text(i)
        except Exception:  # ids a tokenizer cannot decode on their own
            continue
        base[i], lead[i], ends[i] = _classify_text(text)
    return base, lead, ends


def classify_tokens(target: np.ndarray, prev: np.ndarray, tokenizer, vocab_size: int | None = None) -> np.ndarray:
    """Class index (into :data:`CLASSES`) of each predicted token ``target`` (N,) given the token ``prev`` (N,)."""
    base, lead, ends = vocab_tables(tokenizer, vocab_size)
    target = np.asarray(target, dtype=np.int64)
    prev = np.asarray(prev, dtype=np.int64)
    cls = base[target].copy()
    wordish = cls == _WORDISH
    start = lead[target] | ~ends[prev]
    cls[wordish & start] = WORD_START
    cls[wordish & ~start] = WORD_CONT
    return cls
