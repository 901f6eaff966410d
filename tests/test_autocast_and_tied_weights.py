"""bf16 autocast through split_linear and myopic-hidden training; tied tensors stored once in checkpoints."""

import torch

from myopia.attention import split_linear
from myopia.checkpoint import load_tensors, save_tensors
from myopia.model import GPT, GPTConfig


def test_split_linear_backward_under_bf16_autocast():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=gen, requires_grad=True)
    w = torch.randn(6, 8, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True)
    gw, gx = torch.randn(2, 5, 6, generator=gen), torch.randn(2, 5, 6, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_w, y_x = split_linear(x, w, b)
    assert y_w.dtype == torch.bfloat16
    dx, dw, db = torch.autograd.grad((y_w.float() * gw).sum() + (y_x.float() * gx).sum(), (x, w, b))
    assert dx.dtype == dw.dtype == db.dtype == torch.float32
    torch.testing.assert_close(dx, gx @ w.detach(), rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(dw, gw.reshape(-1, 6).t() @ x.detach().reshape(-1, 8), rtol=2e-2, atol=1e-1)
    torch.testing.assert_close(db, gw.reshape(-1, 6).sum(0), rtol=2e-2, atol=5e-2)


def test_gpt_myopic_hidden_trains_under_bf16_autocast():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_layer=2, d_model=32, n_head=2, seq_len=16, gradient="myopic-hidden"))
    x = torch.randint(0, 50, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x).float().flatten(0, 1), x.flatten())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_tied_tensors_are_stored_once(tmp_path):
    shared = torch.randn(4, 3)
    partial = shared[1:]  # overlaps without being the same view: stored as a copy
    save_tensors(tmp_path / "t.safetensors", {"a": shared, "b": shared, "c": partial, "d": torch.ones(2)}, {"k": 1})
    tensors, meta = load_tensors(tmp_path / "t.safetensors")
    assert meta == {"k": 1}
    assert tensors["a"] is tensors["b"] and torch.equal(tensors["a"], shared)
    assert torch.equal(tensors["c"], partial) and torch.equal(tensors["d"], torch.ones(2))
