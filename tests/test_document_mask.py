"""Document masking in our GPT and trainer: no position attends across a document boundary, in every gradient
mode, exactly (a packed batch gives the gradients of its documents run on their own, which the fused path's
brute-force tests cover); the task's document ids; the config field, the refusal of configs from before it existed, and the CLI flag."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from myopia.attention import myopic_attention
from myopia.data.corpus import corpus_from_documents
from myopia.data.lm import LMTask
from myopia.data.text import Document
from myopia.errors import MyopiaError
from myopia.masked_attention import AttentionStructure, document_positions, masked_attention_with_past
from myopia.model import GPT, GPTConfig
from myopia.train import TrainConfig

LENGTHS = (5, 7, 4)  # three documents packed into one window of 16


def _gpt(gradient="vanilla", **kw):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=23, n_layer=2, n_head=2, d_model=16, seq_len=16, gradient=gradient, **kw)
    model = GPT(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # float64 RoPE tables, so a document at positions 5.. scores exactly like the same document at 0..
    # (the model's float32 tables are relative only up to float32 rounding)
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.outer(torch.arange(cfg.seq_len, dtype=torch.float64), inv)
    ang = torch.cat([ang, ang], -1)
    model.rope_cos, model.rope_sin = ang.cos(), ang.sin()
    return model


def _packed(seed=0):
    gen = torch.Generator().manual_seed(seed)
    docs = [torch.randint(0, 23, (n + 1,), generator=gen) for n in LENGTHS]
    x = torch.cat([d[:-1] for d in docs]).unsqueeze(0)
    y = torch.cat([d[1:] for d in docs]).unsqueeze(0)
    doc_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(LENGTHS)]).unsqueeze(0)
    return docs, x, y, doc_ids


def _loss(logits, y):
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")


@pytest.mark.parametrize("gradient,beta,horizon", [("vanilla", 0.0, 0), ("myopic", 0.0, 0), ("myopic", 0.3, 1),
                                                   ("myopic-hidden", 0.0, 0), ("myopic-hidden", 0.0, 2),
                                                   ("bigram", 0.0, 0)])
@pytest.mark.parametrize("impl", ["auto", "eager"])
def test_packed_batch_equals_documents_alone(gradient, beta, horizon, impl):
    model = _gpt(gradient, beta=beta, horizon=horizon, attention_impl=impl)
    params = list(model.parameters())
    docs, x, y, doc_ids = _packed()
    alone_logits = torch.cat([model(d[:-1].unsqueeze(0)) for d in docs], dim=1)
    want = torch.autograd.grad(sum(_loss(model(d[:-1].unsqueeze(0)), d[1:].unsqueeze(0)) for d in docs), params)
    logits = model(x, doc_ids=doc_ids)
    torch.testing.assert_close(logits, alone_logits, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(_loss(logits, y), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    unmasked = torch.autograd.grad(_loss(model(x), y), params)
    assert max((a - b).abs().max() for a, b in zip(unmasked, want)) > 1e-6  # the mask really matters


def test_forward_identical_across_gradient_modes_under_document_mask():
    _, x, _, doc_ids = _packed()
    outs = []
    for g in ("vanilla", "myopic", "myopic-hidden"):
        model = _gpt(g)
        outs.append(model(x, doc_ids=doc_ids))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("gradient", ["vanilla", "myopic", "myopic-hidden"])
def test_no_gradient_crosses_a_document_boundary(gradient):
    model = _gpt(gradient)
    _, x, y, doc_ids = _packed()
    emb = model.wte(x).detach().requires_grad_()
    logits = model(embeds=emb, doc_ids=doc_ids)
    second = slice(LENGTHS[0], LENGTHS[0] + LENGTHS[1])
    g = torch.autograd.grad(_loss(logits[:, second], y[:, second]), emb)[0]
    assert torch.count_nonzero(g[:, : LENGTHS[0]]) == 0  # document 0 hears nothing from document 1's loss
    assert g[:, second].abs().max() > 1e-8


def test_local_bonus_past_under_document_mask_equals_documents_alone():
    gen = torch.Generator().manual_seed(3)
    B, H, T, D = 1, 2, sum(LENGTHS), 4
    q, k, v, pk, pv = (torch.randn(B, H, T, D, generator=gen, dtype=torch.float64, requires_grad=True)
                       for _ in range(5))
    _, _, _, doc_ids = _packed()
    out = masked_attention_with_past(q, k, v, pk, pv, AttentionStructure(doc_ids=doc_ids), chunk_size=3)
    got = torch.autograd.grad(out.square().sum(), (q, k, v, pk), allow_unused=True)
    parts, lo = [], 0
    for n in LENGTHS:
        sl = slice(lo, lo + n)
        parts.append(myopic_attention(q[..., sl, :], k[..., sl, :], v[..., sl, :], past_k=pk[..., sl, :],
                                      past_v=pv[..., sl, :]))
        lo += n
    ref = torch.cat(parts, dim=-2)
    want = torch.autograd.grad(ref.square().sum(), (q, k, v, pk), allow_unused=True)
    torch.testing.assert_close(out, ref)
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b)
    assert got[3] is None or torch.count_nonzero(got[3]) == 0  # the past is a constant


def test_document_positions():
    assert document_positions(torch.tensor([[4, 4, 4, 1, 1, 4]])).tolist() == [[0, 1, 2, 0, 1, 0]]


def _corpus(n_docs=12):
    rng = np.random.default_rng(0)
    docs = [Document(text="".join(rng.choice(list("abcdefg"), size=rng.integers(5, 30))), slice="s")
            for _ in range(n_docs)]
    return corpus_from_documents(docs, val_frac=0.2, test_frac=0.1)


def test_task_document_ids_follow_the_targets():
    corpus = _corpus()
    task = LMTask(corpus, 16, eval_tokens=64, document_mask=True)
    batch = task.examples(np.arange(6))
    eos = corpus.tokenizer.eos_id
    x, y, doc = batch["x"].numpy(), batch["y"].numpy(), batch["doc"].numpy()
    assert doc.shape == x.shape and np.all(np.diff(doc, axis=1) >= 0)
    # an input end-of-document token opens the next document (its target is that document's first token)
    rows, cols = np.nonzero(x[:, 1:] == eos)
    assert len(rows) > 0 and np.all(doc[rows, cols + 1] == doc[rows, cols] + 1)
    # a document ends with its own end-of-document target
    r, c = np.nonzero(y[:, :-1] == eos)
    assert np.all(doc[r, c + 1] == doc[r, c] + 1)
    assert task.describe()["document_mask"] is True
    assert "document_mask" not in LMTask(corpus, 16, eval_tokens=64).describe()
    assert task.eval_docs().shape == task.eval_windows()[0].shape


def test_masked_task_loss_and_evaluation_run_through_the_mask():
    corpus = _corpus()
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, n_layer=1, n_head=2, d_model=16, seq_len=16))
    on, off = LMTask(corpus, 16, eval_tokens=64, document_mask=True), LMTask(corpus, 16, eval_tokens=64)
    batch_on, batch_off = on.examples(np.arange(4)), off.examples(np.arange(4))
    assert torch.equal(batch_on["x"], batch_off["x"])
    assert on.loss(model, batch_on).item() != off.loss(model, batch_off).item()
    assert on.evaluate(model)["loss"] != off.evaluate(model)["loss"]


def test_config_field_default_old_configs_refused_and_cli(tmp_path):
    assert TrainConfig().document_mask is True
    with pytest.raises(MyopiaError, match=r"written by myopia < 0\.2\.0.*retrain or use myopia 0\.1\.x"):
        TrainConfig.from_dict({"steps": 3})  # saved before the field existed
    assert TrainConfig.from_dict({"steps": 3, "document_mask": True}).document_mask is True
    with pytest.raises(MyopiaError, match="document_mask"):
        TrainConfig(document_mask="yes")

    from myopia.cli import build_parser
    from myopia.cli.common import train_config

    parser = build_parser()
    base = ["train", "--data", "x", "--out", "y"]
    assert train_config(parser.parse_args(base)).document_mask is True
    assert train_config(parser.parse_args(base + ["--no-document-mask"])).document_mask is False


def test_training_records_the_mask_and_old_runs_are_refused(tmp_path, corpus_file, capsys):
    from myopia.cli import main
    from _tiny_run import tiny_args

    out = tmp_path / "run"
    assert main(tiny_args(corpus_file, out, steps=2)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["document_mask"] is True and config["task"]["document_mask"] is True

    # an old run (myopia < 0.2.0): its config has no document_mask; resuming it is refused in one line
    old = tmp_path / "old"
    assert main(tiny_args(corpus_file, old, steps=2, no_document_mask=True)) == 0
    c = json.loads((old / "config.json").read_text())
    c["train"].pop("document_mask")
    (old / "config.json").write_text(json.dumps(c))
    result = (old / "result.json").read_bytes()
    capsys.readouterr()
    assert main(tiny_args(corpus_file, old, steps=2, resume=True)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "written by myopia < 0.2.0" in err and "0.1.x" in err
    assert (old / "result.json").read_bytes() == result  # nothing rewritten


def test_document_mask_under_torch_compile():
    """The masked path runs eagerly inside a compiled model (a graph break, not an error): same values."""
    model = GPT(GPTConfig(vocab_size=17, n_layer=1, n_head=2, d_model=16, seq_len=16, gradient="myopic-hidden"))
    x, d = torch.randint(0, 17, (2, 16)), torch.tensor([[0] * 5 + [1] * 11, [3] * 16])
    ref = model(x, doc_ids=d)
    model.compile(backend="eager")
    out = model(x, doc_ids=d)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
