"""Reading plain-text corpora into documents, streaming (one document in memory at a time).

A text file holds documents separated by blank lines (lines holding only whitespace). A document's text is its
lines joined by ``\\n``. A folder holds files; each file's stem becomes the *slice* label of its documents
(e.g. a Brown genre).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import MyopiaError

TEXT_SUFFIXES = (".txt", ".text", ".md")


@dataclass(frozen=True)
class Document:
    """One document: its text and its slice label (e.g. the file stem of a folder corpus)."""

    text: str
    slice: str = ""


def _documents_of_lines(lines) -> Iterator[str]:
    """Maximal runs of non-blank lines, each joined with newlines."""
    current: list[str] = []
    for line in lines:
        line = line.rstrip("\n")
        if line.strip():
            current.append(line)
        elif current:
            yield "\n".join(current)
            current = []
    if current:
        yield "\n".join(current)


DEDUP = "exact-normalised-v1"  # what the data layer's deduplication does (recorded in token caches)


def dedup_key(text: str) -> bytes:
    """What makes two documents duplicates: equal text after lower-casing and collapsing every run of whitespace
    to one space (a 16-byte BLAKE2b digest of that)."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).digest()


class Deduplicator:
    """Passes each document whose :func:`dedup_key` was not seen before (the first copy is kept, in order) and
    counts the ones it drops in ``removed``. Memory: one 16-byte key per distinct document."""

    def __init__(self):
        self.seen: set[bytes] = set()
        self.removed = 0

    def __call__(self, docs: Iterable[Document]) -> Iterator[Document]:
        for doc in docs:
            key = dedup_key(doc.text)
            if key in self.seen:
                self.removed += 1
                continue
            self.seen.add(key)
            yield doc


def split_documents(text: str) -> list[str]:
    """Documents of a text: runs of non-blank lines separated by blank lines."""
    return list(_documents_of_lines(text.replace("\r\n", "\n").split("\n")))


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file; ``\\r\\n`` and ``\\r`` read as ``\\n`` (universal newlines).

    Each line is decoded on its own, so a byte that is not UTF-8 is refused naming its own line (1-based,
    counted by ``\\n``), not the line where a decoder's read-ahead buffer started.
    """
    with open(path, "rb") as f:
        for no, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MyopiaError(f"{path} is not UTF-8 text (line {no}, byte {exc.start + 1} of that line)") from None
            parts = text.replace("\r\n", "\n").split("\r")
            for i, part in enumerate(parts):
                if i < len(parts) - 1:
                    yield no, part + "\n"
                elif part:
                    yield no, part


def iter_text_file(path: Path, slice_name: str | None = None) -> Iterator[Document]:
    """Stream the documents of one UTF-8 text file (universal newlines)."""
    label = path.stem if slice_name is None else slice_name
    try:
        for doc in _documents_of_lines(line for _, line in utf8_lines(path)):
            yield Document(doc, label)
    except IsADirectoryError:
        raise MyopiaError(f"cannot read {path}: it is a directory, not a text file") from None
    except OSError as exc:
        raise MyopiaError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_text_file(path: Path, slice_name: str | None = None) -> list[Document]:
    """Every document of one UTF-8 text file (see :func:`iter_text_file`)."""
    return list(iter_text_file(Path(path), slice_name))
