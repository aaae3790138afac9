"""The data kinds: the chooser, the registry's common surface, the single-class check for every kind
with a target, fitting on the training split, and reading prediction inputs back per kind."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import ConfigError, DataError
from damoxing.data.kinds import DATA_KINDS, DataKind, choose_kind
from damoxing.data.pipeline import Preprocessing, prepare_data, read_inputs
from damoxing.data.sources import load_source
from damoxing.models import data_needs
from damoxing.spec import load_config


def config(source, model="mlp", task=None, **data):
    return load_config({"task": task, "data": {"source": str(source), **data}, "model": {"type": model, "size": "tiny"}})


def prepare(cfg):
    return prepare_data(cfg, data_needs(cfg.model))


def kind_of(source, model, **data):
    cfg = config(source, model, **data)
    return choose_kind(load_source(str(source)), cfg, data_needs(cfg.model)).name


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"review": ["good day", "bad day", "fine"] * 10, "label": ["a", "b", "a"] * 10}).to_csv(tmp_path / "texts.csv", index=False)
    pd.DataFrame({f"s{i}": rng.normal(size=30) for i in range(5)} | {"y": np.arange(30) % 2}).to_csv(tmp_path / "numbers.csv", index=False)
    np.savez(tmp_path / "images.npz", x=rng.integers(0, 256, (30, 3, 5, 5), dtype=np.uint8), y=np.arange(30) % 3)
    (tmp_path / "corpus.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    return tmp_path


# ------------------------------------------------------------------------------------ the chooser


def test_the_kind_follows_the_raw_data_and_what_the_model_reads(files):
    assert kind_of("builtin:iris", "mlp") == "table"
    assert kind_of(files / "texts.csv", "transformer") == "text"  # a text column, for a text model
    assert kind_of(files / "numbers.csv", "rnn") == "sequence"  # numbers only: one sequence per row
    assert kind_of(files / "numbers.csv", "gpt") == "text"  # gpt takes no sequences; the text kind then says why not
    assert kind_of("builtin:digits_images", "cnn") == "image"
    assert kind_of("builtin:digits_images", "rnn") == "sequence"  # rows of pixels as steps
    assert kind_of(files / "images.npz", "transformer") == "sequence"  # (the sequence kind refuses 3 channels)
    assert kind_of(files / "corpus.txt", "gpt") == "corpus"
    assert kind_of(files / "corpus.txt", "mlp") == "corpus"
    with pytest.raises(ConfigError, match="does not read text"):
        kind_of(files / "texts.csv", "mlp", text="review")


def test_every_kind_is_registered_with_the_same_surface():
    assert DATA_KINDS.names() == ["corpus", "image", "sequence", "table", "text"]
    for name, cls in DATA_KINDS.items():
        kind = cls()
        assert isinstance(kind, DataKind) and kind.name == name
        for method in ("prepare", "transform_inputs", "read_inputs", "saved_rows", "codec_from_dict", "codec_files"):
            assert callable(getattr(kind, method))
        assert callable(cls.codec.from_dict)
        for method in ("prepare", "read_inputs", "saved_rows"):  # each kind has its own
            assert getattr(type(kind), method) is not getattr(DataKind, method)


# ------------------------------------------------------------------------- the single-class check


def single_class_sources(tmp_path):
    rng = np.random.default_rng(1)
    pd.DataFrame({"a": rng.normal(size=30), "label": ["k"] * 30}).to_csv(tmp_path / "table.csv", index=False)
    pd.DataFrame({"review": ["good", "bad"] * 15, "label": ["k"] * 30}).to_csv(tmp_path / "texts.csv", index=False)
    pd.DataFrame({f"s{i}": rng.normal(size=30) for i in range(4)} | {"y": [7] * 30}).to_csv(tmp_path / "numbers.csv", index=False)
    np.savez(tmp_path / "images.npz", x=rng.integers(0, 256, (30, 4, 4), dtype=np.uint8), y=np.zeros(30, int))
    np.savez(tmp_path / "sequences.npz", x=rng.normal(size=(30, 6, 2)), y=np.full(30, 2))
    return {"table": (tmp_path / "table.csv", "mlp", "'k'"), "text": (tmp_path / "texts.csv", "transformer", "'k'"),
            "sequence from a table": (tmp_path / "numbers.csv", "rnn", "7"), "image": (tmp_path / "images.npz", "cnn", "0"),
            "sequence": (tmp_path / "sequences.npz", "rnn", "2")}


@pytest.mark.parametrize("case", ["table", "text", "sequence from a table", "image", "sequence"])
def test_a_single_class_is_refused_for_every_kind(tmp_path, case):
    source, model, value = single_class_sources(tmp_path)[case]
    with pytest.raises(DataError, match=f"only one class \\({value}\\) in 30 rows; classification needs at least two"):
        prepare(config(source, model))


def test_a_single_class_is_refused_for_images_read_as_sequences(tmp_path):
    np.save(tmp_path / "images.npy", np.random.default_rng(0).integers(0, 256, (20, 6, 6), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.full(20, 4))
    with pytest.raises(DataError, match="'label' has only one class \\(4\\)"):
        prepare(config(tmp_path / "images.npy", "rnn", labels=str(tmp_path / "labels.npy")))
    with pytest.raises(DataError, match="'label' has only one class \\(4\\)"):
        prepare(config(tmp_path / "images.npy", "cnn", labels=str(tmp_path / "labels.npy")))


# ----------------------------------------------------------------------------------------- images


def test_images_are_normalised_with_the_training_split_only(files):
    data = prepare(config(files / "images.npz", "cnn"))
    raw = load_source(str(files / "images.npz"))
    train = raw.images[data.indices["train"]].astype(np.float64) / 255
    codec = data.preprocessing.inputs
    np.testing.assert_allclose(codec.mean_, train.mean(axis=(0, 2, 3)))
    assert codec.mean_ != pytest.approx((raw.images / 255).mean(axis=(0, 2, 3)).tolist())
    assert data.schema.class_names == ["0", "1", "2"] and data.summary["train_class_counts"] == {"0": 7, "1": 7, "2": 7}
    np.testing.assert_array_equal(data.y_original["test"], raw.labels[data.indices["test"]])


def test_image_tasks(files, tmp_path):
    regression = prepare(config(files / "images.npz", "cnn", task="regression"))
    assert regression.task == "regression" and regression.preprocessing.target_scaler is not None
    assert regression.y["train"].mean() == pytest.approx(0, abs=1e-5)
    generation = prepare(config(files / "images.npz", "vae"))
    assert generation.task == "generation" and generation.y["train"] is None and generation.preprocessing.labels is None
    with pytest.raises(DataError, match="'language_modeling' does not apply to images"):
        prepare(config(files / "images.npz", "cnn", task="language_modeling"))
    np.save(tmp_path / "unlabelled.npy", np.zeros((10, 4, 4), np.uint8))
    with pytest.raises(DataError, match="holds images but no labels; task 'classification' needs them"):
        prepare(config(tmp_path / "unlabelled.npy", "cnn", task="classification"))
    np.savez(tmp_path / "named.npz", x=np.zeros((10, 4, 4), np.uint8), y=np.array(["cat", "dog"] * 5))
    with pytest.raises(DataError, match="holds text or categories"):  # was a ValueError from numpy
        prepare(config(tmp_path / "named.npz", "cnn", task="regression"))


# ----------------------------------------------------------------------------------------- tables


def test_a_table_sequence_names_a_missing_feature(files):
    with pytest.raises(DataError, match="data.features names column\\(s\\) \\['s9'\\]"):  # was a KeyError
        prepare(config(files / "numbers.csv", "rnn", features=["s1", "s9"]))


def test_a_table_for_a_generative_model_models_every_column_label_included():
    data = prepare(config("builtin:iris", "vae"))  # synthetic rows stand in for the whole table
    assert data.task == "generation" and data.preprocessing.target is None
    assert len(data.preprocessing.feature_columns) == 5 and data.preprocessing.feature_columns[-1] in ("label", "target")
    data = prepare(config("builtin:iris", "vae", exclude=[data.preprocessing.feature_columns[-1]]))
    assert len(data.preprocessing.feature_columns) == 4


# ------------------------------------------------------------------------------ prediction inputs


def saved(data, tmp_path) -> Preprocessing:
    """The preprocessing as a run folder keeps it, read back."""
    for name, text in data.preprocessing.files().items():
        (tmp_path / name).write_text(text)
    return Preprocessing.from_dict(json.loads(json.dumps(data.preprocessing.to_dict())), tmp_path)


def test_each_kind_reads_its_own_input_files(files, tmp_path):
    table = prepare(config(files / "numbers.csv", "mlp"))
    x, y = read_inputs(files / "numbers.csv", "table", "y")
    assert isinstance(x, pd.DataFrame) and y.tolist() == (np.arange(30) % 2).tolist()
    np.testing.assert_array_equal(saved(table, tmp_path).transform_inputs(x)[table.indices["test"]], table.x["test"])
    np.savez(tmp_path / "rows.npz", x=pd.read_csv(files / "numbers.csv").drop(columns="y").to_numpy())
    rows, none = read_inputs(tmp_path / "rows.npz", "table", "y")
    assert none is None and rows.shape == (30, 5)
    np.testing.assert_allclose(table.preprocessing.transform_inputs(rows), table.preprocessing.transform_inputs(x), atol=1e-6)

    images, labels = read_inputs(files / "images.npz", "image", "label")
    assert images.shape == (30, 3, 5, 5) and labels.tolist() == (np.arange(30) % 3).tolist()
    with pytest.raises(DataError, match="trained on images"):
        read_inputs(files / "numbers.csv", "image", None)

    np.savez(tmp_path / "seq.npz", x=np.zeros((4, 6, 2)))
    sequences, none = read_inputs(tmp_path / "seq.npz", "sequence", None)
    assert sequences.shape == (4, 6, 2) and none is None
    with pytest.raises(DataError, match="must be an .npz"):
        read_inputs(files / "numbers.csv", "sequence", None)

    texts, labels = read_inputs(files / "texts.csv", "text", "label")
    assert list(texts.columns) == ["review", "label"] and labels[0] == "a"
    with pytest.raises(DataError, match="with the text column"):
        read_inputs(files / "images.npz", "text", "label")
    with pytest.raises(DataError, match="language model"):
        read_inputs(files / "corpus.txt", "corpus", None)
    with pytest.raises(DataError, match="does not exist"):
        read_inputs(tmp_path / "nothing.csv", "table", None)


def test_image_inputs_without_a_channel_axis_get_one(tmp_path):
    data = prepare(config("builtin:digits_images", "cnn"))
    images = load_source("builtin:digits_images").images
    prep = saved(data, tmp_path)
    np.testing.assert_array_equal(prep.transform_inputs(images[:5, 0]), prep.transform_inputs(images[:5]))
    with pytest.raises(DataError, match="trained on \\(1, 8, 8\\)"):
        prep.transform_inputs(np.zeros((2, 3, 8, 8)))


# ------------------------------------------------------------------------------ a saved run's rows


@pytest.mark.parametrize("case", ["table with missing targets", "table for a vae", "text", "sequence from a table",
                                  "sequence from images", "image", "corpus"])
def test_a_saved_run_rebuilds_the_arrays_prepare_made(files, tmp_path, case):
    """Each kind's saved_rows names the rows prepare kept, so rebuild_data (re-evaluating a run) sees the same arrays."""
    from damoxing.data.saved import rebuild_data

    frame = pd.read_csv(files / "numbers.csv")
    frame.loc[[2, 11], "y"] = None
    frame.to_csv(tmp_path / "holes.csv", index=False)
    source, model = {"table with missing targets": (tmp_path / "holes.csv", "mlp"), "table for a vae": ("builtin:iris", "vae"),
                     "text": (files / "texts.csv", "transformer"), "sequence from a table": (tmp_path / "holes.csv", "rnn"),
                     "sequence from images": ("builtin:digits_images", "rnn"), "image": (files / "images.npz", "cnn"),
                     "corpus": (files / "corpus.txt", "gpt")}[case]
    cfg = config(source, model, **({"block_size": 8} if case == "corpus" else {}))
    data = prepare(cfg)
    again = rebuild_data(cfg, saved(data, tmp_path), data.indices)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(again.x[split], data.x[split])
        for got, want in ((again.y[split], data.y[split]), (again.y_original[split], data.y_original[split])):
            assert (got is None) == (want is None)
            if want is not None:
                np.testing.assert_array_equal(got, want)
