"""Multiplication with filler tokens: formatting, parsing, held-out split, loss masking, greedy decoding."""

import numpy as np
import pytest
import torch

from myopia.errors import MyopiaError
from myopia.experiments.arithmetic import interaction, summarise_scores
from myopia.model import GPT, GPTConfig
from myopia.synthetic.arithmetic import (
    EQUALS,
    IGNORE,
    TIMES,
    VOCAB,
    ArithmeticFormat,
    MultiplicationTask,
    filler_masked_logits,
    format_problems,
    heldout_problems,
    pair_keys,
    parse_problem,
    text,
    unordered_pairs,
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


@pytest.mark.parametrize("digits,count", [(2, 400), (3, 1000), (5, 300)])
def test_no_unordered_heldout_pair_is_trained_on_and_each_is_evaluated_once(digits, count):
    task = MultiplicationTask(ArithmeticFormat(digits=digits, filler=1), seed=3, heldout_pairs=count)
    a, b = task.eval_set()
    keys = pair_keys(a, b, digits)
    assert len(a) == count and len(np.unique(keys)) == count  # every held-out pair exactly once
    # independent check with Python sets of frozensets: neither a×b nor b×a of a held-out pair in training
    held = {frozenset((int(x), int(y))) for x, y in zip(a, b)}
    batch = task.examples(np.arange(20000))
    trained = {frozenset((int(x), int(y))) for x, y in zip(batch["a"].numpy(), batch["b"].numpy())}
    assert not held & trained
    assert len(trained) > 1000  # training does draw (both orientations of) the other pairs
    swapped = task.is_heldout(b, a)
    assert swapped.all() and not task.is_heldout(batch["a"].numpy(), batch["b"].numpy()).any()
    # the held-out set depends on the eval seed only (every training seed and filler scores the same pairs)
    other = MultiplicationTask(ArithmeticFormat(digits=digits, filler=0), seed=9, heldout_pairs=count)
    np.testing.assert_array_equal(other.eval_set()[0], a)
    with pytest.raises(MyopiaError, match="fifth"):
        heldout_problems(digits, unordered_pairs(digits) // 5 + 1)


def test_commuted_twins_of_heldout_pairs_would_have_been_drawn():
    """The training sampler really rejects b×a: with N = 1 every pair is hit often, yet none held out appears."""
    task = MultiplicationTask(ArithmeticFormat(digits=1, filler=0), seed=0, heldout_pairs=5)
    batch = task.examples(np.arange(5000))
    ordered = {(int(x), int(y)) for x, y in zip(batch["a"].numpy(), batch["b"].numpy())}
    held = list(zip(*task.eval_set()))
    assert len(ordered) == 100 - sum(2 - (x == y) for x, y in held)  # everything else appears


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
    task = MultiplicationTask(fmt, seed=0, heldout_pairs=50)
    assert task.evaluate(Oracle(fmt))["accuracy"] == 1.0
    wrong = task.evaluate(Oracle(fmt, wrong_digit=3))
    assert wrong["accuracy"] == 0.0 and wrong["digit_accuracy"] == pytest.approx(0.75)
    scores = task.problem_scores(Oracle(fmt, wrong_digit=3))
    assert scores["exact"].shape == (50,) and np.all(scores["digits"] == 0.75)


def _gpt(fmt, seed=0, gradient="vanilla"):
    torch.manual_seed(seed)
    g = GPT(GPTConfig(vocab_size=len(VOCAB), n_layer=2, n_head=2, d_model=16, seq_len=fmt.seq_len, gradient=gradient))
    return g.eval()


def test_filler_mask_ablation_changes_nothing_for_a_model_that_ignores_filler():
    fmt = ArithmeticFormat(digits=2, filler=3)
    task = MultiplicationTask(fmt, seed=0, heldout_pairs=60)
    idx = task.to_batch(*task.eval_set())["x"]
    model = _gpt(fmt)
    # a model that ignores the filler: zero attention output projections, so no position reads any other
    # (filler included) and masking the filler keys cannot change anything
    ignores = _gpt(fmt, seed=1)
    with torch.no_grad():
        for block in ignores.blocks:
            block.attn.proj.weight.zero_()
    torch.testing.assert_close(filler_masked_logits(ignores, idx, fmt), ignores(idx), rtol=0, atol=1e-6)
    a = task.problem_scores(ignores)
    b = task.problem_scores(ignores, mask_filler=True)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)
    # the masked forward is the model's forward when there is no filler, and differs when there is
    fmt0 = ArithmeticFormat(digits=2, filler=0)
    idx0 = MultiplicationTask(fmt0, heldout_pairs=60).to_batch(*task.eval_set())["x"]
    m0 = _gpt(fmt0, gradient="myopic-hidden")
    torch.testing.assert_close(filler_masked_logits(m0, idx0, fmt0), m0(idx0), rtol=0, atol=1e-5)
    assert (filler_masked_logits(model, idx, fmt) - model(idx)).abs().max() > 1e-3  # the test can fail
    # only queries *after* a filler position are affected: before the first filler nothing changes
    torch.testing.assert_close(filler_masked_logits(model, idx, fmt)[:, : fmt.digits + 1],
                               model(idx)[:, : fmt.digits + 1], rtol=0, atol=1e-5)


def test_interaction_and_its_interval_on_planted_accuracies():
    """Planted per-problem exact matches: vanilla gains 0.3 from filler, myopic-hidden 0.1, myopic 0.3."""
    rng = np.random.default_rng(0)
    S, U = 4, 3000
    planted = {"filler=0": {"vanilla": 0.2, "myopic-hidden": 0.2, "myopic": 0.1},
               "filler=4": {"vanilla": 0.5, "myopic-hidden": 0.3, "myopic": 0.4}}
    seed_shift = rng.normal(0, 0.02, size=(S, 1))  # training noise, shared by the arms of a seed
    exact = {k: {g: (rng.random((S, U)) < p + seed_shift).astype(float) for g, p in per.items()}
             for k, per in planted.items()}
    scores = {"exact": exact, "digits": exact, "loss": {k: {g: 1 - v for g, v in per.items()} for k, per in exact.items()}}
    out = summarise_scores(scores, [0, 4], ["vanilla", "myopic-hidden", "myopic"], n_boot=500)
    assert out["n_seeds"] == S and out["heldout_pairs"] == U
    ih, im = out["interaction"]["myopic-hidden"], out["interaction"]["myopic"]
    truth_h = (0.5 - 0.2) - (0.3 - 0.2)
    assert ih["mean"] == pytest.approx(truth_h, abs=0.03) and ih["ci95"][0] < truth_h < ih["ci95"][1]
    assert ih["ci95"][0] > 0.1  # detectably positive
    assert im["ci95"][0] < 0 < im["ci95"][1]  # no interaction planted for strict myopia: interval covers 0
    # the interaction is exactly the arithmetic of the four accuracies, seed by seed
    acc = out["accuracy"]
    assert ih["mean"] == pytest.approx(interaction(acc, "filler=4", "filler=0", "myopic-hidden"), abs=1e-12)
    assert ih["n_seeds"] == S and ih["training_noise"].startswith("included")
    lo, hi = out["accuracy_ci95"]["filler=4"]["vanilla"]
    assert lo < 0.5 < hi
    # the loss interaction has the opposite sign convention (lower loss is better): same number here
    assert out["interaction_answer_loss"]["filler=4"]["myopic-hidden"]["mean"] == pytest.approx(ih["mean"])


def test_verdict_says_when_exact_match_is_zero_everywhere():
    from myopia.experiments.arithmetic import verdict

    zero = {"digits": 3, "n_seeds": 3, "heldout_pairs": 10, "interaction_filler": 6,
            "accuracy": {"filler=0": {"vanilla": 0.0, "myopic": 0.0}, "filler=6": {"vanilla": 0.0, "myopic": 0.0}},
            "interaction": {"myopic": {"mean": 0.0, "ci95": [0.0, 0.0]}}}
    assert "not measurable" in verdict(zero)
    zero["accuracy"]["filler=6"]["vanilla"] = 0.4
    zero["interaction"]["myopic"] = {"mean": 0.4, "ci95": [0.3, 0.5]}
    assert "filler helps vanilla more" in verdict(zero)
