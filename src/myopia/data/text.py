"""Reading plain-text corpora into documents.

How a text file becomes documents is a choice (``--documents``, :data:`DOCUMENT_MODES`):

- ``blank-lines`` (the default): documents are separated by blank lines (lines holding only whitespace); a
  document's text is its lines joined by ``\\n``. Streams one document at a time. This is the convention of
  corpora of many short documents (the Brown corpus: one sample per block). A blank line is the only document
  boundary plain text carries, and the held-out split and the decontamination checks work by document.
- ``file``: each file is one text (line breaks kept), cut into contiguous *segments* of about
  :data:`SEGMENT_CHARS` characters (at a line end) so that validation and test hold whole stretches of the text;
  segments are documents for the split and for document masks.
- ``stream``: every file of a folder read as one continuous text, then cut into segments the same way (a segment
  may run across a file boundary; its slice is the file it starts in). For a single file ``file`` and
  ``stream`` are the same: the nanoGPT reading of e.g. tinyshakespeare.

A folder holds files; each file's stem becomes the *slice* label of its documents (e.g. a Brown genre).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import MyopiaError

TEXT_SUFFIXES = (".txt", ".text", ".md")
DOCUMENT_MODES = ("blank-lines", "file", "stream")
DEFAULT_DOCUMENTS = "blank-lines"
SEGMENT_CHARS = 8192  # ``file`` / ``stream`` segments: about this many characters ...
MIN_SEGMENTS = 20  # ... or fewer, so that a small corpus still has this many (a 5% split holds one)


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


def check_document_mode(documents: str) -> str:
    """``documents`` if it is one of :data:`DOCUMENT_MODES`; else a one-line error."""
    if documents not in DOCUMENT_MODES:
        raise MyopiaError(f"--documents must be one of {', '.join(DOCUMENT_MODES)}, got {documents!r}")
    return documents


def read_whole_text(path: Path) -> str:
    """A UTF-8 text file's whole text (universal newlines, trailing white space removed); one-line errors."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise MyopiaError(f"cannot read {path}: it is a directory, not a text file") from None
    except OSError as exc:
        raise MyopiaError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MyopiaError(f"{path} is not UTF-8 text (line {line})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def segment_size(total_chars: int) -> int:
    """Characters per segment for a text of ``total_chars``: SEGMENT_CHARS, smaller when that would give fewer
    than MIN_SEGMENTS segments."""
    return max(1, min(SEGMENT_CHARS, total_chars // MIN_SEGMENTS))


def cut_segments(text: str, size: int) -> tuple[list[str], str]:
    """Cut ``text`` into contiguous segments of about ``size`` characters, each ending at a line end when one lies
    in its second half (the line break itself is dropped: the end-of-document token stands there). Returns the
    full segments and the remainder shorter than ``size`` (not yet cut, for the caller to continue or flush)."""
    segments, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind("\n", start + size // 2, end)
        end = cut if cut > start else end
        if text[start:end].strip():
            segments.append(text[start:end])
        start = end + 1 if cut > start else end
    return segments, text[start:]
