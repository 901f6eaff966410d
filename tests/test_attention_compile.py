"""The custom ops under torch.compile and fake tensors: zero graph breaks, every device's shapes, no silent fallback.

Compiles use the ``aot_eager`` backend (no GPU, seconds): Dynamo + AOTAutograd trace forward and backward
through the ops' fake implementations, which is where graph breaks and layout errors show. One Inductor test
(the fused band pass, marked slow) compiles C++ on the CPU.
"""

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import myopia.attention as attention
from myopia.attention import myopic_attention
from myopia.errors import MyopiaError
from myopia.model import GPT, GPTConfig
from myopia.testing import attention_brute_force

sys.path.insert(0, str(Path(__file__).parent))


def _inputs(shape, kv_heads=None, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    B, H, T, D = shape
    q = torch.randn(shape, generator=gen, dtype=dtype, requires_grad=True)
    k, v = (torch.randn((B, kv_heads or H, T, D), generator=gen, dtype=dtype, requires_grad=True) for _ in range(2))
    return q, k, v


def test_opcheck_custom_ops():
    """torch.library.opcheck: schema, fake implementation and autograd registration agree with the real ops
    (the myopic op with the hidden-state copies, grouped-query heads)."""
    q, k, v = _inputs((1, 2, 9, 4), kv_heads=1)
    kf, vf = k.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    torch.library.opcheck(torch.ops.myopia.myopic_attention.default, (q, k, v, kf, vf, 2, 0.25, 0.5))
    torch.library.opcheck(torch.ops.myopia.causal_attention.default, (q, k, v, 0.5))


@pytest.mark.parametrize("kind,dtype", [("cuda_flash", torch.bfloat16), ("cuda_efficient", torch.float32)])
@pytest.mark.parametrize("path", ["band", "near", "complement"])
def test_cuda_branches_shapes_and_dtypes_on_fake_tensors(monkeypatch, kind, dtype, path):
    """The CUDA kernel calls, forward and each backward path, run on fake CUDA tensors: PyTorch's meta kernels
    check every argument's shape and dtype, and the results match the custom ops' fake implementations."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    mode = FakeTensorMode()

    def fake_cuda(*shape, dt=dtype):
        return FakeTensor(mode, torch.empty(shape, dtype=dt, device="meta"), torch.device("cuda"))

    monkeypatch.setattr(attention, "kernel_for", lambda q, k, v: kind)
    B, H, H_kv, T, D = 2, 4, 2, 37, 64
    with mode:
        q, g = fake_cuda(B, H, T, D), fake_cuda(B, H, T, D)
        k, v = fake_cuda(B, H_kv, T, D), fake_cuda(B, H_kv, T, D)
        out, lse = attention._kernel_forward(kind, q, k, v, 0.125)
        fake_out, fake_lse = attention._fake_forward(q, k, v)
        assert (out.shape, out.dtype, out.stride()) == (fake_out.shape, fake_out.dtype, fake_out.stride())
        assert (lse.shape, lse.dtype, lse.stride()) == (fake_lse.shape, fake_lse.dtype, fake_lse.stride())
        assert out.device.type == "cuda"
        dq, dk, dv, dk_full, dv_full = attention.myopic_backward(g, q, k, v, out, lse, 5, 0.25, 0.125, True, path=path)
    for got, like in [(dq, q), (dk, k), (dv, v), (dk_full, k), (dv_full, v)]:
        assert (got.shape, got.dtype, got.device.type) == (like.shape, like.dtype, "cuda")


def _gpt(gradient, settings=((0, 0.0), (0, 0.5), (4, 0.0), (4, 0.5))):
    """A GPT whose layers carry every (horizon, beta) pair of ``settings``, one per layer, so that one
    compile covers them all."""
    cfg = GPTConfig(vocab_size=32, n_layer=len(settings), n_head=2, d_model=16, seq_len=16, gradient=gradient)
    torch.manual_seed(0)
    model = GPT(cfg)
    for block, (h, beta) in zip(model.blocks, settings):
        block.attn.cfg = replace(cfg, horizon=h, beta=beta)
    return model


def _compiled_and_eager_grads(model, fn, x):
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    compiled(model, x).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    fn(model, x).backward()
    return got, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("gradient", ["vanilla", "myopic", "myopic-hidden"])
def test_gpt_compiles_with_fullgraph(gradient):
    """fullgraph=True (a graph break would raise) forward + backward for our GPT in every gradient mode, with
    h in {0, 4} and beta in {0, 0.5}; the compiled gradients equal the eager ones."""
    model = _gpt(gradient)
    x = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(1))

    def loss(m, x):
        return torch.nn.functional.cross_entropy(m(x).flatten(0, 1), x.flatten())

    got, want = _compiled_and_eager_grads(model, loss, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch,gradient", [("llama", "myopic"), ("pythia", "myopic-hidden")])
def test_hf_model_compiles_with_fullgraph(arch, gradient):
    """A tiny HF Llama with grouped-query attention (4 query heads, 2 key/value heads) in ``myopic`` and a
    Pythia in ``myopic-hidden`` compile without a graph break (no host sync in the mask check, GQA unrepeated)."""
    from _hf_tiny import V, tiny

    from myopia.hf import apply

    model = tiny(arch, n_layer=1, dtype=torch.float32)
    apply(model, gradient)
    x = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(0))

    def loss(m, x):
        logits = m(x[:, :-1], use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())

    got, want = _compiled_and_eager_grads(model, loss, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_kernel_errors_propagate():
    """Only 'no kernel supports these inputs' changes the kernel; an error inside one (here: mixed dtypes,
    on CUDA e.g. out of memory) reaches the caller instead of a silent O(T^2) fallback."""
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(RuntimeError):
        attention.causal_attention_lse(q, q.double(), q, 0.5)


def test_math_fallback_says_so_once(monkeypatch):
    monkeypatch.setattr(attention, "_warned", set())
    q = torch.randn(1, 2, 5, 4, device="meta")
    with pytest.warns(RuntimeWarning, match="math path"):
        assert attention.kernel_for(q, q, q) == "math"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attention.kernel_for(q, q, q)  # the second time: no warning


def test_bad_path_is_refused(monkeypatch):
    monkeypatch.setattr(attention, "FORCE_PATH", "magic")
    q, k, v = _inputs((1, 1, 6, 4))
    with pytest.raises(MyopiaError, match="FORCE_PATH"):
        myopic_attention(q, k, v, horizon=1).sum().backward()


@pytest.mark.slow
def test_inductor_fused_band_pass_matches_brute_force(monkeypatch):
    """The band pass compiled by Inductor's CPU backend (the fused kernel CUDA uses with Triton) gives the
    float64 brute force's gradients, grouped-query heads included (about 20 s of C++ compilation)."""
    monkeypatch.setattr(attention, "BAND_COMPILE", True)
    monkeypatch.setattr(attention, "FORCE_PATH", "band")
    q, k, v = _inputs((1, 4, 13, 4), kv_heads=2, seed=5)
    g = torch.randn(1, 4, 13, 4, dtype=torch.float64)
    out = myopic_attention(q, k, v, horizon=1, beta=0.3)
    got = torch.autograd.grad((out * g).sum(), (q, k, v))
    want = torch.autograd.grad(attention_brute_force(q, k, v, g, 1, 0.3, 0.5), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
