"""The pre-registered task suite: item extraction on hand-made texts, copy learning, Holm, and the driver."""

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from myopia.analysis import tasks as T
from myopia.analysis.heldout import document_windows
from myopia.analysis.stats import HierarchicalBootstrap, holm, masked_means
from myopia.cli import main
from myopia.data import ByteTokenizer
from myopia.data.corpus import Document, corpus_from_documents
from myopia.errors import MyopiaError
from myopia.experiments.pair import run_pair
from myopia.experiments.tasks import Scores, apply_holm, run_tasks, score, task_record
from myopia.io import read_json
from myopia.model import GPT, GPTConfig
from myopia.train import TrainConfig

BYTES = ByteTokenizer()
TEXTS = T.vocab_texts(BYTES, 257)


def ids(text):
    return np.asarray(BYTES.encode(text))


# ---------------------------------------------------------------------------------------------------------------
# Item extraction
# ---------------------------------------------------------------------------------------------------------------


def test_closing_bracket_twenty_tokens_back_is_exactly_that_token():
    text = "see (" + "a" * 19 + ") and (short) end"
    close = T.closing_tokens(ids(text), TEXTS, min_distance=16)
    assert close.tolist() == [text.index(")")]  # the far one only; "(short)" is 6 tokens
    assert T.closing_tokens(ids(text), TEXTS, min_distance=21).tolist() == []


def test_closing_quotes_pair_up_and_nested_brackets_match_their_own_opener():
    text = '"' + "x" * 20 + '" then [' + "(" + "y" * 3 + ")" + "z" * 16 + "]"
    close = T.closing_tokens(ids(text), TEXTS, min_distance=16)
    assert close.tolist() == [21, len(text) - 1]  # the closing quote and "]"; the inner ")" is 4 back


def test_repeat_mentions_mark_non_initial_tokens_of_seen_words():
    text = "Morgan met Ann. Then Morgan left, Ann too."
    rep, first = T.repeat_mentions(ids(text), TEXTS, min_chars=5)
    second = text.index("Morgan", 1)
    assert np.flatnonzero(rep).tolist() == list(range(second + 1, second + 6))
    # first mentions: Morgan (Ann, Then, met, left, too are shorter than 5 characters)
    assert np.flatnonzero(first).tolist() == list(range(1, 6))


def test_word_continuations_are_the_letters_after_a_letter():
    held = T.sequences(ids("\x00ab c,d")[None, :-1], ids("\x00ab c,d")[None, 1:], [0])
    mask = T.word_continuations(held, BYTES, 257)
    assert held.target[mask].tolist() == [ord("b")]


def test_long_range_selection_is_leave_one_seed_out():
    full = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    short = np.array([[3.0, 0.0, 1.5], [0.0, 0.0, 1.5], [0.0, 3.0, 0.0]])
    sel = T.long_range(full, short, threshold=1.0)
    # seed 0 is selected by seeds 1, 2: token 0 (0+0)/2, token 1 (0+3)/2, token 2 (1.5+0)/2
    assert sel.tolist() == [[False, True, False], [True, True, False], [True, False, True]]
    assert T.long_range(full[:1], short[:1], 1.0).tolist() == [[True, False, True]]


def test_window_masks_map_items_to_the_held_out_tokens_that_predict_them():
    doc = "x (" + " ." * 10 + ") Budd, Budd."
    corpus = corpus_from_documents([Document(doc, "only")] * 3, BYTES, val_frac=0.34, test_frac=0.34,
                                   dedup=False)
    held = document_windows(corpus, "test", 64)
    m = T.window_masks(held, TEXTS, min_chars=4, min_distance=16)
    assert bytes(held.target[m["closing"]].tolist()) == b")"
    assert bytes(held.target[m["repeat-mention"]].tolist()) == b"udd"
    assert bytes(held.target[m["first-mention"]].tolist()) == b"udd"
    # a window boundary hides the earlier mention: with 16-token windows Budd's repeat is no longer visible
    held16 = document_windows(corpus, "test", 16)
    m16 = T.window_masks(held16, TEXTS, min_chars=4, min_distance=16)
    assert not m16["repeat-mention"].any() and not m16["closing"].any()


def test_short_context_windows_hold_the_last_k_inputs():
    corpus = corpus_from_documents([Document("abcdefghijklmnopqrstuvwxyz", "s")] * 3, BYTES, val_frac=0.34,
                                   test_frac=0.34, dedup=False)
    held = document_windows(corpus, "test", 32)
    short, idx = T.short_context_windows(held, 4)
    assert (held.position[idx] >= 4).all() and len(idx) == (held.position >= 4).sum()
    first = idx[0]
    assert short.inputs[0].tolist() == held.inputs[held.window[first], held.position[first] - 3:held.position[first] + 1].tolist()
    assert short.target.tolist() == held.target[idx].tolist()


def test_induction_windows_score_the_second_copy_and_random_spans_avoid_eos():
    spans = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    inputs, second, first = T.doubled(spans, eos_id=256, score_from=1)
    assert inputs[0].tolist() == [256, 1, 2, 3, 4, 1, 2, 3]
    assert second[0].tolist() == [-1] * 5 + [2, 3, 4]
    assert first[0].tolist() == [-1, 2, 3, 4, -1, -1, -1, -1]
    r = T.random_spans(257, 256, 32, 100, seed=1)
    assert r.max() <= 255 and r.min() >= 0 and r.shape == (100, 32)
    assert np.array_equal(r, T.random_spans(257, 256, 32, 100, seed=1))


def test_user_task_files_are_checked_line_by_line(tmp_path):
    good = tmp_path / "qa.jsonl"
    good.write_text('{"context": "a", "continuation": " b", "id": "x"}\n\n{"context": "", "continuation": "c"}\n')
    items = T.read_user_task(good)
    assert [i.id for i in items] == ["x", "1"] and T.user_task_name(good) == "user:qa"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "continuation": "b"}\n{"context": "a"}\n')
    with pytest.raises(MyopiaError, match=r"bad.jsonl:2: missing or non-string 'continuation'"):
        T.read_user_task(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(MyopiaError, match=r"empty.jsonl:1: empty"):
        T.read_user_task(empty)
    with pytest.raises(MyopiaError, match="unknown task 'copying'"):
        T.check_task_names("induction,copying")


def test_user_windows_score_only_the_continuation():
    items = [T.UserItem("hello", " world", "0")]
    ic, tc, inn, tn = T.user_windows(items, BYTES, seq_len=8)
    # context left-truncated to fit: [eos] + "lo" + " world" = 9 tokens -> 8 inputs
    assert bytes(int(t) for t in tc[0] if t >= 0) == b" world"
    assert ic[0].tolist()[:3] == [256, ord("l"), ord("o")]
    assert inn[0, 0] == 256 and bytes(int(t) for t in tn[0] if t >= 0) == b" world"


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------


def test_holm_against_a_hand_computed_case():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to the running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    tasks = {"a": {"gap": {"m": {"p": 0.01, "accuracy": {"p": 0.04}}},
                   "variants": {"v": {"gap": {"m": {"p": 0.03, "accuracy": {"p": None}}}}}},
             "b": {"gap": {"m": {"p": 0.005}}}}
    assert apply_holm(tasks) == 4
    assert tasks["a"]["gap"]["m"]["p_holm"] == pytest.approx(0.03)
    assert tasks["a"]["gap"]["m"]["accuracy"]["p_holm"] == pytest.approx(0.06)
    assert tasks["a"]["variants"]["v"]["gap"]["m"]["p_holm"] == pytest.approx(0.06)
    assert tasks["a"]["variants"]["v"]["gap"]["m"]["accuracy"]["p_holm"] is None
    assert tasks["b"]["gap"]["m"]["p_holm"] == pytest.approx(0.02)


def test_masked_means_equal_plain_means_with_one_mask_and_per_seed_means_with_many():
    rng = np.random.default_rng(0)
    values, unit = rng.normal(size=(3, 200)), rng.integers(0, 20, 200)
    boot = HierarchicalBootstrap(20, 3, n_boot=300, seed=1)
    m = rng.random(200) < 0.5
    same = masked_means(boot, values, np.repeat(m[None], 3, 0), unit)
    plain = boot.means(values[:, m], unit[m])
    assert np.allclose(same.boot, plain.boot, equal_nan=True) and np.allclose(same.per_seed, plain.per_seed)
    masks = rng.random((3, 200)) < 0.5
    diff = masked_means(boot, values, masks, unit)
    assert np.allclose(diff.per_seed[:, 0], [values[s, masks[s]].mean() for s in range(3)])


# ---------------------------------------------------------------------------------------------------------------
# A model trained to copy shows a large in-context gain on induction
# ---------------------------------------------------------------------------------------------------------------


def test_a_model_trained_to_copy_gains_a_lot_from_the_first_copy():
    torch.manual_seed(0)
    n, V = 8, 257
    model = GPT(GPTConfig(vocab_size=V, n_layer=1, n_head=2, d_model=32, seq_len=2 * n))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(150):
        spans = torch.from_numpy(T.random_spans(V, 256, n, 32, seed=100 + step))
        inputs, second, _ = T.doubled(spans.numpy(), 256)
        logits = model(torch.from_numpy(inputs))
        loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(second).reshape(-1), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    spans = T.random_spans(V, 256, n, 64, seed=1414)
    inputs, second, first = T.doubled(spans, 256)
    held = T.sequences(inputs, np.maximum(second, first), np.arange(len(spans)))
    res = score({"vanilla": model}, held, V)["vanilla"]
    sec, fir = held.position >= n + 1, held.position < n + 1
    sc = Scores({"vanilla": res["loss"][None, sec]}, {"vanilla": res["correct"][None, sec].astype(float)},
                res["loss"][None, fir] - res["loss"][None, sec], np.ones(int(sec.sum()), bool), held.doc[sec])
    rec = task_record(HierarchicalBootstrap(len(spans), 1, 200), sc, ["vanilla"], "vanilla")
    # first copy: nothing to copy from (log 256 = 5.5 nats); second copy: copied
    assert res["loss"][fir].mean() > 4.5
    assert rec["value_of_context"]["mean"] > 3.0 and rec["value_of_context"]["ci95"][0] > 2.5
    assert rec["accuracy"]["vanilla"]["mean"] > 0.5


# ---------------------------------------------------------------------------------------------------------------
# The driver, end to end on a tiny pair
# ---------------------------------------------------------------------------------------------------------------

WORDS = "the cat sat on (a mat) and dog ran far away home with Morgan Budd said".split() + ["(the cat)"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks-data") / "genres"
    d.mkdir()
    rng = random.Random(0)
    for genre in ("news", "fiction"):
        docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40))) for _ in range(10)]
        (d / f"{genre}.txt").write_text("\n\n".join(docs) + "\n")
    return d


@pytest.fixture(scope="module")
def pair_dir(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks-pair") / "p"
    run_pair(corpus_dir, out, GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=16, seq_len=48),
             TrainConfig(steps=3, batch_size=4, lr=1e-2, eval_every=3, ckpt_every=3, log_every=1, progress=False),
             seeds="0,1", eval_tokens=256, data_opts={"val_frac": 0.2, "test_frac": 0.2}, progress=False)
    return out


@pytest.fixture
def small_suite(monkeypatch):
    monkeypatch.setitem(T.SUITE["induction"], "n_spans", 16)
    monkeypatch.setitem(T.SUITE, "short_context", 8)
    monkeypatch.setitem(T.SUITE["closing"], "min_distance", 4)
    monkeypatch.setitem(T.SUITE["long-range"], "threshold_nats", 0.0)  # a 3-step model gains little from context


def test_tasks_json_contract(pair_dir, tmp_path, small_suite):
    user = tmp_path / "names.jsonl"
    user.write_text("\n".join(json.dumps({"context": "the cat sat on", "continuation": c, "label": lab})
                              for c, lab in ((" a mat", "x"), (" the dog", "y"), (" far", "x"))) + "\n")
    r = run_tasks(pair_dir, user=[user], n_boot=100, progress=False)
    saved = read_json(pair_dir / "tasks.json")
    assert saved["tasks"].keys() == r["tasks"].keys() == {"induction", "repeat-mention", "long-range", "closing",
                                                           "word-continuation", "user:names"}
    assert saved["suite"]["version"] == T.SUITE_VERSION and saved["suite"]["induction"]["span_len_used"] == 23
    for name, rec in saved["tasks"].items():
        assert isinstance(rec["n"], int) and rec["n"] > 0, name
        for arm in ("myopic", "myopic-hidden"):
            g = rec["gap"][arm]
            assert {"mean", "ci95", "p_holm", "fraction_of_context_value"} <= set(g), (name, arm)
            assert g["ci95"][0] <= g["mean"] <= g["ci95"][1] and g["n_seeds"] == 2
            assert g["p_holm"] >= g["p"]
        assert rec["null"] is None or rec["null"]["n_pairs"] == 1
    assert saved["tasks"]["user:names"]["n"] == 3 and saved["tasks"]["user:names"]["labels"] == ["x", "y"]
    assert saved["tasks"]["induction"]["n"] == 16 and "random" in saved["tasks"]["induction"]["variants"]
    assert "first_mentions" in saved["tasks"]["repeat-mention"]["variants"]
    # the gap is a paired difference of the losses reported for the arms
    wc = saved["tasks"]["word-continuation"]
    assert wc["gap"]["myopic"]["mean"] == pytest.approx(wc["loss"]["myopic"]["mean"] - wc["loss"]["vanilla"]["mean"],
                                                        abs=1e-9)
    # one Holm family: 7 task entries (5 + 2 variants) x 2 arms x (loss, accuracy) + user 2 x 2
    assert saved["holm_family_size"] == 7 * 2 * 2 + 4
    # the report section: the table (myopic-hidden first) and the forest plot
    from myopia.plots.tasks import forest_rows
    from myopia.report import build_report

    rows = forest_rows(saved)
    assert len(rows) == (7 + 1) * 2 and {r["arm"] for r in rows} == {"myopic", "myopic-hidden"}
    rep = build_report(pair_dir)
    md = (pair_dir / "report.md").read_text()
    assert "tasks" in rep["sections"] and "## Pre-registered task suite" in md
    assert md.index("myopic-hidden gap") < md.index("| myopic gap") and (pair_dir / "report_files" / "tasks_forest.png").is_file()


def test_tasks_without_short_context_skip_its_windows_and_agree(pair_dir, tmp_path, small_suite, monkeypatch):
    """Induction and user tasks alone do not score the short-context windows (most of the suite's time), and
    their records are those of the whole suite's run; every other suite task needs those windows."""
    from myopia.experiments import tasks as X

    assert set(X.SHORT_CONTEXT_TASKS) == set(T.TASKS) - {"induction"}
    user = tmp_path / "u.jsonl"
    user.write_text("\n".join(json.dumps({"context": "the cat sat on", "continuation": c})
                              for c in (" a mat", " the dog", " far")) + "\n")
    whole = run_tasks(pair_dir, user=[user], out=tmp_path / "whole", n_boot=100, progress=False)
    built = []
    real = X.token_sets
    monkeypatch.setattr(X, "token_sets", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    part = run_tasks(pair_dir, user=[user], tasks="induction", out=tmp_path / "part", n_boot=100, progress=False)
    assert built[0].short is None and set(part["tasks"]) == {"induction", "user:u"}
    for name in ("induction", "user:u"):
        assert part["tasks"][name]["loss"] == whole["tasks"][name]["loss"], name
        assert part["tasks"][name]["value_of_context"] == whole["tasks"][name]["value_of_context"], name
        assert part["tasks"][name]["gap"]["myopic-hidden"]["mean"] == whole["tasks"][name]["gap"]["myopic-hidden"]["mean"]


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(pair_dir, tmp_path, capsys):
    out = tmp_path / "o"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "continuation": "b"}\n{"continuation": "b"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for argv, want in ((["--user", str(bad)], "bad.jsonl:2"), (["--user", str(empty)], "empty.jsonl:1"),
                       (["--tasks", "closing,nope"], "unknown task 'nope'")):
        capsys.readouterr()
        assert main(["tasks", str(pair_dir), "--out", str(out), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and want in err[0]
        assert not out.exists()


def test_data_that_overlaps_the_training_split_is_refused(pair_dir, corpus_dir, tmp_path, capsys):
    out = tmp_path / "o"
    runs = [f"vanilla={pair_dir}/runs/vanilla/seed0", f"myopic={pair_dir}/runs/myopic/seed0"]
    assert main(["tasks", "--runs", *runs, "--data", str(corpus_dir), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "overlap training text" in err and not out.exists()
    held = tmp_path / "held.txt"
    held.write_text("Morgan said the cat (sat on a mat with a dog) and Morgan ran far away home.\n")
    assert main(["tasks", str(pair_dir), "--data", str(held), "--split", "all", "--out", str(out),
                 "--tasks", "closing,repeat-mention", "--no-progress", "--bootstrap", "50"]) == 0
    r = read_json(out / "tasks.json")
    assert set(r["tasks"]) == {"closing", "repeat-mention"} and r["held_out"]["n_docs"] == 1
    # any runs (one seed each here), the first one the baseline unless --baseline says otherwise
    assert main(["tasks", "--runs", *runs, "--baseline", "myopic", "--data", str(held), "--out", str(tmp_path / "r"),
                 "--tasks", "repeat-mention", "--no-progress", "--bootstrap", "50"]) == 0
    r = read_json(tmp_path / "r" / "tasks.json")
    assert r["baseline"] == "myopic" and list(r["tasks"]["repeat-mention"]["gap"]) == ["vanilla"]
    overlap = r["config"]["overlap"]  # every run's training split was checked, not only the baseline's
    assert r["n_seeds"] == 1 and set(overlap["per_arm"]) == {"vanilla[0]", "myopic[0]"}
    assert overlap["overlapping"] == 0 and overlap["unchecked_runs"] == []
