"""Two processes under torchrun (gloo, CPU) equal one process: DDP and FSDP2 (--shard grad/full) for our GPT in every
gradient mode and for a tiny Hugging Face Llama (grouped-query attention), activation checkpointing included;
sharded evaluation equals one process's; the 2-process command line exits cleanly run after run; a killed launcher
takes its workers with it; a run resumes across a different number of processes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from myopia.checkpoint import RunLock, checkpoint_steps, load_model_state
from myopia.cli import main
from myopia.errors import MyopiaError
from myopia.io import read_jsonl
from myopia.train import train
from _dist_worker import RUNS, build, task, train_config
from _tiny_run import tiny_args

pytestmark = [pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed"),
              pytest.mark.slow]  # every test here launches torchrun

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def env_one_thread():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """Random token ids over the tiny models' vocabulary of 41."""
    path = tmp_path_factory.mktemp("tokens") / "tokens.npy"
    np.save(path, np.random.default_rng(0).integers(0, 41, size=20_000))
    return path


@pytest.fixture(scope="module")
def two_process_runs(tokens, tmp_path_factory):
    """``runs(kind)``: the folder where one 2-process torchrun launch trained every configuration of that model kind
    in _dist_worker.RUNS (launched on first use, one launch per kind)."""
    out, done = tmp_path_factory.mktemp("two"), set()

    def runs(kind: str) -> Path:
        if kind not in done:
            proc = subprocess.run([*TORCHRUN, str(TESTS / "_dist_worker.py"), str(out), str(tokens), kind],
                                  env=env_one_thread(), capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-4000:]
            done.add(kind)
        return out

    return runs


@pytest.fixture(scope="module")
def references(tokens, tmp_path_factory):
    """One-process runs of each (model, gradient) in _dist_worker.RUNS."""
    out = tmp_path_factory.mktemp("one")
    for kind, gradient in sorted({(k, g) for _, k, g, _, _ in RUNS}):
        train(build(kind, gradient), task(tokens), train_config(), out / f"{kind}-{gradient}",
              run_config={"kind": kind, "gradient": gradient})
    return out


def curve(run, key):
    return [r[key] for r in read_jsonl(Path(run) / "metrics.jsonl") if key in r]


def assert_weights_agree_to_summation_order(got, want, init, *, lr: float, steps: int):
    """Two runs that differ only in the order of their float32 sums (how gradients are reduced across processes or
    micro-batches) hold the same weights to the error that order can make, carried through Adam.

    The bound: summing n float32 terms in another order changes a gradient element by a relative r <= n u kappa
    (u = 2**-24, kappa = sum|terms| / |sum of terms|). Adam's update g / (|g| + eps) (bias-corrected m / sqrt(v))
    changes by at most r / 4 under that change (the derivative eps / (|g| + eps)**2 times r |g| peaks at |g| = eps),
    so an element moves by at most lr * sum over steps of min(2, r / 4). For n <= 4096 terms with kappa <= 10,
    r / 4 <= 6e-4. Every element must agree to 1e-3 * lr per step (a wrong gradient moves elements by up to 2 lr
    per step, 2000 times more), and each tensor's whole update to 1e-4 of its norm. The elementwise rtol is not used:
    a near-cancelling gradient has no relative bound, only this absolute one.
    """
    assert got.keys() == want.keys()
    atol = 1e-3 * lr * steps
    for k in want:
        diff = (got[k] - want[k]).abs()
        assert diff.max().item() <= atol, (k, diff.max().item(), atol)
        update = (want[k] - init[k]).norm().item()
        assert diff.norm().item() <= 1e-4 * max(update, 1e-12) + atol, (k, diff.norm().item(), update)


@pytest.mark.parametrize("name,kind,gradient,shard,ac", RUNS, ids=[r[0] for r in RUNS])
def test_two_processes_equal_one(two_process_runs, references, name, kind, gradient, shard, ac):
    run, ref = two_process_runs(kind) / name, references / f"{kind}-{gradient}"
    result = json.loads((run / "result.json").read_text())
    assert result["world_size"] == 2 and result["engine"] == ("ddp" if shard == "none" else "fsdp")
    assert len(curve(run, "train_loss")) == 3
    assert np.allclose(curve(run, "train_loss"), curve(ref, "train_loss"), rtol=1e-6, atol=0)
    assert np.allclose(curve(run, "grad_norm"), curve(ref, "grad_norm"), rtol=1e-5, atol=0)
    assert np.allclose(curve(run, "eval_loss"), curve(ref, "eval_loss"), rtol=1e-6, atol=0)
    w2, w1 = load_model_state(run / "model.safetensors")[0], load_model_state(ref / "model.safetensors")[0]
    init = build(kind, gradient).state_dict()
    moved = max((w1[k] - init[k]).abs().max().item() for k in w1)
    assert moved > 1e-3  # training moved the weights: the comparison is not vacuous
    cfg = train_config()
    assert_weights_agree_to_summation_order(w2, w1, init, lr=cfg.lr, steps=cfg.steps)


def test_sharded_evaluation_equals_one_process(two_process_runs):
    got = json.loads((two_process_runs("gpt") / "sharded_eval.json").read_text())
    assert got["sharded"] == got["whole"] and got["whole"]["tokens"] == 96  # bit for bit, every window once


# ---- lifecycle ------------------------------------------------------------------------------------------------


LIFECYCLE = [("none", {}), ("full", {}), ("grad", {}), ("none", {"async_checkpoint": True}),
             ("full", {"activation_checkpointing": True, "async_checkpoint": True})]


@pytest.mark.parametrize("attempt,shard,extra", [(i, s, e) for i, (s, e) in enumerate(LIFECYCLE)])
def test_two_process_command_line_exits_cleanly(corpus_file, tmp_path, attempt, shard, extra):
    """The 2-process path, five runs in a row: every one exits 0 with one result line and no abort at teardown."""
    out = tmp_path / "run"
    args = tiny_args(corpus_file, out, steps=2, shard=shard, progress=attempt == 0, **extra)
    proc = subprocess.run([*TORCHRUN, "-m", "myopia", *args], env=env_one_thread(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr and "SIGABRT" not in proc.stderr
    assert proc.stdout.count("eval loss") == 1  # rank 0 alone reports ...
    if attempt == 0:  # ... and alone prints the engine, the memory plan and progress (plain lines)
        err = proc.stderr.splitlines()
        assert sum(line.startswith("DDP over 2 processes: memory per process:") for line in err) == 1
        assert [line.split()[1] for line in err if line.startswith("step ")] == ["2/2"]
    assert json.loads((out / "result.json").read_text())["shard"] == shard
    assert [s for s, _ in checkpoint_steps(out)] == [2]  # complete (an async save is finished before the end)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc (Linux)")
def test_killed_launcher_takes_its_workers_then_resume_on_one_process(corpus_file, tmp_path):
    """SIGKILL to torchrun mid-run: both workers stop (no second writer), the lock is free, and the DCP checkpoint
    of 2 processes resumes in 1 process to the uninterrupted run's numbers."""
    args = dict(steps=40, ckpt_every=4, eval_every=20)
    cut = tmp_path / "cut"
    launcher = subprocess.Popen([*TORCHRUN, "-m", "myopia", *tiny_args(corpus_file, cut, **args)], env=env_one_thread(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and launcher.poll() is None:
            workers = _children(launcher.pid) or workers
            steps = [s for s, p in checkpoint_steps(cut) if (p / "meta.json").exists()]
            if steps and max(steps) >= 8:
                break
            time.sleep(0.02)
        assert launcher.poll() is None, "the run ended before it could be killed"
        workers = _children(launcher.pid) or workers
        assert len(workers) == 2
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "workers outlived their killed launcher"
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        launcher.kill()
    assert not (cut / "result.json").exists()
    deadline = time.time() + 30  # a dying process's last threads may take a moment to release its files
    while True:
        try:
            RunLock(cut).acquire().release()  # the kernel released the dead run's lock
            break
        except MyopiaError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    killed_at = max(s for s, _ in checkpoint_steps(cut))
    assert 8 <= killed_at < 40

    assert main(tiny_args(corpus_file, cut, resume=True, **args)) == 0
    assert main(tiny_args(corpus_file, tmp_path / "full", **args)) == 0
    result = json.loads((cut / "result.json").read_text())
    assert result["world_size"] == 1 and result["resumed_from_step"] >= 8
    m_cut, m_full = read_jsonl(cut / "metrics.jsonl"), read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert [r["step"] for r in m_cut] == [r["step"] for r in m_full]  # the killed run's extra lines were dropped
    assert np.allclose(curve(cut, "train_loss"), curve(tmp_path / "full", "train_loss"), rtol=1e-5)
    w_cut, w_full = (load_model_state(p / "model.safetensors")[0] for p in (cut, tmp_path / "full"))
    for k in w_full:
        assert torch.allclose(w_cut[k], w_full[k], rtol=1e-4, atol=1e-5), k


def test_one_process_checkpoint_resumes_on_two_processes(corpus_file, tmp_path):
    """A 1-process run stopped after step 6 continues under torchrun --shard full to the uninterrupted numbers."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(tiny_args(corpus_file, full)) == 0
    shutil.copytree(full, cut)
    for name in ("result.json", "model.safetensors"):
        (cut / name).unlink()
    shutil.rmtree(cut / "checkpoints" / "step_0000008")
    proc = subprocess.run([*TORCHRUN, "-m", "myopia", *tiny_args(corpus_file, cut, resume=True, shard="full")],
                          env=env_one_thread(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((cut / "result.json").read_text())
    assert result["world_size"] == 2 and result["resumed_from_step"] == 6
    assert curve(cut, "train_loss")[:6] == curve(full, "train_loss")[:6]  # the first six steps are the 1-process run's
    assert np.allclose(curve(cut, "train_loss"), curve(full, "train_loss"), rtol=1e-6)
    w_cut, w_full = (load_model_state(p / "model.safetensors")[0] for p in (cut, full))
    for k in w_full:
        assert torch.allclose(w_cut[k], w_full[k], rtol=1e-5, atol=1e-6), k
