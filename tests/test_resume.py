"""Resuming and checkpoints, in one process: SIGKILL + --resume is bitwise exact, corrupted or foreign
checkpoints are refused or fall back, one writer per run directory, async checkpoints, and the refusal of runs
of the single-file checkpoint format (myopia < 0.2.0). (Resume across process counts: test_multiprocess.py.)"""

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

from myopia.checkpoint import (RunLock, checkpoint_steps, load_distributed, load_model_state, read_checkpoint_meta,
                               save_checkpoint)
from myopia.cli import main
from myopia.data import LMTask, load_corpus
from myopia.errors import MyopiaError
from myopia.lm import build_model, train_lm
from myopia.io import read_json, read_jsonl
from myopia.model import GPTConfig
from myopia.train import make_optimizer, TIMING_KEYS, train, TrainConfig
from _tiny_run import small_model, small_train, tiny_args


def env_one_thread():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return env


def weights(run):
    return load_model_state(Path(run) / "model.safetensors")[0]


def metrics(run):
    """metrics.jsonl without the timing fields."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(Path(run) / "metrics.jsonl")]


def assert_bitwise_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metrics(a) == metrics(b)
    ra, rb = (json.loads((Path(r) / "result.json").read_text()) for r in (a, b))
    assert ra["final_eval"] == rb["final_eval"]


def _newest_step(run: Path) -> int | None:
    """The step of the newest complete checkpoint folder (meta.json written last), or None."""
    for step, path in checkpoint_steps(run):
        try:
            return int(read_checkpoint_meta(path, verify=False)["step"])
        except (MyopiaError, KeyError, OSError):
            continue
    return None


def _newest_shard(run: Path) -> Path:
    return checkpoint_steps(run)[0][1] / "__0_0.distcp"


SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.slow
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
        err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("data: ")]
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


@pytest.mark.slow
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


def test_a_single_file_checkpoint_of_myopia_before_0_2_0_is_refused_in_one_line(corpus_file, tmp_path, capsys):
    """A run folder with checkpoint.safetensors (the format before 0.2.0) is refused, naming the version, and
    left as it was."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "checkpoint.safetensors").write_bytes(b"old")
    capsys.readouterr()
    assert main(tiny_args(corpus_file, old, resume=True)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by myopia < 0.2.0" in err[0] and "myopia 0.1.x" in err[0]
    assert sorted(p.name for p in old.iterdir() if p.name != ".lock") == ["checkpoint.safetensors"]
    assert (old / "checkpoint.safetensors").read_bytes() == b"old"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_mid_run_then_resume_is_bitwise_exact(corpus_file, tmp_path):
    steps = 60
    args = dict(steps=steps, ckpt_every=5, eval_every=10)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "myopia", *tiny_args(corpus_file, cut, **args)],
                            env=env_one_thread(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            step = _newest_step(cut)
            logged = [r["step"] for r in read_jsonl(cut / "metrics.jsonl")] if step else []
            # past a second checkpoint (so a previous one is kept too), with metrics logged beyond it
            if step is not None and step >= 10 and logged and logged[-1] > step:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "result.json").exists() and not (cut / "model.safetensors").exists()
    killed_at = _newest_step(cut)
    assert 10 <= killed_at < steps
    assert read_jsonl(cut / "metrics.jsonl")[-1]["step"] > killed_at  # lines the resumed run must drop
    assert len(checkpoint_steps(cut)) >= 2  # the previous checkpoint is kept

    assert main(tiny_args(corpus_file, cut, resume=True, **args)) == 0
    assert main(tiny_args(corpus_file, tmp_path / "full", **args)) == 0
    assert json.loads((cut / "result.json").read_text())["resumed_from_step"] >= killed_at
    assert_bitwise_same_run(cut, tmp_path / "full")


def test_corrupted_latest_checkpoint_falls_back_to_previous(corpus_file, tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(tiny_args(corpus_file, full)) == 0
    assert main(tiny_args(corpus_file, cut)) == 0
    assert [s for s, _ in checkpoint_steps(cut)] == [8, 6]  # the last two checkpoints are kept
    # simulate a run killed at its end with a damaged newest checkpoint
    (cut / "result.json").unlink()
    (cut / "model.safetensors").unlink()
    shard = _newest_shard(cut)
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the tensor data
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(tiny_args(corpus_file, cut, resume=True)) == 0
    err = capsys.readouterr().err
    assert "failed its checksum" in err and "resuming from the previous checkpoint" in err
    assert json.loads((cut / "result.json").read_text())["resumed_from_step"] == 6
    assert_bitwise_same_run(cut, full)


def test_every_checkpoint_corrupted_is_refused(corpus_file, tmp_path, capsys):
    cut = tmp_path / "cut"
    assert main(tiny_args(corpus_file, cut)) == 0
    (cut / "result.json").unlink()
    (_, newest), (_, prev) = checkpoint_steps(cut)
    (newest / "meta.json").unlink()  # the newest was cut short before its meta.json
    shard = prev / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-10])
    capsys.readouterr()
    assert main(tiny_args(corpus_file, cut, resume=True)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint") and "incomplete" in err[0]
    assert "corrupted" in err[0] and "no usable checkpoint" in err[0]
    assert not (cut / "result.json").exists()


def test_checkpoint_from_another_run_is_refused(corpus_file, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(tiny_args(corpus_file, a, steps=4)) == 0
    assert main(tiny_args(corpus_file, b, steps=4, seed=1)) == 0
    (b / "result.json").unlink()
    shutil.rmtree(b / "checkpoints")
    shutil.copytree(a / "checkpoints", b / "checkpoints")
    capsys.readouterr()
    assert main(tiny_args(corpus_file, b, steps=4, seed=1, resume=True)) == 2
    err = capsys.readouterr().err
    assert "written by a different run" in err and "seed" in err
    assert not (b / "result.json").exists()


def test_resume_with_a_different_config_or_vocabulary_is_refused(tmp_path, capsys):
    tokens = np.random.default_rng(0).integers(0, 50, size=30_000)
    data = tmp_path / "tokens.npy"
    np.save(data, tokens)
    run = tmp_path / "run"
    assert main(tiny_args(data, run, steps=2)) == 0
    capsys.readouterr()
    assert main(tiny_args(data, run, steps=2, d_model=32, resume=True)) == 2
    assert "config differs" in capsys.readouterr().err
    np.save(data, np.concatenate([tokens, [70]]))  # the data now needs 71 token ids
    assert main(tiny_args(data, run, steps=2, resume=True)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vocabulary" in err and "vocab_size: 50 vs 71" in err


def test_resume_before_the_first_checkpoint_restarts_cleanly(corpus_file, tmp_path, capsys):
    """A run killed before its first checkpoint: --resume restarts at step 0 without duplicated metrics."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(tiny_args(corpus_file, full, steps=4, ckpt_every=0)) == 0

    class Crash(Exception):
        pass

    class CrashingTask(LMTask):
        def examples(self, indices, device="cpu"):
            if indices[0] >= 3 * 6:
                raise Crash()
            return super().examples(indices, device)

    corpus = load_corpus(corpus_file)
    cfg = json.loads((full / "config.json").read_text())
    model_cfg = GPTConfig(**cfg["run"]["model"])
    with pytest.raises(Crash):
        train(build_model(model_cfg, 0), CrashingTask(corpus, 16, eval_tokens=256), TrainConfig(**cfg["train"]),
              cut, run_config=cfg["run"])
    assert len(read_jsonl(cut / "metrics.jsonl")) == 3 and not checkpoint_steps(cut)
    capsys.readouterr()
    assert main(tiny_args(corpus_file, cut, steps=4, ckpt_every=0)) == 2  # without --resume: refused
    assert "already holds a run" in capsys.readouterr().err
    assert main(tiny_args(corpus_file, cut, steps=4, ckpt_every=0, resume=True)) == 0
    assert "restarting at step 0" in capsys.readouterr().err
    assert_bitwise_same_run(cut, full)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="recognises files through /proc/self/fd (Linux)")
def test_checkpoint_write_failure_keeps_the_previous_checkpoint(corpus_file, tmp_path, capsys, monkeypatch):
    """Disk full while completing checkpoint 4: one-line error, checkpoint 2 intact, no temporary folder left."""
    import myopia.io as mio

    real = mio.os.fsync
    meta_writes = []

    def fsync(fd):  # the second checkpoint's meta.json (step 4) finds the disk full
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".meta.json."):
            meta_writes.append(fd)
            if len(meta_writes) == 2:
                raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(mio.os, "fsync", fsync)
    run = tmp_path / "run"
    assert main(tiny_args(corpus_file, run)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not write" in err and "No space left on device" in err
    assert [s for s, _ in checkpoint_steps(run)] == [2]
    read_checkpoint_meta(checkpoint_steps(run)[0][1])  # complete, checksums verified
    assert not (run / "result.json").exists()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_checkpoint_restores_each_ranks_generator(tmp_path):
    """Every rank's RNG state is saved; rank r gets its own back (falling back to rank 0's when absent)."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    states = {}
    for r in range(2):
        torch.manual_seed(100 + r)
        states[r] = torch.get_rng_state()
    path = tmp_path / "c.safetensors"
    from myopia.checkpoint import load_checkpoint, load_tensors, save_checkpoint

    torch.manual_seed(7)  # this process's own state, distinct from both ranks'
    save_checkpoint(path, model, opt, {"step": 1}, rng_states={"torch.r0": states[0], "torch.r1": states[1]})
    # rank 5 has no saved state: it gets the saving process's own CPU state ("rng.torch")
    expected = {0: states[0], 1: states[1], 5: load_tensors(path)[0]["rng.torch"]}
    assert not any(torch.equal(expected[a], expected[b]) for a, b in ((0, 1), (0, 5), (1, 5)))
    for r, state in expected.items():
        torch.manual_seed(0)
        load_checkpoint(path, model, opt, rank=r)
        assert torch.equal(torch.get_rng_state(), state)


class Crash(Exception):
    pass


class CrashingTask(LMTask):
    def __init__(self, *a, crash_at_step, batch_size, **kw):
        super().__init__(*a, **kw)
        self.crash_index = crash_at_step * batch_size

    def examples(self, indices, device="cpu"):
        if self.crash_index is not None and indices[0] >= self.crash_index:
            raise Crash()
        return super().examples(indices, device)


@pytest.mark.slow
def test_resume_after_interruption_is_exact(corpus_file, tmp_path):
    corpus = load_corpus(corpus_file)
    cfg = small_train(ckpt_every=4)
    train(build_model(small_model("myopic"), 0), LMTask(corpus, 32), cfg, tmp_path / "full", run_config={})

    task = CrashingTask(corpus, 32, crash_at_step=10, batch_size=8)
    with pytest.raises(Crash):
        train(build_model(small_model("myopic"), 0), task, cfg, tmp_path / "cut", run_config={})
    assert not (tmp_path / "cut" / "result.json").exists()
    train(build_model(small_model("myopic"), 0), LMTask(corpus, 32), cfg, tmp_path / "cut", run_config={},
          resume=True)
    a = load_model_state(tmp_path / "full" / "model.safetensors")[0]
    b = load_model_state(tmp_path / "cut" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in rs]
    assert strip(read_jsonl(tmp_path / "full" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "cut" / "metrics.jsonl"))


def test_resume_refuses_a_different_config(corpus_file, tmp_path):
    train_lm(corpus_file, tmp_path / "r", small_model(), small_train(steps=4))
    with pytest.raises(MyopiaError, match="config differs"):
        train_lm(corpus_file, tmp_path / "r", small_model("myopic"), small_train(steps=4), resume=True)


def test_resume_reads_the_saved_config_and_refuses_a_typed_change_naming_the_field(corpus_file, tmp_path, capsys):
    """`myopia train --out DIR --resume` needs nothing else: data, model, gradient and training options come from
    DIR/config.json, and the resumed run ends bit for bit where the uninterrupted one does. An option typed
    differently from the saved run is refused in one line that names it."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    extra = dict(gradient="myopic-hidden", lr="2e-3", documents="stream")
    assert main(tiny_args(corpus_file, full, **extra)) == 0
    assert main(tiny_args(corpus_file, cut, **extra)) == 0
    for name in ("result.json", "model.safetensors"):
        (cut / name).unlink()
    newest = max(s for s, _ in checkpoint_steps(cut))
    shutil.rmtree(cut / "checkpoints" / f"step_{newest:07d}")
    assert main(["train", "--out", str(cut), "--resume", "--no-progress"]) == 0
    a = load_model_state(full / "model.safetensors")[0]
    b = load_model_state(cut / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["train", "--out", str(cut), "--resume", "--lr", "1e-3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "lr" in err[-1]
