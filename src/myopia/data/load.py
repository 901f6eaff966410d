"""``load_corpus``: the one entry point from a path or ``hf:`` name to a :class:`~myopia.data.corpus.TokenCorpus`.

It picks the reader: a ``.npy`` token file, a token-cache folder (:mod:`myopia.data.cache`), or any data source
(:mod:`myopia.data.sources`), tokenized in memory or into an on-disk cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cache import build_cache, is_cache, open_cache
from .corpus import TokenCorpus, corpus_from_documents, corpus_from_token_file, describe_documents
from .sources import DataSource
from .text import DEFAULT_DOCUMENTS
from .tokenizer import ByteTokenizer

__all__ = ["load_corpus", "announce_corpus"]


def load_corpus(
    path: str | Path,
    tokenizer=None,
    *,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    split_seed: int = 0,
    text_field: str = "text",
    label_field: str | None = None,
    hf_config: str | None = None,
    hf_split: str | None = None,
    cache: str | Path | None = None,
    progress: bool = False,
    documents: str = DEFAULT_DOCUMENTS,
    announce: bool = False,
    context_len: int | None = None,
) -> TokenCorpus:
    """A corpus from any data source (see :mod:`myopia.data.sources`), a token cache folder, or ``.npy`` tokens.

    Text is tokenized with ``tokenizer`` (an object or a spec such as ``bytes``, ``bpe:4096``, ``hf:gpt2``;
    default bytes). With ``cache`` (a folder) the tokens are built into an on-disk memory-mapped cache there,
    or reused from it when it matches the source, tokenizer and split settings. A cache folder given as ``path``
    is opened as it is (``tokenizer``, if given, must match the one it was built with). ``documents`` says how a
    plain-text file becomes documents (:mod:`myopia.data.text`). With ``announce`` one line on stderr says how many
    documents were read and how long they are (:func:`~myopia.data.corpus.describe_documents`); a warning when
    the median document is shorter than ``context_len`` tokens comes whenever ``context_len`` is given.
    """
    corpus, mode = _load(path, tokenizer, val_frac=val_frac, test_frac=test_frac, split_seed=split_seed,
                         text_field=text_field, label_field=label_field, hf_config=hf_config, hf_split=hf_split,
                         cache=cache, progress=progress, documents=documents)
    announce_corpus(corpus, context_len, mode, quiet=not announce)
    return corpus


def _load(path, tokenizer, *, val_frac, test_frac, split_seed, cache, progress, documents,
          **source_opts) -> tuple[TokenCorpus, str]:
    """The corpus and how its documents were made (a ``--documents`` mode, ``records``, ``blocks``, ``cache``)."""
    if not str(path).startswith("hf:"):
        p = Path(path)
        if p.suffix == ".npy" and p.is_file():
            corpus = corpus_from_token_file(p, val_frac=val_frac, test_frac=test_frac, split_seed=split_seed)
            return corpus, f"blocks of {corpus.info['documents_are_blocks_of']} tokens"
        if is_cache(p):
            return open_cache(p, expect_tokenizer=tokenizer), "a token cache"
    source = DataSource.from_spec(path, documents=documents, **source_opts)
    mode = documents if source.kind in ("text", "folder") else "records"
    if cache is not None:
        return build_cache(source, tokenizer or "bytes", cache, val_frac=val_frac, test_frac=test_frac,
                           split_seed=split_seed, progress=progress), mode
    return corpus_from_documents(source.documents(), tokenizer or ByteTokenizer(), val_frac=val_frac,
                                 test_frac=test_frac, split_seed=split_seed, source=str(path)), mode


def announce_corpus(corpus: TokenCorpus, context_len: int | None = None, mode: str = DEFAULT_DOCUMENTS, *,
                    quiet: bool = False) -> None:
    """Print :func:`describe_documents` to stderr (unless ``quiet``), and a warning when documents are shorter
    than the context (always: it changes what the numbers mean)."""
    line, warning = describe_documents(corpus, context_len, mode)
    if not quiet:
        print(line, file=sys.stderr, flush=True)
    if warning:
        print(warning, file=sys.stderr, flush=True)
