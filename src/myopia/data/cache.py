"""Token caches: a corpus tokenized once, stored as a memory-mapped array plus metadata.

A cache folder holds

    cache.json        format, source (kind, location, fingerprint), tokenizer (kind, spec, fingerprint, vocab),
                      split settings, counts, slice names, dtype, the key it was built for, provenance
    tokens.bin        all documents back to back (each ends with the end-of-document token), raw uint16/uint32
    doc_offsets.npy   (n_docs + 1,) int64: document d is tokens[offsets[d]:offsets[d + 1]]
    doc_split.npy     (n_docs,) int8: 0 train, 1 val, 2 test (document-level, seeded)
    doc_slice.npy     (n_docs,) int32: index into cache.json's slice names
    tokenizer.json or hf_tokenizer/   the exact tokenizer (none for bytes)

:func:`build_cache` streams the source (documents are read, tokenized in batches and appended to disk, never
all held in memory), skips the build when the folder already holds a cache for the same key (source
fingerprint, tokenizer, split settings) and rebuilds it otherwise. The folder is replaced atomically.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from .corpus import TokenCorpus, assign_splits, token_dtype
from .sources import DataSource
from .text import DEDUP, Deduplicator
from .tokenizer import load_saved_tokenizer, make_tokenizer, parse_bpe_spec

FORMAT = "myopia-token-cache-v1"
META = "cache.json"
ENCODE_BATCH = 256  # documents tokenized per call


def is_cache(path: str | Path) -> bool:
    """Whether ``path`` is a token-cache folder (it holds cache.json)."""
    return (Path(path) / META).is_file()


def _progress(progress: bool, **kw):
    from tqdm import tqdm

    return tqdm(disable=not progress, file=sys.stderr, mininterval=1.0, dynamic_ncols=True, **kw)


def _tokenizer_key(spec) -> tuple[dict, object]:
    """What identifies the tokenizer before building: the spec for ``bpe:N`` (trained here), else its hash."""
    if isinstance(spec, str) and parse_bpe_spec(spec) is not None:
        return {"spec": spec}, None
    tok = make_tokenizer(spec)
    return {"kind": tok.kind, "fingerprint": tok.fingerprint()}, tok


def cache_key(source: DataSource, tokenizer_key: dict, val_frac: float, test_frac: float, split_seed: int) -> dict:
    """What a cache must match to be reused: format, source fingerprint, tokenizer and split settings."""
    return {
        "format": FORMAT,
        "source_fingerprint": source.fingerprint(),
        "tokenizer": tokenizer_key,
        "split": {"val_frac": float(val_frac), "test_frac": float(test_frac), "split_seed": int(split_seed)},
        "dedup": DEDUP,
    }


def stale_reason(folder: Path, key: dict) -> str:
    """Why the cache in ``folder`` cannot serve ``key`` ('' when it can)."""
    if not is_cache(folder):
        return "no cache yet"
    try:
        meta = read_json(folder / META)
    except MyopiaError as exc:
        return str(exc)
    old = meta.get("key", {})
    for part, label in (("format", "cache format"), ("source_fingerprint", "the source changed"),
                        ("tokenizer", "the tokenizer changed"), ("split", "the split settings changed"),
                        ("dedup", "built without deduplication")):
        if old.get(part) != key[part]:
            return label
    tokens = folder / "tokens.bin"
    expected = meta.get("n_tokens", -1) * np.dtype(meta.get("dtype", "uint16")).itemsize
    if not tokens.is_file() or tokens.stat().st_size != expected:
        return "tokens.bin is missing or truncated"
    return ""


def build_cache(
    source: DataSource | str | Path,
    tokenizer,
    out: str | Path,
    *,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    split_seed: int = 0,
    progress: bool = False,
    force: bool = False,
) -> TokenCorpus:
    """Tokenize ``source`` into the cache folder ``out`` (or reuse it when it matches); returns the corpus.

    Three streaming passes at most: count the documents (the seeded split needs the total), train the tokenizer
    on the training documents (``bpe:N`` only), tokenize and append to disk. The folder is replaced atomically.
    """
    source = source if isinstance(source, DataSource) else DataSource.from_spec(source)
    out = Path(out)
    unique = _Unique(source)
    tok_key, tok = _tokenizer_key(tokenizer)
    key = cache_key(source, tok_key, val_frac, test_frac, split_seed)
    reason = "rebuild requested" if force else stale_reason(out, key)
    if not reason:
        if progress:
            print(f"token cache {out} is up to date: reusing it", file=sys.stderr)
        return open_cache(out)
    if out.exists() and not is_cache(out) and any(out.iterdir()):
        raise MyopiaError(f"{out} exists and is not a token cache: refusing to overwrite it")
    if progress:
        print(f"building token cache {out} ({reason})", file=sys.stderr)
    t0 = time.perf_counter()
    n_docs = count_documents(unique, progress)
    duplicates = unique.removed
    split = assign_splits(n_docs, val_frac, test_frac, split_seed)
    if tok is None:
        tok = train_tokenizer(unique, tokenizer, split, progress)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        offsets, slice_names = write_tokens(unique, tok, n_docs, tmp, progress)
        np.save(tmp / "doc_offsets.npy", offsets)
        split, excluded = _exclude_near_duplicates(tmp, tok, offsets, split, progress)
        np.save(tmp / "doc_split.npy", split)
        tok.save(tmp)
        meta = {
            "format": FORMAT,
            "key": key,
            "source": {**source.describe(), "fingerprint": key["source_fingerprint"]},
            "tokenizer": {"spec": tokenizer if isinstance(tokenizer, str) else tok.describe(), **tok.describe()},
            "split": key["split"],
            "n_docs": n_docs,
            "n_tokens": int(offsets[-1]),
            "duplicates_removed": duplicates,
            "near_duplicates_excluded": excluded,
            "dtype": np.dtype(token_dtype(tok.vocab_size)).name,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "slice_names": slice_names,
            "build_time_s": time.perf_counter() - t0,
            **provenance(),
        }
        write_json(tmp / META, meta)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        print(f"token cache {out}: {n_docs:,} documents, {int(offsets[-1]):,} tokens "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return open_cache(out)


class _Unique:
    """``source`` without its exact duplicates (:class:`~myopia.data.text.Deduplicator`), the same documents in
    every pass; ``removed`` counts the duplicates of the last full pass."""

    def __init__(self, source: DataSource):
        self.source, self.location, self.removed = source, source.location, 0

    def documents(self):
        dedup = Deduplicator()
        yield from dedup(self.source.documents())
        self.removed = dedup.removed


def _exclude_near_duplicates(folder: Path, tok, offsets: np.ndarray, split: np.ndarray, progress: bool):
    """The split with held-out documents that overlap the training split moved out of every split (see
    :func:`myopia.data.overlap.exclude_split_overlap`), and their number."""
    from .overlap import exclude_split_overlap

    tokens = np.memmap(folder / "tokens.bin", dtype=token_dtype(tok.vocab_size), mode="r", shape=(int(offsets[-1]),))
    corpus = TokenCorpus(tokens=tokens, doc_offsets=offsets, doc_slices=[""] * (len(offsets) - 1), doc_split=split,
                         vocab_size=tok.vocab_size, tokenizer=tok, source=str(folder))
    if progress:
        print("checking held-out documents for overlap with the training split", file=sys.stderr)
    n = exclude_split_overlap(corpus)
    del tokens
    return corpus.doc_split, n


def count_documents(source: DataSource, progress: bool = False) -> int:
    """Pass 1: the number of documents in ``source`` (refuses an empty source)."""
    n_docs = 0
    with _progress(progress, desc="reading documents", unit="doc") as bar:
        for _ in source.documents():
            n_docs += 1
            bar.update(1)
    if n_docs == 0:
        raise MyopiaError(f"corpus {source.location} is empty: no non-blank documents")
    return n_docs


def train_tokenizer(source: DataSource, spec: str, split: np.ndarray, progress: bool = False):
    """Pass 2 (``bpe:N`` only): the tokenizer ``spec`` trained on the training documents (``split == 0``)."""
    if progress:
        print(f"training {spec} on {int((split == 0).sum())} training documents", file=sys.stderr)
    return make_tokenizer(spec, lambda: (d.text for d, s in zip(source.documents(), split) if s == 0),
                          show_progress=progress)


def write_tokens(source: DataSource, tok, n_docs: int, folder: Path, progress: bool = False
                 ) -> tuple[np.ndarray, list[str]]:
    """Pass 3: tokenize ``source`` in batches into ``folder/tokens.bin`` (each document ends with the
    end-of-document id) and ``folder/doc_slice.npy``; returns the document offsets (n_docs + 1,) and the slice
    names. Refuses ids outside the vocabulary and a source whose document count changed since pass 1."""
    dtype = token_dtype(tok.vocab_size)
    lengths = np.zeros(n_docs, dtype=np.int64)
    slice_ids = np.zeros(n_docs, dtype=np.int32)
    slice_names: dict[str, int] = {}
    d = 0
    with open(folder / "tokens.bin", "wb") as f, _progress(progress, desc="tokenizing", unit="doc",
                                                            total=n_docs) as bar:

        def flush(batch):
            nonlocal d
            for ids, doc in zip(tok.encode_batch([doc.text for doc in batch]), batch):
                if d >= n_docs:
                    raise MyopiaError(f"{source.location} changed while it was being read: rerun")
                arr = np.asarray(ids + [tok.eos_id], dtype=np.int64)
                if arr.size and (arr.min() < 0 or arr.max() >= tok.vocab_size):
                    raise MyopiaError(f"tokenizer produced ids outside its vocabulary of {tok.vocab_size}")
                arr.astype(dtype).tofile(f)
                lengths[d] = arr.size
                slice_ids[d] = slice_names.setdefault(doc.slice, len(slice_names))
                d += 1
            bar.update(len(batch))

        batch = []
        for doc in source.documents():
            batch.append(doc)
            if len(batch) == ENCODE_BATCH:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    if d != n_docs:
        raise MyopiaError(f"{source.location} changed while it was being read: rerun")
    np.save(folder / "doc_slice.npy", slice_ids)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), list(slice_names)


def open_cache(folder: str | Path, *, expect_tokenizer=None) -> TokenCorpus:
    """The corpus stored in a cache folder; tokens are memory-mapped (read-only)."""
    folder = Path(folder)
    meta = read_json(folder / META)
    if meta.get("format") != FORMAT:
        raise MyopiaError(f"{folder} is not a myopia token cache (format {meta.get('format')!r})")
    try:
        tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r",
                           shape=(int(meta["n_tokens"]),))
        offsets = np.load(folder / "doc_offsets.npy")
        split = np.load(folder / "doc_split.npy")
        slice_ids = np.load(folder / "doc_slice.npy")
    except (OSError, ValueError) as exc:
        raise MyopiaError(f"token cache {folder} is incomplete or corrupted ({exc}); rebuild it") from None
    if len(offsets) != meta["n_docs"] + 1 or offsets[-1] != meta["n_tokens"]:
        raise MyopiaError(f"token cache {folder} is inconsistent (document offsets vs token count); rebuild it")
    tok = load_saved_tokenizer(folder, meta["tokenizer"]["kind"])
    if tok.fingerprint() != meta["tokenizer"]["fingerprint"]:
        raise MyopiaError(f"token cache {folder}: the saved tokenizer does not match its recorded fingerprint")
    if expect_tokenizer is not None and not (isinstance(expect_tokenizer, str) and
                                             parse_bpe_spec(expect_tokenizer) is not None):
        want = make_tokenizer(expect_tokenizer)
        if want.fingerprint() != tok.fingerprint():
            raise MyopiaError(f"tokenizer mismatch: cache {folder} was built with {meta['tokenizer']['kind']} "
                              f"(fingerprint {tok.fingerprint()}), not the requested {want.kind} "
                              f"(fingerprint {want.fingerprint()})")
    names = meta["slice_names"]
    return TokenCorpus(
        tokens=tokens,
        doc_offsets=offsets,
        doc_slices=[names[i] for i in slice_ids],
        doc_split=split,
        vocab_size=int(meta["vocab_size"]),
        tokenizer=tok,
        source=meta["source"]["location"],
        info={"cache": str(folder), "source_fingerprint": meta["source"]["fingerprint"], "split": meta["split"],
              **{k: meta[k] for k in ("duplicates_removed", "near_duplicates_excluded") if k in meta}},
    )


def cache_info(folder: str | Path) -> dict:
    """A summary of a cache folder: its metadata plus per-split and per-slice counts."""
    corpus = open_cache(folder)
    meta = read_json(Path(folder) / META)
    lengths = corpus.doc_lengths
    slices = {}
    for name in corpus.slice_names():
        sel = np.array([s == name for s in corpus.doc_slices])
        slices[name] = {"documents": int(sel.sum()), "tokens": int(lengths[sel].sum())}
    return {
        **corpus.describe(),
        "cache": str(folder),
        "source": meta["source"],
        "tokenizer": dict(meta["tokenizer"]),
        "split": meta["split"],
        "slices": slices,
        "created": meta.get("created"),
    }
