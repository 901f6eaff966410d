"""The run folder (myopia.rundir): the file names a run writes, its status, and loading its model back."""

import subprocess
import sys

import pytest
import torch

from _tiny_run import tiny_args
from myopia import rundir
from myopia.checkpoint import checkpoint_steps, load_tensors, previous_path
from myopia.cli import main
from myopia.data import load_corpus
from myopia.errors import MyopiaError
from myopia.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(tiny_args(corpus_file, out, steps=4)) == 0
    return out


def test_the_file_names_are_the_ones_the_trainer_writes(finished_run):
    for name in (rundir.CONFIG, rundir.METRICS, rundir.RESULT, rundir.MODEL, rundir.LOCK):
        assert (finished_run / name).is_file(), name
    assert [step for step, _ in checkpoint_steps(finished_run)] == [4, 2]  # checkpoints/step_*/, newest first
    assert all(p.parent == finished_run / rundir.CHECKPOINTS for _, p in checkpoint_steps(finished_run))
    assert rundir.PREVIOUS_CHECKPOINT == previous_path(rundir.CHECKPOINT).name  # the single-file format's pair
    assert rundir.is_run(finished_run) and not rundir.is_run(finished_run.parent)


def test_status_goes_new_partial_done(tmp_path, finished_run):
    assert rundir.run_status(tmp_path) == "new"
    (tmp_path / rundir.CHECKPOINTS / "step_tmp").mkdir(parents=True)  # not a checkpoint folder
    assert rundir.run_status(tmp_path) == "new"
    (tmp_path / rundir.CHECKPOINTS / "step_0000004").mkdir()
    assert rundir.run_status(tmp_path) == "partial"
    old = tmp_path / "old"  # a single-file checkpoint: written by myopia < 0.2.0, refused in one line
    old.mkdir()
    (old / rundir.PREVIOUS_CHECKPOINT).write_bytes(b"")
    with pytest.raises(MyopiaError, match=r"written by myopia < 0\.2\.0.*0\.1\.x"):
        rundir.run_status(old)
    with pytest.raises(MyopiaError, match=r"myopia < 0\.2\.0"):
        rundir.weights_file(old)
    assert rundir.run_status(finished_run) == "done"


def test_load_run_gives_the_trained_weights_and_config(finished_run):
    run = rundir.load_run(finished_run, finished=True)
    assert isinstance(run.model, GPT) and not run.model.training and run.kind == "gpt" and run.step == 4
    want, _ = load_tensors(finished_run / rundir.MODEL)
    got = run.model.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    assert run.config["run"]["model"] == run.model.cfg.to_dict()
    # the same model through a weights file of the run (load_model) and through load_run_model
    model, tokenizer, info = rundir.load_model(finished_run / rundir.MODEL)
    assert info == {"kind": "gpt", "path": str(finished_run / rundir.MODEL), "step": 4}
    assert tokenizer.vocab_size == model.cfg.vocab_size
    x = torch.randint(0, model.cfg.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), rundir.load_run_model(finished_run)(x), rtol=0, atol=0)


def test_a_checkpoint_of_the_run_loads_as_its_model_part(finished_run):
    """A training checkpoint folder (model + optimizer + RNG) loads as the weights it holds: the last one, taken at
    the final step, equals the final model.safetensors."""
    step, folder = checkpoint_steps(finished_run)[0]
    run = rundir.load_run(finished_run, folder)
    final, _ = load_tensors(finished_run / rundir.MODEL)
    assert step == 4 and run.step == 4
    for k, v in run.model.state_dict().items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)


def test_unfinished_foreign_and_mismatched_folders_are_refused(tmp_path, finished_run, corpus_file):
    with pytest.raises(MyopiaError, match="not a run directory"):
        rundir.load_run(tmp_path)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / rundir.CONFIG).write_bytes((finished_run / rundir.CONFIG).read_bytes())
    with pytest.raises(MyopiaError, match="holds no finished run"):
        rundir.load_run(unfinished, finished=True)
    with pytest.raises(MyopiaError, match="holds no model.safetensors and no checkpoints"):
        rundir.load_run(unfinished)
    other = load_corpus(corpus_file, "bpe:300")
    with pytest.raises(MyopiaError, match="tokenizer/vocabulary mismatch"):
        rundir.load_run(finished_run, corpus=other)
    wrong = tmp_path / "wrong.safetensors"
    from myopia.checkpoint import save_model

    save_model(wrong, GPT(GPTConfig(vocab_size=257, n_layer=1, n_head=2, d_model=8, seq_len=16)), {})
    with pytest.raises(MyopiaError, match="do not match its model"):
        rundir.load_run(finished_run, wrong)


def test_importing_the_run_folder_and_the_plots_pulls_in_neither_torch_nor_matplotlib():
    code = ("import sys, myopia.rundir, myopia.plots.style, myopia.plots.scaling, myopia.plots.report, "
            "myopia.plots.training, myopia.plots.probes, myopia.plots.gradients, myopia.plots.tasks; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_save_writes_the_png_it_returns(tmp_path):
    from myopia.plots.style import pyplot, save

    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    data = save(fig, tmp_path / "sub" / "f.png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "sub" / "f.png").read_bytes() == data
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.png"]  # no temporary file left behind


def test_sweep_report_is_an_alias_of_report(capsys):
    assert main(["sweep-report", "--help"]) == 0
    assert "usage: myopia report" in capsys.readouterr().out
