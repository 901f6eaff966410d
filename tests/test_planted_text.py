"""The planted lookahead dependency has the properties its construction states."""

import itertools
import json
from math import comb

import numpy as np
import pytest

from myopia.errors import MyopiaError
from myopia.synthetic.planted_text import (CLOSE, KEYS, OPEN, plant, plant_folder, rule_answer, rule_table, task_items,
                                           unplant, write_task_file)

TEXT = ("The quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat near the door. " * 12).strip()


def _corpus(n=60):
    return [TEXT[: 300 + 17 * i] for i in range(n)]


def test_the_rule_is_balanced_so_neither_key_of_a_pair_alone_predicts_its_bit():
    h = rule_table()
    K = len(KEYS)
    assert h.shape == (K, K) and set(np.unique(h)) == {0, 1}
    assert np.all(h.sum(0) == K // 2) and np.all(h.sum(1) == K // 2)
    assert np.array_equal(h, rule_table())  # fixed: the same rule for every document, split and seed
    assert not np.array_equal(h, rule_table(table_seed=30))


def test_the_order_rule_is_half_ones_and_gives_the_answer_the_same_binomial_marginal():
    """rule="order": h(s, t) = [s > t], ties [s >= K/2]: K²/2 ones, so with uniform keys a record's answer is
    Binomial(w, 1/2) as for the Latin rule (the placebo's marginal); each key alone now correlates with its bit."""
    h = rule_table(4, rule="order")
    assert h.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert h.sum() == 8 and not np.all(h.sum(1) == 2)
    texts, records = plant(_corpus(), strength=1.0, n_slots=4, rate=40, keys="0123", rule="order")
    answers = np.array([r.answer for r in records])
    assert all(r.answer == rule_answer(r.keys, h) for r in records)
    assert abs(answers.mean() - 2.0) < 0.15 and abs(answers.var() - 1.0) < 0.2  # Binomial(4, 1/2): mean 2, var 1
    with pytest.raises(MyopiaError, match="rule must be"):
        rule_table(4, rule="sum")


def test_the_answer_needs_the_pairing_not_just_which_keys_occurred():
    h, rng = rule_table(), np.random.default_rng(0)
    changed = 0
    for _ in range(200):
        k = rng.integers(0, len(KEYS), size=8)
        perms = {rule_answer(np.asarray(p), h) for p in itertools.islice(itertools.permutations(k), 0, 40320, 997)}
        changed += len(perms) > 1
    assert changed > 150  # the multiset of keys leaves the answer open in most records


def test_records_sit_after_spaces_precede_their_answer_and_come_out_cleanly():
    texts = _corpus()
    planted, records = plant(texts, strength=1.0, rate=2.0, seed=1)
    assert [unplant(t) for t in planted] == texts
    assert len(records) >= len(texts)
    for r in records:
        t = planted[r.doc]
        start = r.answer_offset - 10  # <, 8 keys, >
        assert t[start] == OPEN and t[r.answer_offset - 1] == CLOSE and (start == 0 or t[start - 1] == " ")
        assert [KEYS.index(c) for c in t[start + 1:r.answer_offset - 1]] == list(r.keys)  # every key is earlier
        assert t[r.answer_offset] == str(r.answer) and t[r.answer_offset + 1] == " "
        assert r.follows_rule and r.answer == rule_answer(r.keys, rule_table())
    again, _ = plant(texts, strength=1.0, rate=2.0, seed=1)
    assert again == planted and plant(texts, strength=1.0, rate=2.0, seed=2)[0] != planted


@pytest.mark.parametrize("strength", [0.0, 0.5])
def test_strength_sets_how_often_the_rule_holds_and_never_the_answers_marginal(strength):
    planted, records = plant(_corpus(400), strength=strength, rate=4.0, seed=3)
    keys = np.asarray([r.keys for r in records])
    answers = np.asarray([r.answer for r in records])
    rules = np.asarray([r.rule_answer for r in records])
    binom = np.asarray([comb(4, a) / 16 for a in range(5)])
    chance = float(np.sum(binom ** 2))  # a placebo answer equals the rule's by chance
    n = len(records)
    expected = strength + (1 - strength) * chance
    assert abs(np.mean(answers == rules) - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    assert np.abs(np.bincount(answers, minlength=5) / n - binom).max() < 0.03
    # keys are uniform and independent of the key before them: nothing at a key predicts the next key
    first, second = keys[:, :-1].ravel(), keys[:, 1:].ravel()
    joint = np.bincount(first * 10 + second, minlength=100).reshape(10, 10) / len(first)
    assert np.abs(joint - 0.01).max() < 0.006


def test_task_items_score_the_answer_after_its_record(tmp_path):
    planted, records = plant(_corpus(5), strength=0.5, seed=0)
    items = task_items(planted, records)
    assert len(items) == len(records)
    for it, r in zip(items, records):
        assert it["context"].endswith(CLOSE) and it["continuation"] == str(r.answer)
        assert planted[r.doc][:r.answer_offset].endswith(it["context"]) and len(it["context"]) <= 1024
        assert it["label"] == ("rule" if r.follows_rule else "placebo")
    short = task_items(planted, records, context_chars=20, docs=[1, 3])
    assert {int(it["id"][1:].split("@")[0]) for it in short} == {1, 3}
    assert all(len(it["context"]) == 20 for it in short)
    write_task_file(tmp_path / "planted.jsonl", items)
    lines = (tmp_path / "planted.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == items


def test_bad_settings_are_refused():
    with pytest.raises(MyopiaError):
        plant(["a b"], strength=1.5)
    with pytest.raises(MyopiaError):
        plant(["a <b>"], strength=1.0)
    with pytest.raises(MyopiaError):
        rule_table(9)


def test_a_planted_folder_reads_back_as_the_same_documents_with_records(tmp_path):
    from myopia.data.sources import read_text_documents

    src = tmp_path / "src"
    src.mkdir()
    texts = _corpus(6)
    (src / "alpha.txt").write_text("\n\n".join(texts[:4]) + "\n")
    (src / "beta.txt").write_text("\n\n".join(texts[4:]) + "\n")
    info = plant_folder(src, tmp_path / "planted", tmp_path / "answers.jsonl", strength=1.0, seed=5)
    back = read_text_documents(tmp_path / "planted")
    assert [d.slice for d in back] == ["alpha"] * 4 + ["beta"] * 2
    assert [unplant(d.text) for d in back] == texts
    assert info["documents"] == 6 and info["records"] == len((tmp_path / "answers.jsonl").read_text().splitlines())
    with pytest.raises(MyopiaError):
        plant_folder(src, tmp_path / "p2", tmp_path / "p2" / "answers.jsonl", strength=1.0)
