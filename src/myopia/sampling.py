"""Sampling text from a trained model (our GPT or a Hugging Face model wrapped by :class:`myopia.hf.model.HFCausalLM`).

The model is any module mapping token ids ``(B, T)`` to logits ``(B, T, vocab)``. Each new token is drawn from the
last position's distribution, ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens;
``temperature = 0`` takes the most likely token (greedy). The whole window (the last ``context`` tokens) is run
again at every step: no key/value cache, which is simple and exact, and fast enough for the small models trained
here. A myopic model samples like any other: myopia changes training only.
"""

from __future__ import annotations

import torch

from .errors import MyopiaError

__all__ = ["generate"]


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, *, context: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             stop_id: int | None = None) -> torch.Tensor:
    """``idx`` (B, T) prompt ids -> (B, T + n) with n <= ``max_new_tokens`` new ids (fewer when every row has
    produced ``stop_id``). ``context``: the longest window the model reads (its ``seq_len``)."""
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise MyopiaError("generate needs a non-empty (batch, length) prompt of token ids")
    if temperature < 0 or (top_k is not None and top_k < 1) or max_new_tokens < 0:
        raise MyopiaError("temperature must be >= 0, top-k >= 1 and the number of new tokens >= 0")
    was_training = model.training
    model.eval()
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    try:
        for _ in range(max_new_tokens):
            logits = model(idx[:, -context:])[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
            if stop_id is not None:
                done |= nxt[:, 0] == stop_id
                if bool(done.all()):
                    break
    finally:
        model.train(was_training)
    return idx
