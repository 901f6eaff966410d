"""``load_corpus``: the one entry point from a path or ``hf:`` name to a :class:`~myopia.data.corpus.TokenCorpus`.

It picks the reader: a ``.npy`` token file, a token-cache folder (:mod:`myopia.data.cache`), or any data source
(:mod:`myopia.data.sources`), tokenized in memory or into an on-disk cache.
"""

from __future__ import annotations

from pathlib import Path

from .cache import build_cache, is_cache, open_cache
from .corpus import TokenCorpus, corpus_from_documents, corpus_from_token_file
from .sources import DataSource
from .tokenizer import ByteTokenizer

__all__ = ["load_corpus"]


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
) -> TokenCorpus:
    """A corpus from any data source (see :mod:`myopia.data.sources`), a token cache folder, or ``.npy`` tokens.

    Text is tokenized with ``tokenizer`` (an object or a spec such as ``bytes``, ``bpe:4096``, ``hf:gpt2``;
    default bytes). With ``cache`` (a folder) the tokens are built into an on-disk memory-mapped cache there,
    or reused from it when it matches the source, tokenizer and split settings. A cache folder given as ``path``
    is opened as it is (``tokenizer``, if given, must match the one it was built with).
    """
    if not str(path).startswith("hf:"):
        p = Path(path)
        if p.suffix == ".npy" and p.is_file():
            return corpus_from_token_file(p, val_frac=val_frac, test_frac=test_frac, split_seed=split_seed)
        if is_cache(p):
            return open_cache(p, expect_tokenizer=tokenizer)
    source = DataSource.from_spec(path, text_field=text_field, label_field=label_field, hf_config=hf_config,
                                  hf_split=hf_split)
    if cache is not None:
        return build_cache(source, tokenizer or "bytes", cache, val_frac=val_frac, test_frac=test_frac,
                           split_seed=split_seed, progress=progress)
    return corpus_from_documents(source.documents(), tokenizer or ByteTokenizer(), val_frac=val_frac,
                                 test_frac=test_frac, split_seed=split_seed, source=str(path))
