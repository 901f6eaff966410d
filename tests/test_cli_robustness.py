"""Bad input and failures through the command line: one line on stderr, exit status 2, no partial result.

Also: NaN mid-run, disk full while writing result.json, --debug, progress output, TensorBoard, precision and
torch.compile options.
"""

import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import myopia.progress
import myopia.train as trainer
from myopia.checkpoint import checkpoint_steps, load_model_state
from myopia.cli import main
from myopia.data import LMTask, load_corpus
from myopia.errors import MyopiaError
from myopia.io import read_jsonl
from myopia.model import GPT, GPTConfig
from myopia.train import TIMING_KEYS, TrainConfig, train
from _tiny_run import tiny_args

SRC = Path(__file__).resolve().parents[1] / "src"
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="simulates a full disk by recognising files through /proc/self/fd (Linux)")


def run_cli(capsys, args) -> tuple[int, list[str]]:
    """Exit status and stderr lines of ``myopia <args>`` run in this process (the informational ``data: ...`` line
    and the short-documents warning that commands reading text print first are left out)."""
    capsys.readouterr()
    code = main(args)
    return code, [line for line in capsys.readouterr().err.strip().splitlines()
                  if not line.startswith(("data: ", "warning: the median document"))]


def assert_one_line_error(code, err, *needles, status=2):
    assert code == status, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# ---- every bad input: one line, status 2, nothing written -------------------------------------------------


BAD_INPUTS = [
    (dict(steps=0), "steps must be a positive integer, got 0"),
    (dict(steps="abc"), "argument --steps: invalid int value: 'abc'"),
    (dict(lr=-1), "lr must be a finite number > 0"),
    (dict(lr="nan"), "lr must be a finite number > 0, got nan"),
    (dict(batch_size=0), "batch-size must be a positive integer"),
    (dict(micro_batch_size=-1), "micro-batch-size must be an integer >= 0"),
    (dict(warmup_steps=-5), "warmup-steps must be an integer >= -1"),
    (dict(min_lr_ratio=1.5), "min-lr-ratio must be a finite number in [0, 1]"),
    (dict(grad_clip=-1), "grad-clip must be a finite number >= 0"),
    (dict(n_head=3), "n_head (3) must divide d_model (16)"),
    (dict(d_model=12, n_head=4), "head size d_model/n_head = 3 must be even"),
    (dict(beta=2), "beta must lie in [0, 1]"),
    (dict(horizon=-1), "horizon must be an integer >= 0"),
    (dict(gradient="sideways"), "argument --gradient: invalid choice: 'sideways'"),
    (dict(precision="fp8"), "argument --precision: invalid choice: 'fp8'"),
    (dict(device="cuda:7") if not torch.cuda.is_available() else dict(device="cuda:99"), "cuda"),
    (dict(device="tpu"), "device 'tpu'"),
    (dict(seq_len=100_000), "fewer than seq_len + 1 = 100001"),
    (dict(eval_tokens=0), "eval-tokens must be a positive integer"),
    (dict(compile=True, compile_backend="nope"), "unknown compile backend 'nope'"),
    (dict(bogus=1), "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("bad,message", BAD_INPUTS, ids=["-".join(b) for b, _ in BAD_INPUTS])
def test_bad_input_is_one_line_before_any_work(corpus_file, tmp_path, capsys, bad, message):
    out = tmp_path / "run"
    bad = dict(bad)  # (the parameter list is shared between runs)
    code, err = run_cli(capsys, tiny_args(corpus_file, out, steps=bad.pop("steps", 8), **bad))
    assert_one_line_error(code, err, message)
    assert not out.exists()  # checked before any work: no folder, no partial result


def test_missing_data_and_out_that_is_a_file(corpus_file, tmp_path, capsys):
    code, err = run_cli(capsys, tiny_args(tmp_path / "nope.txt", tmp_path / "run"))
    assert_one_line_error(code, err, "does not exist")
    (tmp_path / "file").write_text("x")
    code, err = run_cli(capsys, tiny_args(corpus_file, tmp_path / "file"))
    assert_one_line_error(code, err, "exists and is not a folder")
    assert (tmp_path / "file").read_text() == "x"


def test_tensorboard_missing_is_reported_before_any_work(corpus_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    code, err = run_cli(capsys, tiny_args(corpus_file, tmp_path / "run", tensorboard=True))
    assert_one_line_error(code, err, "--tensorboard needs the tensorboard package")
    assert not (tmp_path / "run").exists()


def test_model_and_task_must_fit(corpus_file, tmp_path):
    """Sequence length within the model's context; vocabulary of the data within the model's."""
    corpus = load_corpus(corpus_file)  # bytes: 257 token ids
    short = GPT(GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=16, seq_len=8))
    with pytest.raises(MyopiaError, match="sequence length 16 exceeds the model's context of 8 positions"):
        train(short, LMTask(corpus, 16), TrainConfig(steps=2, batch_size=2), tmp_path / "a", run_config={})
    small_vocab = GPT(GPTConfig(vocab_size=100, n_layer=1, n_head=2, d_model=16, seq_len=16))
    with pytest.raises(MyopiaError, match="vocabulary of 257 token ids but the model has only 100"):
        train(small_vocab, LMTask(corpus, 16), TrainConfig(steps=2, batch_size=2), tmp_path / "b", run_config={})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_debug_shows_the_traceback(corpus_file, tmp_path):
    with pytest.raises(MyopiaError, match="steps must be"):
        main(tiny_args(corpus_file, tmp_path / "r", steps=0, debug=True))
    with pytest.raises(MyopiaError, match="steps must be"):
        main(["--debug", *tiny_args(corpus_file, tmp_path / "r", steps=0)])


@pytest.mark.slow
def test_subprocess_error_is_one_line_and_status_2(corpus_file, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "myopia", *tiny_args(corpus_file, tmp_path / "r", n_head=5)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: n_head (5) must divide d_model (16)"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_unexpected_failure_is_one_line_status_1(corpus_file, tmp_path, capsys, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("something deep\nwith a second line")

    monkeypatch.setattr(LMTask, "evaluate", broken)
    code, err = run_cli(capsys, tiny_args(corpus_file, tmp_path / "r", steps=4))
    assert_one_line_error(code, err, "RuntimeError: something deep", "--debug", status=1)
    assert not (tmp_path / "r" / "result.json").exists()


# ---- failures mid-run --------------------------------------------------------------------------------------


def test_nan_mid_run_stops_naming_the_step_and_keeps_the_checkpoint(corpus_file, tmp_path, capsys, monkeypatch):
    real_loss, calls = LMTask.loss, []

    def poisoned(self, model, batch):
        calls.append(1)
        loss = real_loss(self, model, batch)
        return loss * float("nan") if len(calls) == 5 else loss  # step 5 (one micro-batch per step)

    monkeypatch.setattr(LMTask, "loss", poisoned)
    run = tmp_path / "run"
    code, err = run_cli(capsys, tiny_args(corpus_file, run, tensorboard=HAS_TENSORBOARD))
    assert_one_line_error(code, err, "non-finite loss at step 5", "step_0000004 is kept", "--resume")
    assert not (run / "result.json").exists() and not (run / "model.safetensors").exists()
    assert [s for s, _ in checkpoint_steps(run)] == [4, 2]
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == 4
    # the kept checkpoint is good: resuming (the NaN gone) ends exactly where an unbroken run ends
    monkeypatch.setattr(LMTask, "loss", real_loss)
    assert main(tiny_args(corpus_file, run, resume=True, tensorboard=HAS_TENSORBOARD)) == 0
    if HAS_TENSORBOARD:  # events after the checkpoint purged, none lost: each step exactly once
        assert [s for s, _ in tensorboard_scalars(run, "train/train_loss")] == list(range(1, 9))
    assert main(tiny_args(corpus_file, tmp_path / "full")) == 0
    a, b = (load_model_state(r / "model.safetensors")[0] for r in (run, tmp_path / "full"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert strip_timing(read_jsonl(run / "metrics.jsonl")) == strip_timing(full)


def test_non_finite_parameters_are_never_checkpointed(corpus_file, tmp_path, capsys, monkeypatch):
    real_step, calls = torch.optim.AdamW.step, []

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        calls.append(1)
        if len(calls) == 8:  # the last step overflows a weight; the loss never sees it
            self.param_groups[0]["params"][0].data[0, 0] = math.inf
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    run = tmp_path / "run"
    code, err = run_cli(capsys, tiny_args(corpus_file, run))
    assert_one_line_error(code, err, "non-finite parameters at step 8")
    assert checkpoint_steps(run)[0][0] == 6
    assert not (run / "result.json").exists() and not (run / "model.safetensors").exists()


@needs_proc
def test_disk_full_while_writing_result_leaves_no_partial_file(corpus_file, tmp_path, capsys, monkeypatch):
    import myopia.io as mio

    real_fsync = mio.os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".result.json."):
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(mio.os, "fsync", fsync)
    run = tmp_path / "run"
    code, err = run_cli(capsys, tiny_args(corpus_file, run, steps=4))
    assert_one_line_error(code, err, f"could not write {run / 'result.json'}: No space left on device")
    assert not (run / "result.json").exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporary file
    monkeypatch.setattr(mio.os, "fsync", real_fsync)  # space freed: --resume finishes from the final checkpoint
    assert main(tiny_args(corpus_file, run, steps=4, resume=True)) == 0
    assert json.loads((run / "result.json").read_text())["resumed_from_step"] == 4


# ---- logging and progress ------------------------------------------------------------------------------------


def test_progress_lines_when_stderr_is_not_a_terminal(corpus_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(myopia.progress, "PROGRESS_INTERVAL_S", 0.0)
    code, err = run_cli(capsys, tiny_args(corpus_file, tmp_path / "r", steps=4, progress=True))
    assert code == 0
    plain = [line for line in err if line.startswith("step ")]
    assert [line.split()[1] for line in plain if "tok/s" in line] == ["1/4", "2/4", "3/4", "4/4"]
    assert sum("eval" in line for line in plain) == 1 and not any("\r" in line for line in err)
    code, err = run_cli(capsys, tiny_args(corpus_file, tmp_path / "quiet", steps=4))  # --no-progress
    assert code == 0 and err == []


def test_progress_bar_on_a_terminal(corpus_file, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(tiny_args(corpus_file, tmp_path / "r", steps=4, progress=True)) == 0
    assert "4/4" in term.getvalue() and "step" in term.getvalue()


def tensorboard_scalars(run, tag):
    """(step, value) of a scalar in RUN/tensorboard, as TensorBoard shows it (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard (a dev dependency) is not installed")
def test_tensorboard_events_match_metrics(corpus_file, tmp_path):
    run = tmp_path / "r"
    assert main(tiny_args(corpus_file, run, steps=4, tensorboard=True)) == 0
    logged = [(r["step"], r["train_loss"]) for r in read_jsonl(run / "metrics.jsonl") if "train_loss" in r]
    events = tensorboard_scalars(run, "train/train_loss")
    assert [s for s, _ in events] == [s for s, _ in logged]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(events, logged))
    assert [s for s, _ in tensorboard_scalars(run, "eval/eval_loss")] == [4]


# ---- precision and compile -----------------------------------------------------------------------------------


def test_precision_auto_is_fp32_on_cpu_and_bf16_autocast_takes_effect(corpus_file, tmp_path):
    runs = {p: tmp_path / p for p in ("auto", "fp32", "bf16")}
    for p, run in runs.items():
        extra = {} if p == "auto" else {"precision": p}
        assert main(tiny_args(corpus_file, run, steps=4, gradient="myopic", **extra)) == 0
    results = {p: json.loads((run / "result.json").read_text()) for p, run in runs.items()}
    assert results["auto"]["precision"] == "fp32" and results["bf16"]["precision"] == "bf16"
    w = {p: load_model_state(run / "model.safetensors")[0] for p, run in runs.items()}
    assert all(torch.equal(w["auto"][k], w["fp32"][k]) for k in w["fp32"])
    assert not all(torch.equal(w["bf16"][k], w["fp32"][k]) for k in w["fp32"])  # autocast really ran in bf16
    assert abs(results["bf16"]["eval_loss"] - results["fp32"]["eval_loss"]) < 0.02


@pytest.mark.parametrize("gradient", ["myopic", "myopic-hidden", "vanilla"])
def test_bf16_autocast_gradients_track_fp32(gradient):
    """Under bf16 autocast the fused path keeps its softmax statistics (lse) in fp32; gradients stay close."""
    from myopia.attention import causal_attention_lse

    q = torch.randn(1, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, lse = causal_attention_lse(q.bfloat16(), q.bfloat16(), q.bfloat16(), 0.35)
    assert lse.dtype == torch.float32
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_layer=2, n_head=2, d_model=32, seq_len=16, gradient=gradient))
    idx = torch.randint(0, 50, (4, 16))
    grads = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with trainer.autocast_context(torch.device("cpu"), precision):
            logits = model(idx)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx.flatten()).backward()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters()])
    cos = torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0)
    assert torch.isfinite(grads["bf16"]).all() and cos > 0.99


@pytest.mark.slow
def test_compile_runs_and_matches(corpus_file, tmp_path):
    """torch.compile wiring (dynamo capture with the eager backend: inductor codegen takes minutes on this CPU)."""
    assert main(tiny_args(corpus_file, tmp_path / "plain", steps=2, gradient="myopic")) == 0
    assert main(tiny_args(corpus_file, tmp_path / "compiled", steps=2, gradient="myopic", compile=True,
                          compile_backend="eager")) == 0
    a, b = (load_model_state(tmp_path / r / "model.safetensors")[0] for r in ("plain", "compiled"))
    assert a.keys() == b.keys()  # nn.Module.compile keeps the state-dict names (checkpoints stay loadable)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["train"]["compile"] is True
