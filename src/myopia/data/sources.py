"""Where documents come from: text files, folders, JSON Lines, Parquet, and Hugging Face datasets.

A :class:`DataSource` streams :class:`~myopia.data.text.Document` objects (text + slice label) and has a
fingerprint that changes whenever its documents could change (file names, sizes and modification times; the
dataset fingerprint for hub datasets), so token caches can tell whether they are stale.

Spec strings (what ``--data`` takes):

- ``path/to/file.txt`` (any suffix but the ones below): documents as ``documents`` says (blank-line separated by
  default; see :mod:`myopia.data.text`), slice = file stem;
- ``path/to/folder``: every ``.txt``/``.text``/``.md``/``.jsonl``/``.parquet`` file in it, slice = file stem
  (or the label field of JSON/Parquet records when one is named);
- ``file.jsonl`` / ``file.ndjson`` / ``file.json`` (one JSON object per line) and ``file.parquet``: one document
  per record from ``text_field``; the slice is ``label_field`` when given, else the file stem;
- a folder written by ``datasets.Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``);
- ``hf:NAME`` (with ``hf_config`` / ``hf_split``): ``datasets.load_dataset(NAME, ...)``, a hub dataset or a local
  folder of data files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import MyopiaError, first_line
from .text import (DEFAULT_DOCUMENTS, TEXT_SUFFIXES, Document, check_document_mode, cut_segments, iter_text_file,
                   read_whole_text, segment_size)

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet",)
FOLDER_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
KINDS = ("text", "folder", "jsonl", "parquet", "hf-disk", "hf-hub")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "text"


def _stat_entry(path: Path, root: Path) -> list:
    try:
        st = path.stat()
    except OSError as exc:
        raise MyopiaError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [str(path.relative_to(root)) if path != root else path.name, st.st_size, st.st_mtime_ns]


class DataSource:
    """A stream of documents. Build one with :meth:`from_spec`; iterate with :meth:`documents`."""

    def __init__(self, kind: str, location: str, *, text_field: str = "text", label_field: str | None = None,
                 hf_config: str | None = None, hf_split: str | None = None, documents: str = DEFAULT_DOCUMENTS):
        if kind not in KINDS:
            raise MyopiaError(f"unknown data source kind {kind!r}")
        check_document_mode(documents)
        if documents != DEFAULT_DOCUMENTS and kind not in ("text", "folder"):
            raise MyopiaError(f"--documents {documents} applies to plain-text files; each record of {location} is "
                              "one document already")
        self.kind, self.location, self.documents_mode = kind, location, documents
        self.text_field, self.label_field = text_field, label_field
        self.hf_config, self.hf_split = hf_config, hf_split
        self._dataset = None  # a loaded Hugging Face dataset, kept once loaded

    @classmethod
    def from_spec(cls, spec: str | Path, *, text_field: str = "text", label_field: str | None = None,
                  hf_config: str | None = None, hf_split: str | None = None,
                  documents: str = DEFAULT_DOCUMENTS) -> "DataSource":
        """The source named by a path or ``hf:NAME``; a clear error when the path does not exist."""
        opts = dict(text_field=text_field, label_field=label_field, hf_config=hf_config, hf_split=hf_split,
                    documents=documents)
        spec_str = str(spec)
        if spec_str.startswith("hf:"):
            if not spec_str[3:]:
                raise MyopiaError("hf: needs a dataset name, e.g. hf:wikitext")
            return cls("hf-hub", spec_str[3:], **opts)
        path = Path(spec)
        if not path.exists():
            raise MyopiaError(f"data path {path} does not exist (for a Hugging Face hub dataset write hf:NAME)")
        if path.is_dir():
            return cls("hf-disk" if _is_saved_dataset(path) else "folder", str(path), **opts)
        return cls(_file_kind(path), str(path), **opts)

    # ---- identity ------------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """Kind, location and reading options (what the cache key and provenance record)."""
        out = {"kind": self.kind, "location": self.location}
        if self.kind != "text":
            out.update(text_field=self.text_field, label_field=self.label_field)
        if self.kind.startswith("hf"):
            out.update(hf_config=self.hf_config, hf_split=self.hf_split)
        if self.documents_mode != DEFAULT_DOCUMENTS:  # absent at the default: earlier caches keep their keys
            out["documents"] = self.documents_mode
        return out

    def fingerprint(self) -> str:
        """Changes whenever the documents could: names, sizes and mtimes of the files read, and the options."""
        path = Path(self.location)
        if self.kind == "hf-hub":
            entries = [self._hub_fingerprint()]
        elif self.kind == "hf-disk":
            entries = [_stat_entry(p, path) for p in sorted(path.rglob("*")) if p.is_file()]
        elif self.kind == "folder":
            entries = [_stat_entry(p, path) for p in self._folder_files()]
        else:
            entries = [_stat_entry(path, path)]
        payload = json.dumps({"source": {k: v for k, v in self.describe().items() if k != "location"},
                              "files": entries}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # ---- documents -----------------------------------------------------------------------------------------
    def documents(self) -> Iterator[Document]:
        """Stream the source's documents, one at a time, in a fixed order."""
        path = Path(self.location)
        segmented = self.documents_mode != DEFAULT_DOCUMENTS
        if self.kind == "text":
            yield from _segmented_documents([path], joined=False) if segmented else iter_text_file(path)
        elif self.kind == "folder":
            files = self._folder_files()
            if segmented:  # the text files as segments (one stream with ``stream``), then the record files
                texts = [f for f in files if _file_kind(f) == "text"]
                yield from _segmented_documents(texts, joined=self.documents_mode == "stream")
                files = [f for f in files if _file_kind(f) != "text"]
            for f in files:
                yield from self._file_documents(f)
        elif self.kind in ("jsonl", "parquet"):
            yield from self._file_documents(path)
        else:
            yield from self._dataset_documents()

    def _folder_files(self) -> list[Path]:
        path = Path(self.location)
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FOLDER_SUFFIXES)
        if not files:
            raise MyopiaError(f"folder {path} holds no readable files ({', '.join(FOLDER_SUFFIXES)})")
        return files

    def _file_documents(self, path: Path) -> Iterator[Document]:
        kind = _file_kind(path)
        if kind == "text":
            yield from iter_text_file(path)
        elif kind == "jsonl":
            yield from self._jsonl_documents(path)
        else:
            yield from self._parquet_documents(path)

    def _record_document(self, text, label, where: str, default_slice: str) -> Document | None:
        if not isinstance(text, str):
            raise MyopiaError(f"{where}: field {self.text_field!r} is {type(text).__name__}, not text")
        if not text.strip():
            return None
        return Document(text, default_slice if self.label_field is None else str(label))

    def _jsonl_documents(self, path: Path) -> Iterator[Document]:
        from .text import utf8_lines  # each line decoded on its own: a bad byte is named at its own line

        try:
            for line_no, line in utf8_lines(path):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MyopiaError(f"{path} line {line_no} is not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise MyopiaError(f"{path} line {line_no} is not a JSON object")
                for field in (self.text_field, self.label_field):
                    if field is not None and field not in record:
                        raise MyopiaError(f"{path} line {line_no} has no field {field!r} "
                                          f"(fields: {', '.join(map(str, record)) or 'none'})")
                doc = self._record_document(record[self.text_field], record.get(self.label_field),
                                            f"{path} line {line_no}", path.stem)
                if doc is not None:
                    yield doc
        except OSError as exc:
            raise MyopiaError(f"cannot read {path}: {exc.strerror or exc}") from None

    def _parquet_documents(self, path: Path) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise MyopiaError(f"cannot read {path} as Parquet: {first_line(exc)}") from None
        names = pf.schema_arrow.names
        columns = [c for c in (self.text_field, self.label_field) if c is not None]
        for c in columns:
            if c not in names:
                raise MyopiaError(f"{path} has no field {c!r} (fields: {', '.join(names)})")
        row = 0
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            texts = batch.column(self.text_field).to_pylist()
            labels = batch.column(self.label_field).to_pylist() if self.label_field else [None] * len(texts)
            for text, label in zip(texts, labels):
                row += 1
                doc = self._record_document(text, label, f"{path} row {row}", path.stem)
                if doc is not None:
                    yield doc

    # ---- Hugging Face datasets -----------------------------------------------------------------------------
    def _load_dataset(self):
        if self._dataset is not None:
            return self._dataset
        import datasets

        datasets.utils.logging.disable_progress_bar()
        try:
            if self.kind == "hf-disk":
                ds = datasets.load_from_disk(self.location)
            else:
                ds = datasets.load_dataset(self.location, self.hf_config, split=self.hf_split)
        except Exception as exc:  # network, missing dataset, bad format: one line
            raise MyopiaError(f"cannot load Hugging Face dataset {self.location!r}: {first_line(exc)}") from None
        if isinstance(ds, datasets.DatasetDict):
            wanted = self.hf_split.split(",") if (self.hf_split and self.kind == "hf-disk") else list(ds.keys())
            missing = [s for s in wanted if s not in ds]
            if missing:
                raise MyopiaError(f"dataset {self.location} has no split {missing[0]!r} (splits: {', '.join(ds)})")
            parts = [(s, ds[s]) for s in wanted]
        else:
            parts = [(self.hf_split or "", ds)]
        for split, part in parts:
            for c in (self.text_field, self.label_field):
                if c is not None and c not in part.column_names:
                    raise MyopiaError(f"dataset {self.location}{'/' + split if split else ''} has no field {c!r} "
                                      f"(fields: {', '.join(part.column_names)})")
        self._dataset = parts
        return parts

    def _hub_fingerprint(self) -> str:
        return ",".join(f"{s}:{d._fingerprint}" for s, d in self._load_dataset())

    def _dataset_documents(self) -> Iterator[Document]:
        for split, part in self._load_dataset():
            label_names = None
            if self.label_field is not None:
                feature = part.features[self.label_field]
                label_names = getattr(feature, "names", None)  # a ClassLabel: ints to names
            default = Path(self.location).name if self.kind == "hf-disk" else self.location
            default = f"{default}/{split}" if split and len(self._dataset) > 1 else default
            columns = [c for c in (self.text_field, self.label_field) if c is not None]
            row = 0
            for batch in part.select_columns(columns).iter(batch_size=1000):
                texts = batch[self.text_field]
                labels = batch[self.label_field] if self.label_field else [None] * len(texts)
                for text, label in zip(texts, labels):
                    row += 1
                    if label_names is not None and isinstance(label, int):
                        label = label_names[label]
                    doc = self._record_document(text, label, f"dataset {self.location} row {row}", default)
                    if doc is not None:
                        yield doc


def _segmented_documents(paths: list[Path], *, joined: bool) -> Iterator[Document]:
    """Contiguous segments of the text files ``paths`` (see :mod:`myopia.data.text`): each file cut on its own, or
    with ``joined`` all of them as one text (a segment's slice is the file it starts in)."""
    if not paths:
        return
    size = segment_size(sum(_stat_entry(p, p)[1] for p in paths))
    rest, rest_label = "", ""
    for path in paths:
        text = read_whole_text(path)
        if joined and rest:
            text, first_label = rest + "\n" + text, rest_label
        else:
            first_label = path.stem
        pieces, rest = cut_segments(text, size)
        for i, piece in enumerate(pieces):
            yield Document(piece, first_label if i == 0 else path.stem)
        rest_label = first_label if not pieces else path.stem
        if not joined and rest.strip():
            yield Document(rest, rest_label)
            rest = ""
    if joined and rest.strip():
        yield Document(rest, rest_label)


def read_text_documents(path: str | Path) -> list[Document]:
    """Documents of a text file or of every text file in a folder (sorted by name, slice = file stem)."""
    docs = list(DataSource.from_spec(path).documents())
    if not docs:
        raise MyopiaError(f"corpus {path} is empty (no non-blank text)")
    return docs
