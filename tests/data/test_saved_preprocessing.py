"""preprocessing.json files written before the data kinds existed (main at 919f526, one per kind,
in fixtures/preprocessing_v1) still load, give back the same JSON, and transform identically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import DataError
from damoxing.data.pipeline import Preprocessing

FIXTURES = Path(__file__).parent / "fixtures" / "preprocessing_v1"


def load(name: str) -> tuple[Preprocessing, dict, dict]:
    folder = FIXTURES / name
    saved = json.loads((folder / "preprocessing.json").read_text())
    with np.load(folder / "expected.npz", allow_pickle=False) as z:
        expected = dict(z)
    return Preprocessing.from_dict(saved, folder), saved, expected


def inputs(name: str):
    folder = FIXTURES / name
    if (folder / "inputs.csv").exists():
        return pd.read_csv(folder / "inputs.csv")
    return np.load(folder / "inputs.npy", allow_pickle=False)


@pytest.mark.parametrize("name", ["table", "regression", "image", "text", "sequence", "corpus"])
def test_saved_preprocessing_loads_and_writes_the_same_json(name):
    prep, saved, _ = load(name)
    assert prep.schema.kind == saved["inputs"]["kind"]
    assert json.loads(json.dumps(prep.to_dict())) == saved


@pytest.mark.parametrize("name", ["table", "regression", "image", "text", "sequence"])
def test_saved_preprocessing_transforms_inputs_identically(name):
    prep, _, expected = load(name)
    np.testing.assert_array_equal(prep.transform_inputs(inputs(name)), expected["x"])


def test_saved_preprocessing_decodes_identically():
    table, _, expected = load("table")
    assert list(table.decode_labels(np.array([0, 1, 2, 1])).astype(str)) == list(expected["decoded"])
    image, _, expected = load("image")
    np.testing.assert_array_equal(image.decode_labels(np.array([2, 0, 1])), expected["decoded"])
    for name in ("regression", "sequence"):
        prep, _, expected = load(name)
        np.testing.assert_array_equal(prep.decode_regression(expected["outputs"]), expected["decoded"])


def test_saved_corpus_codec_packs_identically_and_refuses_predictions():
    prep, _, expected = load("corpus")
    x, y, n_bytes = prep.inputs.pack(["the sun sets", "a new line"], 16, "line")
    np.testing.assert_array_equal(x, expected["x"])
    np.testing.assert_array_equal(y, expected["y"])
    assert n_bytes == int(expected["n_bytes"])
    with pytest.raises(DataError, match="language model"):
        prep.transform_inputs(["some text"])
