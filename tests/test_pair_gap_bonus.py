"""Paired runs, the gap, the local myopia bonus and the report, end to end on a tiny model."""

import hashlib
import random

import numpy as np
import pytest
import torch

from myopia.data.cache import build_cache
from myopia.errors import MyopiaError
from myopia.experiments.bonus import LocalTask, local_scorer, run_bonus
from myopia.experiments.gap import run_gap
from myopia.experiments.pair import parse_arms, run_pair
from myopia.io import read_json, read_jsonl
from myopia.model import GPTConfig
from myopia.pairdir import GAP_ARRAYS, PairDir
from myopia.rundir import load_run_model
from myopia.train import TrainConfig

WORDS = "the cat sat on a mat and dog ran far away home with big red hat".split()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "genres"
    d.mkdir()
    rng = random.Random(0)
    for genre in ("news", "fiction"):
        docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) for _ in range(15)]
        (d / f"{genre}.txt").write_text("\n\n".join(docs) + "\n")
    return d


MODEL = GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=16, seq_len=16)
DATA = {"val_frac": 0.2, "test_frac": 0.2}


def tiny_train(steps=4, seed=0):
    return TrainConfig(steps=steps, batch_size=4, lr=1e-2, eval_every=2, ckpt_every=2, log_every=1, seed=seed,
                       progress=False)


def pair(corpus_dir, out, seeds="0", arms=None):
    return run_pair(corpus_dir, out, MODEL, tiny_train(), arms=arms, seeds=seeds, eval_tokens=256,
                    data_opts=DATA, progress=False)


@pytest.fixture(scope="module")
def pair_dir(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pair") / "p"
    pair(corpus_dir, out)
    run_gap(out, n_boot=200, top_k=5, progress=False)
    return out


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_arm_names():
    assert [a.name for a in parse_arms(None)] == ["vanilla", "myopic", "myopic-hidden"]
    arms = parse_arms("bigram,myopic-beta0.5,myopic-hidden-horizon8,vanilla")
    assert [(a.gradient, a.beta, a.horizon) for a in arms] == [
        ("vanilla", 0.0, 0), ("bigram", 0.0, 0), ("myopic", 0.5, 0), ("myopic-hidden", 0.0, 8)]
    with pytest.raises(MyopiaError, match="unknown arm"):
        parse_arms("myopic-gamma2")


def test_pair_arms_share_initialisation_data_and_budget(pair_dir):
    manifest = read_json(pair_dir / "pair.json")
    assert [a["name"] for a in manifest["arms"]] == ["vanilla", "myopic", "myopic-hidden"]
    first, later = {}, {}
    for arm in ("vanilla", "myopic", "myopic-hidden"):
        rd = PairDir(pair_dir).run(arm, 0)
        cfg = read_json(rd / "config.json")
        assert cfg["run"]["model"]["gradient"] == arm and cfg["train"]["steps"] == 4
        assert cfg["task"]["data_seed"] == 0
        recs = [r for r in read_jsonl(rd / "metrics.jsonl") if "train_loss" in r]
        first[arm], later[arm] = recs[0]["train_loss"], recs[-1]["train_loss"]
    # same initial weights on the same first batch: identical step-1 loss (the forward pass does not depend
    # on the gradient setting); the gradients differ, so later losses do
    assert first["vanilla"] == first["myopic"] == first["myopic-hidden"]
    assert later["vanilla"] != later["myopic"]


def test_rerunning_a_pair_skips_finished_runs(pair_dir, corpus_dir):
    stamp = sha(PairDir(pair_dir).run("myopic", 0) / "model.safetensors")
    pair(corpus_dir, pair_dir)
    assert sha(PairDir(pair_dir).run("myopic", 0) / "model.safetensors") == stamp
    with pytest.raises(MyopiaError, match="different model"):
        run_pair(corpus_dir, pair_dir, GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=32, seq_len=16),
                 tiny_train(), eval_tokens=256, data_opts=DATA, progress=False)


def test_a_pair_made_before_newer_training_fields_can_be_extended(pair_dir, corpus_dir, tmp_path):
    import shutil

    from myopia.io import write_json

    old = tmp_path / "old"
    shutil.copytree(pair_dir, old)
    manifest = read_json(old / "pair.json")
    for key in ("activation_checkpointing", "async_checkpoint", "device_memory_gb"):  # fields added later
        del manifest["train"][key]
    write_json(old / "pair.json", manifest)
    pair(corpus_dir, old, seeds="1", arms="vanilla")  # extends it: the missing fields keep their old behaviour
    assert read_json(old / "pair.json")["seeds"] == [0, 1]
    manifest = read_json(old / "pair.json")
    manifest["train"]["lr"] = 0.5  # a real difference is still refused
    write_json(old / "pair.json", manifest)
    with pytest.raises(MyopiaError, match="different train configuration"):
        pair(corpus_dir, old, seeds="2", arms="vanilla")


def test_the_pair_folder_answers_for_its_runs_corpus_and_scores(pair_dir, tmp_path):
    import shutil

    from myopia.analysis.heldout import document_windows

    pd = PairDir(pair_dir)
    assert pd.manifest == read_json(pair_dir / "pair.json") and pd.seq_len == MODEL.seq_len
    assert pd.run("myopic", 0) == pair_dir / "runs" / "myopic" / "seed0"
    assert pd.run_status("vanilla", 0) == "done" and pd.run_status("vanilla", 7) == "new"
    assert pd.trained_arms() == (["vanilla", "myopic", "myopic-hidden"], [0], [])
    corpus, own = pd.eval_corpus()
    assert corpus is own and pd.cache_dir == pair_dir / "corpus"
    held = document_windows(own, "test", pd.seq_len)
    found = pd.gap_scores(held, [0], ["vanilla", "myopic"], with_kl=True)
    assert found is not None and np.array_equal(found["target"], held.target)
    assert pd.gap_scores(held, [0, 1], ["vanilla"]) is None  # other seeds
    assert pd.gap_scores(held, [0], ["bigram"]) is None  # an arm it did not score
    val = document_windows(own, "val", pd.seq_len)
    assert pd.gap_scores(val, [0], ["vanilla"]) is None  # other tokens
    assert pd.load_arrays(GAP_ARRAYS, keys=["doc"]).keys() == {"doc"}
    # a pair whose myopic arm is unfinished: trained arms are those finished for every seed with vanilla
    part = tmp_path / "part"
    shutil.copytree(pair_dir, part, ignore=shutil.ignore_patterns("gap*", "bonus*", "report*"))
    (part / "runs" / "myopic" / "seed0" / "model.safetensors").unlink()
    assert PairDir(part).trained_arms() == (["vanilla", "myopic-hidden"], [0], ["myopic"])
    assert PairDir(part).gap_scores(held, [0], ["vanilla"]) is None
    (part / "runs" / "vanilla" / "seed0" / "model.safetensors").unlink()
    with pytest.raises(MyopiaError, match="no finished vanilla run"):
        PairDir(part).trained_arms()
    with pytest.raises(MyopiaError, match="not a pair directory"):
        PairDir(tmp_path).manifest


def test_gap_outputs(pair_dir):
    g = read_json(pair_dir / "gap.json")
    arrays = PairDir(pair_dir).load_arrays(GAP_ARRAYS)
    n = g["n_tokens"]
    assert arrays["loss.vanilla"].shape == (1, n) and arrays["kl.myopic"].shape == (1, n)
    assert g["loss"]["vanilla"]["mean"] == pytest.approx(arrays["loss.vanilla"].mean(), rel=1e-5)
    gap = (arrays["loss.myopic"] - arrays["loss.vanilla"]).mean()
    assert g["gap"]["myopic"]["mean"] == pytest.approx(gap, rel=1e-4, abs=1e-7)
    assert set(g["gap"]) >= {"myopic", "myopic-hidden"} and g["gap"]["myopic-hidden"] is not None
    lo, hi = g["gap"]["myopic-hidden"]["ci95"]
    assert lo <= g["gap"]["myopic-hidden"]["mean"] <= hi
    assert set(g["by_slice"]) == {"news", "fiction"}
    assert len(g["by_position"]["myopic"]["gap"]) == 16
    assert len(g["top_contexts"]["myopic"]["by_loss_diff"]) == 5
    assert g["top_contexts"]["myopic-hidden"]["by_kl"][0]["kl"] >= g["top_contexts"]["myopic-hidden"]["by_kl"][-1]["kl"]
    assert g["count_bigram"]["mean"] > 0 and g["git"] and g["versions"]["torch"]
    # every test token once: the test documents' lengths (+1 end-of-document token each) add up
    corpus = build_cache(corpus_dir_of(pair_dir), "bytes", pair_dir / "corpus", **DATA)
    assert n == int(corpus.doc_lengths[corpus.split_docs("test")].sum())


def corpus_dir_of(pair_dir):
    return read_json(pair_dir / "pair.json")["data"]["spec"]


@pytest.mark.slow
def test_rerunning_a_pair_reproduces_per_token_losses_exactly(pair_dir, corpus_dir, tmp_path):
    again = tmp_path / "again"
    pair(corpus_dir, again, seeds="0,1")
    run_gap(again, n_boot=100, top_k=0, progress=False)
    a = PairDir(pair_dir).load_arrays(GAP_ARRAYS)
    b = PairDir(again).load_arrays(GAP_ARRAYS)
    for arm in ("vanilla", "myopic", "myopic-hidden"):
        np.testing.assert_array_equal(a[f"loss.{arm}"][0], b[f"loss.{arm}"][0])  # seed 0, bit for bit
        assert not np.array_equal(b[f"loss.{arm}"][0], b[f"loss.{arm}"][1])  # seed 1 is another run
    g = read_json(again / "gap.json")
    assert g["n_seeds"] == 2 and len(g["gap"]["myopic"]["per_seed"]) == 2 and "seed_sd" in g["gap"]["myopic"]
    assert g["bootstrap"]["unit"] == "document and seed"


def test_local_trainee_equals_vanilla_at_initialisation_and_freezes_the_past(pair_dir):
    corpus = build_cache(corpus_dir_of(pair_dir), "bytes", pair_dir / "corpus", **DATA)
    vanilla = load_run_model(PairDir(pair_dir).run("vanilla", 0), corpus=corpus, finished=True)
    trainee = load_run_model(PairDir(pair_dir).run("vanilla", 0), corpus=corpus, finished=True)
    x = torch.from_numpy(np.asarray(corpus.tokens[:64], dtype=np.int64)).view(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(local_scorer(trainee, vanilla)(x), vanilla(x), rtol=1e-4, atol=1e-5)
    task = LocalTask(corpus, 16, vanilla, seed=0, eval_tokens=64)
    trainee.train()
    batch = task.examples(np.arange(4))
    task.loss(trainee, batch).backward()
    assert all(p.grad is None for p in vanilla.parameters())
    assert all(p.grad is not None for p in trainee.parameters())
    # only the trainee's present position learns: its loss depends on the frozen past, not its own
    with torch.no_grad():
        for p in trainee.blocks[0].attn.qkv.parameters():
            p.add_(0.5)
        moved = task.logits(trainee, batch["x"])
        kv = task.past(batch["x"])
    assert moved.shape == (4, 16, 257) and len(kv) == 1 and kv[0][0].shape == (4, 2, 16, 8)


def test_bonus_trains_and_decomposes_the_gap(pair_dir):
    vanilla_file = PairDir(pair_dir).run("vanilla", 0) / "model.safetensors"
    before = sha(vanilla_file)
    b = run_bonus(pair_dir, steps=3, n_boot=200, progress=False)
    assert sha(vanilla_file) == before  # the frozen model is untouched
    t = b["trainees"]["local"]
    for arm in ("myopic", "myopic-hidden"):
        dec = t["decomposition"][arm]
        assert dec["gap"]["mean"] == pytest.approx(
            dec["myopic_minus_local"]["mean"] - dec["vanilla_minus_local"]["mean"], abs=1e-6)
        assert dec["vanilla_minus_local"]["mean"] == pytest.approx(t["bonus"]["mean"])
    assert t["bonus"]["mean"] == pytest.approx(b["loss"]["vanilla"]["mean"] - b["loss"]["local"]["mean"], abs=1e-6)
    assert "bonus_vs_continued" in t and set(b["loss"]) >= {"vanilla", "local", "continued", "myopic"}
    # the control is also scored with the ORIGINAL vanilla's frozen past: same past on both sides
    from myopia.analysis.heldout import document_windows, evaluate_per_token

    corpus = build_cache(corpus_dir_of(pair_dir), "bytes", pair_dir / "corpus", **DATA)
    held = document_windows(corpus, "test", 16)
    van = load_run_model(PairDir(pair_dir).run("vanilla", 0), corpus=corpus, finished=True)
    cont = load_run_model(pair_dir / "bonus" / "continued" / "seed0", corpus=corpus, finished=True)
    direct = evaluate_per_token({"c": local_scorer(cont, van)}, held)["c"]["loss"].astype(np.float64).mean()
    assert b["loss"]["continued@vanilla-past"]["mean"] == pytest.approx(direct, rel=1e-5)
    assert b["loss"]["continued@vanilla-past"]["mean"] != pytest.approx(b["loss"]["continued"]["mean"], rel=1e-7)
    vp = t["bonus_vs_control_vanilla_past"]
    assert vp["mean"] == pytest.approx(b["loss"]["continued@vanilla-past"]["mean"] - b["loss"]["local"]["mean"],
                                       abs=1e-6)
    assert t["bonus"]["training_noise"] == "not measured (1 seed)" and b["n_seeds"] == 1
    phase = b["config"]["phases"]["local"]
    assert phase["data"]["0"]["unseen"] and phase["control"] == "continued"
    # each run has its own stopping rule (the control does not inherit the trainee's evaluations)
    assert phase["steps_taken"] == {"local": {"0": 3}, "continued": {"0": 3}}
    assert phase["stopped_at_plateau"] == {"local": {"0": False}, "continued": {"0": False}}
    # the pair's per-token losses come from gap/per_token.npz (same tokens, same seeds): same gap as gap.json
    g = read_json(pair_dir / "gap.json")
    assert b["config"]["pair_arm_losses"].startswith("reused")
    assert t["decomposition"]["myopic"]["gap"]["mean"] == pytest.approx(g["gap"]["myopic"]["mean"], abs=1e-9)
    # the trainee continued vanilla's example stream and moved away from the vanilla weights
    cfg = read_json(pair_dir / "bonus" / "local" / "seed0" / "config.json")
    assert cfg["task"]["example_offset"] == 4 * 4
    assert sha(pair_dir / "bonus" / "local" / "seed0" / "model.safetensors") != before
    assert (pair_dir / "bonus.json").is_file() and (pair_dir / "bonus" / "per_token.npz").is_file()
    # rerunning reuses the finished trainees, also from a copied pair directory; other settings are refused
    stamp = sha(pair_dir / "bonus" / "local" / "seed0" / "model.safetensors")
    import shutil

    copy = pair_dir.parent / "copied"
    shutil.copytree(pair_dir, copy)
    again = run_bonus(copy, steps=3, n_boot=50, progress=False)
    assert again["trainees"]["local"]["bonus"]["mean"] == pytest.approx(t["bonus"]["mean"], abs=1e-9)
    assert sha(copy / "bonus" / "local" / "seed0" / "model.safetensors") == stamp
    with pytest.raises(MyopiaError, match="different settings"):
        run_bonus(copy, steps=5, n_boot=50, progress=False)
    shutil.rmtree(copy)


def test_cli_bonus_flags_one_seed(pair_dir, capsys):
    from myopia.cli import main

    run_bonus(pair_dir, steps=3, n_boot=50, progress=False)  # trainees exist: the CLI below only scores
    assert main(["bonus", str(pair_dir), "--steps", "3", "--bootstrap", "50", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "training noise not measured (1 seed)" in out and "bonus vs continued" in out
    assert "scored with vanilla's past" in out
    assert read_json(pair_dir / "bonus.json")["training_noise"] == "not measured (1 seed)"


def test_bonus_from_scratch_learns(pair_dir):
    b = run_bonus(pair_dir, init="scratch", steps=12, lr=3e-2, n_boot=100, progress=False)
    assert set(b["trainees"]) == {"local", "local-scratch"}
    t = b["trainees"]["local-scratch"]
    assert t["control"] == "scratch-control" and "bonus_vs_control_vanilla_past" in t
    assert set(b["config"]["phases"]) == {"local", "local-scratch"}
    assert b["loss"]["local-scratch"]["mean"] < np.log(257) - 1.0  # far below the uniform predictor


@pytest.mark.slow
def test_report_is_self_contained_and_extensible(pair_dir):
    from myopia.report import _SECTIONS, build_report, register_section
    from myopia.report.blocks import Paragraph

    run_bonus(pair_dir, steps=3, n_boot=100, progress=False) if not (pair_dir / "bonus.json").exists() else None
    (pair_dir / "scaling.json").write_text("{}")
    register_section("scaling-test", order=40, applies=lambda d: (d / "scaling.json").is_file())(
        lambda d: [Paragraph("SCALING SECTION")])
    try:
        r = build_report(pair_dir)
    finally:
        _SECTIONS.pop("scaling-test")
        (pair_dir / "scaling.json").unlink()
    assert r["sections"] == ["answer", "pair", "gap", "bonus", "scaling-test"]
    md = (pair_dir / "report.md").read_text()
    first_screen = md.split("\n## ")[:2]  # the title and the first "## " section: before the second heading
    g = read_json(pair_dir / "gap.json")
    from myopia.analysis.stats import Estimate

    for arm in ("myopic-hidden", "myopic"):  # the answer first: each variant's gap and its interval
        text = Estimate.from_dict(g["gap"][arm]).format(3, signed=True, seed_note=None)
        assert f"| {arm} | {text} |" in "\n## ".join(first_screen), arm
    assert "Verdict" in first_screen[1] and "ompeten" in first_screen[1]
    html = (pair_dir / "report.html").read_text()
    for name in ("training_curves", "gap_by_position", "gap_by_slice", "gap_by_class", "bonus_losses"):
        assert f"report_files/{name}.png" in md and (pair_dir / "report_files" / f"{name}.png").is_file()
    assert "myopic-hidden" in md and "SCALING SECTION" in md
    assert html.count("data:image/png;base64,") == 5 and "report_files/" not in html


def test_seq_len_longer_than_every_document(corpus_dir, tmp_path):
    long = GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=16, seq_len=1024)
    with pytest.raises(MyopiaError) as e:
        run_pair(corpus_dir, tmp_path / "p", long, tiny_train(), data_opts=DATA, progress=False)
    assert "longer than every document" in str(e.value) and "\n" not in str(e.value)


def test_tokenizer_mismatch_with_checkpoint(pair_dir, corpus_dir, tmp_path):
    bpe = tmp_path / "bpe-cache"
    build_cache(corpus_dir, "bpe:300", bpe, **DATA)
    with pytest.raises(MyopiaError) as e:
        run_gap(pair_dir, data=bpe, progress=False)
    assert "tokenizer/vocabulary mismatch" in str(e.value) and "\n" not in str(e.value)


def test_gap_on_another_corpus(pair_dir, corpus_dir, tmp_path):
    with pytest.raises(MyopiaError, match="training documents"):
        run_gap(pair_dir, data=corpus_dir, split="all", progress=False)  # the pair's own corpus
    other = tmp_path / "other.txt"
    other.write_text("a red dog sat far away from the big cat\n\nthe hat ran home with a mat on it\n")
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(pair_dir, out, ignore=shutil.ignore_patterns("report*", "bonus*"))
    g = run_gap(out, data=other, split="all", n_boot=50, top_k=0, progress=False)
    assert g["n_docs"] == 2 and g["n_tokens"] == len(other.read_text().replace("\n\n", "")) - 1 + 2
    assert g["gap"]["myopic"] is not None and g["count_bigram"] is not None


@pytest.mark.slow
def test_cli_gap_and_report(pair_dir, capsys):
    from myopia.cli import main

    assert main(["gap", str(pair_dir), "--bootstrap", "100", "--top", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "myopic-hidden" in out and "gap" in out and "bits/byte" in out
    # one seed: the printed intervals and the JSON say that training noise was not measured
    assert out.count("training noise not measured") >= 2 and "null (vanilla vs vanilla)" in out
    g = read_json(pair_dir / "gap.json")
    assert g["n_seeds"] == 1 and g["null_gap"] is None
    for arm in ("myopic", "myopic-hidden"):
        e = g["gap"][arm]
        assert e["training_noise"] == "not measured (1 seed)" and len(e["per_seed"]) == 1
        assert set(e) >= {"mean", "ci95", "ci95_eval", "per_seed", "bits_per_byte", "fraction_of_context_value"}
        assert set(e["bits_per_byte"]) >= {"mean", "ci95"} and set(e["fraction_of_context_value"]) >= {"mean", "ci95"}
    # re-analysis of the same scores: identical numbers, nothing scored again
    before = read_json(pair_dir / "gap.json")
    assert main(["gap", str(pair_dir), "--bootstrap", "100", "--top", "3", "--no-progress", "--reuse-scores"]) == 0
    again = read_json(pair_dir / "gap.json")
    assert again["gap"]["myopic"] == before["gap"]["myopic"] and again["config"]["scores"].startswith("reused")
    assert main(["report", str(pair_dir)]) == 0
    assert main(["gap", str(pair_dir / "nope")]) == 2
    assert "not a pair directory" in capsys.readouterr().err


def test_cli_pair_wires_variants_seeds_and_data_flags(corpus_dir, tmp_path, capsys):
    from myopia.cli import main

    out = tmp_path / "p"
    assert main(["pair", "--data", str(corpus_dir), "--out", str(out), "--steps", "1", "--batch-size", "2",
                 "--seq-len", "8", "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--eval-tokens", "64",
                 "--variants", "myopic-hidden-horizon2", "--seeds", "3", "--val-frac", "0.2", "--test-frac", "0.2",
                 "--no-progress"]) == 0
    m = read_json(out / "pair.json")
    assert [a["name"] for a in m["arms"]] == ["vanilla", "myopic-hidden-horizon2"] and m["seeds"] == [3]
    cfg = read_json(PairDir(out).run("myopic-hidden-horizon2", 3) / "config.json")
    assert cfg["run"]["model"]["gradient"] == "myopic-hidden" and cfg["run"]["model"]["horizon"] == 2
    assert cfg["train"]["seed"] == 3 and cfg["task"]["corpus"]["documents"]["test"] == 6
    captured = capsys.readouterr()
    assert "myopic-hidden-horizon2" in captured.out
    assert "training noise not measured (1 seed)" in captured.err  # --seeds with one seed is flagged


def test_cli_pair_defaults_to_three_seeds(monkeypatch, corpus_dir, tmp_path):
    import myopia.experiments.pair as pair_mod
    from myopia.cli import main

    seen = {}
    monkeypatch.setattr(pair_mod, "run_pair", lambda *a, **k: seen.update(k) or {"runs": {}})
    assert main(["pair", "--data", str(corpus_dir), "--out", str(tmp_path / "p"), "--seed", "4"]) == 0
    assert pair_mod.parse_seeds(seen["seeds"]) == [4, 5, 6]


def test_gap_refuses_a_resplit_cache_of_the_training_documents(pair_dir, corpus_dir, tmp_path, capsys):
    """A cache of the same text with another split seed holds the pair's training documents: one error line
    naming how many overlap, exit 2, nothing written (also not by the report)."""
    import shutil

    from myopia.cli import main

    other = tmp_path / "resplit"
    build_cache(corpus_dir, "bytes", other, val_frac=0.2, test_frac=0.2, split_seed=1)
    copy = tmp_path / "copy"
    shutil.copytree(pair_dir, copy, ignore=shutil.ignore_patterns("report*", "bonus*", "gap*"))
    for split in ("test", "all"):
        assert main(["gap", str(copy), "--data", str(other), "--split", split, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "overlap" in err
        assert " of " in err and "documents overlap training text" in err
        assert not (copy / "gap.json").exists() and not (copy / "gap").exists()
    # a report of a gap.json that claims other data is re-checked against that data
    g = read_json(pair_dir / "gap.json")
    g["config"]["data"] = str(other)
    g["overlap"] = {"checked": True, "data": "other corpus"}
    arrays = PairDir(pair_dir).load_arrays(GAP_ARRAYS)
    resplit = build_cache(corpus_dir, "bytes", other, val_frac=0.2, test_frac=0.2, split_seed=1)
    own = build_cache(corpus_dir_of(pair_dir), "bytes", pair_dir / "corpus", **DATA)
    arrays["doc"] = np.resize(np.intersect1d(resplit.split_docs("test"), own.split_docs("train")), len(arrays["doc"]))
    PairDir(copy).save_arrays(GAP_ARRAYS, arrays)  # as if those documents had been scored
    (copy / "gap.json").write_text(__import__("json").dumps(g))
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "overlap" in err and not (copy / "report.md").exists()


def test_plateau_rule_and_bonus_data_freshness(pair_dir):
    from myopia.experiments.bonus import Plateau, data_freshness

    rule = Plateau(patience=2, min_delta=0.01)
    assert [rule(i, x) for i, x in enumerate([3.0, 2.5, 2.2, 2.195, 2.194])] == [False, False, False, False, True]
    assert not any(Plateau(patience=0)(i, 1.0) for i in range(5))
    corpus = build_cache(corpus_dir_of(pair_dir), "bytes", pair_dir / "corpus", **DATA)
    n = LMTaskFor(corpus).n_windows
    fresh = data_freshness(corpus, 16, 0, pair_examples=4, offset=4, examples=4)
    assert fresh["unseen"] and fresh["repeats_of_pair_data"] == 0
    # past the end of the first epoch the bonus phase reads windows the pair trained on, and says so
    late = data_freshness(corpus, 16, 0, pair_examples=n - 2, offset=n - 2, examples=6)
    assert not late["unseen"] and late["repeats_of_pair_data"] == 4 and "repeats" in late["note"]


def test_bonus_phase_stops_at_a_validation_plateau(pair_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(pair_dir, copy, ignore=shutil.ignore_patterns("bonus*", "report*"))
    b = run_bonus(copy, steps=10, eval_every=1, patience=1, min_delta=100.0, n_boot=50, progress=False)
    phase = b["config"]["phases"]["local"]
    assert phase["steps_taken"] == {"local": {"0": 2}, "continued": {"0": 2}}  # the 2nd evaluation is the plateau
    assert phase["stopped_at_plateau"] == {"local": {"0": True}, "continued": {"0": True}}
    result = read_json(copy / "bonus" / "local" / "seed0" / "result.json")
    assert result["stopped_early"] and result["steps"] == 2 and result["examples_seen"] == 2 * 4
    assert phase["schedule"].startswith("constant")
    from myopia.report.natural_language import _plateau_note

    assert "2 of 2 runs stopped at the plateau" in _plateau_note(phase)
    assert "no run reached the plateau" in _plateau_note({**phase, "stopped_at_plateau": {"local": {"0": False}}})


def LMTaskFor(corpus):
    from myopia.data import LMTask

    return LMTask(corpus, 16, seed=0, eval_tokens=16)
