"""The gradient settings a model trains with, and the arms every result reports side by side (one home for both).

- ``vanilla``: ordinary training; every position's loss reaches the computation at every earlier position.
- ``myopic`` (strict): to query *i*, the keys and values of every earlier position are constants, so no loss
  reaches an earlier position's computation, and W_K, W_V learn only from each position's own key and value.
- ``myopic-hidden``: to query *i*, the attention *input* (the normalised residual stream) of earlier positions is
  a constant, while W_K, W_V act on it live: they still learn to read the past. The primary measure of
  pre-caching.
- ``bigram``: keys and values of earlier positions are zeros, the past cannot be read (a no-context baseline;
  its forward pass differs by design).

The forward pass of ``vanilla``, ``myopic`` and ``myopic-hidden`` is the same; only the gradient differs.
"""

from __future__ import annotations

from .errors import MyopiaError

GRADIENTS = ("vanilla", "myopic", "myopic-hidden", "bigram")
REFERENCE = "vanilla"  # every gap is an arm's loss minus this arm's loss
MYOPIC_ARMS = ("myopic", "myopic-hidden")  # every myopic number is reported beside its hidden-state twin
PAIR_ARMS = (REFERENCE, *MYOPIC_ARMS)  # the arms of a pair / finetune directory
PRIMARY_FIRST = ("myopic-hidden", "myopic")  # display order where one is read first: the primary measure first

__all__ = ["GRADIENTS", "REFERENCE", "MYOPIC_ARMS", "PAIR_ARMS", "PRIMARY_FIRST", "check_gradient"]


def check_gradient(gradient, beta, horizon) -> None:
    """Refuse a gradient setting outside :data:`GRADIENTS`, ``beta`` outside [0, 1] or a negative ``horizon``."""
    if gradient not in GRADIENTS:
        raise MyopiaError(f"gradient must be one of {', '.join(GRADIENTS)}; got {gradient!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= float(beta) <= 1.0:
        raise MyopiaError(f"beta must lie in [0, 1], got {beta!r}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise MyopiaError(f"horizon must be an integer >= 0, got {horizon!r}")
