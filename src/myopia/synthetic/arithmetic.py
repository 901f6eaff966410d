"""Multiplication with filler tokens, as a next-token task.

A problem a × b with operands below 10^N is written one token per digit, least significant digit first, each
operand zero-padded to N digits and followed by F filler zeros; the answer c = a·b has exactly 2N digits
(zero-padded, least significant first):

    a_0 … a_{N−1} 0^F  *  b_0 … b_{N−1} 0^F  =  c_0 … c_{2N−1}

Appending zeros to a least-significant-first number does not change its value, so the filler positions carry
no information: they only give the model extra positions to compute in. The loss is on the answer digits only,
so nothing but the off-diagonal gradient (later answer positions reaching back) can teach the filler positions
to compute. Accuracy is exact match of all 2N answer digits under greedy decoding.

Held-out problems are a fixed set of *unordered* pairs {a, b} (drawn from ``eval_seed``, the same for every
training seed and filler setting): training never samples a × b or b × a of a held-out pair, and evaluation
scores every held-out pair exactly once (in the orientation it was drawn). :func:`filler_masked_logits` is the
evaluation-time ablation that forbids every query to read the filler positions (does the model use them?).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MyopiaError
from .sampling import TRAIN, BlockSampler

VOCAB = tuple("0123456789") + ("*", "=")
TOKEN = {s: i for i, s in enumerate(VOCAB)}
TIMES, EQUALS = TOKEN["*"], TOKEN["="]
IGNORE = -100  # target value that carries no loss


@dataclass(frozen=True)
class ArithmeticFormat:
    """Operand digits N and filler zeros F per operand."""

    digits: int = 5
    filler: int = 0

    def __post_init__(self) -> None:
        for name, lo in (("digits", 1), ("filler", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise MyopiaError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.digits > 9:
            raise MyopiaError(f"digits must be at most 9 (int64 products), got {self.digits}")

    @property
    def operand_len(self) -> int:
        return self.digits + self.filler

    @property
    def prompt_len(self) -> int:
        """Tokens up to and including '='."""
        return 2 * self.operand_len + 2

    @property
    def answer_len(self) -> int:
        return 2 * self.digits

    @property
    def seq_len(self) -> int:
        """Full sequence length (prompt + answer)."""
        return self.prompt_len + self.answer_len

    def to_dict(self) -> dict:
        return asdict(self)


def digits_lsb(values: np.ndarray, width: int) -> np.ndarray:
    """Decimal digits of non-negative ints, least significant first: (n,) -> (n, width) int64."""
    values = np.asarray(values, dtype=np.int64)
    powers = 10 ** np.arange(width, dtype=np.int64)
    return (values[:, None] // powers) % 10


def format_problems(a, b, fmt: ArithmeticFormat) -> np.ndarray:
    """Token ids (n, seq_len) of the problems a × b = a·b (see the module doc for the layout)."""
    a, b = np.asarray(a, dtype=np.int64).reshape(-1), np.asarray(b, dtype=np.int64).reshape(-1)
    limit = 10**fmt.digits
    if a.shape != b.shape:
        raise MyopiaError(f"a and b need the same number of problems, got {a.shape} and {b.shape}")
    if len(a) and (a.min() < 0 or b.min() < 0 or a.max() >= limit or b.max() >= limit):
        raise MyopiaError(f"operands must lie in [0, 10^{fmt.digits})")
    n = len(a)
    fill = np.zeros((n, fmt.filler), dtype=np.int64)  # the filler token is the digit 0
    col = lambda t: np.full((n, 1), t, dtype=np.int64)
    return np.concatenate(
        [digits_lsb(a, fmt.digits), fill, col(TIMES), digits_lsb(b, fmt.digits), fill, col(EQUALS),
         digits_lsb(a * b, fmt.answer_len)],
        axis=1,
    )


def _value(digit_row: np.ndarray) -> int:
    if np.any((digit_row < 0) | (digit_row > 9)):
        raise MyopiaError("expected only digit tokens")
    return int(sum(int(d) * 10**k for k, d in enumerate(digit_row)))


def parse_problem(tokens, fmt: ArithmeticFormat) -> tuple[int, int, int]:
    """(a, b, c) from one token sequence (seq_len,) or its text; checks the symbols and that filler is zero."""
    if isinstance(tokens, str):
        tokens = tokens_from_text(tokens)
    t = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if t.shape[0] != fmt.seq_len:
        raise MyopiaError(f"expected {fmt.seq_len} tokens for {fmt}, got {t.shape[0]}")
    L = fmt.operand_len
    if t[L] != TIMES or t[2 * L + 1] != EQUALS:
        raise MyopiaError("malformed problem: '*' or '=' not where the format puts them")
    fillers = np.concatenate([t[fmt.digits : L], t[L + 1 + fmt.digits : 2 * L + 1]])
    if np.any(fillers != TOKEN["0"]):
        raise MyopiaError("malformed problem: filler positions must hold 0")
    a = _value(t[: fmt.digits])
    b = _value(t[L + 1 : L + 1 + fmt.digits])
    c = _value(t[fmt.prompt_len :])
    return a, b, c


def text(tokens) -> str:
    """Token ids -> string, e.g. '21*03=3600' for 12 × 30 with N = 2 (least significant digit first)."""
    return "".join(VOCAB[int(t)] for t in np.asarray(tokens).reshape(-1))


def tokens_from_text(s: str) -> np.ndarray:
    try:
        return np.array([TOKEN[ch] for ch in s], dtype=np.int64)
    except KeyError as exc:
        raise MyopiaError(f"unknown symbol {exc.args[0]!r} (vocabulary: {''.join(VOCAB)})") from None


def pair_keys(a, b, digits: int) -> np.ndarray:
    """One int64 key per *unordered* pair {a, b}: min·10^N + max (a × b and b × a share it)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return np.minimum(a, b) * np.int64(10**digits) + np.maximum(a, b)


def unordered_pairs(digits: int) -> int:
    """How many unordered pairs {a, b} of N-digit operands exist (a = b included)."""
    n = 10**digits
    return n * (n + 1) // 2


def heldout_problems(digits: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct unordered pairs, each once, as (a, b) in the orientation drawn (deterministic in seed).

    At most a fifth of all unordered pairs may be held out (training needs the rest)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise MyopiaError(f"heldout-pairs must be a positive integer, got {count!r}")
    total = unordered_pairs(digits)
    if count > total // 5:
        raise MyopiaError(f"heldout-pairs {count} is more than a fifth of the {total} unordered pairs for N={digits}")
    rng = np.random.default_rng([seed, 0xA417])
    limit = 10**digits
    a_out, b_out, keys = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    while len(keys) < count:
        a = rng.integers(0, limit, size=2 * count)
        b = rng.integers(0, limit, size=2 * count)
        a_out, b_out = np.concatenate([a_out, a]), np.concatenate([b_out, b])
        k = pair_keys(a_out, b_out, digits)
        _, first = np.unique(k, return_index=True)
        first = np.sort(first)[:count]  # first occurrence of each pair, in draw order
        a_out, b_out, keys = a_out[first], b_out[first], k[first]
    return a_out, b_out


def _draw_problems(fmt: ArithmeticFormat, heldout_sorted_keys: np.ndarray):
    limit = 10**fmt.digits

    def draw(rng: np.random.Generator, n: int) -> dict:
        a_out, b_out, have = [], [], 0
        while have < n:
            a = rng.integers(0, limit, size=2 * n)
            b = rng.integers(0, limit, size=2 * n)
            keep = ~_member(pair_keys(a, b, fmt.digits), heldout_sorted_keys)
            a_out.append(a[keep])
            b_out.append(b[keep])
            have += int(keep.sum())
        return {"a": np.concatenate(a_out)[:n], "b": np.concatenate(b_out)[:n]}

    return draw


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    i = np.clip(np.searchsorted(sorted_keys, keys), 0, sorted_keys.size - 1)
    return sorted_keys[i] == keys


@torch.no_grad()
def filler_masked_logits(gpt, idx: torch.Tensor, fmt: ArithmeticFormat) -> torch.Tensor:
    """Logits (B, T, vocab) of ``gpt`` with attention *to* the filler positions removed for every other query.

    An evaluation-only re-run of the GPT's forward (every gradient setting has the vanilla forward value) with
    an explicit mask: no position reads a filler position's keys/values, so whatever the model computed there
    cannot reach the answer. A model that ignores the filler gives the same logits as ``gpt(idx)``."""
    B, T = idx.shape
    cfg = gpt.cfg
    L = fmt.operand_len
    filler = torch.zeros(T, dtype=torch.bool, device=idx.device)
    filler[fmt.digits : min(L, T)] = True
    filler[min(L + 1 + fmt.digits, T) : min(2 * L + 1, T)] = True
    pos = torch.arange(T, device=idx.device)
    allowed = (pos[None, :] <= pos[:, None]) & (~filler[None, :] | (pos[None, :] == pos[:, None]))  # (query, key)
    cos, sin = gpt.rope_cos[:T], gpt.rope_sin[:T]
    x = gpt.wte(idx)
    for block in gpt.blocks:
        attn = block.attn
        q, k, v = attn._split_qkv(attn.qkv(block.ln1(x)), B, T, cos, sin)
        scores = (q @ k.transpose(-1, -2)).float() * cfg.head_dim ** -0.5
        o = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).to(v.dtype) @ v
        x = x + attn.proj(o.transpose(1, 2).reshape(B, T, cfg.d_model))
        x = x + block.mlp(block.ln2(x))
    return torch.nn.functional.linear(gpt.ln_f(x), gpt.wte.weight)


class MultiplicationTask:
    """Next-token task for :func:`myopia.train.train`: cross-entropy on the answer digits only.

    Training problems come from stream TRAIN of ``seed`` with every held-out unordered pair removed (in both
    orientations); evaluation scores each of the ``heldout_pairs`` held-out pairs (from ``eval_seed``) once.
    """

    def __init__(self, fmt: ArithmeticFormat, *, seed: int = 0, heldout_pairs: int = 1000, eval_seed: int = 0,
                 eval_batch_size: int = 500):
        self.fmt, self.seed, self.eval_seed = fmt, int(seed), int(eval_seed)
        self.heldout_a, self.heldout_b = heldout_problems(fmt.digits, heldout_pairs, eval_seed)
        self.heldout_keys = np.sort(pair_keys(self.heldout_a, self.heldout_b, fmt.digits))
        self.train_sampler = BlockSampler(seed, _draw_problems(fmt, self.heldout_keys))
        self.heldout_pairs, self.eval_batch_size = int(heldout_pairs), int(eval_batch_size)
        self.tokens_per_example = fmt.seq_len - 1
        self.vocab_size = len(VOCAB)

    def is_heldout(self, a, b) -> np.ndarray:
        """Whether the unordered pair {a, b} is held out (either orientation)."""
        return _member(pair_keys(a, b, self.fmt.digits), self.heldout_keys)

    def to_batch(self, a, b, device="cpu") -> dict:
        """{"x": (n, L−1) inputs, "y": (n, L−1) next tokens with IGNORE outside the answer digits}."""
        seq = torch.from_numpy(format_problems(a, b, self.fmt))
        x, y = seq[:, :-1].clone(), seq[:, 1:].clone()
        y[:, : self.fmt.prompt_len - 1] = IGNORE  # targets before the first answer digit carry no loss
        return {"x": x.to(device), "y": y.to(device), "a": torch.from_numpy(np.asarray(a)),
                "b": torch.from_numpy(np.asarray(b))}

    def examples(self, indices, device="cpu") -> dict:
        d = self.train_sampler.rows(TRAIN, indices)
        return self.to_batch(d["a"], d["b"], device)

    def eval_set(self) -> tuple[np.ndarray, np.ndarray]:
        """Every held-out pair once: (a, b) each (heldout_pairs,)."""
        return self.heldout_a, self.heldout_b

    @staticmethod
    def count(batch: dict) -> int:
        return int((batch["y"] != IGNORE).sum())

    @staticmethod
    def loss(model, batch: dict) -> torch.Tensor:
        """Sum of cross-entropies (nats) over the answer digits."""
        logits = model(batch["x"])
        return F.cross_entropy(logits.float().flatten(0, 1), batch["y"].flatten(), ignore_index=IGNORE,
                               reduction="sum")

    def _logits(self, model, seq, mask_filler: bool):
        if not mask_filler:
            return model(seq)
        gpt = getattr(model, "gpt", model)
        return filler_masked_logits(gpt, seq, self.fmt)

    @torch.no_grad()
    def greedy_answers(self, model, a, b, device="cpu", mask_filler: bool = False) -> np.ndarray:
        """The model's answer digits (n, 2N) by greedy decoding after the prompt (argmax over all tokens)."""
        seq = torch.from_numpy(format_problems(a, b, self.fmt)[:, : self.fmt.prompt_len]).to(device)
        for _ in range(self.fmt.answer_len):
            nxt = self._logits(model, seq, mask_filler)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
        return seq[:, self.fmt.prompt_len :].cpu().numpy()

    @torch.no_grad()
    def problem_scores(self, model, device="cpu", mask_filler: bool = False) -> dict:
        """Per held-out problem (heldout_pairs,) float64: ``exact`` (0/1 greedy exact match), ``digits`` (share of
        the 2N answer digits right) and ``loss`` (answer cross-entropy, nats per digit, teacher-forced)."""
        a, b = self.eval_set()
        exact, digits, loss = [], [], []
        for i in range(0, len(a), self.eval_batch_size):
            ab, bb = a[i : i + self.eval_batch_size], b[i : i + self.eval_batch_size]
            batch = self.to_batch(ab, bb, device)
            logits = self._logits(model, batch["x"], mask_filler).float()
            ce = F.cross_entropy(logits.transpose(1, 2), batch["y"], ignore_index=IGNORE, reduction="none")
            loss.append((ce.sum(1) / self.fmt.answer_len).double().cpu().numpy())
            got = self.greedy_answers(model, ab, bb, device, mask_filler)
            hit = got == digits_lsb(ab * bb, self.fmt.answer_len)
            exact.append(hit.all(1).astype(np.float64))
            digits.append(hit.mean(1))
        out = {"exact": np.concatenate(exact), "digits": np.concatenate(digits), "loss": np.concatenate(loss)}
        if not np.isfinite(out["loss"]).all():
            raise MyopiaError("non-finite evaluation loss (NaN or inf); try a lower --lr")
        return out

    @torch.no_grad()
    def evaluate(self, model, device="cpu") -> dict:
        """Held-out answer-digit loss (nats/digit), greedy exact-match accuracy and per-digit accuracy."""
        s = self.problem_scores(model, device)
        return {"loss": float(s["loss"].mean()), "accuracy": float(s["exact"].mean()),
                "digit_accuracy": float(s["digits"].mean())}

    def describe(self) -> dict:
        return {"kind": "multiplication", **self.fmt.to_dict(), "seq_len": self.fmt.seq_len, "data_seed": self.seed,
                "eval_seed": self.eval_seed, "heldout_pairs": self.heldout_pairs,
                "heldout": "unordered pairs {a, b}, each evaluated once", "vocab": "".join(VOCAB)}
