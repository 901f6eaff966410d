"""Count n-gram baselines: hand-computed probabilities, a loop-by-loop reference, normalisation, held-out windows."""

import time
from collections import defaultdict

import numpy as np
import pytest

from myopia.analysis.heldout import HeldOut, count_bigram_losses, document_windows
from myopia.analysis.ngram import (baseline_losses, baseline_summary, bigram_losses, distribution, fit_ngram,
                                   kn_losses, training_sequences, unigram_losses)
from myopia.data.corpus import TokenCorpus
from myopia.errors import MyopiaError

A, B, E = 0, 1, 2  # E: the end-of-document token


def _one_window(seq) -> HeldOut:
    """The whole sequence as one window: inputs seq[:-1], targets seq[1:]."""
    x, y = np.asarray(seq[:-1])[None], np.asarray(seq[1:])[None]
    n = x.shape[1]
    return HeldOut(inputs=x, targets=y, target=y[0], prev=x[0], doc=np.zeros(n, dtype=np.int64),
                   position=np.arange(n), window=np.zeros(n, dtype=np.int64))


def _tiny():
    seq = np.array([E, A, B, A, B, E])
    starts = np.zeros(len(seq), bool)
    starts[0] = True
    return fit_ngram(seq, starts, 3, 4)


def test_unigram_and_bigram_by_hand():
    m = _tiny()  # predicted tokens a b a b e: c(a) = c(b) = 2, c(e) = 1, N = 5, V = 3
    h = _one_window([E, A, B])
    assert np.exp(-unigram_losses(m, h)) == pytest.approx([3 / 8, 3 / 8])
    # p(b | a) = (c(ab) + 10 u(b)) / (c(a.) + 10) = (2 + 10 * 3/8) / (2 + 10); p(a | e) = (1 + 10 * 3/8) / 11
    assert np.exp(-bigram_losses(m, h)) == pytest.approx([(1 + 3.75) / 11, (2 + 3.75) / 12])


def test_kneser_ney_4gram_by_hand():
    # p(a | e a b), worked through in the module's formulas:
    #   unigram continuation counts a:2 (e a, b a), b:1, e:1; D1 = 2 / (2 + 2) = 0.5
    #     P1(a) = (2 - 0.5)/4 + 0.5 * 3/4 * 1/3 = 0.5
    #   bigram continuation counts (e a):1 (start), (a b):2 (e, b), (b a):1, (b e):1; D2 = 3 / (3 + 2) = 0.6
    #     P2(a | b) = (1 - 0.6)/2 + 0.6 * 2/2 * 0.5 = 0.5
    #   trigram continuation counts all 1: D3 = 0.5 (no n2); P3(a | a b) = (1 - 0.5)/2 + 0.5 * 2/2 * 0.5 = 0.5
    #   4-gram raw counts all 1: D4 = 0.5; P4(a | e a b) = (1 - 0.5)/1 + 0.5 * 1/1 * 0.5 = 0.75
    m = _tiny()
    assert distribution(m, [E, A, B])[A] == pytest.approx(0.75)
    assert distribution(m, [E, A, B]).sum() == pytest.approx(1.0)
    # the same number through held-out scoring: the 4th target of one window [e a b a ...] has context e a b
    assert np.exp(-kn_losses(m, _one_window([E, A, B, A])))[2] == pytest.approx(0.75)


def _reference(seqs, V, K):
    """Interpolated Kneser-Ney written loop by loop from the definition, for comparison."""
    raw = [defaultdict(float) for _ in range(K + 1)]
    left = [defaultdict(set) for _ in range(K + 1)]
    start = [defaultdict(float) for _ in range(K + 1)]
    for s in seqs:
        for i in range(1, len(s)):
            for k in range(1, K + 1):
                if i - k + 1 < 0:
                    continue
                g = tuple(s[i - k + 1:i + 1])
                raw[k][g] += 1
                if i - k >= 0:
                    left[k][g].add(s[i - k])
                elif k >= 2:
                    start[k][g] += 1
    cont = [defaultdict(float) for _ in range(K + 1)]
    for k in range(1, K + 1):
        for g in set(left[k]) | set(start[k]):
            cont[k][g] = len(left[k][g]) + start[k][g]

    def disc(counts):
        v = [c for c in counts.values() if c > 0]
        n1, n2 = v.count(1), v.count(2)
        return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5

    D = {(k, kind): disc((raw if kind == "raw" else cont)[k]) for k in range(1, K + 1) for kind in ("raw", "cont")}

    def p(w, h, k, kind):
        if k == 0:
            return 1.0 / V
        counts = (raw if kind == "raw" else cont)[k]
        h = tuple(h[len(h) - (k - 1):]) if k > 1 else ()
        lower = p(w, h, k - 1, "cont")
        tot = sum(c for g, c in counts.items() if g[:-1] == h)
        if tot == 0:
            return lower
        n1p = sum(1 for g, c in counts.items() if g[:-1] == h and c > 0)
        d = D[(k, kind)]
        return max(counts.get(h + (w,), 0.0) - d, 0) / tot + d * n1p / tot * lower

    return lambda w, h: p(w, h, min(K, len(h) + 1), "raw")


def test_kneser_ney_matches_a_loop_reference_and_sums_to_one():
    rng = np.random.default_rng(3)
    V, K = 5, 4
    seqs = [[V - 1] + list(rng.integers(0, 3, size=n)) + [V - 1] for n in (9, 14, 6, 11)]
    tokens = np.concatenate(seqs)
    starts = np.zeros(len(tokens), bool)
    starts[np.cumsum([0] + [len(s) for s in seqs[:-1]])] = True
    m = fit_ngram(tokens, starts, V, K)
    ref = _reference(seqs, V, K)
    contexts = [[V - 1], [0], [V - 1, 0, 1], [1, 2, 0], [2, 2, 2], [3, 3], [0, 1], [V - 1, 3, 0]]
    for h in contexts:
        got = distribution(m, h)
        assert got.sum() == pytest.approx(1.0, abs=1e-12)
        assert got == pytest.approx([ref(w, h) for w in range(V)], abs=1e-12)


def _corpus(docs, V):
    tokens = np.concatenate(docs)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    split = np.zeros(len(docs), dtype=np.int8)
    split[-2:] = 2
    return TokenCorpus(tokens=tokens, doc_offsets=offsets, doc_slices=["x"] * len(docs), doc_split=split,
                       vocab_size=V)


def test_heldout_scoring_uses_the_arms_windows_and_matches_the_count_bigram():
    rng = np.random.default_rng(0)
    V = 7
    docs = [np.concatenate([rng.integers(0, V - 1, size=n), [V - 1]]) for n in (40, 33, 57, 25, 61, 30)]
    corpus = _corpus(docs, V)
    held = document_windows(corpus, "test", 8)
    tokens, starts = training_sequences(corpus)
    assert starts.sum() == 4 and np.all(tokens[starts] == V - 1)
    m = fit_ngram(tokens, starts, V, 4)
    losses = baseline_losses(corpus, held)
    assert set(losses) == {"unigram", "bigram", "4gram"} and all(len(v) == held.n_tokens for v in losses.values())
    # the bigram is the gap's count bigram, except after the end-of-document token: the flat stream of the gap's
    # count bigram lacks the first training document's (eos, first token) pair
    ref, after_eos = count_bigram_losses(corpus, held), held.prev == V - 1
    assert losses["bigram"][~after_eos] == pytest.approx(ref[~after_eos], rel=1e-5)
    assert losses["bigram"][after_eos] == pytest.approx(ref[after_eos], abs=0.3)
    # a token at window position p sees p + 1 tokens: position 0 of a later window only its own input
    i = np.flatnonzero((held.position == 0) & (held.window == 1))[0]
    p_direct = distribution(m, [held.inputs[1, 0]])[held.target[i]]
    assert np.exp(-kn_losses(m, held))[i] == pytest.approx(p_direct)
    j = np.flatnonzero((held.position == 5) & (held.window == 1))[0]
    assert np.exp(-losses["4gram"][j]) == pytest.approx(distribution(m, held.inputs[1, 3:6])[held.target[j]])
    s = baseline_summary(losses, held, token_bytes=np.ones(held.n_tokens), n_boot=200)
    assert s["4gram"]["loss"] == pytest.approx(losses["4gram"].mean())
    assert s["4gram"]["bits_per_byte"] == pytest.approx(losses["4gram"].mean() / np.log(2))
    assert s["4gram"]["ci95"][0] < s["4gram"]["loss"] < s["4gram"]["ci95"][1]


def test_bad_input_is_refused():
    with pytest.raises(MyopiaError):
        fit_ngram([0, 1, 5], [True, False, False], 3)
    with pytest.raises(MyopiaError):
        fit_ngram([0, 1], [False, False], 3)


def test_a_4gram_learns_what_a_bigram_cannot_and_fits_two_million_tokens_in_seconds():
    rng = np.random.default_rng(1)
    V, n = 257, 2_000_000

    def source(size):  # odd positions: (t-3) + (t-1) mod 16, which only a context of 3 tokens predicts
        x = rng.integers(0, 16, size=size)
        for i in range(3, size, 2):
            x[i] = (x[i - 3] + x[i - 1]) % 16
        return x

    x = source(n)
    starts = np.zeros(n, bool)
    starts[::100_000] = True
    x[starts] = 256
    t0 = time.perf_counter()
    m = fit_ngram(x, starts, V, 4)
    fit_s = time.perf_counter() - t0
    print(f"fit on {n:,} tokens: {fit_s:.1f} s")
    assert fit_s < 120
    held = _one_window(np.concatenate([[256], source(4001)]))  # fresh text of the same source
    kn, bi = kn_losses(m, held), bigram_losses(m, held)
    # target t of the window is source token t; the odd ones follow the rule. A context of 3 tokens is followed by
    # a ruled token half of the time in training, so the 4-gram gives the rule about 1/2 + 1/32: loss ~0.63
    assert kn[3::2].mean() < 0.7 and bi[3::2].mean() > 2.6
    assert kn.mean() < bi.mean() - 0.5
