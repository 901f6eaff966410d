"""Multiplication with filler tokens: formatting, parsing, held-out split, loss masking, greedy decoding."""

import numpy as np
import pytest
import torch

from myopia.errors import MyopiaError
from myopia.experiments.arithmetic import wilson_interval
from myopia.synthetic.arithmetic import (
    EQUALS,
    IGNORE,
    TIMES,
    VOCAB,
    ArithmeticFormat,
    MultiplicationTask,
    format_problems,
    is_heldout,
    parse_problem,
    text,
)


def test_layout_reversed_digits_and_filler_by_hand():
    fmt = ArithmeticFormat(digits=2, filler=1)
    seq = format_problems([12], [30], fmt)[0]
    # 12 -> "21" + filler "0"; 30 -> "03" + "0"; 360 -> 4 digits least significant first "0630"
    assert text(seq) == "210*030=0630"
    assert fmt.seq_len == len(seq) == 12 and fmt.prompt_len == 8
    assert text(format_problems([7], [8], ArithmeticFormat(digits=3, filler=0))[0]) == "700*800=650000"
    assert parse_problem("210*030=0630", fmt) == (12, 30, 360)


@pytest.mark.parametrize("digits,filler", [(1, 0), (3, 2), (5, 5)])
def test_format_parse_round_trip(digits, filler):
    fmt = ArithmeticFormat(digits=digits, filler=filler)
    rng = np.random.default_rng(digits + filler)
    a = rng.integers(0, 10**digits, 200)
    b = rng.integers(0, 10**digits, 200)
    seqs = format_problems(a, b, fmt)
    assert seqs.shape == (200, 2 * (digits + filler) + 2 + 2 * digits)
    for s, x, y in zip(seqs, a, b):
        assert parse_problem(s, fmt) == (int(x), int(y), int(x) * int(y))
        # independent rendering: reversed zero-padded decimal strings
        expected = (str(x).zfill(digits)[::-1] + "0" * filler + "*" + str(y).zfill(digits)[::-1] + "0" * filler
                    + "=" + str(int(x) * int(y)).zfill(2 * digits)[::-1])
        assert text(s) == expected


def test_parser_rejects_malformed_sequences():
    fmt = ArithmeticFormat(digits=2, filler=1)
    with pytest.raises(MyopiaError):
        parse_problem("211*030=0630", fmt)  # non-zero filler
    with pytest.raises(MyopiaError):
        parse_problem("210=030*0630", fmt)  # symbols swapped
    with pytest.raises(MyopiaError):
        parse_problem("210*030=063", fmt)  # too short
    with pytest.raises(MyopiaError):
        parse_problem("210*030=06x0", fmt)  # unknown symbol
    with pytest.raises(MyopiaError):
        format_problems([100], [1], fmt)  # operand too large


def test_training_never_sees_heldout_problems_and_eval_only_heldout():
    fmt = ArithmeticFormat(digits=2, filler=0)
    task = MultiplicationTask(fmt, seed=0, eval_problems=300)
    batch = task.examples(np.arange(3000))
    assert not is_heldout(batch["a"].numpy(), batch["b"].numpy()).any()
    a, b = task.eval_set()
    assert is_heldout(a, b).all()
    # the held-out share is about the requested fraction
    grid_a, grid_b = np.meshgrid(np.arange(100), np.arange(100))
    assert 0.08 < is_heldout(grid_a.ravel(), grid_b.ravel()).mean() < 0.12
    # deterministic by (seed, index)
    again = MultiplicationTask(fmt, seed=0).examples(np.array([2999, 0]))
    torch.testing.assert_close(again["x"], batch["x"][[2999, 0]])


def test_loss_is_on_answer_digits_only():
    fmt = ArithmeticFormat(digits=3, filler=2)
    task = MultiplicationTask(fmt, seed=1)
    batch = task.examples(np.arange(16))
    x, y = batch["x"], batch["y"]
    seqs = format_problems(batch["a"].numpy(), batch["b"].numpy(), fmt)
    answer_from = fmt.prompt_len - 1  # the input '=' predicts the first answer digit
    assert (x[:, answer_from] == EQUALS).all() and (x[:, fmt.operand_len] == TIMES).all()
    assert (y[:, :answer_from] == IGNORE).all()
    np.testing.assert_array_equal(y[:, answer_from:].numpy(), seqs[:, fmt.prompt_len :])
    assert task.count(batch) == 16 * 2 * fmt.digits
    # gradient of the loss w.r.t. the logits is zero at every non-answer position
    logits = torch.randn(16, fmt.seq_len - 1, len(VOCAB), requires_grad=True)
    loss = task.loss(lambda _: logits, batch)
    loss.backward()
    assert logits.grad[:, :answer_from].abs().sum() == 0
    assert (logits.grad[:, answer_from:].abs().sum(-1) > 0).all()
    expected = torch.nn.functional.cross_entropy(logits[:, answer_from:].reshape(-1, len(VOCAB)),
                                                 y[:, answer_from:].reshape(-1), reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


class Oracle(torch.nn.Module):
    """Predicts the correct next answer digit by parsing the prompt (and a wrong one if ``wrong_digit``)."""

    def __init__(self, fmt, wrong_digit=None):
        super().__init__()
        self.fmt, self.wrong_digit = fmt, wrong_digit

    def forward(self, seq):
        fmt = self.fmt
        L = fmt.operand_len
        out = torch.zeros(seq.shape[0], seq.shape[1], len(VOCAB))
        for r, s in enumerate(seq.tolist()):
            a = sum(d * 10**k for k, d in enumerate(s[: fmt.digits]))
            b = sum(d * 10**k for k, d in enumerate(s[L + 1 : L + 1 + fmt.digits]))
            pos = len(s) - fmt.prompt_len  # which answer digit comes next
            digit = (a * b // 10**pos) % 10
            if pos == self.wrong_digit:
                digit = (digit + 1) % 10
            out[r, -1, digit] = 1.0
        return out


def test_greedy_exact_match_with_oracle_models():
    fmt = ArithmeticFormat(digits=2, filler=1)
    task = MultiplicationTask(fmt, seed=0, eval_problems=50)
    assert task.evaluate(Oracle(fmt))["accuracy"] == 1.0
    wrong = task.evaluate(Oracle(fmt, wrong_digit=3))
    assert wrong["accuracy"] == 0.0 and wrong["digit_accuracy"] == pytest.approx(0.75)


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(36, 100)
    assert lo == pytest.approx(0.2728, abs=1e-3) and hi == pytest.approx(0.4571, abs=1e-3)
