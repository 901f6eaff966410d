"""Next-token prediction as a training task: fixed-length windows of the training split in a seeded order.

Example g of the run (g = step * global_batch + b) is window ``perm_e[g mod n]`` of epoch ``e = g div n``,
where ``perm_e`` is a permutation seeded by (seed, e). The order therefore depends only on the data seed and
the example index: runs that differ only in their gradient setting, world size or micro-batching see the same
tokens in the same order, and a resumed run continues exactly where it stopped.

With ``document_mask`` each example also carries ``doc`` (n, T): the document of each position's *target*
token. Position t then attends only to positions of the same document, so the end-of-document token that
precedes a document opens it (its context is exactly the held-out scoring's ``[eos] + document``), and no
loss reaches across a document boundary.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MyopiaError
from .corpus import TokenCorpus, data_fingerprint


class LMTask:
    """Windows of ``seq_len + 1`` tokens at stride ``seq_len``; inputs are the first ``seq_len``, targets shifted."""

    def __init__(
        self,
        corpus: TokenCorpus,
        seq_len: int,
        *,
        seed: int = 0,
        eval_split: str = "val",
        eval_tokens: int = 65536,
        eval_batch_size: int = 32,
        example_offset: int = 0,
        document_mask: bool = False,
    ):
        """``example_offset`` shifts the example stream: example g serves window g + offset (a continuation of
        an earlier run that consumed ``offset`` examples). ``document_mask``: see the module docstring."""
        self.corpus, self.seq_len, self.seed = corpus, int(seq_len), int(seed)
        self.example_offset = int(example_offset)
        self.train_tokens = corpus.split_tokens("train")
        self.n_windows = (len(self.train_tokens) - 1) // self.seq_len
        if self.n_windows < 1:
            raise MyopiaError(
                f"the training split has {len(self.train_tokens)} tokens, fewer than seq_len + 1 = {self.seq_len + 1}"
            )
        self.eval_split = eval_split
        self.eval_tokens, self.eval_doc_ids = corpus.stream(eval_split)
        n_eval = (len(self.eval_tokens) - 1) // self.seq_len
        if n_eval < 1:
            raise MyopiaError(
                f"the {eval_split} split has {len(self.eval_tokens)} tokens, fewer than seq_len + 1 = "
                f"{self.seq_len + 1}; use a shorter --seq-len or a larger corpus"
            )
        self.n_eval_windows = min(n_eval, max(1, math.ceil(eval_tokens / self.seq_len)))
        self.eval_batch_size = eval_batch_size
        self._perm_epoch, self._perm = -1, None
        self.tokens_per_example = self.seq_len
        self.document_mask = bool(document_mask)
        self._train_doc_ends = np.cumsum(corpus.doc_lengths[corpus.split_docs("train")])

    def use_document_mask(self, on: bool) -> None:
        """Switch document masking (the trainer sets it from ``TrainConfig.document_mask``)."""
        self.document_mask = bool(on)

    def _target_docs(self, starts: np.ndarray) -> torch.Tensor:
        """Training-stream document index of each window's target tokens, (n, T) int64."""
        pos = np.asarray(starts, dtype=np.int64)[:, None] + 1 + np.arange(self.seq_len)
        return torch.from_numpy(np.searchsorted(self._train_doc_ends, pos, side="right").astype(np.int64))

    # ---- training --------------------------------------------------------------------------------------------
    def _window_starts(self, indices: np.ndarray) -> np.ndarray:
        epochs, pos = np.divmod(np.asarray(indices, dtype=np.int64), self.n_windows)
        starts = np.empty(len(pos), dtype=np.int64)
        for e in np.unique(epochs):
            if e != self._perm_epoch:
                self._perm = np.random.default_rng([self.seed, int(e)]).permutation(self.n_windows)
                self._perm_epoch = int(e)
            sel = epochs == e
            starts[sel] = self._perm[pos[sel]] * self.seq_len
        return starts

    def _windows(self, tokens: np.ndarray, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([tokens[s : s + self.seq_len + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def examples(self, indices, device="cpu") -> dict:
        """The training examples with global indices ``indices``: {"x": (n, T), "y": (n, T)} int64."""
        indices = np.asarray(indices, dtype=np.int64) + self.example_offset
        starts = self._window_starts(indices)
        x, y = self._windows(self.train_tokens, starts)
        if self.document_mask:
            return {"x": x.to(device), "y": y.to(device), "doc": self._target_docs(starts).to(device)}
        return {"x": x.to(device), "y": y.to(device)}

    @staticmethod
    def count(batch: dict) -> int:
        """Tokens a batch's loss is summed over (the trainer normalises by the global count)."""
        return batch["y"].numel()

    def logits(self, model, x: torch.Tensor, doc: torch.Tensor | None = None) -> torch.Tensor:
        """The model's logits (B, T, vocab) for inputs x (B, T), attention kept inside the documents ``doc``
        (B, T) when given; subclasses may route the forward pass."""
        return model(x) if doc is None else model(x, doc_ids=doc)

    def loss(self, model, batch: dict) -> torch.Tensor:
        """Sum of next-token cross-entropies (nats) over the batch."""
        logits = self.logits(model, batch["x"], batch.get("doc"))
        return F.cross_entropy(logits.float().flatten(0, 1), batch["y"].flatten(), reduction="sum")

    # ---- evaluation ------------------------------------------------------------------------------------------
    def eval_windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed held-out windows: inputs, targets (n_eval_windows, T)."""
        starts = np.arange(self.n_eval_windows, dtype=np.int64) * self.seq_len
        return self._windows(self.eval_tokens, starts)

    def eval_docs(self) -> torch.Tensor | None:
        """Document ids of the held-out windows' targets (n_eval_windows, T) under document masking, else None."""
        if not self.document_mask:
            return None
        starts = np.arange(self.n_eval_windows, dtype=np.int64) * self.seq_len
        pos = starts[:, None] + 1 + np.arange(self.seq_len)
        return torch.from_numpy(self.eval_doc_ids[pos].astype(np.int64))

    @torch.no_grad()
    def evaluate(self, model, device="cpu", shard=None) -> dict:
        """Mean next-token loss (nats/token) on the held-out windows, never training tokens.

        ``shard`` (:class:`myopia.distributed.EvalShard`): this rank scores its share of the batches and the
        per-batch sums of every rank are combined in batch order, so the result equals one process's exactly.
        """
        x, y = self.eval_windows()
        docs = self.eval_docs()
        bs = self.eval_batch_size
        spans = shard.spans(len(x), bs) if shard is not None else [(i, min(i + bs, len(x))) for i in range(0, len(x), bs)]
        sums = []
        for span in spans:
            a, b = span if span is not None else (0, 1)  # an idle round still runs a forward pass
            xb, yb = x[a:b].to(device), y[a:b].to(device)
            logits = self.logits(model, xb, None if docs is None else docs[a:b].to(device))
            if span is not None:
                sums.append((F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="sum").item(),
                             yb.numel()))
        if shard is not None:
            sums = shard.gather(sums)
        total, n = 0.0, 0
        for loss_sum, count in sums:
            total += loss_sum
            n += count
        return {"loss": total / n, "tokens": n}

    def unigram_loss(self) -> float:
        """Cross-entropy (nats/token) of the held-out windows' targets under the training unigram distribution
        (add-one smoothed): the baseline a model that ignores context would reach."""
        vocab = int(max(self.corpus.vocab_size, self.train_tokens.max() + 1, self.eval_tokens.max() + 1))
        counts = np.bincount(self.train_tokens, minlength=vocab).astype(np.float64) + 1.0
        logp = np.log(counts / counts.sum())
        _, y = self.eval_windows()
        return float(-logp[y.numpy().ravel()].mean())

    def data_fingerprint(self) -> str:
        """The training split's content hash (:func:`~myopia.data.corpus.data_fingerprint`), computed once."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = data_fingerprint(self.corpus, "train")
        return self._fingerprint

    def describe(self) -> dict:
        """What config.json records about the task: kind, unigram baseline, sequence length, data seed, windows."""
        return {
            "kind": "lm",
            "unigram_eval_loss": self.unigram_loss(),
            "seq_len": self.seq_len,
            "data_seed": self.seed,
            **({"example_offset": self.example_offset} if self.example_offset else {}),
            **({"document_mask": True} if self.document_mask else {}),
            "train_windows": self.n_windows,
            "data_fingerprint": self.data_fingerprint(),
            "eval_split": self.eval_split,
            "eval_windows": self.n_eval_windows,
            "corpus": self.corpus.describe(),
        }
