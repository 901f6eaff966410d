"""myopia: myopic training of transformer language models."""

__version__ = "0.2.0"
