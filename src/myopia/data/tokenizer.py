"""Tokenizers share one small interface: ``encode``, ``decode``, ``vocab_size``, ``eos_id``, ``fingerprint``."""

from __future__ import annotations

import hashlib


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus an end-of-document token 256 (vocabulary 257)."""

    name = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        """A hash that changes whenever the token ids of some text would change."""
        return hashlib.sha256(b"myopia-bytes-v1").hexdigest()[:16]

    def describe(self) -> dict:
        return {"kind": self.name, "vocab_size": self.vocab_size, "fingerprint": self.fingerprint()}
