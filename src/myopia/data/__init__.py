"""Corpora, tokenizers and the deterministic batch order of language-model training."""

from .corpus import TokenCorpus
from .load import load_corpus
from .lm import LMTask
from .tokenizer import ByteTokenizer

__all__ = ["TokenCorpus", "load_corpus", "LMTask", "ByteTokenizer"]
