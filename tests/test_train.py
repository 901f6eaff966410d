"""Trainer: determinism, paired runs on identical data, NaN detection, corpus splits. (Resuming: test_resume.py.)"""

import json

import numpy as np
import pytest
import torch

from myopia.checkpoint import checkpoint_steps, load_model_state
from myopia.data import LMTask, load_corpus
from myopia.errors import MyopiaError
from myopia.lm import build_model, train_lm
from myopia.io import read_jsonl
from myopia.train import lr_at, train, TrainConfig
from _tiny_run import small_model, small_train


class Recording(LMTask):
    """LMTask that remembers every training batch it served."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen = []

    def examples(self, indices, device="cpu"):
        batch = super().examples(indices, device)
        self.seen.append(batch["x"].clone())
        return batch


def test_paired_runs_share_initialisation_and_data_order(corpus_file, tmp_path):
    corpus = load_corpus(corpus_file)
    seen, inits = {}, {}
    for gradient in ("vanilla", "myopic"):
        cfg = small_model(gradient)
        model = build_model(cfg, seed=3)
        inits[gradient] = {k: v.clone() for k, v in model.state_dict().items()}
        task = Recording(corpus, 32, seed=3)
        train(model, task, small_train(seed=3), tmp_path / gradient, run_config={})
        seen[gradient] = task.seen
    assert all(torch.equal(inits["vanilla"][k], inits["myopic"][k]) for k in inits["vanilla"])
    assert len(seen["vanilla"]) == 12
    assert all(torch.equal(a, b) for a, b in zip(seen["vanilla"], seen["myopic"]))
    # ... and the two runs really trained differently
    a = load_model_state(tmp_path / "vanilla" / "model.safetensors")[0]
    b = load_model_state(tmp_path / "myopic" / "model.safetensors")[0]
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"])


@pytest.mark.slow
def test_same_seed_reproduces_bitwise(corpus_file, tmp_path):
    r1 = train_lm(corpus_file, tmp_path / "a", small_model("myopic"), small_train())
    r2 = train_lm(corpus_file, tmp_path / "b", small_model("myopic"), small_train())
    assert r1["eval_loss"] == r2["eval_loss"]
    a = load_model_state(tmp_path / "a" / "model.safetensors")[0]
    b = load_model_state(tmp_path / "b" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in rs]
    assert strip(read_jsonl(tmp_path / "a" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "b" / "metrics.jsonl"))


def test_result_records_provenance(corpus_file, tmp_path):
    result = train_lm(corpus_file, tmp_path / "r", small_model(), small_train(steps=3))
    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    for key in ("config", "seed", "versions", "git", "tokens_seen", "flops", "eval_loss", "machine"):
        assert key in saved, key
    assert saved["tokens_seen"] == 3 * 8 * 32
    assert saved["flops"] > 0 and saved["eval_loss"] == result["eval_loss"]


def test_existing_run_is_not_overwritten(corpus_file, tmp_path):
    train_lm(corpus_file, tmp_path / "r", small_model(), small_train(steps=2))
    with pytest.raises(MyopiaError, match="already holds a run"):
        train_lm(corpus_file, tmp_path / "r", small_model(), small_train(steps=2))


class NaNTask(LMTask):
    def loss(self, model, batch):
        loss = super().loss(model, batch)
        return loss * float("nan") if self._step >= 6 else loss

    def examples(self, indices, device="cpu"):
        self._step = int(indices[0]) // 8
        return super().examples(indices, device)


def test_nan_loss_stops_with_step_and_keeps_checkpoint(corpus_file, tmp_path):
    corpus = load_corpus(corpus_file)
    with pytest.raises(MyopiaError, match=r"non-finite loss at step 7.*checkpoint"):
        train(build_model(small_model(), 0), NaNTask(corpus, 32), small_train(), tmp_path / "n", run_config={})
    assert [s for s, _ in checkpoint_steps(tmp_path / "n")] == [4]  # the last good checkpoint is kept
    assert not (tmp_path / "n" / "result.json").exists()


def test_micro_batches_match_one_batch(corpus_file, tmp_path):
    r1 = train_lm(corpus_file, tmp_path / "one", small_model(), small_train(steps=4))
    r2 = train_lm(corpus_file, tmp_path / "micro", small_model(), small_train(steps=4, micro_batch_size=3))
    assert abs(r1["eval_loss"] - r2["eval_loss"]) < 1e-4


@pytest.mark.slow
def test_training_learns(corpus_file, tmp_path):
    tokens, _ = load_corpus(corpus_file).stream("train")
    freq = np.bincount(tokens) / len(tokens)
    unigram = -(freq[freq > 0] * np.log(freq[freq > 0])).sum()  # ~2.42 nats here
    cfg = small_train(steps=80, lr=1e-2, eval_every=0)
    result = train_lm(corpus_file, tmp_path / "l", small_model("myopic"), cfg)
    assert result["eval_loss"] < unigram - 0.25


def test_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 99) == pytest.approx(0.1, abs=1e-3)


def test_corpus_split_is_by_document(corpus_file):
    corpus = load_corpus(corpus_file)
    splits = [set(corpus.split_docs(s).tolist()) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    assert sum(map(len, splits)) == corpus.n_docs and len(splits[1]) >= 1 and len(splits[2]) >= 1
    # the held-out stream consists of whole documents that never appear in training
    tokens, doc_ids = corpus.stream("val")
    assert set(np.unique(doc_ids).tolist()) == splits[1]


@pytest.mark.parametrize(
    "kw,match",
    [(dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(batch_size=0), "batch-size"),
     (dict(precision="fp8"), "precision")],
)
def test_train_config_validation(kw, match):
    with pytest.raises(MyopiaError, match=match):
        TrainConfig(**kw)


def test_empty_and_missing_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(MyopiaError, match="empty"):
        load_corpus(tmp_path / "empty.txt")
    with pytest.raises(MyopiaError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")


def test_sequence_longer_than_corpus(corpus_file, tmp_path):
    with pytest.raises(MyopiaError, match="fewer than seq_len"):
        LMTask(load_corpus(corpus_file), 10**6)


# ------------------------------------------------------------------------------------------------------------
# The recipe: warmup-stable-decay, cooldown branches, width-scaled learning rates
# ------------------------------------------------------------------------------------------------------------


def test_wsd_schedule_values_by_hand():
    cfg = TrainConfig(steps=20, lr=2.0, warmup_steps=4, schedule="wsd", decay_frac=0.25, decay_shape="linear",
                      min_lr_ratio=0.0)
    assert (cfg.warmup, cfg.decay_steps, cfg.stable_end) == (4, 5, 15)
    want = [0.5, 1.0, 1.5, 2.0] + [2.0] * 11 + [1.6, 1.2, 0.8, 0.4, 0.0]
    assert [lr_at(cfg, t) for t in range(20)] == pytest.approx(want, abs=1e-12)
    sq = TrainConfig(steps=20, lr=2.0, warmup_steps=4, schedule="wsd", decay_frac=0.25, min_lr_ratio=0.1)
    p = [(k + 1) / 5 for k in range(5)]
    assert [lr_at(sq, 15 + k) for k in range(5)] == pytest.approx([2.0 * (0.1 + 0.9 * (1 - x ** 0.5)) for x in p])
    assert lr_at(sq, 19) == pytest.approx(0.2)


def test_warmup_floor_and_fraction():
    assert TrainConfig(steps=1000, warmup_steps=20, warmup_frac=0.05).warmup == 50  # 5% wins
    assert TrainConfig(steps=100, warmup_steps=20, warmup_frac=0.05).warmup == 20  # the floor wins
    assert TrainConfig(steps=100, warmup_frac=0.07).warmup == 7
    assert TrainConfig(steps=1000).warmup == 10 and TrainConfig(steps=1000, warmup_steps=3).warmup == 3  # unchanged
    cos = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert cos.schedule == "cosine"
    assert lr_at(cos, 55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.5)))


@pytest.mark.parametrize("kw,match", [(dict(schedule="step"), "schedule"), (dict(decay_frac=0.0), "decay-frac"),
                                      (dict(decay_frac=1.5), "decay-frac"), (dict(decay_shape="cos"), "decay-shape"),
                                      (dict(warmup_frac=-0.1), "warmup-frac"), (dict(mup_base_width=-1), "mup")])
def test_recipe_options_are_validated(kw, match):
    with pytest.raises(MyopiaError, match=match):
        TrainConfig(**kw)


def wsd(steps, **kw):
    return small_train(steps=steps, schedule="wsd", decay_frac=0.25, warmup_steps=2, min_lr_ratio=0.0,
                       eval_every=0, ckpt_every=0, **kw)


def test_cooldown_branch_equals_fresh_run_bitwise(corpus_file, tmp_path):
    from myopia.checkpoint import branch_state_dir

    corpus = load_corpus(corpus_file)

    def run(out, steps, **kw):
        return train(build_model(small_model("myopic"), 5), LMTask(corpus, 32, seed=5), wsd(steps), tmp_path / out,
                     run_config={}, **kw)

    run("long", 16, branch_at=(6,))  # decays over steps 12..15; its stable state at step 6 is kept
    fresh = run("fresh", 8)  # decays over steps 6..7
    branch = run("branch", 8, branch_from=branch_state_dir(tmp_path / "long", 6))
    assert branch["resumed_from_step"] == 6 and branch["branched_from"].endswith("step_0000006")
    a = load_model_state(tmp_path / "fresh" / "model.safetensors")[0]
    b = load_model_state(tmp_path / "branch" / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fresh["eval_loss"] == branch["eval_loss"]
    curve = lambda out, lo: [(r["step"], r["train_loss"], r["lr"]) for r in read_jsonl(tmp_path / out / "metrics.jsonl")
                             if "train_loss" in r and "lr" in r and r["step"] > lo]
    assert curve("fresh", 6) == curve("branch", 6) and len(curve("fresh", 6)) == 2
    assert curve("fresh", 0)[:6] == curve("long", 0)[:6]  # the shared stable phase
    long_w = load_model_state(tmp_path / "long" / "model.safetensors")[0]
    assert not torch.equal(long_w["wte.weight"], a["wte.weight"])


def test_branch_with_another_schedule_or_point_is_refused(corpus_file, tmp_path):
    from myopia.checkpoint import branch_state_dir

    corpus = load_corpus(corpus_file)

    def run(out, cfg, **kw):
        return train(build_model(small_model(), 5), LMTask(corpus, 32, seed=5), cfg, tmp_path / out, run_config={},
                     **kw)

    with pytest.raises(MyopiaError, match="stable-phase"):
        run("bad", wsd(16), branch_at=(14,))  # inside the decay
    with pytest.raises(MyopiaError, match="schedule wsd"):
        run("cos", small_train(steps=16), branch_at=(6,))
    run("long", wsd(16), branch_at=(6,))
    with pytest.raises(MyopiaError, match="schedule before step 6"):
        run("short", wsd(6), branch_from=branch_state_dir(tmp_path / "long", 6))  # decays before the branch point
    with pytest.raises(MyopiaError, match="lr"):
        run("lr", wsd(8, lr=1e-3), branch_from=branch_state_dir(tmp_path / "long", 6))
    with pytest.raises(MyopiaError, match="seed"):
        run("seed", wsd(8, seed=1), branch_from=branch_state_dir(tmp_path / "long", 6))


def test_width_scaled_learning_rate_groups():
    from myopia.train import make_optimizer, set_lr

    model = build_model(small_model(), 0)  # width 32
    plain = make_optimizer(model, TrainConfig(lr=0.01))
    assert len(plain.param_groups) == 2
    opt = make_optimizer(model, TrainConfig(lr=0.01, mup_base_width=8, warmup_steps=0))
    set_lr(opt, TrainConfig(lr=0.01, mup_base_width=8, warmup_steps=0, schedule="wsd"), 5)  # full lr
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs.keys() == set(names.values())  # every parameter once
    for name, lr in lrs.items():
        hidden = name.startswith("blocks.") and name.endswith(".weight") and "ln" not in name
        assert lr == pytest.approx(0.01 * 8 / 32 if hidden else 0.01), name
    assert lrs["wte.weight"] == 0.01 and lrs["blocks.0.attn.qkv.weight"] == pytest.approx(0.0025)
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {n for n, p in model.named_parameters() if p.dim() >= 2}


def test_recipe_flags_reach_the_train_config():
    from myopia.cli import build_parser
    from myopia.cli.common import train_config

    for command in ("train", "pair"):
        extra = ["--data", "x", "--out", "y"] if command == "train" else ["--data", "x", "--out", "y"]
        args = build_parser().parse_args([command, *extra, "--schedule", "wsd", "--decay-frac", "0.3",
                                          "--adam-beta2", "0.99", "--mup-base-width", "16", "--warmup-frac", "0.05"])
        cfg = train_config(args)
        assert (cfg.schedule, cfg.decay_frac, cfg.adam_beta2, cfg.mup_base_width, cfg.warmup_frac) == \
            ("wsd", 0.3, 0.99, 16, 0.05)
