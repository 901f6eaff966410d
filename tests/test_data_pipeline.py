"""Corpus pipeline: readers, document-level split, tokenizers, token cache, and bad inputs."""

import json
import os
import random
import time

import numpy as np
import pytest

from myopia.data import LMTask, load_corpus
from myopia.data.cache import build_cache, is_cache, open_cache, stale_reason
from myopia.data.sources import DataSource
from myopia.data.text import split_documents
from myopia.data.tokenizer import BPETokenizer, ByteTokenizer, make_tokenizer
from myopia.errors import MyopiaError

WORDS = "the cat sat on a mat and dog ran far away home naïve café".split()


def make_docs(n, seed=0, prefix="doc"):
    rng = random.Random(seed)
    return [f"{prefix}{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40))) for i in range(n)]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "genres"
    d.mkdir()
    (d / "news.txt").write_text("\n\n".join(make_docs(12, 1, "news")) + "\n")
    (d / "fiction.txt").write_text("\n\n \n".join(make_docs(9, 2, "fic")) + "\n")
    return d


def texts_of(corpus, docs):
    tok = corpus.tokenizer
    return [tok.decode(corpus.tokens[corpus.doc_offsets[d] : corpus.doc_offsets[d + 1]]) for d in docs]


# ---- readers ---------------------------------------------------------------------------------------------------


def test_text_file_documents_are_separated_by_blank_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first line\nsecond line\n\n  \t\nthird\r\n\r\n\n\nfourth\n")
    docs = list(DataSource.from_spec(p).documents())
    assert [d.text for d in docs] == ["first line\nsecond line", "third", "fourth"]
    assert all(d.slice == "a" for d in docs)
    assert split_documents("x\n\ny\n \nz") == ["x", "y", "z"]


def test_folder_slices_are_file_stems(folder):
    corpus = load_corpus(folder)
    assert corpus.n_docs == 21
    assert sorted(set(corpus.doc_slices)) == ["fiction", "news"]
    news = [i for i, s in enumerate(corpus.doc_slices) if s == "news"]
    assert all(t.startswith("news") for t in texts_of(corpus, news))


def test_jsonl_reader_with_label(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"body": t, "genre": "g%d" % (i % 3)} for i, t in enumerate(make_docs(10))]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = list(DataSource.from_spec(p, text_field="body", label_field="genre").documents())
    assert [d.text for d in docs] == [r["body"] for r in rows]
    assert [d.slice for d in docs] == [r["genre"] for r in rows]
    # without a label field the slice is the file stem
    assert {d.slice for d in DataSource.from_spec(p, text_field="body").documents()} == {"d"}


def test_parquet_reader_with_label(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = make_docs(7)
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": texts, "label": [f"s{i % 2}" for i in range(7)]}), p)
    docs = list(DataSource.from_spec(p, label_field="label").documents())
    assert [d.text for d in docs] == texts and [d.slice for d in docs] == [f"s{i % 2}" for i in range(7)]


def test_hugging_face_dataset_from_disk_and_by_path(tmp_path):
    import datasets

    texts = make_docs(8)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "topic": datasets.ClassLabel(names=["sport", "arts"])})
    ds = datasets.Dataset.from_dict({"text": texts, "topic": [i % 2 for i in range(8)]}, features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    src = DataSource.from_spec(tmp_path / "ds", label_field="topic")
    assert src.kind == "hf-disk"
    docs = list(src.documents())
    assert [d.text for d in docs] == texts
    assert [d.slice for d in docs] == ["sport", "arts"] * 4  # ClassLabel ids become names
    # a DatasetDict: every split, in order, unless --hf-split picks some
    datasets.DatasetDict({"train": ds.select(range(5)), "test": ds.select(range(5, 8))}).save_to_disk(
        str(tmp_path / "dd"))
    assert [d.text for d in DataSource.from_spec(tmp_path / "dd").documents()] == texts
    assert [d.text for d in DataSource.from_spec(tmp_path / "dd", hf_split="test").documents()] == texts[5:]
    # hf:PATH goes through datasets.load_dataset (here a local folder of parquet files, no network)
    (tmp_path / "hub").mkdir()
    ds.to_parquet(str(tmp_path / "hub" / "train.parquet"))
    hub = DataSource.from_spec(f"hf:{tmp_path / 'hub'}", hf_split="train")
    assert hub.kind == "hf-hub" and [d.text for d in hub.documents()] == texts
    assert len(hub.fingerprint()) == 16


# ---- split ---------------------------------------------------------------------------------------------------


def test_split_is_by_document_and_seeded(folder):
    corpus = load_corpus(folder, val_frac=0.2, test_frac=0.2, split_seed=3)
    parts = {s: set(texts_of(corpus, corpus.split_docs(s))) for s in ("train", "val", "test")}
    everything = set(texts_of(corpus, range(corpus.n_docs)))
    assert parts["train"] | parts["val"] | parts["test"] == everything
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert not (parts["val"] & parts["test"])
    assert len(parts["val"]) == 4 and len(parts["test"]) == 4
    # the training stream is exactly the training documents, each whole, in order
    train = corpus.split_docs("train")
    stream = np.concatenate([corpus.tokens[corpus.doc_offsets[d] : corpus.doc_offsets[d + 1]] for d in train])
    np.testing.assert_array_equal(corpus.split_tokens("train"), stream)
    np.testing.assert_array_equal(LMTask(corpus, 16).train_tokens, stream)
    # same seed, same split; another seed, another split
    again = load_corpus(folder, val_frac=0.2, test_frac=0.2, split_seed=3)
    np.testing.assert_array_equal(again.doc_split, corpus.doc_split)
    other = load_corpus(folder, val_frac=0.2, test_frac=0.2, split_seed=4)
    assert not np.array_equal(other.doc_split, corpus.doc_split)


# ---- tokenizers ----------------------------------------------------------------------------------------------

SAMPLE = "Naïve café — 東京 at 10:45!\n\tTabs,  double  spaces; emoji 🙂."


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert tok.encode_batch(["ab", "c"]) == [[97, 98], [99]]


def test_bpe_round_trip_and_save(tmp_path):
    tok = BPETokenizer.train(make_docs(200) * 2, 300)
    assert tok.vocab_size == 300 and tok.token_text(tok.eos_id) == "<|endoftext|>"
    ids = tok.encode(SAMPLE)
    assert tok.decode(ids) == SAMPLE
    assert len(tok.encode("the cat sat on a mat")) < len("the cat sat on a mat")  # merges learned
    tok.save(tmp_path)
    again = make_tokenizer(str(tmp_path / "tokenizer.json"))
    assert again.fingerprint() == tok.fingerprint() and again.encode(SAMPLE) == ids


def test_hugging_face_tokenizer_round_trip(tmp_path):
    from transformers import PreTrainedTokenizerFast

    bpe = BPETokenizer.train(make_docs(100), 280)
    PreTrainedTokenizerFast(tokenizer_object=bpe.tok, eos_token="<|endoftext|>").save_pretrained(tmp_path / "hf")
    tok = make_tokenizer(f"hf:{tmp_path / 'hf'}")
    assert tok.kind == "hf" and tok.vocab_size == 280 and tok.eos_id == bpe.eos_id
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert tok.encode(SAMPLE) == bpe.encode(SAMPLE)
    assert make_tokenizer(str(tmp_path / "hf")).fingerprint() == tok.fingerprint()  # a folder works too


# ---- token cache ---------------------------------------------------------------------------------------------


def test_cache_matches_in_memory_corpus_and_is_memory_mapped(folder, tmp_path):
    cache = tmp_path / "cache"
    cached = load_corpus(folder, cache=cache, val_frac=0.2, test_frac=0.2)
    plain = load_corpus(folder, val_frac=0.2, test_frac=0.2)
    assert isinstance(cached.tokens, np.memmap)
    np.testing.assert_array_equal(np.asarray(cached.tokens), plain.tokens)
    np.testing.assert_array_equal(cached.doc_offsets, plain.doc_offsets)
    np.testing.assert_array_equal(cached.doc_split, plain.doc_split)
    assert cached.doc_slices == plain.doc_slices
    # a cache folder given as data opens as it is
    assert load_corpus(cache).n_docs == plain.n_docs and is_cache(cache)


def test_cache_reuse_and_invalidation(folder, tmp_path):
    cache = tmp_path / "cache"
    c1 = build_cache(folder, "bytes", cache)
    stamp = (cache / "tokens.bin").stat().st_mtime_ns
    c2 = build_cache(folder, "bytes", cache)  # same key: reused, not rebuilt
    assert (cache / "tokens.bin").stat().st_mtime_ns == stamp and c2.n_docs == c1.n_docs
    # the source changed: rebuilt with the new document
    time.sleep(0.01)
    with open(folder / "news.txt", "a") as f:
        f.write("\nnews-extra a brand new document about the cat\n")
    c3 = build_cache(folder, "bytes", cache)
    assert c3.n_docs == c1.n_docs + 1
    # another tokenizer or split: rebuilt
    c4 = build_cache(folder, "bpe:300", cache)
    assert c4.tokenizer.kind == "bpe" and c4.vocab_size == 300
    assert build_cache(folder, "bpe:300", cache).tokenizer.fingerprint() == c4.tokenizer.fingerprint()
    c5 = build_cache(folder, "bpe:300", cache, split_seed=7)
    assert not np.array_equal(c5.doc_split, c4.doc_split)
    # a truncated token file is noticed
    with open(cache / "tokens.bin", "r+b") as f:
        f.truncate(10)
    from myopia.data.cache import cache_key, _tokenizer_key

    key = cache_key(DataSource.from_spec(folder), _tokenizer_key("bpe:300")[0], 0.05, 0.05, 7)
    assert "truncated" in stale_reason(cache, key)
    assert build_cache(folder, "bpe:300", cache, split_seed=7).n_docs == c5.n_docs


def test_cache_refuses_a_mismatched_tokenizer_and_foreign_folders(folder, tmp_path):
    build_cache(folder, "bpe:300", tmp_path / "c")
    with pytest.raises(MyopiaError, match="tokenizer mismatch"):
        open_cache(tmp_path / "c", expect_tokenizer="bytes")
    other = tmp_path / "notacache"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(MyopiaError, match="not a token cache"):
        build_cache(folder, "bytes", other)


# ---- bad inputs: one line, naming the problem ----------------------------------------------------------------


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_empty_corpus(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n \n\t\n")
    with pytest.raises(MyopiaError) as e:
        load_corpus(p)
    assert "empty" in one_line(e)
    with pytest.raises(MyopiaError) as e:
        build_cache(p, "bytes", tmp_path / "c")
    assert "empty" in one_line(e) and not (tmp_path / "c").exists()


def test_unreadable_files(tmp_path):
    p = tmp_path / "binary.txt"
    p.write_bytes(b"fine\n\n\xff\xfe\x00 not text")
    with pytest.raises(MyopiaError) as e:
        load_corpus(p)
    assert "not UTF-8" in one_line(e) and "binary.txt" in str(e.value)
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(MyopiaError) as e:
        load_corpus(bad)
    assert "cannot read" in one_line(e) and "broken.parquet" in str(e.value)
    j = tmp_path / "bad.jsonl"
    j.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(MyopiaError) as e:
        load_corpus(j)
    assert "line 2" in one_line(e)
    with pytest.raises(MyopiaError) as e:
        load_corpus(tmp_path / "missing.txt")
    assert "does not exist" in one_line(e)


def test_missing_text_field(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    j = tmp_path / "d.jsonl"
    j.write_text('{"content": "hello"}\n')
    with pytest.raises(MyopiaError) as e:
        load_corpus(j)
    assert "no field 'text'" in one_line(e) and "content" in str(e.value)
    pq.write_table(pa.table({"content": ["a"]}), tmp_path / "d.parquet")
    with pytest.raises(MyopiaError) as e:
        load_corpus(tmp_path / "d.parquet")
    assert "no field 'text'" in one_line(e)
    datasets.Dataset.from_dict({"content": ["a b c"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(MyopiaError) as e:
        load_corpus(tmp_path / "ds")
    assert "no field 'text'" in one_line(e)
    with pytest.raises(MyopiaError) as e:
        load_corpus(j, text_field="content", label_field="genre")
    assert "no field 'genre'" in one_line(e)


def test_bad_tokenizer_specs(tmp_path):
    with pytest.raises(MyopiaError, match="bpe:N"):
        make_tokenizer("bpe:lots")
    with pytest.raises(MyopiaError, match="unknown tokenizer"):
        make_tokenizer("nonsense")
    with pytest.raises(MyopiaError, match="cannot load Hugging Face tokenizer"):
        make_tokenizer(f"hf:{tmp_path / 'nowhere'}")


def test_cli_data_build_and_info(folder, tmp_path, capsys):
    from myopia.cli import main

    out = tmp_path / "cache"
    assert main(["data", "build", "--data", str(folder), "--out", str(out), "--no-progress"]) == 0
    assert "21 documents" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "news" in info and "fiction" in info and "bytes" in info
    assert main(["data", "build", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data path") and err.count("\n") == 1
    os.environ.pop("MYOPIA_DEBUG", None)


def test_train_accepts_a_bpe_token_cache(folder, tmp_path):
    from myopia.lm import train_lm
    from myopia.model import GPTConfig
    from myopia.train import TrainConfig

    build_cache(folder, "bpe:300", tmp_path / "cache", val_frac=0.2, test_frac=0.2)
    result = train_lm(tmp_path / "cache", tmp_path / "run", GPTConfig(n_layer=1, n_head=2, d_model=16, seq_len=8),
                      TrainConfig(steps=2, batch_size=2, progress=False), eval_tokens=64)
    assert result["config"]["run"]["model"]["vocab_size"] == 300
    assert result["config"]["task"]["corpus"]["tokenizer"]["kind"] == "bpe"
