"""Sampling from a trained model: greedy decoding is the step-by-step argmax of the model's own logits, top-k 1 is
greedy, a seed fixes a sample, and `myopia generate` prints a continuation of a run."""

import torch

from myopia.cli import main
from myopia.lm import build_model
from myopia.model import GPTConfig
from myopia.sampling import generate
from _tiny_run import tiny_args


def _model():
    return build_model(GPTConfig(vocab_size=50, n_layer=2, n_head=2, d_model=16, seq_len=8), seed=3)


def test_greedy_is_the_argmax_of_each_step_and_reads_at_most_the_context():
    model, prompt = _model(), torch.tensor([[1, 2, 3]])
    out = generate(model, prompt, 12, context=8, temperature=0)
    ids = prompt.clone()
    for _ in range(12):  # the reference: one full forward pass over the last 8 tokens per step
        ids = torch.cat([ids, model(ids[:, -8:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids) and out.shape == (1, 15)
    assert torch.equal(generate(model, prompt, 12, context=8, top_k=1), out)  # top-1 sampling is greedy


def test_a_seed_fixes_the_sample_and_different_seeds_differ():
    model, prompt = _model(), torch.tensor([[1, 2, 3]] * 4)
    a = generate(model, prompt, 20, context=8, generator=torch.Generator().manual_seed(0))
    b = generate(model, prompt, 20, context=8, generator=torch.Generator().manual_seed(0))
    c = generate(model, prompt, 20, context=8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generate_cli_continues_a_prompt_from_a_run(corpus_file, tmp_path, capsys):
    assert main(tiny_args(corpus_file, tmp_path / "r")) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "r"), "--prompt", "the cat", "--tokens", "12", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2 and out.count("the cat") == 2
    assert main(["generate", str(tmp_path / "r"), "--samples", "0"]) == 2
