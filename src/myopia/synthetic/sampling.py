"""Deterministic random examples addressed by (seed, stream, global index).

Example g of a stream is row ``g mod BLOCK`` of block ``g div BLOCK``, and a block is drawn from its own
generator ``numpy.random.default_rng([seed, stream, block])``. So an example depends only on (seed, stream, g),
never on which other examples were asked for with it: paired runs (same seed, different gradient) see identical
data, a resumed run continues exactly, and different streams (training, evaluation, probe fitting) are
independent draws.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

BLOCK = 1024

# Stream numbers used across the synthetic tasks. Training never reads the others.
TRAIN, EVAL, PROBE_FIT, PROBE_TEST, BASELINE_FIT = 0, 1, 2, 3, 4


class BlockSampler:
    """Rows of deterministic blocks. ``draw(rng, n)`` returns a dict of arrays with leading dimension ``n``."""

    def __init__(self, seed: int, draw: Callable[[np.random.Generator, int], dict], cache_blocks: int = 4):
        self.seed = int(seed)
        self.draw = draw
        self.cache_blocks = cache_blocks
        self._cache: dict[tuple[int, int], dict] = {}

    def block(self, stream: int, index: int) -> dict:
        key = (int(stream), int(index))
        if key not in self._cache:
            if len(self._cache) >= self.cache_blocks:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self.draw(np.random.default_rng([self.seed, key[0], key[1]]), BLOCK)
        return self._cache[key]

    def rows(self, stream: int, indices) -> dict:
        """The examples with global indices ``indices`` (any order, any subset) of ``stream``."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and indices.min() < 0:
            raise ValueError("example indices must be >= 0")
        blocks, rows = np.divmod(indices, BLOCK)
        out: dict[str, np.ndarray] | None = None
        for b in np.unique(blocks):
            data = self.block(stream, int(b))
            sel = np.nonzero(blocks == b)[0]
            if out is None:
                out = {k: np.empty((len(indices),) + v.shape[1:], dtype=v.dtype) for k, v in data.items()}
            for k, v in data.items():
                out[k][sel] = v[rows[sel]]
        if out is None:  # no indices
            data = self.draw(np.random.default_rng([self.seed, int(stream), 0]), 1)
            out = {k: v[:0] for k, v in data.items()}
        return out
