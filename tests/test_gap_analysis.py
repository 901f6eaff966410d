"""Gap statistics: held-out windows, per-token evaluation, aggregation in three units, the null, token classes.
(Coverage of the intervals on planted data: tests/test_stats.py.)"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from myopia.analysis.gap import analyse_gap
from myopia.analysis.stats import TRAINING_NOISE_ONE_SEED
from myopia.analysis.units import LN2, token_byte_lengths
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


def test_gap_intervals_through_analyse_gap_cover_a_planted_gap_with_seed_noise():
    """The gap of analyse_gap (documents as units, 3 seeds with a real seed effect) covers the truth >= 90%."""
    rng = np.random.default_rng(0)
    truth, hits, reps = 0.1, 0, 100
    n_docs, S = 20, 3
    lengths = rng.integers(10, 40, n_docs)
    doc = np.repeat(np.arange(n_docs), lengths)
    N = len(doc)
    held = HeldOut(inputs=np.zeros((1, 1), dtype=np.int64), targets=np.zeros((1, 1), dtype=np.int64),
                   target=np.zeros(N, dtype=np.int64), prev=np.zeros(N, dtype=np.int64), doc=doc,
                   position=np.zeros(N, dtype=np.int64), window=np.zeros(N, dtype=np.int64))
    for r in range(reps):
        van = rng.normal(2.0, 0.5, (S, N))
        effect = truth + rng.normal(0, 0.03, (S, 1)) + rng.normal(0, 0.02, n_docs)[doc]
        arm = van + effect + rng.normal(0, 0.3, (S, N))
        g = analyse_gap({"vanilla": van, "myopic": arm}, {}, held, doc_slices=[""] * n_docs,
                        token_class=np.zeros(N, dtype=int), n_boot=300, seed=r, top_k=0)
        e = g["gap"]["myopic"]
        hits += e["ci95"][0] <= truth <= e["ci95"][1]
        assert e["ci95"][1] - e["ci95"][0] >= e["ci95_eval"][1] - e["ci95_eval"][0] - 1e-12
    assert hits / reps >= 0.9, hits / reps


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


def test_bits_per_byte_fraction_of_context_value_and_one_seed_flags():
    held, losses, doc_slices = hand_made()
    bigram = losses["vanilla"] + 1.0  # context is worth exactly 1 nat per token
    token_bytes = np.array([1, 1, 1, 1, 1, 1, 0])  # the end-of-document token stands for no text
    g = analyse_gap({k: v[None] for k, v in losses.items()}, {}, held, doc_slices=doc_slices,
                    token_class=np.zeros(7, dtype=int), count_bigram=bigram, token_bytes=token_bytes, n_boot=100,
                    top_k=0)
    diff = losses["myopic"] - losses["vanilla"]
    e = g["gap"]["myopic"]
    assert e["bits_per_byte"]["mean"] == pytest.approx(diff.sum() / 6 / LN2)
    assert e["fraction_of_context_value"]["mean"] == pytest.approx(diff.mean() / 1.0)
    assert g["loss"]["vanilla"]["bits_per_byte"]["mean"] == pytest.approx(losses["vanilla"].sum() / 6 / LN2)
    # one seed: flagged everywhere, no null, no seed-inclusive parts
    assert e["training_noise"] == TRAINING_NOISE_ONE_SEED and g["training_noise"] == TRAINING_NOISE_ONE_SEED
    assert e["n_seeds"] == 1 and e["ci95"] == e["ci95_eval"] and e["ci95_t"] is None
    assert g["null_gap"] is None and e["against_null"] is None
    # per class / slice: the gap over that group's own value of context, beside its share of tokens
    news = g["by_slice"]["news"]
    assert news["myopic"]["fraction_of_context_value"]["mean"] == pytest.approx(diff[[0, 1, 2, 3, 6]].mean())
    assert news["token_share"] == pytest.approx(5 / 7) and news["context_value"] == pytest.approx(1.0)


def test_byte_lengths_of_tokens_sum_to_the_text_bytes():
    tok = BPETokenizer.train(["the théory of the thing, 2024 things ☃\n"] * 50, 290)
    text = "the théory ☃ of things"
    table, how = token_byte_lengths(tok)
    assert how == "byte-level" and table[tok.encode(text)].sum() == len(text.encode("utf-8"))
    assert table[tok.eos_id] == 0
    table, how = token_byte_lengths(ByteTokenizer())
    assert how == "bytes" and table[:256].tolist() == [1.0] * 256 and table[256] == 0


def test_null_gap_and_top_contexts_null_with_two_seeds():
    rng = np.random.default_rng(3)
    texts = ["the cat sat on the mat and the dog ran far", "a big red hat, with 42 dots", "home again"]
    corpus = byte_corpus(texts, [2, 2, 2])
    held = document_windows(corpus, "test", 8)
    N = held.n_tokens
    van = rng.normal(2.0, 0.3, (2, N))
    arm = van + 0.4 + rng.normal(0, 0.05, (2, N))
    g = analyse_gap({"vanilla": van, "myopic": arm}, {"myopic": np.abs(arm - van)}, held,
                    doc_slices=corpus.doc_slices, token_class=np.zeros(N, dtype=int), tokenizer=corpus.tokenizer,
                    n_boot=200, top_k=3)
    null = g["null_gap"]
    assert null["mean"] == pytest.approx((van[0] - van[1]).mean()) and null["n_pairs"] == 1
    assert null["sd"] == pytest.approx(abs(null["mean"]))
    assert g["gap"]["myopic"]["against_null"] == pytest.approx(g["gap"]["myopic"]["mean"] / null["sd"])
    assert g["gap"]["myopic"]["training_noise"].startswith("included (2 seeds")
    top = g["top_contexts_null"]["by_loss_diff"]
    assert len(top) == 3 and top[0]["loss_diff"] >= top[-1]["loss_diff"]
    best = max(np.max(van[1] - van[0]), np.max(van[0] - van[1]))
    assert top[0]["loss_diff"] == pytest.approx(best)
    assert g["top_contexts_null"]["mean_top_loss_diff_by_arm"]["myopic"] > 0
