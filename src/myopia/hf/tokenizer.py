"""Hugging Face tokenizers behind myopia's tokenizer interface, and a byte-level HF tokenizer for exports.

:func:`load_hf_tokenizer` wraps any transformers tokenizer as :class:`myopia.data.tokenizer.HFTokenizer` (what
:func:`myopia.data.load_corpus` needs). :func:`bytes_tokenizer` builds a ``PreTrainedTokenizerFast``
whose ids equal :class:`myopia.data.ByteTokenizer`'s (UTF-8 bytes 0..255, end-of-document 256), so exported
byte-level models can be evaluated by tools that expect a Hugging Face tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from ..data.tokenizer import HFTokenizer

EOS_TOKEN = "<|endoftext|>"


def load_hf_tokenizer(name_or_path: str | Path) -> HFTokenizer:
    """``AutoTokenizer.from_pretrained`` (hub name when online, local directory always) as a myopia tokenizer."""
    return HFTokenizer(str(name_or_path))


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
