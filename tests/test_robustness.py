"""No silent wrong answers: duplicates and near-duplicates, data identity, partial weights, memory, failed starts,
atomic export, exact line numbers, divergence, one writer of a result folder.

Each case asserts the one-line error (exit 2 through the CLI) and what is, and is not, left on disk.
"""

import json
import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest

import myopia.distributed
from myopia.cli import main
from myopia.data import LMTask, load_corpus
from myopia.data.corpus import data_fingerprint
from myopia.data.overlap import (
    EXCLUDED,
    OVERLAP_THRESHOLD,
    check_corpus_overlap,
    check_overlap,
    document_hashes,
    document_texts,
    ngram_overlap,
    require_clean_split,
)
from myopia.errors import MyopiaError
from myopia.io import exclusive_writer, read_json
from myopia.rundir import check_same_data
from _tiny_run import tiny_args

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]


def run_cli(capsys, args):
    """Exit status and stderr lines (the informational ``data: ...`` line some commands print left out)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("data: ")]


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def toy_docs(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(n)]


def write_docs(path, docs):
    path.write_text("\n\n".join(docs) + "\n")
    return path


# --- duplicates and near-duplicates in the data layer -------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True])
def test_duplicates_are_removed_before_the_split_and_counted(tmp_path, cached):
    docs = toy_docs(150)
    twice = docs + [" " + d.upper().replace(" ", "  ") for d in docs]  # same text up to case and whitespace
    random.Random(1).shuffle(twice)
    data = write_docs(tmp_path / "dup.txt", twice)
    corpus = load_corpus(data, cache=tmp_path / "cache" if cached else None)
    info = corpus.describe()
    assert info["duplicates_removed"] == 150 and corpus.n_docs == 150
    keys = [" ".join(t.lower().split()) for t in document_texts(corpus, range(corpus.n_docs))]
    assert len(set(keys)) == corpus.n_docs
    assert not set(document_hashes(corpus, corpus.split_docs("train"))) & set(
        document_hashes(corpus, corpus.split_docs("test")))


def test_held_out_near_duplicates_are_excluded_from_every_split(tmp_path):
    docs = toy_docs(100)
    near = [d + " and one more tail" for d in docs[:100]]  # each document again with a few words added
    data = write_docs(tmp_path / "near.txt", docs + near)
    corpus = load_corpus(data, val_frac=0.2, test_frac=0.2)
    n = corpus.describe()["near_duplicates_excluded"]
    assert n > 0 and int((corpus.doc_split == EXCLUDED).sum()) == n
    held = np.concatenate([corpus.split_docs("val"), corpus.split_docs("test")])
    train_texts = list(document_texts(corpus, corpus.split_docs("train")))
    frac = ngram_overlap(list(document_texts(corpus, held)), train_texts)
    assert np.nanmax(frac) < OVERLAP_THRESHOLD  # what is left held out does not overlap training text


def test_pair_records_the_counts_and_trains_on_a_clean_split(tmp_path, capsys):
    docs = toy_docs(120)
    twice = docs + docs
    random.Random(2).shuffle(twice)
    data = write_docs(tmp_path / "dup.txt", twice)
    out = tmp_path / "p"
    code, err = run_cli(capsys, ["pair", "--data", data, "--out", out, "--steps", "1", "--batch-size", "2",
                                 "--seq-len", "8", "--d-model", "16", "--n-layer", "1", "--n-head", "2",
                                 "--eval-tokens", "64", "--variants", "myopic", "--seeds", "0", "--no-progress"])
    assert code == 0, err
    corpus_info = read_json(out / "pair.json")["data"]["corpus"]
    assert corpus_info["duplicates_removed"] == 120 and corpus_info["near_duplicates_excluded"] == 0


def test_pair_refuses_an_old_cache_whose_held_out_documents_were_trained_on(tmp_path):
    docs = toy_docs(60)
    corpus = load_corpus(write_docs(tmp_path / "c.txt", docs + [d + " and so on" for d in docs]),
                         val_frac=0.3, test_frac=0.3)
    corpus.info.pop("near_duplicates_excluded")  # as a cache of an earlier version opens
    corpus.doc_split[corpus.doc_split == EXCLUDED] = 2
    with pytest.raises(MyopiaError, match="overlap training text") as e:
        require_clean_split(corpus)
    assert "\n" not in str(e.value) and "rebuild the data" in str(e.value)


# --- the n-gram checker -------------------------------------------------------------------------------------


def test_ngram_overlap_fractions():
    train = toy_docs(30, seed=3)
    fresh = toy_docs(3, seed=4)
    scored = [train[0] + " ", train[0].upper() + "!", "\n".join(train[:4]), fresh[0], "the cat sat", train[5][:120]
              + " " + fresh[1]]
    frac = ngram_overlap(scored, train)
    assert frac[0] == 1.0 and frac[1] == 1.0  # trailing space, case and punctuation do not hide a copy
    assert 0.5 < frac[2] < 1.0  # several training documents run together: only the seams are new
    assert frac[3] == 0.0 and np.isnan(frac[4])  # unrelated; too short for n-grams (left to the exact check)
    assert 0.0 < frac[5] < 1.0


def test_check_overlap_refuses_or_drops_and_counts():
    train_a, train_b = toy_docs(20, seed=5), toy_docs(20, seed=6)
    scored = [train_b[0], train_b[1] + " tail", toy_docs(1, seed=7)[0]]
    arms = {"vanilla": lambda: iter(train_a), "myopic": lambda: iter(train_b)}
    with pytest.raises(MyopiaError) as e:
        check_overlap(scored, arms, what="gap")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("gap: 2 of 3 documents") and "myopic 2" in msg
    assert "vanilla" not in msg and "--drop-overlap" in msg
    kept, report = check_overlap(scored, arms, drop=True)
    assert kept.tolist() == [2] and report.flagged.tolist() == [0, 1]
    assert report.summary() == {"ngram": 13, "min_ngram": 8, "threshold": OVERLAP_THRESHOLD,
                                "scored_documents": 3, "overlapping": 2,
                                "per_arm": {"vanilla": 0, "myopic": 2}, "dropped": 2}


def test_every_arm_training_split_is_checked(tmp_path):
    a = load_corpus(write_docs(tmp_path / "a.txt", toy_docs(40, seed=8)))
    b_docs = toy_docs(40, seed=9)
    b = load_corpus(write_docs(tmp_path / "b.txt", b_docs))
    scored = load_corpus(write_docs(tmp_path / "s.txt", b_docs[:10] + toy_docs(5, seed=10)))
    with pytest.raises(MyopiaError, match=r"arms: myopic \d+"):
        check_corpus_overlap(scored, None, {"vanilla": a, "myopic": b}, what="tasks")
    kept, summary = check_corpus_overlap(scored, None, {"vanilla": a, "myopic": b}, drop=True)
    assert summary["per_arm"]["vanilla"] == 0 and summary["per_arm"]["myopic"] == summary["dropped"] > 0
    assert len(kept) == scored.n_docs - summary["dropped"]


# --- data identity ------------------------------------------------------------------------------------------


def test_fingerprint_is_content_not_storage(tmp_path, corpus_file):
    mem = load_corpus(corpus_file)
    cached = load_corpus(corpus_file, cache=tmp_path / "cache")
    assert data_fingerprint(mem) == data_fingerprint(cached)
    assert data_fingerprint(mem) != data_fingerprint(load_corpus(corpus_file, split_seed=1))


def test_resume_refuses_changed_training_text(tmp_path, capsys):
    text = write_docs(tmp_path / "t.txt", toy_docs(80, seed=11))
    run = tmp_path / "run"
    assert main(tiny_args(text, run, steps=2, ckpt_every=1)) == 0
    fp = read_json(run / "config.json")["task"]["data_fingerprint"]
    assert fp.startswith("blake2b:")
    (run / "result.json").unlink()
    (run / "model.safetensors").unlink()
    body = text.read_text()
    i = body.index("cat")
    text.write_text(body[:i] + "dog" + body[i + 3:])  # same length, same counts: only the content differs
    before = sorted(p.name for p in run.rglob("*"))
    code, err = run_cli(capsys, tiny_args(text, run, steps=2, ckpt_every=1, resume=True))
    assert_one_line_error(code, err, "training data changed", "data_fingerprint")
    assert sorted(p.name for p in run.rglob("*")) == before and not (run / "result.json").exists()


def test_runs_on_different_data_are_refused_naming_both(tmp_path):
    a_text = write_docs(tmp_path / "a.txt", toy_docs(80, seed=12))
    b_text = write_docs(tmp_path / "b.txt", toy_docs(80, seed=13))
    for name, data in (("a", a_text), ("a2", a_text), ("b", b_text)):
        assert main(tiny_args(data, tmp_path / name, steps=1)) == 0
    fp = check_same_data([tmp_path / "a", tmp_path / "a2"])
    assert fp == read_json(tmp_path / "a" / "config.json")["task"]["data_fingerprint"]
    with pytest.raises(MyopiaError) as e:
        check_same_data({"vanilla": tmp_path / "a", "myopic": tmp_path / "b"})
    assert "runs vanilla and myopic were trained on different data" in str(e.value) and "\n" not in str(e.value)


# --- Hugging Face weights -----------------------------------------------------------------------------------


@pytest.fixture
def partial_hf(tmp_path):
    pytest.importorskip("transformers")
    import torch
    from safetensors.torch import load_file, save_file

    from _hf_tiny import tiny

    folder = tmp_path / "hf"
    tiny("gpt2", dtype=torch.float32).save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    del tensors["transformer.h.0.attn.c_attn.weight"]
    tensors["stray.weight"] = torch.zeros(2)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_hf_folder_with_missing_tensors_is_refused(partial_hf):
    from myopia.hf.model import load_hf_model

    with pytest.raises(MyopiaError) as e:
        load_hf_model(partial_hf)
    msg = str(e.value)
    assert "\n" not in msg and "transformer.h.0.attn.c_attn.weight" in msg and "stray.weight" in msg
    assert "1 missing" in msg and "1 unexpected" in msg


@pytest.mark.parametrize("command", ["grad", "probe"])
def test_cli_refuses_partial_hf_weights(partial_hf, corpus_file, tmp_path, capsys, command):
    out = tmp_path / "out"
    args = ([command, partial_hf] if command == "grad" else [command, "--model", f"m={partial_hf}"])
    code, err = run_cli(capsys, args + ["--data", corpus_file, "--out", out])
    assert_one_line_error(code, err, "transformer.h.0.attn.c_attn.weight", "missing")
    assert not out.exists() or not any(out.iterdir())


# --- memory, failed starts, divergence ----------------------------------------------------------------------


def test_cpu_memory_plan_uses_available_memory(corpus_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(myopia.distributed, "available_memory_bytes", lambda: 1024)
    run = tmp_path / "run"
    code, err = run_cli(capsys, tiny_args(corpus_file, run))
    assert_one_line_error(code, err, "does not fit")
    assert not run.exists()


def poison_loss(monkeypatch, at_call, factor):
    real, calls = LMTask.loss, []

    def poisoned(self, model, batch):
        calls.append(1)
        loss = real(self, model, batch)
        return loss * factor if len(calls) == at_call else loss

    monkeypatch.setattr(LMTask, "loss", poisoned)
    return real


@pytest.mark.parametrize("factor, needle", [(float("nan"), "non-finite loss at step 3"),
                                            (1000.0, "training diverged at step 3")])
def test_failure_before_the_first_checkpoint_leaves_a_reusable_folder(corpus_file, tmp_path, capsys, monkeypatch,
                                                                      factor, needle):
    real = poison_loss(monkeypatch, 3, factor)
    run = tmp_path / "run"
    code, err = run_cli(capsys, tiny_args(corpus_file, run, ckpt_every=100))
    assert_one_line_error(code, err, needle, "may be reused")
    assert not (run / "config.json").exists() and not (run / "metrics.jsonl").exists()
    monkeypatch.setattr(LMTask, "loss", real)
    assert main(tiny_args(corpus_file, run, lr="1e-3", steps=2)) == 0  # a rerun with another lr uses it
    assert read_json(run / "config.json")["train"]["lr"] == 1e-3


def test_killed_before_the_first_checkpoint_resume_starts_over_with_new_settings(corpus_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(corpus_file, run, steps=2)) == 0
    for p in list(run.iterdir()):  # what a SIGKILL at step 1 leaves: config, metrics, the lock file
        if p.name not in ("config.json", "metrics.jsonl", ".lock"):
            p.unlink() if p.is_file() else __import__("shutil").rmtree(p)
    code, err = run_cli(capsys, tiny_args(corpus_file, run, steps=2, lr="1e-3"))
    assert_one_line_error(code, err, "already holds a run", "--resume starts it over")
    assert main(tiny_args(corpus_file, run, steps=2, lr="1e-3", resume=True)) == 0
    assert read_json(run / "config.json")["train"]["lr"] == 1e-3 and (run / "result.json").is_file()


# --- export, line numbers, one writer -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_file):
    run = tmp_path_factory.mktemp("exp") / "run"
    assert main(tiny_args(corpus_file, run, steps=1)) == 0
    return run


def test_export_file_modes_are_consistent(trained_run, tmp_path):
    pytest.importorskip("transformers")
    old = os.umask(0o022)
    try:
        assert main(["export", str(trained_run), "--out", str(tmp_path / "hf")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes


def test_export_is_atomic_on_a_full_disk(trained_run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    import errno

    import myopia.hf.export as export

    real = export.gpt_to_neox

    def failing(model):
        neox = real(model)

        def save_pretrained(folder, **kw):
            Path(folder).mkdir(parents=True, exist_ok=True)
            neox.config.save_pretrained(folder)  # the config gets written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

        neox.save_pretrained = save_pretrained
        return neox

    monkeypatch.setattr(export, "gpt_to_neox", failing)
    out = tmp_path / "hf"
    code, err = run_cli(capsys, ["export", trained_run, "--out", out])
    assert_one_line_error(code, err, "could not write", "No space left on device")
    assert not out.exists() and not list(tmp_path.iterdir())  # no config without weights, no temporary folder


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_non_utf8_error_names_the_right_line(tmp_path, suffix):
    lines = [json.dumps({"text": f"line {i} " + "x" * 40}) if suffix == ".jsonl" else f"line {i} " + "x" * 40
             for i in range(1, 2001)]
    data = "\n".join(lines).encode()
    at = data.index(b"line 1541 ")
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(data[:at + 5] + b"\xff" + data[at + 5:])
    with pytest.raises(MyopiaError) as e:
        load_corpus(path)
    assert "not UTF-8" in str(e.value) and "line 1541," in str(e.value)


def test_one_writer_per_result_folder(tmp_path):
    with exclusive_writer(tmp_path / "pair", "gap results"):
        with pytest.raises(MyopiaError) as e:
            with exclusive_writer(tmp_path / "pair", "gap results"):
                pass
        assert "being written by another process (pid" in str(e.value) and "gap results" in str(e.value)
    with exclusive_writer(tmp_path / "pair"):  # released when the block ends
        pass
