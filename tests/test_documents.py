"""How a text file becomes documents (--documents): blank-line blocks, one text per file cut into contiguous
segments, or a folder read as one stream; what every command that reads text prints about it."""

from __future__ import annotations

import numpy as np
import pytest

from myopia.cli import build_parser, main
from myopia.data import load_corpus
from myopia.data.text import MIN_SEGMENTS, SEGMENT_CHARS, cut_segments, segment_size
from myopia.errors import MyopiaError

COMMANDS_THAT_READ_TEXT = ("train", "pair", "sweep", "finetune", "grad", "probe")


def _decode(corpus, d):
    ids = corpus.tokens[corpus.doc_offsets[d] : corpus.doc_offsets[d + 1] - 1]  # without the end-of-document token
    return bytes(np.asarray(ids, dtype=np.uint8)).decode("utf-8")


def test_segments_are_contiguous_and_cut_at_line_ends():
    text = "\n".join(f"line {i:04d} " + "x" * (i % 17) for i in range(400))
    size = 300
    pieces, rest = cut_segments(text, size)
    assert "\n".join(pieces + [rest]) == text  # nothing lost, nothing reordered: only the cut line breaks go
    assert all(size // 2 <= len(p) <= size for p in pieces) and len(rest) <= size
    assert all(not p.startswith("\n") and not p.endswith("\n") for p in pieces)


def test_segment_size_keeps_enough_documents_for_the_split():
    assert segment_size(10 * SEGMENT_CHARS * MIN_SEGMENTS) == SEGMENT_CHARS
    assert segment_size(5000) == 5000 // MIN_SEGMENTS


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for name, n in (("alpha", 300), ("beta", 200)):
        (d / f"{name}.txt").write_text("\n\n".join(f"{name} paragraph {i} " + "word " * (i % 7) for i in range(n)))
    return d


def test_the_three_modes_on_a_folder(folder):
    blank = load_corpus(folder, documents="blank-lines")
    per_file = load_corpus(folder, documents="file")
    stream = load_corpus(folder, documents="stream")
    assert blank.n_docs == 500  # one document per blank-line block
    assert MIN_SEGMENTS <= per_file.n_docs < 100 and MIN_SEGMENTS <= stream.n_docs < 100
    for corpus, name in ((per_file, "alpha"), (stream, "alpha")):
        first = [_decode(corpus, d) for d in range(corpus.n_docs) if corpus.doc_slices[d] == name]
        whole = (folder / f"{name}.txt").read_text()
        assert whole.startswith(first[0])  # a segment is a contiguous stretch of the text, blank lines kept
    # file: no segment runs across files; stream: the text runs on from one file into the next
    assert all(("alpha" in _decode(per_file, d)) != ("beta" in _decode(per_file, d)) for d in range(per_file.n_docs))
    assert any("alpha" in _decode(stream, d) and "beta" in _decode(stream, d) for d in range(stream.n_docs))


def test_stream_keeps_every_character_but_the_cut_line_breaks(folder):
    stream = load_corpus(folder, documents="stream")
    joined = "\n".join(_decode(stream, d) for d in range(stream.n_docs))
    assert joined == (folder / "alpha.txt").read_text().rstrip() + "\n" + (folder / "beta.txt").read_text().rstrip()


def test_records_refuse_a_text_mode_in_one_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "a b c"}\n' * 30)
    with pytest.raises(MyopiaError, match="records|record") as exc:
        load_corpus(path, documents="stream")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("command", COMMANDS_THAT_READ_TEXT)
def test_every_command_that_reads_text_takes_documents_and_tokenizer(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    flags = {s for a in sub.choices[command]._actions for s in a.option_strings}
    assert {"--documents", "--tokenizer", "--data"} <= flags


def test_train_says_what_it_read_and_warns_on_short_documents(corpus_file, tmp_path, capsys):
    args = ["train", "--data", str(corpus_file), "--out", str(tmp_path / "r"), "--steps", "2", "--batch-size", "2",
            "--seq-len", "512", "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--eval-every", "2",
            "--eval-tokens", "256"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "documents (blank-lines), median" in err and "shorter than the context window (512)" in err
    assert main([*args[:4], str(tmp_path / "q"), *args[5:], "--no-progress"]) == 0  # quiet: the warning stays
    err = capsys.readouterr().err
    assert "documents (blank-lines)" not in err and "shorter than the context window (512)" in err
    assert main([*args[:4], str(tmp_path / "s"), *args[5:], "--documents", "stream"]) == 0
    err = capsys.readouterr().err
    assert "documents (stream)" in err
    import json

    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["run"]["data_options"] == {"documents": "stream"}


def test_a_model_tokenizer_other_than_the_models_is_refused():
    from myopia.data.tokenizer import ByteTokenizer, check_model_tokenizer

    check_model_tokenizer(None, ByteTokenizer(), "m")
    check_model_tokenizer("bytes", ByteTokenizer(), "m")
    with pytest.raises(MyopiaError, match="trains a new vocabulary"):
        check_model_tokenizer("bpe:512", ByteTokenizer(), "m")
