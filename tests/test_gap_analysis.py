"""Gap statistics: held-out windows, per-token evaluation, bootstrap coverage, aggregation, token classes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from myopia.analysis.bootstrap import DocBootstrap, interval
from myopia.analysis.gap import analyse_gap
from myopia.analysis.heldout import HeldOut, count_bigram_losses, document_windows, evaluate_per_token
from myopia.analysis.token_classes import CLASSES, classify_tokens
from myopia.data.corpus import TokenCorpus
from myopia.data.tokenizer import BPETokenizer, ByteTokenizer
from myopia.model import GPT, GPTConfig


def byte_corpus(texts, split, slices=None):
    tok = ByteTokenizer()
    enc = [tok.encode(t) + [tok.eos_id] for t in texts]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in enc])])
    return TokenCorpus(tokens=np.array([t for e in enc for t in e], dtype=np.uint16), doc_offsets=offsets,
                       doc_slices=slices or [""] * len(texts), doc_split=np.array(split, dtype=np.int8),
                       vocab_size=257, tokenizer=tok)


def test_document_windows_predict_every_held_out_token_once():
    texts = ["abcdefghij", "xyz", "0123456789abcdef", "train only"]
    corpus = byte_corpus(texts, [2, 2, 2, 0])
    held = document_windows(corpus, "test", 4)
    for d, t in enumerate(texts[:3]):
        sel = held.doc == d
        assert bytes(held.target[sel][:-1].tolist()).decode() == t  # the document, in order
        assert held.target[sel][-1] == 256  # then its end-of-document token
        n = len(t) + 1
        np.testing.assert_array_equal(held.position[sel], np.arange(n) % 4)
    # the first input of every document is the end-of-document token, the previous token is the input
    first = held.position == 0
    assert held.prev[(held.position == 0) & (np.r_[True, held.doc[1:] != held.doc[:-1]])].tolist() == [256] * 3
    assert held.n_tokens == sum(len(t) + 1 for t in texts[:3]) and not np.any(held.doc == 3)
    assert first.sum() == 3 + 1 + 5  # windows per document: ceil(11/4), ceil(4/4), ceil(17/4)


def test_per_token_losses_match_the_model_and_kl_of_a_model_with_itself_is_zero():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=16, seq_len=8)).eval()
    corpus = byte_corpus(["hello world, hello", "abc"], [2, 2])
    held = document_windows(corpus, "test", 8)
    res = evaluate_per_token({"a": model, "b": model}, held, reference="a", batch_size=2)
    seq = torch.tensor([256] + list(b"hello world, hello") + [256])
    inputs, targets = seq[:-1], seq[1:]
    with torch.no_grad():  # each window of 8 restarts the context
        logits = torch.cat([model(inputs[None, a : a + 8])[0] for a in range(0, len(inputs), 8)])
    expected = F.cross_entropy(logits, targets, reduction="none").numpy()
    np.testing.assert_allclose(res["a"]["loss"][held.doc == 0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res["a"]["loss"], res["b"]["loss"])
    assert np.abs(res["b"]["kl"]).max() < 1e-6 and "kl" not in res["a"]


def test_count_bigram_matches_a_direct_count():
    corpus = byte_corpus(["abab", "abba", "bab"], [0, 0, 2])
    held = document_windows(corpus, "test", 8)
    got = count_bigram_losses(corpus, held, strength=2.0)
    train = np.array(list(b"abab") + [256] + list(b"abba") + [256])
    V = 257
    uni = (np.bincount(train, minlength=V) + 1) / (len(train) + V)
    for prev, tgt, loss in zip(held.prev, held.target, got):
        c_ab = sum(1 for a, b in zip(train[:-1], train[1:]) if a == prev and b == tgt)
        c_a = sum(1 for a in train[:-1] if a == prev)
        assert loss == pytest.approx(-np.log((c_ab + 2.0 * uni[tgt]) / (c_a + 2.0)), rel=1e-5)


def test_bootstrap_interval_covers_a_planted_gap_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    truth, hits, reps = 0.1, 0, 300
    for r in range(reps):
        n_docs = 40
        lengths = rng.integers(20, 200, n_docs)
        doc = np.repeat(np.arange(n_docs), lengths)
        effect = truth + rng.normal(0, 0.2, n_docs)  # documents differ; tokens within a document correlate
        diff = effect[doc] + rng.normal(0, 1.0, len(doc))
        point, boot, _ = DocBootstrap(n_docs, 1, 400, seed=r).group_means(diff, doc)
        lo, hi = interval(boot)
        hits += lo[0] <= truth <= hi[0]
    coverage = hits / reps
    assert 0.89 <= coverage <= 0.99, coverage


def test_bootstrap_with_seeds_widens_for_seed_variation():
    rng = np.random.default_rng(1)
    n_docs, S = 30, 3
    doc = np.repeat(np.arange(n_docs), 50)
    base = rng.normal(0.1, 0.05, n_docs)[doc] + rng.normal(0, 0.2, len(doc))
    same = np.stack([base] * S)
    shifted = np.stack([base + s * 0.05 for s in range(S)])  # seeds disagree
    w_same = np.diff(interval(DocBootstrap(n_docs, S, 500).group_means(same, doc)[1]), axis=0)
    w_shift = np.diff(interval(DocBootstrap(n_docs, S, 500).group_means(shifted, doc)[1]), axis=0)
    assert w_shift[0, 0] > 1.5 * w_same[0, 0]


def hand_made():
    """Three documents, two slices, hand-picked per-token losses of vanilla and two arms."""
    held = HeldOut(inputs=np.zeros((3, 4), dtype=np.int64), targets=np.zeros((3, 4), dtype=np.int64),
                   target=np.array([97, 32, 98, 10, 97, 49, 256]), prev=np.array([256, 97, 32, 98, 256, 97, 49]),
                   doc=np.array([0, 0, 0, 0, 5, 5, 9]), position=np.array([0, 1, 2, 3, 0, 1, 0]),
                   window=np.array([0, 0, 0, 0, 1, 1, 2]))
    van = np.array([1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 5.0])
    losses = {"vanilla": van, "myopic": van + np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
              "myopic-hidden": van + 0.25}
    slices = {0: "news", 5: "fiction", 9: "news"}
    doc_slices = [slices.get(i, "unused") for i in range(10)]
    return held, losses, doc_slices


def test_aggregation_by_position_slice_and_class_on_hand_made_losses():
    held, losses, doc_slices = hand_made()
    cls = classify_tokens(held.target, held.prev, ByteTokenizer())
    names = [CLASSES[c] for c in cls]
    assert names == ["word-start", "whitespace", "word-start", "newline", "word-start", "digit",
                     "end-of-document"]
    kls = {"myopic": np.full(7, 0.5), "myopic-hidden": np.full(7, 0.1)}
    g = analyse_gap({k: v[None] for k, v in losses.items()}, {k: v[None] for k, v in kls.items()}, held,
                    doc_slices=doc_slices, token_class=cls, n_boot=200, top_k=0)
    diff = losses["myopic"] - losses["vanilla"]
    assert g["gap"]["myopic"]["mean"] == pytest.approx(diff.mean())
    assert g["gap"]["myopic-hidden"]["mean"] == pytest.approx(0.25)
    assert g["gap"]["myopic"]["relative"]["mean"] == pytest.approx(diff.mean() / losses["vanilla"].mean())
    assert g["gap"]["myopic"]["kl_from_vanilla"]["mean"] == pytest.approx(0.5)
    lo, hi = g["gap"]["myopic"]["ci95"]
    assert lo <= diff.mean() <= hi
    # by position: position 0 holds tokens 0, 4, 6
    pos = g["by_position"]
    assert pos["myopic"]["gap"][0] == pytest.approx((0.1 + 0.5 + 0.7) / 3)
    assert pos["myopic"]["gap"][3] == pytest.approx(0.4)
    assert pos["vanilla"][1] == pytest.approx((2.0 + 2.0) / 2) and pos["tokens"] == [3, 2, 1, 1]
    # by slice: news = documents 0 and 9, fiction = document 5
    assert g["by_slice"]["news"]["myopic"]["mean"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.7) / 5)
    assert g["by_slice"]["fiction"]["myopic"]["mean"] == pytest.approx(0.55)
    assert g["by_slice"]["news"]["docs"] == 2 and g["by_slice"]["fiction"]["tokens"] == 2
    # by class: word starts are tokens 0, 2, 4
    ws = g["by_class"]["word-start"]
    assert ws["myopic"]["mean"] == pytest.approx((0.1 + 0.3 + 0.5) / 3)
    assert ws["myopic"]["gap_share"] == pytest.approx(0.9 / diff.sum())
    assert ws["token_share"] == pytest.approx(3 / 7)
    assert sum(r["myopic"]["gap_share"] for r in g["by_class"].values()) == pytest.approx(1.0)
    assert g["by_position_bucket"]["0-3"]["myopic"]["mean"] == pytest.approx(diff.mean())


def test_gap_reports_myopic_and_myopic_hidden_even_when_untrained():
    held, losses, doc_slices = hand_made()
    g = analyse_gap({"vanilla": losses["vanilla"][None], "bigram": losses["vanilla"][None] + 1}, {}, held,
                    doc_slices=doc_slices, token_class=np.zeros(7, dtype=int), n_boot=50, top_k=0)
    assert g["gap"]["myopic"] is None and g["gap"]["myopic-hidden"] is None
    assert g["gap"]["bigram"]["mean"] == pytest.approx(1.0)


def test_token_classes_for_bpe_tokens():
    tok = BPETokenizer.train(["the theory of the thing, 2024 things\n"] * 50, 290)
    text = "the theory, 2024\n"
    ids = tok.encode(text)
    prev = [tok.eos_id] + ids[:-1]
    names = [CLASSES[c] for c in classify_tokens(np.array(ids), np.array(prev), tok)]
    pieces = [tok.token_text(i) for i in ids]
    for piece, name in zip(pieces, names):
        if piece.strip().isalpha() and (piece[0] == " " or piece == pieces[0]):
            assert name == "word-start", (piece, name)
        if piece.strip() and piece.strip()[0].isdigit():
            assert name == "digit"
        if piece == ",":
            assert name == "punctuation"
        if piece == "\n":
            assert name == "newline"
    assert "word-start" in names
