"""Units that compare across tokenizers: the UTF-8 bytes each token stands for, for bits per byte.

A loss in nats per *token* depends on the tokenizer (a BPE token carries several bytes); bits per *byte* does
not: total nats over the scored text / its UTF-8 bytes / ln 2. Every token gets a byte length:

- ``bytes`` tokenizer: 1 for the 256 byte ids, 0 for the end-of-document token;
- byte-level BPE / Hugging Face tokenizers: the token's own bytes (a byte-level vocabulary spells each byte with
  one character of the GPT-2 byte alphabet, so the length of the vocabulary string *is* its byte count, also for
  tokens holding part of a UTF-8 character); otherwise the UTF-8 length of the token decoded on its own;
- the end-of-document token and special tokens: 0 (they stand for no text).
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)


def _byte_alphabet() -> dict[str, int]:
    """Character -> byte of the byte-level BPE alphabet (printable bytes stand for themselves, the rest shifted)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = dict.fromkeys(keep), 0
    table = {chr(b): b for b in keep}
    for b in range(256):
        if b not in chars:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _vocab_string(tokenizer, i: int) -> str | None:
    inner = getattr(tokenizer, "tok", None)
    try:
        if hasattr(inner, "id_to_token"):  # tokenizers.Tokenizer
            return inner.id_to_token(i)
        if hasattr(inner, "convert_ids_to_tokens"):  # transformers tokenizer
            return inner.convert_ids_to_tokens(i)
    except Exception:
        return None
    return None


def token_byte_lengths(tokenizer, vocab_size: int | None = None) -> tuple[np.ndarray, str]:
    """(bytes per vocabulary id (V,) float64, how they were found: "bytes", "byte-level" or "decoded")."""
    V = int(vocab_size or tokenizer.vocab_size)
    out = np.zeros(V, dtype=np.float64)
    if getattr(tokenizer, "kind", None) == "bytes":
        out[:256] = 1.0
        out[tokenizer.eos_id:tokenizer.eos_id + 1] = 0.0
        return out, "bytes"
    alphabet = _byte_alphabet()
    specials = set(getattr(getattr(tokenizer, "tok", None), "all_special_ids", []) or [])
    methods = set()
    for i in range(V):
        if i == tokenizer.eos_id or i in specials:
            continue
        raw = _vocab_string(tokenizer, i)
        if raw and all(c in alphabet for c in raw):
            out[i] = len(raw)
            methods.add("byte-level")
            continue
        try:
            text = tokenizer.token_text(i)
        except Exception:
            continue
        out[i] = len(text.encode("utf-8"))
        methods.add("decoded")
    return out, "decoded" if "decoded" in methods else "byte-level"


def bytes_of_tokens(tokens, tokenizer, vocab_size: int | None = None) -> tuple[np.ndarray, str]:
    """(UTF-8 bytes each of ``tokens`` (N,) stands for, method)."""
    table, how = token_byte_lengths(tokenizer, vocab_size)
    return table[np.asarray(tokens, dtype=np.int64)], how
