"""One writer per run directory, activation checkpointing, sharded-evaluation spans, the memory plan, and runs of the
earlier single-file checkpoint format (in one process: fast)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from myopia.checkpoint import (
    RunLock,
    checkpoint_steps,
    load_distributed,
    load_model_state,
    save_checkpoint,
)
from myopia.cli import main
from myopia.distributed import EvalShard, apply_activation_checkpointing
from myopia.experiments.train_lm import build_model
from myopia.io import read_json, read_jsonl
from myopia.model import GPTConfig
from myopia.train import TIMING_KEYS, TrainConfig, make_optimizer
from _tiny_run import tiny_args

SRC = Path(__file__).resolve().parents[1] / "src"


# ---- one writer per run directory ---------------------------------------------------------------------------


def test_second_writer_on_a_live_run_is_refused(corpus_file, tmp_path, capsys):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))
    proc = subprocess.Popen([sys.executable, "-m", "myopia", *tiny_args(corpus_file, run, steps=100_000)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (run / "metrics.jsonl").exists():
            time.sleep(0.02)
        assert proc.poll() is None
        capsys.readouterr()
        assert main(tiny_args(corpus_file, run, steps=100_000, resume=True)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another run" in err[0] and f"pid {proc.pid}" in err[0]
        before = read_jsonl(run / "metrics.jsonl")
        assert before and all(r["step"] <= before[-1]["step"] for r in before)  # the refused run wrote nothing
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == proc.pid
    RunLock(run).acquire().release()  # the killed holder's lock is gone with it


def test_lock_names_its_holder_and_is_released(tmp_path):
    held = RunLock(tmp_path / "r").acquire()
    with pytest.raises(Exception, match=f"pid {os.getpid()} on "):
        RunLock(tmp_path / "r").acquire()
    held.release()
    RunLock(tmp_path / "r").acquire().release()


# ---- asynchronous checkpoints -----------------------------------------------------------------------------------


def test_async_checkpoints_resume_bit_for_bit(corpus_file, tmp_path):
    """--async-checkpoint writes the same checkpoints in the background; resuming from one is exact."""
    sync, cut = tmp_path / "sync", tmp_path / "async"
    assert main(tiny_args(corpus_file, sync)) == 0
    assert main(tiny_args(corpus_file, cut, async_checkpoint=True)) == 0
    assert [s for s, _ in checkpoint_steps(cut)] == [8, 6]
    for name in ("result.json", "model.safetensors"):
        (cut / name).unlink()
    shutil.rmtree(dict(checkpoint_steps(cut))[8])
    assert main(tiny_args(corpus_file, cut, async_checkpoint=True, resume=True)) == 0
    wa, wb = load_model_state(cut / "model.safetensors")[0], load_model_state(sync / "model.safetensors")[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---- activation checkpointing ---------------------------------------------------------------------------------


def _grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss_fn(model).backward()
    return {n.replace("._checkpoint_wrapped_module", ""): p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("gradient", ["vanilla", "myopic", "myopic-hidden", "bigram"])
def test_activation_checkpointing_changes_no_gradient_gpt(gradient):
    x = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    kv_model = build_model(GPTConfig(vocab_size=50, n_layer=2, n_head=2, d_model=16, seq_len=12), 1)
    kv: list = []
    with torch.no_grad():
        kv_model(x, kv_out=kv)
    for past in (None, kv):  # the past_kv path (the local-myopia-bonus trainee) too
        cfg = GPTConfig(vocab_size=50, n_layer=2, n_head=2, d_model=16, seq_len=12, gradient=gradient, horizon=1)
        plain, ckpt = build_model(cfg, 0), build_model(cfg, 0)
        assert len(apply_activation_checkpointing(ckpt)) == 2
        loss = lambda m: torch.nn.functional.cross_entropy(m(x, past_kv=past).flatten(0, 1), x.flatten(), reduction="sum")  # noqa: E731
        g1, g2 = _grads(plain, loss), _grads(ckpt, loss)
        assert g1.keys() == g2.keys()
        for k in g1:
            assert torch.equal(g1[k], g2[k]), (gradient, past is None, k)
        assert plain.state_dict().keys() == ckpt.state_dict().keys()  # checkpoint names unchanged


@pytest.mark.parametrize("gradient", ["vanilla", "myopic", "myopic-hidden"])
def test_activation_checkpointing_changes_no_gradient_hf(gradient):
    pytest.importorskip("transformers")
    from _hf_tiny import tiny

    from myopia.hf.model import HFCausalLM

    x = torch.randint(0, 41, (2, 10), generator=torch.Generator().manual_seed(0))
    frozen, kv = HFCausalLM(tiny("llama", dtype=torch.float64, seed=1).eval()), []
    with torch.no_grad():
        frozen(x, kv_out=kv)
    for past in (None, kv):  # past_kv lives in the model's settings only during the call: recomputation restores it
        models = []
        for _ in range(2):
            m = HFCausalLM(tiny("llama", dtype=torch.float64).train())
            m.set_gradient(gradient)
            models.append(m)
        assert len(apply_activation_checkpointing(models[1])) == 2
        loss = lambda m: torch.nn.functional.cross_entropy(m(x, past_kv=past).flatten(0, 1), x.flatten(), reduction="sum")  # noqa: E731
        g1, g2 = _grads(models[0], loss), _grads(models[1], loss)
        assert g1.keys() == g2.keys()
        for k in g1:
            assert torch.equal(g1[k], g2[k]), (past is None, k)


# ---- sharded evaluation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,bs,world", [(7, 2, 2), (6, 2, 3), (1, 4, 2), (10, 3, 4)])
def test_eval_shards_cover_every_batch_once_with_equal_forward_counts(n, bs, world):
    shards = [EvalShard(r, world).spans(n, bs) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank runs as many forward passes
    spans = sorted(s for rank in shards for s in rank if s is not None)
    assert spans == [(a, min(a + bs, n)) for a in range(0, n, bs)]


# ---- the memory plan --------------------------------------------------------------------------------------------


def test_memory_plan_refuses_a_run_that_cannot_fit(corpus_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(corpus_file, run, device_memory_gb=1e-6)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit" in err[0] and "parameters" in err[0] and "optimizer" in err[0]
    assert not run.exists()  # refused before anything was written


def test_memory_plan_is_printed_and_recorded(corpus_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(corpus_file, run, steps=2, progress=True)) == 0
    assert "one process: memory per process: parameters" in capsys.readouterr().err
    plan = read_json(run / "result.json")["memory_plan"]
    n = plan["n_params"]
    assert plan["parameters_gb"] * 1024**3 == pytest.approx(4 * n) and plan["optimizer_gb"] == 2 * plan["parameters_gb"]


# ---- the earlier single-file checkpoint format -------------------------------------------------------------


def test_single_file_checkpoint_of_an_earlier_version_resumes_in_one_process(corpus_file, tmp_path, capsys):
    """A run directory with checkpoint.safetensors (the earlier format) continues bit for bit in one process;
    with --shard it is refused with one line."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(tiny_args(corpus_file, full)) == 0
    shutil.copytree(full, cut)
    for name in ("result.json", "model.safetensors"):
        (cut / name).unlink()
    cfg = read_json(cut / "config.json")
    model = build_model(GPTConfig(**cfg["run"]["model"]), 0)
    optimizer = make_optimizer(model, TrainConfig(**cfg["train"]))
    step6 = dict(checkpoint_steps(cut))[6]
    load_distributed(step6, model, optimizer)
    from myopia.checkpoint import load_tensors

    rng = load_tensors(step6 / "rng.safetensors")[0]
    save_checkpoint(cut / "checkpoint.safetensors", model, optimizer, {"step": 6, "config": cfg},
                    rng_states={"torch.r0": rng["torch.r0"]})
    shutil.rmtree(cut / "checkpoints")
    capsys.readouterr()
    assert main(tiny_args(corpus_file, cut, resume=True, shard="full")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "earlier single-file format" in err[0]
    assert main(tiny_args(corpus_file, cut, resume=True)) == 0
    assert [s for s, _ in checkpoint_steps(cut)] == [8]  # the continuation writes the distributed format
    wa, wb = load_model_state(cut / "model.safetensors")[0], load_model_state(full / "model.safetensors")[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rs]  # noqa: E731
    assert strip(read_jsonl(cut / "metrics.jsonl")) == strip(read_jsonl(full / "metrics.jsonl"))
    assert np.isclose(read_json(cut / "result.json")["eval_loss"], read_json(full / "result.json")["eval_loss"],
                      rtol=0, atol=0)
