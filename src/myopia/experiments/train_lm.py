"""``myopia train``: one language model on one corpus with one gradient setting.

The recipe lives in the library (:func:`myopia.lm.train_lm`, :func:`myopia.lm.build_model`), where the pair, the
command line and the sweep use it; the name is kept here for the studies that still import it from this module.
"""

from __future__ import annotations

from ..lm import train_lm

__all__ = ["train_lm"]
