"""HFCausalLM, tied-weight checkpoints, `myopia finetune`, `myopia export` and load_run_model."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from _hf_tiny import (  # noqa: E402,F401
    V, assert_grads_close, grads, position_logits_with_cache, tiny, token_loss)

from myopia.checkpoint import load_tensors, save_model  # noqa: E402
from myopia.cli import main  # noqa: E402
from myopia.hf.model import HFCausalLM  # noqa: E402
from myopia.io import read_json, read_jsonl  # noqa: E402
from myopia.rundir import load_run_model  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "from", "home", "at", "night"]


def write_corpus(path, n_docs=60, seed=0):
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(WORDS, size=rng.integers(20, 60))) + "." for _ in range(n_docs)]
    path.write_text("\n\n".join(docs))
    return path


def tiny_pythia_dir(tmp_path):
    """A tiny random GPT-NeoX with the byte-level HF tokenizer, saved like a hub checkpoint."""
    import transformers as tr

    from myopia.hf.tokenizer import bytes_tokenizer

    torch.manual_seed(0)
    cfg = tr.GPTNeoXConfig(vocab_size=260, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, bos_token_id=256, eos_token_id=256)
    path = tmp_path / "tiny-pythia"
    tr.GPTNeoXForCausalLM(cfg).save_pretrained(path)
    bytes_tokenizer().save_pretrained(path)
    return path


def test_wrapper_matches_model_and_past_kv_matches_frozen_cache_brute_force():
    hf = tiny("llama")
    frozen = tiny("llama", seed=1)
    x = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(3))
    params = list(hf.parameters())
    ref_logits = hf(x[:, :-1], use_cache=False).logits.detach()
    # Brute force: position i reads the frozen model's keys/values for j < i (HF cache), its own live.
    want_loss = sum(token_loss(position_logits_with_cache(hf, x, i, cache_from=frozen), x[:, i + 1])
                    for i in range(x.shape[1] - 1))
    want = grads(want_loss, params)

    model, frozen_w = HFCausalLM(hf), HFCausalLM(frozen)
    torch.testing.assert_close(model(x[:, :-1]), ref_logits, rtol=0, atol=0)
    hs, kv = [], []
    model(x[:, :-1], hidden_out=hs, kv_out=kv)
    assert len(hs) == model.cfg.n_layer + 1 and len(kv) == model.cfg.n_layer
    assert kv[0][0].shape == (2, 2, 6, 8)  # (B, H_kv, T, D): grouped-query keys
    # the model's own keys/values as the past reproduce its forward pass
    torch.testing.assert_close(model(x[:, :-1], past_kv=kv), ref_logits, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        past: list = []
        frozen_w(x[:, :-1], kv_out=past)
    loss = token_loss(model(x[:, :-1], past_kv=past), x[:, 1:])
    torch.testing.assert_close(loss, want_loss.detach(), rtol=1e-9, atol=1e-9)
    assert_grads_close(grads(loss, params), want, rtol=1e-5, atol=1e-8)  # Llama RMSNorm runs in float32


def test_tied_weights_are_saved_once_and_restored(tmp_path):
    model = HFCausalLM(tiny("gpt2", dtype=torch.float32))
    assert model.hf.lm_head.weight is model.hf.transformer.wte.weight
    save_model(tmp_path / "m.safetensors", model, {"step": 3})
    tensors, meta = load_tensors(tmp_path / "m.safetensors")
    assert meta == {"step": 3}
    assert torch.equal(tensors["hf.lm_head.weight"], tensors["hf.transformer.wte.weight"])
    other = HFCausalLM(tiny("gpt2", dtype=torch.float32, seed=5))
    other.load_state_dict(tensors)
    x = torch.randint(0, V, (1, 5))
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    assert other.hf.lm_head.weight is other.hf.transformer.wte.weight  # still tied


def test_finetune_protocol_end_to_end(tmp_path):
    base = tiny_pythia_dir(tmp_path)
    data = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "ft"
    code = main(["finetune", "--model", str(base), "--data", str(data), "--out", str(out), "--steps", "4",
                 "--batch-size", "4", "--seq-len", "16", "--eval-every", "2", "--ckpt-every", "2", "--log-every", "1",
                 "--snapshot-every", "2", "--eval-tokens", "256", "--lr", "3e-3", "--no-progress", "--device", "cpu"])
    assert code == 0
    summary = read_json(out / "finetune.json")
    assert set(summary["arms"]) == {"vanilla", "myopic", "myopic-hidden"}
    assert set(summary["gap_vs_vanilla"]) == {"myopic", "myopic-hidden"}
    assert summary["train"]["precision"] == "fp32" and summary["versions"]["transformers"]
    first, last = {}, {}
    for arm in ("vanilla", "myopic", "myopic-hidden"):
        run = out / arm
        for name in ("config.json", "metrics.jsonl", "result.json", "checkpoints", "model.safetensors",
                     "tokenizer/tokenizer.json", "hf/config.json", "snapshots/step_0000002.safetensors"):
            assert (run / name).exists(), f"{arm}: {name} missing"
        cfg = read_json(run / "config.json")
        assert cfg["run"]["gradient"] == arm and cfg["run"]["model_kind"] == "hf"
        losses = [r["train_loss"] for r in read_jsonl(run / "metrics.jsonl") if "train_loss" in r]
        first[arm], last[arm] = losses[0], losses[-1]
        # load_run_model gives the trained model; it equals the exported transformers directory
        model = load_run_model(run)
        assert isinstance(model, HFCausalLM) and model.cfg.gradient == arm
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(run / "hf").eval()
        x = torch.randint(0, 257, (2, 16))
        with torch.no_grad():
            torch.testing.assert_close(model(x), hf(x).logits, rtol=1e-6, atol=1e-6)
    # same start, same first batch: identical first-step loss; afterwards the gradients differ
    assert first["myopic"] == pytest.approx(first["vanilla"], rel=1e-6)
    assert first["myopic-hidden"] == pytest.approx(first["vanilla"], rel=1e-6)
    assert len({round(v, 6) for v in last.values()}) == 3
    gap = summary["gap_vs_vanilla"]["myopic"]
    direct = summary["arms"]["myopic"]["test_loss"] - summary["arms"]["vanilla"]["test_loss"]
    assert gap["mean"] == pytest.approx(direct, abs=1e-9) and gap["ci95"][0] <= gap["mean"] <= gap["ci95"][1]
    # one seed, documents resampled (as in myopia gap), and it says so
    assert gap["training_noise"] == "not measured (1 seed)" and gap["unit"] == "document" and gap["documents"] >= 1
    assert summary["training_noise"] == "not measured (1 seed)"


def test_finetune_bad_inputs(tmp_path, capsys):
    data = write_corpus(tmp_path / "corpus.txt")
    assert main(["finetune", "--model", str(tmp_path / "nope"), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--steps", "1", "--no-progress"]) == 2
    assert "cannot load" in capsys.readouterr().err
    base = tiny_pythia_dir(tmp_path)
    assert main(["finetune", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "o2"),
                 "--steps", "1", "--seq-len", "100", "--no-progress"]) == 2
    assert "exceeds the model's context" in capsys.readouterr().err
    assert main(["finetune", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "o3"),
                 "--arms", "vanilla,sideways", "--steps", "1", "--no-progress"]) == 2


def test_export_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from myopia.lm import train_lm
    from myopia.model import GPTConfig
    from myopia.train import TrainConfig

    data = write_corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    train_lm(data, run, GPTConfig(n_layer=2, d_model=32, n_head=4, seq_len=32, gradient="myopic", bias=True),
             TrainConfig(steps=3, batch_size=4, eval_every=0, ckpt_every=0, log_every=1, progress=False),
             eval_tokens=256)
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    ours = load_run_model(run)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "the cat sat — déjà vu"
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    assert ids[0].tolist() == list(text.encode("utf-8"))
    x = torch.cat([ids, torch.randint(0, 257, (1, 32 - ids.shape[1]))], 1)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), rtol=1e-5, atol=1e-5)
    summary = json.loads((tmp_path / "hf" / "myopia_export.json").read_text())
    assert summary["trained_gradient"] == "myopic" and summary["tokenizer"] == "bytes"
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 2  # refuses a non-empty directory
