"""Myopic attention's memory stays at vanilla's: the head-chunked backward is exact (float64 brute force), and
one forward+backward's peak memory, measured in a fresh process, is within a small margin of PyTorch's SDPA."""

import os
import sys
from pathlib import Path

import pytest
import torch

import myopia.attention as attention
from test_attention import _path_grads  # gradients with a pinned path beside the float64 brute force's

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.parametrize("B,H,H_kv,parts", [(1, 4, 4, 4), (3, 4, 2, 4), (2, 6, 3, 2), (3, 2, 1, 100)])
def test_head_chunks_tile_batch_and_kv_heads(monkeypatch, B, H, H_kv, parts):
    """Chunks cover every (batch, key/value head) pair once, none holds more than 1/parts of them (rounded up),
    and a problem under the minimum size is one chunk."""
    monkeypatch.setattr(attention, "CHUNK_PARTS", parts)
    monkeypatch.setattr(attention, "CHUNK_MIN_ELEMENTS", 1)
    q, k = torch.empty(B, H, 5, 2, device="meta"), torch.empty(B, H_kv, 5, 2, device="meta")
    chunks = attention._head_chunks(q, k)
    cover = torch.zeros(B, H_kv, dtype=torch.int64)
    for b0, b1, h0, h1 in chunks:
        cover[b0:b1, h0:h1] += 1
    assert (cover == 1).all(), chunks
    assert all((b1 - b0) * (h1 - h0) <= -(-B * H_kv // parts) for b0, b1, h0, h1 in chunks), chunks
    monkeypatch.setattr(attention, "CHUNK_MIN_ELEMENTS", 10**9)
    assert attention._head_chunks(q, k) == [(0, B, 0, H_kv)]


@pytest.mark.parametrize("path", ["near", "complement"])
@pytest.mark.parametrize("horizon,beta,split", [(3, 0.0, False), (5, 0.3, True), (1, 0.5, False), (9, 0.0, True)])
@pytest.mark.parametrize("kv_heads", [None, 2])
def test_chunked_paths_match_brute_force(monkeypatch, path, horizon, beta, split, kv_heads):
    """Every (batch, key/value head) pair in its own chunk (and narrow column strips): the gradients, also the
    vanilla ones of the split, are the float64 brute force's (inputs, pinned path and reference: _path_grads)."""
    monkeypatch.setattr(attention, "CHUNK_PARTS", 10**6)
    monkeypatch.setattr(attention, "CHUNK_MIN_ELEMENTS", 1)
    monkeypatch.setattr(attention, "STRIP_KEYS", 4)
    B, H, T, D = 2, 4, 29, 3
    got, want = _path_grads(monkeypatch, path, (B, H, T, D), horizon, beta, split, kv_heads=kv_heads, seed=horizon)
    q, k = torch.zeros(B, H, T, D), torch.zeros(B, kv_heads or H, T, D)
    assert len(attention._head_chunks(q, k)) == B * k.shape[1]
    for name, a, b in zip(["q", "k", "v", "k_w", "v_w"], got, want):
        assert a.shape == b.shape and a.stride() == b.stride()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"{path}: d{name} differs")


@pytest.mark.parametrize("kind,dtype", [("cuda_flash", torch.bfloat16), ("cuda_efficient", torch.float32)])
@pytest.mark.parametrize("path", ["near", "complement"])
def test_chunked_cuda_branches_on_fake_tensors(monkeypatch, kind, dtype, path):
    """The chunked paths on fake CUDA tensors (one chunk per (batch, key/value head) pair): PyTorch's meta
    kernels check every call's shapes and dtypes; the gradients come back shaped and typed like q, k, v."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    mode = FakeTensorMode()

    def fake_cuda(*shape):
        return FakeTensor(mode, torch.empty(shape, dtype=dtype, device="meta"), torch.device("cuda"))

    monkeypatch.setattr(attention, "kernel_for", lambda q, k, v: kind)
    monkeypatch.setattr(attention, "CHUNK_PARTS", 10**6)
    monkeypatch.setattr(attention, "CHUNK_MIN_ELEMENTS_CUDA", 1)
    # a CPU-only build cannot copy_ fake CUDA tensors (add_ it can); the real copy is checked in float64 above
    monkeypatch.setattr(attention, "_copy_into", lambda dst, src: dst.zero_().add_(src))
    B, H, H_kv, T, D = 2, 4, 2, 37, 64
    with mode:
        q, g = fake_cuda(B, H, T, D), fake_cuda(B, H, T, D)
        k, v = fake_cuda(B, H_kv, T, D), fake_cuda(B, H_kv, T, D)
        assert len(attention._head_chunks(q, k)) == B * H_kv
        out, lse = attention._kernel_forward(kind, q, k, v, 0.125)
        grads = attention.myopic_backward(g, q, k, v, out, lse, 5, 0.25, 0.125, True, path=path)
    for got, like in zip(grads, (q, k, v, k, v)):
        assert (got.shape, got.dtype, got.device.type, got.stride()) == (like.shape, like.dtype, "cuda",
                                                                          like.stride())


# Peak memory. Vanilla SDPA's forward+backward holds out, dq, dk, dv and the CPU kernel's own buffer of about one
# query-sized tensor: about five (B, H, T, D) tensors. The myopic paths must stay within MARGIN of that (before
# the chunked backward the near path took 2.7x at T = 8192, and the band path with beta > 0 1.4x). Each child runs
# with glibc's MALLOC_MMAP_THRESHOLD_ at 1 MiB: every block of 1 MiB or more is mapped on its own and returned when
# freed, so the peak resident set follows the live tensors. With glibc's default (blocks under 32 MiB from a heap
# whose reuse varies) the same code measured vanilla at 4.50-4.63 tensors and the beta band at 4.52-4.63 from
# run to run, and a median of three once read 1.0503x; with the threshold, four runs each: vanilla 4.474-4.482,
# beta band 4.529-4.530. T = 1024 with a large batch keeps each measurement to a few seconds.
MARGIN = 1.05
SIZE = dict(B=32, H=8, T=1024, D=64)


@pytest.fixture(scope="module")
def memory_env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), MALLOC_MMAP_THRESHOLD_="1048576")


REPEATS = 3  # each path is measured this many times, each in a fresh process, and its median taken (the same
# statistic for vanilla and for every myopic path; with the mmap threshold the runs differ by ~0.01 tensor)


def median_measure(spec: str, env: dict) -> dict:
    """:func:`bench_attention_memory.measure` of ``spec`` REPEATS times; the run with the median rise."""
    from bench_attention_memory import measure

    runs = sorted((measure(spec, **SIZE, env=env) for _ in range(REPEATS)), key=lambda r: r["rise_bytes"])
    return runs[len(runs) // 2]


@pytest.fixture(scope="module")
def vanilla_rise(memory_env):
    res = median_measure("vanilla", memory_env)
    # the measurement sees the fwd+bwd at all: out, dq, dk, dv and (mostly) the kernel's buffer
    assert 4.0 * res["tensor_bytes"] < res["rise_bytes"] < 5.5 * res["tensor_bytes"], res
    return res["rise_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("spec,path", [("0:0", "band"), ("0:0.5", "band"), ("64:0", "near"),
                                       ("512:0.5", "complement")])
def test_peak_memory_of_fwd_bwd_is_vanillas(memory_env, vanilla_rise, spec, path):
    """Rise of the peak resident set over one fwd+bwd, each in a fresh process (inputs made first): strict
    myopia h = 0 (band), the band with beta, a near horizon and a complement horizon, against vanilla SDPA."""
    got = median_measure(spec, memory_env)
    assert got["path"] == path, got
    ratio = got["rise_bytes"] / vanilla_rise
    assert ratio <= MARGIN, f"{spec} ({path}): {ratio:.3f}x vanilla's peak memory growth"
