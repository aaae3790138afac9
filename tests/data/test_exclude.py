"""data.exclude: columns kept out of a table model's inputs (a sensitive attribute the audit still reads)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _config(tmp_path, **data):
    from damoxing.spec import load_config

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "sex": rng.choice(["f", "m"], 60), "b": rng.normal(size=60),
                          "label": rng.choice(["x", "y"], 60)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    return load_config({"data": {"source": str(tmp_path / "t.csv"), "target": "label", **data}, "model": {"type": "mlp", "size": "tiny"}})


def test_excluded_column_is_not_an_input(tmp_path):
    from damoxing.data.pipeline import prepare_data
    from damoxing.models import data_needs

    config = _config(tmp_path, exclude=["sex"])
    prepared = prepare_data(config, data_needs(config.model))
    assert prepared.preprocessing.feature_columns == ["a", "b"]
    assert not any(name.startswith("sex") for name in prepared.schema.feature_names)
    full = _config(tmp_path)
    assert "sex" in prepare_data(full, data_needs(full.model)).preprocessing.feature_columns


def test_unknown_excluded_column_is_an_error_listing_the_columns(tmp_path):
    from damoxing.core.errors import DataError
    from damoxing.data.pipeline import prepare_data
    from damoxing.models import data_needs

    config = _config(tmp_path, exclude=["gender"])
    with pytest.raises(DataError, match=r"data.exclude names column\(s\) \['gender'\].*'sex'"):
        prepare_data(config, data_needs(config.model))
