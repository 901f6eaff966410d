"""The engine's single-process parts: how a global batch splits over ranks, activation checkpointing changes no
gradient, evaluation shards cover every batch once, and the memory plan. (Several processes:
test_multiprocess.py; resuming: test_resume.py.)"""

import pytest
import torch

from myopia.cli import main
from myopia.distributed import EvalShard, apply_activation_checkpointing
from myopia.lm import build_model
from myopia.io import read_json
from myopia.model import GPTConfig
from myopia.train import _rank_slices
from _tiny_run import tiny_args



@pytest.mark.parametrize("batch,world,micro", [(6, 2, 2), (7, 3, 0), (5, 2, 0), (8, 4, 3)])
def test_rank_slices_partition_the_global_batch(batch, world, micro):
    slices = [s for r in range(world) for s in _rank_slices(batch, world, r, micro)]
    covered = [i for a, b in slices for i in range(a, b)]
    assert covered == list(range(batch))  # contiguous, disjoint, in order, nothing lost
    if micro:
        assert all(b - a <= micro for a, b in slices)


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


@pytest.mark.parametrize("n,bs,world", [(7, 2, 2), (6, 2, 3), (1, 4, 2), (10, 3, 4)])
def test_eval_shards_cover_every_batch_once_with_equal_forward_counts(n, bs, world):
    shards = [EvalShard(r, world).spans(n, bs) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank runs as many forward passes
    spans = sorted(s for rank in shards for s in rank if s is not None)
    assert spans == [(a, min(a + bs, n)) for a in range(0, n, bs)]


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
