"""Hugging Face models: myopic gradients (:func:`apply`), a GPT-like wrapper and run loading, export."""

from .attention import apply, current_gradient

__all__ = ["apply", "current_gradient"]
