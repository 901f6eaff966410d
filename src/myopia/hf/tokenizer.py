"""Hugging Face tokenizers behind myopia's tokenizer interface, and a byte-level HF tokenizer for exports.

:class:`HFTokenizer` exposes ``encode``, ``decode``, ``vocab_size``, ``eos_id``, ``fingerprint`` and ``describe``
(what :func:`myopia.data.load_corpus` needs). :func:`bytes_tokenizer` builds a ``PreTrainedTokenizerFast``
whose ids equal :class:`myopia.data.ByteTokenizer`'s (UTF-8 bytes 0..255, end-of-document 256), so exported
byte-level models can be evaluated by tools that expect a Hugging Face tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import MyopiaError

EOS_TOKEN = "<|endoftext|>"


class HFTokenizer:
    """A transformers tokenizer as a myopia tokenizer. ``source`` is the name or path it was loaded from."""

    name = "hf"

    def __init__(self, tokenizer, source: str = ""):
        self.tokenizer = tokenizer
        self.source = str(source)
        if tokenizer.eos_token_id is None:
            raise MyopiaError(f"tokenizer {self.source or type(tokenizer).__name__} has no end-of-text token "
                              "(eos_token); documents could not be separated")
        self.vocab_size = len(tokenizer)
        self.eos_id = int(tokenizer.eos_token_id)
        self._backend = getattr(tokenizer, "backend_tokenizer", None)

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:  # fast path, and no "sequence longer than model_max_length" warnings
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False, verbose=False)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def fingerprint(self) -> str:
        """A hash of the tokenizer's full definition (changes whenever some text's ids would change)."""
        if self._backend is not None:
            blob = self._backend.to_str()
        else:
            blob = json.dumps(sorted(self.tokenizer.get_vocab().items()))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return {"kind": self.name, "source": self.source, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                "fingerprint": self.fingerprint()}


def load_hf_tokenizer(name_or_path: str | Path) -> HFTokenizer:
    """``AutoTokenizer.from_pretrained`` (hub name when online, local directory always) as an :class:`HFTokenizer`."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MyopiaError(f"cannot load a tokenizer from {name_or_path}: {first}") from None
    return HFTokenizer(tok, source=str(name_or_path))


def _byte_symbols() -> list[str]:
    """One printable unicode character per byte value (the usual byte-level BPE alphabet), index = byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def bytes_tokenizer():
    """A ``PreTrainedTokenizerFast`` with ids identical to :class:`myopia.data.ByteTokenizer` (vocabulary 257)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: b for b, s in enumerate(_byte_symbols())}
    vocab[EOS_TOKEN] = 256
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOS_TOKEN])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, model_max_length=1 << 30)
