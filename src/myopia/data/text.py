"""Reading plain-text corpora into documents.

A text file holds documents separated by one or more blank lines. A folder holds text files; each file's
stem becomes the *slice* label of its documents (e.g. a Brown genre).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import MyopiaError

TEXT_SUFFIXES = (".txt", ".text", ".md")
_BLANK_LINES = re.compile(r"\n[ \t]*\n+")


@dataclass(frozen=True)
class Document:
    text: str
    slice: str = ""


def split_documents(text: str) -> list[str]:
    """Documents of a text: paragraphs separated by blank lines, stripped, empty ones dropped."""
    text = text.replace("\r\n", "\n")
    return [d.strip("\n") for d in _BLANK_LINES.split(text) if d.strip()]


def read_text_file(path: Path, slice_name: str | None = None) -> list[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MyopiaError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise MyopiaError(f"cannot read {path}: {exc.strerror or exc}") from None
    label = path.stem if slice_name is None else slice_name
    return [Document(d, label) for d in split_documents(text)]


def read_text_documents(path: str | Path) -> list[Document]:
    """Documents of a text file or of every text file in a folder (sorted by name, slice = file stem)."""
    path = Path(path)
    if not path.exists():
        raise MyopiaError(f"data path {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise MyopiaError(f"folder {path} holds no text files ({', '.join(TEXT_SUFFIXES)})")
        docs = [d for f in files for d in read_text_file(f)]
    else:
        docs = read_text_file(path)
    if not docs:
        raise MyopiaError(f"corpus {path} is empty (no non-blank text)")
    return docs
