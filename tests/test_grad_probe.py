"""`myopia grad` (myopic/future gradient decomposition) and `myopia probe` (future-token probes)."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from _hf_tiny import V, brute_force_loss, hidden_brute_force_loss, tiny  # noqa: E402
from test_hf_runs import write_corpus  # noqa: E402

from myopia.cli import main  # noqa: E402
from myopia.gradsplit import decompose, parameter_groups, split_stats  # noqa: E402
from myopia.hf.model import HFCausalLM  # noqa: E402
from myopia.io import read_json  # noqa: E402
from myopia.model import GPT, GPTConfig  # noqa: E402
from myopia.probes import fit_probe, future_pairs, probe_model  # noqa: E402


def _flat(grads):
    return np.concatenate([g.detach().double().reshape(-1).numpy() for g in grads])


def _independent_stats(total, myopic):
    t, m = _flat(total), _flat(myopic)
    f = t - m
    cos = lambda a, b: float(a @ b / np.sqrt((a @ a) * (b @ b)))  # noqa: E731
    return {"norm_total": np.linalg.norm(t), "norm_myopic": np.linalg.norm(m), "norm_future": np.linalg.norm(f),
            "cos_myopic_future": cos(m, f), "cos_myopic_total": cos(m, t), "cos_future_total": cos(f, t),
            "future_share": float(f @ t / (t @ t))}


@pytest.mark.slow
def test_decomposition_of_a_hf_model_matches_brute_force():
    hf = tiny("pythia")
    x = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(0))
    params = dict(hf.named_parameters())
    n = x[:, 1:].numel()
    total = torch.autograd.grad(torch.nn.functional.cross_entropy(
        hf(x[:, :-1], use_cache=False).logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum") / n,
        list(params.values()))
    strict = torch.autograd.grad(brute_force_loss(hf, x) / n, list(params.values()))
    hidden = torch.autograd.grad(hidden_brute_force_loss(hf, x) / n, list(params.values()))

    model = HFCausalLM(hf)
    d = decompose(model, x[:, :-1], x[:, 1:])
    assert model.cfg.gradient == "vanilla"  # restored
    names = ["hf." + name for name in params]  # HFCausalLM holds the transformers model as .hf
    assert list(d["total"]) == names
    for part, want in (("myopic", strict), ("myopic-hidden", hidden)):
        for name, t, w in zip(names, total, want):
            m, f = d[part]["myopic"][name], d[part]["future"][name]
            torch.testing.assert_close(m + f, d["total"][name], rtol=0, atol=1e-17)  # float64 rounding only
            torch.testing.assert_close(d["total"][name], t.double(), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(m, w.double(), rtol=1e-9, atol=1e-11)
        stats = split_stats(d["total"], d[part]["myopic"], parameter_groups(names))
        for key, value in _independent_stats(total, want).items():
            assert stats["all"][key] == pytest.approx(value, rel=1e-8), (part, key)
        assert stats["all"]["myopic_share"] + stats["all"]["future_share"] == pytest.approx(1.0, abs=1e-12)
        layer1 = [i for i, n_ in enumerate(names) if ".layers.1." in n_]
        sub = _independent_stats([total[i] for i in layer1], [want[i] for i in layer1])
        assert stats["layer.1"]["norm_future"] == pytest.approx(sub["norm_future"], rel=1e-8)
        assert stats["layer.1"]["cos_myopic_future"] == pytest.approx(sub["cos_myopic_future"], rel=1e-8)


def test_myopic_plus_future_is_exactly_total_for_float32_models():
    """Gradients of a float32 model are decomposed in float64, where total - myopic is exact (two float32
    numbers within 2^28 of each other differ by a float64 number), so myopic + future == total bit for bit."""
    model = HFCausalLM(tiny("llama", dtype=torch.float32))
    x = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(0))
    d = decompose(model, x[:, :-1], x[:, 1:])
    for part in ("myopic", "myopic-hidden"):
        assert any((d[part]["future"][k] != 0).any() for k in d["total"])
        for name, t in d["total"].items():
            assert torch.equal(d[part]["myopic"][name] + d[part]["future"][name], t)


def test_decomposition_of_our_gpt_matches_position_by_position_past():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, n_layer=2, n_head=2, d_model=16, seq_len=8)).double()
    x = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(1))
    params = list(model.parameters())
    with torch.no_grad():
        kv: list = []
        model(x[:, :-1], kv_out=kv)
    loss = 0.0
    for i in range(6):  # position i reads constant keys/values j < i, its own live
        past = [(k[:, :, : i + 1], v[:, :, : i + 1]) for k, v in kv]
        logits = model(x[:, : i + 1], past_kv=past)[:, -1]
        loss = loss + torch.nn.functional.cross_entropy(logits, x[:, i + 1], reduction="sum")
    want = torch.autograd.grad(loss / x[:, 1:].numel(), params)
    d = decompose(model, x[:, :-1], x[:, 1:], parts=("myopic",))
    for (name, _), w in zip(model.named_parameters(), want):
        torch.testing.assert_close(d["myopic"]["myopic"][name], w, rtol=1e-9, atol=1e-12)
    groups = parameter_groups(list(d["total"]))
    assert {"kind.attention", "kind.mlp", "kind.norm", "kind.embedding", "layer.0", "layer.1.attention"} <= set(groups)
    assert sorted(sum((groups[f"kind.{k}"] for k in ("attention", "mlp", "norm", "embedding")), [])) == sorted(
        groups["all"])


@pytest.mark.slow
def test_grad_cli_over_snapshots(tmp_path):
    from test_hf_runs import tiny_pythia_dir

    base = tiny_pythia_dir(tmp_path)
    data = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(base), "--data", str(data), "--out", str(out), "--arms", "vanilla",
                 "--steps", "4", "--batch-size", "4", "--seq-len", "16", "--ckpt-every", "2", "--snapshot-every", "2",
                 "--eval-tokens", "128", "--no-progress"]) == 0
    assert main(["grad", str(base), str(out / "vanilla"), "--snapshots", "--data", str(data),
                 "--out", str(tmp_path / "g"), "--windows", "3", "--seq-len", "16"]) == 0
    summary = read_json(tmp_path / "g" / "grad.json")
    # the pretrained HF directory, then the snapshots (the last snapshot is the final model)
    assert [(r["kind"], r["step"]) for r in summary["results"]] == [("hf-pretrained", None), ("hf", 2), ("hf", 4)]
    assert summary["sample"]["seq_len"] == 16 and summary["sample"]["tokens"] == 48
    for r in summary["results"]:
        for part in ("myopic", "myopic-hidden"):
            a = r[part]["all"]
            assert math.isfinite(a["norm_future"]) and -1 <= a["cos_myopic_future"] <= 1
    assert (tmp_path / "g" / "grad.png").stat().st_size > 1000


@pytest.mark.slow
def test_future_pairs_alignment_with_a_model_that_reads_ahead():
    """A fake 'model' whose state at t is the one-hot token at t+2: the probe finds it at k=2 only."""

    class ReadsAhead(torch.nn.Module):
        def __init__(self, windows):
            super().__init__()
            self.windows = windows

        def forward(self, idx, hidden_out=None):
            rows = [i for i in range(len(self.windows)) if torch.equal(self.windows[i, :-1], idx[0])]
            w = self.windows[rows[0] : rows[0] + len(idx)]
            ahead = torch.cat([w[:, 2:], torch.zeros(len(w), 1, dtype=torch.long)], 1)  # token at t+2
            hidden_out.extend([torch.nn.functional.one_hot(ahead, 10).float()])
            return None

    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 10, (40, 9), generator=gen)
    train = windows[:20]
    res_train = probe_model(ReadsAhead(train), train, train, layers=[0], ks=[1, 2], steps=200)
    assert res_train[0][2]["accuracy"] == 1.0 and res_train[0][1]["accuracy"] < 0.4
    x, y = future_pairs(torch.zeros(20, 8, 3), train, 3)
    assert x.shape == (20 * 6, 3) and torch.equal(y.view(20, 6), train[:, 3:])


@pytest.mark.slow
def test_fit_probe_separable_and_chance():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 8, generator=gen) * 4
    y = torch.randint(0, 5, (600,), generator=gen)
    x = centers[y] + 0.3 * torch.randn(600, 8, generator=gen)
    good = fit_probe(x[:400], y[:400], x[400:], y[400:], steps=200)
    assert good["accuracy"] > 0.97 and good["ce"] < good["baseline_ce"]
    noise = fit_probe(torch.randn(400, 8, generator=gen), y[:400], torch.randn(200, 8, generator=gen), y[400:],
                      steps=200)
    assert noise["accuracy"] < 0.4 and noise["ce"] > noise["baseline_ce"] - 0.05
    capped = fit_probe(x[:400], y[:400] * 7, x[400:], y[400:] * 7, classes=3, steps=50)
    assert capped["classes"] == 3 and capped["other_fraction_test"] > 0


@pytest.mark.slow
def test_probe_cli_on_a_pair(tmp_path):
    from myopia.lm import train_lm
    from myopia.train import TrainConfig

    data = write_corpus(tmp_path / "corpus.txt", n_docs=80)
    for arm in ("vanilla", "myopic", "myopic-hidden"):
        train_lm(data, tmp_path / "pair" / arm, GPTConfig(n_layer=2, d_model=32, n_head=4, seq_len=32, gradient=arm),
                 TrainConfig(steps=3, batch_size=4, eval_every=0, ckpt_every=0, progress=False), eval_tokens=128)
    assert main(["probe", "--pair", str(tmp_path / "pair"), "--data", str(data), "--out", str(tmp_path / "p"),
                 "--windows", "8", "--seq-len", "32", "--steps", "30", "--layers", "0,2", "--ks", "1,2"]) == 0
    summary = read_json(tmp_path / "p" / "probe.json")
    assert set(summary["models"]) == {"vanilla", "myopic", "myopic-hidden"}
    res = summary["models"]["myopic"]
    assert res["trained_gradient"] == "myopic" and set(res["layers"]) == {"0", "2"}
    assert set(res["layers"]["2"]) == {"1", "2"} and 0 <= res["layers"]["2"]["1"]["accuracy"] <= 1
    assert res["layers"]["2"]["2"]["ce_se"] > 0 and res["layers"]["2"]["2"]["test_pairs"] == 8 * 31
    assert (tmp_path / "p" / "probe.png").stat().st_size > 1000
    assert main(["probe", "--data", str(data), "--out", str(tmp_path / "q")]) == 2
