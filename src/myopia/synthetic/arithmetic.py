"""Multiplication with filler tokens, as a next-token task.

A problem a × b with operands below 10^N is written one token per digit, least significant digit first, each
operand zero-padded to N digits and followed by F filler zeros; the answer c = a·b has exactly 2N digits
(zero-padded, least significant first):

    a_0 … a_{N−1} 0^F  *  b_0 … b_{N−1} 0^F  =  c_0 … c_{2N−1}

Appending zeros to a least-significant-first number does not change its value, so the filler positions carry
no information: they only give the model extra positions to compute in. The loss is on the answer digits only,
so nothing but the off-diagonal gradient (later answer positions reaching back) can teach the filler positions
to compute. Accuracy is exact match of all 2N answer digits under greedy decoding.

Held-out problems are a fixed deterministic subset (a hash of (a, b)); training never samples them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MyopiaError
from .sampling import EVAL, TRAIN, BlockSampler

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


def is_heldout(a, b, fraction: float = 0.1) -> np.ndarray:
    """Whether problem (a, b) belongs to the fixed held-out set (a 64-bit hash of the pair, ~``fraction``)."""
    a = np.atleast_1d(np.asarray(a, dtype=np.uint64))
    b = np.atleast_1d(np.asarray(b, dtype=np.uint64))
    h = (a * np.uint64(0x9E3779B97F4A7C15)) ^ b  # wraps modulo 2^64 (array arithmetic does not warn)
    h = (h ^ (h >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(29))
    return (h % np.uint64(1_000_000)).astype(np.int64) < int(round(fraction * 1_000_000))


def _draw_problems(fmt: ArithmeticFormat, heldout: bool, fraction: float):
    limit = 10**fmt.digits

    def draw(rng: np.random.Generator, n: int) -> dict:
        a_out, b_out, have = [], [], 0
        while have < n:
            a = rng.integers(0, limit, size=2 * n)
            b = rng.integers(0, limit, size=2 * n)
            keep = is_heldout(a, b, fraction) == heldout
            a_out.append(a[keep])
            b_out.append(b[keep])
            have += int(keep.sum())
        return {"a": np.concatenate(a_out)[:n], "b": np.concatenate(b_out)[:n]}

    return draw


class MultiplicationTask:
    """Next-token task for :func:`myopia.train.train`: cross-entropy on the answer digits only.

    Training problems come from stream TRAIN excluding the held-out set; evaluation uses ``eval_problems``
    problems drawn (with replacement) from the held-out set only.
    """

    def __init__(self, fmt: ArithmeticFormat, *, seed: int = 0, eval_problems: int = 1000,
                 heldout_fraction: float = 0.1, eval_batch_size: int = 500):
        if not 0.0 < heldout_fraction < 1.0:
            raise MyopiaError(f"heldout-fraction must lie in (0, 1), got {heldout_fraction}")
        if eval_problems < 1:
            raise MyopiaError(f"eval-problems must be >= 1, got {eval_problems}")
        self.fmt, self.seed = fmt, int(seed)
        self.heldout_fraction = heldout_fraction
        self.train_sampler = BlockSampler(seed, _draw_problems(fmt, False, heldout_fraction))
        self.eval_sampler = BlockSampler(seed, _draw_problems(fmt, True, heldout_fraction))
        self.eval_problems, self.eval_batch_size = int(eval_problems), int(eval_batch_size)
        self.tokens_per_example = fmt.seq_len - 1
        self.vocab_size = len(VOCAB)

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
        d = self.eval_sampler.rows(EVAL, np.arange(self.eval_problems))
        return d["a"], d["b"]

    @staticmethod
    def count(batch: dict) -> int:
        return int((batch["y"] != IGNORE).sum())

    @staticmethod
    def loss(model, batch: dict) -> torch.Tensor:
        """Sum of cross-entropies (nats) over the answer digits."""
        logits = model(batch["x"])
        return F.cross_entropy(logits.float().flatten(0, 1), batch["y"].flatten(), ignore_index=IGNORE,
                               reduction="sum")

    @torch.no_grad()
    def greedy_answers(self, model, a, b, device="cpu") -> np.ndarray:
        """The model's answer digits (n, 2N) by greedy decoding after the prompt (argmax over all tokens)."""
        prompt = torch.from_numpy(format_problems(a, b, self.fmt)[:, : self.fmt.prompt_len]).to(device)
        seq = prompt
        for _ in range(self.fmt.answer_len):
            nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
        return seq[:, self.fmt.prompt_len :].cpu().numpy()

    @torch.no_grad()
    def evaluate(self, model, device="cpu") -> dict:
        """Held-out answer-digit loss (nats/digit), greedy exact-match accuracy and per-digit accuracy."""
        a, b = self.eval_set()
        total, n, exact, digit_hits = 0.0, 0, 0, 0
        for i in range(0, len(a), self.eval_batch_size):
            ab, bb = a[i : i + self.eval_batch_size], b[i : i + self.eval_batch_size]
            batch = self.to_batch(ab, bb, device)
            total += self.loss(model, batch).item()
            n += self.count(batch)
            got = self.greedy_answers(model, ab, bb, device)
            want = digits_lsb(ab * bb, self.fmt.answer_len)
            exact += int((got == want).all(1).sum())
            digit_hits += int((got == want).sum())
        if not np.isfinite(total):
            raise MyopiaError("non-finite evaluation loss (NaN or inf); try a lower --lr")
        return {"loss": total / n, "accuracy": exact / len(a), "digit_accuracy": digit_hits / (len(a) * self.fmt.answer_len)}

    def describe(self) -> dict:
        return {"kind": "multiplication", **self.fmt.to_dict(), "seq_len": self.fmt.seq_len, "data_seed": self.seed,
                "eval_problems": self.eval_problems, "heldout_fraction": self.heldout_fraction,
                "vocab": "".join(VOCAB)}
