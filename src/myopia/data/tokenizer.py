"""Tokenizers share one small interface.

``encode(text) -> list[int]``, ``encode_batch(texts)``, ``decode(ids) -> str``, ``token_text(id) -> str`` (one
token decoded on its own; partial UTF-8 shows as U+FFFD), ``vocab_size``, ``eos_id`` (the end-of-document token
appended to every document), ``fingerprint()`` (changes whenever the ids of some text would), ``describe()``
and ``save(folder)`` (so a token cache can reload the exact tokenizer).

Spec strings (what ``--tokenizer`` takes), resolved by :func:`make_tokenizer`:

- ``bytes``: UTF-8 bytes (vocabulary 257);
- ``bpe:N``: a byte-level BPE with N ids trained with the ``tokenizers`` library on the training documents;
- ``path/to/tokenizer.json``: a saved ``tokenizers`` tokenizer;
- ``hf:NAME_OR_PATH`` or a folder holding ``tokenizer_config.json``: any Hugging Face tokenizer
  (``transformers.AutoTokenizer``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import MyopiaError, first_line

EOS_TEXT = "<|endoftext|>"


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus an end-of-document token 256 (vocabulary 257)."""

    name = "bytes"
    kind = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no end-of-document id)."""
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text."""
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        """Text of token ids (the end-of-document id dropped; invalid UTF-8 shown as U+FFFD)."""
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        """The text of one token, for reports (the end-of-document token as EOS_TEXT)."""
        if token_id == self.eos_id:
            return EOS_TEXT
        return bytes([int(token_id)]).decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        """A hash that changes whenever the token ids of some text would change."""
        return hashlib.sha256(b"myopia-bytes-v1").hexdigest()[:16]

    def describe(self) -> dict:
        """Kind, vocabulary size and fingerprint (recorded in config.json and cache.json)."""
        return {"kind": self.name, "vocab_size": self.vocab_size, "fingerprint": self.fingerprint()}

    def save(self, folder: Path) -> None:  # nothing to save: bytes are bytes
        """Nothing to save: bytes are bytes."""
        pass


class _WrappedTokenizer:
    """What the two wrapped tokenizers share: ``_decode(ids)`` is the wrapped library's decode; the end-of-document
    id is dropped from decoded text and shown as EOS_TEXT for a single token."""

    def decode(self, ids) -> str:
        return self._decode([int(i) for i in ids if int(i) != self.eos_id])

    def token_text(self, token_id: int) -> str:
        if token_id == self.eos_id:
            return EOS_TEXT
        return self._decode([int(token_id)])

    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.source, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                "fingerprint": self.fingerprint()}


class BPETokenizer(_WrappedTokenizer):
    """A ``tokenizers.Tokenizer`` (byte-level BPE, or any saved tokenizer.json) with an end-of-document token."""

    kind = "bpe"
    FILE = "tokenizer.json"

    def __init__(self, tokenizer, source: str = ""):
        self.tok = tokenizer
        self.source = source
        eos = tokenizer.token_to_id(EOS_TEXT)
        if eos is None:
            raise MyopiaError(f"tokenizer {source or ''} has no {EOS_TEXT} token to end documents with".strip())
        self.eos_id = int(eos)
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self._fingerprint = _sha(tokenizer.to_str())

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, show_progress: bool = False) -> "BPETokenizer":
        """Byte-level BPE with ``vocab_size`` ids (256 byte symbols + merges + the end-of-document token)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 258:
            raise MyopiaError(f"a byte-level BPE needs a vocabulary of at least 258 ids, got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, source=f"bpe:{vocab_size}")

    @classmethod
    def from_file(cls, path: str | Path) -> "BPETokenizer":
        """A BPE tokenizer read from a ``tokenizers`` JSON file."""
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise MyopiaError(f"cannot read tokenizer {path}: {first_line(exc)}") from None
        return cls(tok, source=str(path))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens)."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, encoded in parallel by the tokenizers library."""
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def save(self, folder: Path) -> None:
        """Write the tokenizer to ``folder``/FILE atomically."""
        from ..io import atomic_write_bytes

        atomic_write_bytes(Path(folder) / self.FILE, self.tok.to_str().encode())


class HFTokenizer(_WrappedTokenizer):
    """Any Hugging Face tokenizer (``transformers.AutoTokenizer``), by hub name or local folder."""

    kind = "hf"
    FOLDER = "hf_tokenizer"

    def __init__(self, name_or_path: str):
        import os

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from transformers import AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            self.tok = AutoTokenizer.from_pretrained(name_or_path)
        except Exception as exc:  # missing files, no network, unknown name
            raise MyopiaError(f"cannot load Hugging Face tokenizer {name_or_path!r}: {first_line(exc)}") from None
        self.tok.model_max_length = int(1e30)  # documents are longer than the model context; we cut windows
        self.source = str(name_or_path)
        eos = self.tok.eos_token_id if self.tok.eos_token_id is not None else self.tok.sep_token_id
        if eos is None:
            raise MyopiaError(f"tokenizer {name_or_path} has no end-of-sequence token to end documents with")
        self.eos_id = int(eos)
        self.vocab_size = len(self.tok)
        backend = getattr(self.tok, "backend_tokenizer", None)
        state = backend.to_str() if backend is not None else json.dumps(sorted(self.tok.get_vocab().items()))
        self._fingerprint = _sha(f"{state}|eos={self.eos_id}|n={self.vocab_size}")

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens)."""
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens)."""
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, clean_up_tokenization_spaces=False)

    def save(self, folder: Path) -> None:
        """Write the tokenizer with ``save_pretrained`` into ``folder``/FOLDER."""
        self.tok.save_pretrained(str(Path(folder) / self.FOLDER))


def parse_bpe_spec(spec: str) -> int | None:
    """``bpe:N`` -> N; None for other specs."""
    if not spec.startswith("bpe"):
        return None
    _, _, n = spec.partition(":")
    try:
        return int(n)
    except ValueError:
        raise MyopiaError(f"tokenizer spec {spec!r}: write bpe:N with N the vocabulary size, e.g. bpe:4096") from None


def make_tokenizer(spec, train_texts=None, *, show_progress: bool = False):
    """A tokenizer from a spec string (see the module docstring) or an existing tokenizer object.

    ``train_texts`` (an iterable of strings, or a callable returning one) is used only by ``bpe:N``.
    """
    if not isinstance(spec, str):
        return spec
    if spec == "bytes":
        return ByteTokenizer()
    n = parse_bpe_spec(spec)
    if n is not None:
        if train_texts is None:
            raise MyopiaError("a bpe:N tokenizer must be trained on documents; none were given")
        texts = train_texts() if callable(train_texts) else train_texts
        return BPETokenizer.train(texts, n, show_progress=show_progress)
    if spec.startswith("hf:"):
        return HFTokenizer(spec[3:])
    path = Path(spec)
    if path.is_file() and path.suffix == ".json":
        return BPETokenizer.from_file(path)
    if path.is_dir() and (path / BPETokenizer.FILE).is_file() and not (path / "tokenizer_config.json").is_file():
        return BPETokenizer.from_file(path / BPETokenizer.FILE)
    if path.is_dir():
        return HFTokenizer(str(path))
    raise MyopiaError(f"unknown tokenizer {spec!r}: use bytes, bpe:N, a tokenizer.json, hf:NAME or a tokenizer folder")


def check_model_tokenizer(spec: str | None, tokenizer, model: str) -> None:
    """Refuse ``--tokenizer spec`` where a model's own ``tokenizer`` decides the ids (None: nothing to check).

    ``bpe:N`` would train a new vocabulary, which a trained model cannot read; any other spec must have the same
    fingerprint as the model's tokenizer."""
    if spec is None:
        return
    if parse_bpe_spec(spec) is not None:
        raise MyopiaError(f"--tokenizer {spec} trains a new vocabulary; {model} reads its own tokenizer's ids "
                          "(leave --tokenizer out)")
    given = make_tokenizer(spec)
    if given.fingerprint() != tokenizer.fingerprint():
        raise MyopiaError(f"--tokenizer {spec} is not {model}'s tokenizer ({tokenizer.describe()['kind']}, "
                          f"vocabulary {tokenizer.vocab_size}); leave --tokenizer out to use the model's own")


def load_saved_tokenizer(folder: Path, kind: str):
    """The tokenizer a token cache saved with :meth:`save`."""
    folder = Path(folder)
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.from_file(folder / BPETokenizer.FILE)
    if kind == "hf":
        return HFTokenizer(str(folder / HFTokenizer.FOLDER))
    raise MyopiaError(f"{folder}: unknown tokenizer kind {kind!r}")
