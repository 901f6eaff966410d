"""Reading plain-text corpora into documents, streaming (one document in memory at a time).

A text file holds documents separated by blank lines (lines holding only whitespace). A document's text is its
lines joined by ``\\n``. A folder holds files; each file's stem becomes the *slice* label of its documents
(e.g. a Brown genre).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import MyopiaError

TEXT_SUFFIXES = (".txt", ".text", ".md")


@dataclass(frozen=True)
class Document:
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


def split_documents(text: str) -> list[str]:
    """Documents of a text: runs of non-blank lines separated by blank lines."""
    return list(_documents_of_lines(text.replace("\r\n", "\n").split("\n")))


def iter_text_file(path: Path, slice_name: str | None = None) -> Iterator[Document]:
    """Stream the documents of one UTF-8 text file (universal newlines)."""
    label = path.stem if slice_name is None else slice_name
    line_no = 0
    try:
        with open(path, encoding="utf-8", newline=None) as f:

            def numbered():
                nonlocal line_no
                for line in f:
                    line_no += 1
                    yield line

            for doc in _documents_of_lines(numbered()):
                yield Document(doc, label)
    except UnicodeDecodeError:
        raise MyopiaError(f"{path} is not UTF-8 text (near line {line_no + 1})") from None
    except IsADirectoryError:
        raise MyopiaError(f"cannot read {path}: it is a directory, not a text file") from None
    except OSError as exc:
        raise MyopiaError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_text_file(path: Path, slice_name: str | None = None) -> list[Document]:
    return list(iter_text_file(Path(path), slice_name))
