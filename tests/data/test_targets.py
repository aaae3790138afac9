"""The target steps every data kind shares: task inference and checks, dropping missing targets,
label encoding, target scaling, the split and the fitted `Targets`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import DataError
from damoxing.data.targets import (
    LabelEncoder,
    TargetScaler,
    check_target_for_task,
    choose_task,
    drop_missing_target,
    drop_missing_targets,
    fit_targets,
    infer_task,
    without_targets,
)
from damoxing.spec import load_config


def roundtrip(obj):
    """to_dict -> JSON text -> dict -> from_dict, as a run folder would do."""
    return type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))


def config(task=None, **data):
    return load_config({"task": task, "data": {"source": "builtin:iris", **data}, "model": {"type": "mlp"}})


@pytest.fixture
def frame():
    return pd.DataFrame({"age": [20.0, np.nan, 40.0, 60.0, 30.0, 50.0], "label": ["a", "b", "a", "b", "a", "b"]})


# ---------------------------------------------------------------------------------------- target


@pytest.mark.parametrize(
    "values, task",
    [
        (pd.Series(["x", "y", "x"]), "classification"),
        (pd.Series(["x", "y"], dtype="category"), "classification"),
        (pd.Series([True, False]), "classification"),
        (pd.Series([0, 1, 2, 1]), "classification"),
        (pd.Series([0.0, 1.0, np.nan, 1.0]), "classification"),
        (pd.Series(np.arange(50)), "regression"),
        (pd.Series([0.5, 1.25, 3.0]), "regression"),
    ],
)
def test_infer_task(values, task):
    assert infer_task(values) == task


def test_check_target_for_task():
    with pytest.raises(DataError, match="regression.*classification") as info:
        check_target_for_task(pd.Series(["cat", "dog"], name="animal"), "regression")
    assert "'animal'" in str(info.value) and "'cat'" in str(info.value)
    check_target_for_task(pd.Series([1.5, 2.5]), "regression")
    check_target_for_task(pd.Series(["cat", "dog"]), "classification")
    with pytest.raises(DataError, match="only one class"):
        check_target_for_task(pd.Series(["cat", "cat"]), "classification")


def test_drop_missing_target(frame):
    frame.loc[[1, 4], "label"] = None
    kept, n = drop_missing_target(frame, "label")
    assert n == 2 and len(kept) == 4 and kept["label"].notna().all()
    assert list(kept.index) == [0, 1, 2, 3]
    with pytest.raises(DataError, match="'labl'.*Did you mean 'label'"):
        drop_missing_target(frame, "labl")


# ---------------------------------------------------------------------------------------- labels


def test_label_encoder_strings_and_ints():
    enc = LabelEncoder().fit(np.array(["dog", "cat", "dog", "bird"]))
    assert enc.classes_ == ["bird", "cat", "dog"]
    idx = enc.transform(["cat", "dog"])
    assert idx.dtype == np.int64 and idx.tolist() == [1, 2]
    assert enc.inverse_transform([0, 2]).tolist() == ["bird", "dog"]
    with pytest.raises(DataError, match="'fish'.*'bird', 'cat', 'dog'"):
        enc.transform(["fish"])
    ints = LabelEncoder().fit(pd.Series([3.0, 1.0, 3.0]))  # e.g. a CSV column that had NaNs
    assert ints.classes_ == [1, 3] and all(type(c) is int for c in ints.classes_)
    assert ints.transform(np.array([3, 1], dtype=np.int64)).tolist() == [1, 0]
    again = roundtrip(ints)
    assert again.classes_ == [1, 3] and again.inverse_transform([1])[0] == 3


def test_target_scaler():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    sc = TargetScaler().fit(y)
    z = sc.transform(y)
    assert abs(z.mean()) < 1e-6 and z.dtype == np.float32
    np.testing.assert_allclose(roundtrip(sc).inverse_transform(z), y, rtol=1e-6)
    assert TargetScaler().fit([5.0, 5.0]).std_ == 1.0
    with pytest.raises(DataError, match="'abc'"):
        sc.transform(["abc"])


# ------------------------------------------------------------------------------------- the steps


def test_drop_missing_targets_warns_with_the_count(frame, capsys):
    frame.loc[[0, 3], "label"] = None
    kept, n = drop_missing_targets(frame, "label")
    assert n == 2 and len(kept) == 4
    assert "dropped 2 row(s) whose target 'label' is missing" in capsys.readouterr().err


def test_choose_task_uses_the_config_else_the_default_else_the_values():
    values = pd.Series([0.5, 1.5, 2.25, 3.0], name="y")
    assert choose_task(values, config(), ("classification", "regression"), "no") == "regression"
    assert choose_task(values, config(), ("generation",), "no", default="generation") == "generation"
    with pytest.raises(DataError, match="^task 'regression' is not for this data$"):
        choose_task(values, config(), ("classification",), "task '{task}' is not for this data")
    with pytest.raises(DataError, match="'y' holds text or categories"):
        choose_task(pd.Series(["a", "b"], name="y"), config("regression"), ("regression",), "no")


def test_choose_task_refuses_a_single_class():
    with pytest.raises(DataError, match="'label' has only one class \\(3\\) in 4 rows"):
        choose_task(pd.Series(np.array([3, 3, 3, 3]), name="label"), config(), ("classification",), "no")


def test_fit_targets_classification_is_stratified_with_counts_of_the_training_split():
    values = np.array(["b", "a"] * 30 + ["c"] * 15, dtype=object)
    targets = fit_targets(values, "classification", config(split={"val": 0.2, "test": 0.2, "seed": 3}))
    assert targets.labels.classes_ == ["a", "b", "c"] and targets.n_outputs == 3 and targets.class_names == ["a", "b", "c"]
    assert targets.y_original.dtype == np.int64 and targets.y_model is targets.y_original
    train = targets.splits["train"]
    assert targets.class_counts() == {"a": int((values[train] == "a").sum()), "b": int((values[train] == "b").sum()),
                                      "c": int((values[train] == "c").sum())}
    for rows in targets.splits.values():  # stratified: every split keeps the 2:2:1 proportions
        counts = np.bincount(targets.y_original[rows], minlength=3)
        assert counts[0] == counts[1] and abs(counts[0] - 2 * counts[2]) <= 1
    assert sorted(np.concatenate(list(targets.splits.values())).tolist()) == list(range(75))


def test_fit_targets_regression_scales_with_the_training_split_only():
    values = np.arange(100, dtype=np.float64) ** 2
    targets = fit_targets(values, "regression", config(split={"val": 0.1, "test": 0.3}))
    train = targets.splits["train"]
    assert targets.labels is None and targets.class_counts() == {}
    assert targets.scaler.mean_ == pytest.approx(values[train].mean()) and targets.scaler.mean_ != pytest.approx(values.mean())
    np.testing.assert_allclose(targets.y_model[train].mean(), 0, atol=1e-5)
    np.testing.assert_array_equal(targets.y_original, values.astype(np.float32))
    unscaled = fit_targets(values, "regression", config(preprocess={"scale_target": False}))
    assert unscaled.scaler is None and unscaled.y_model is unscaled.y_original


def test_without_targets_only_splits():
    targets = without_targets(50, "generation", config())
    assert targets.task == "generation" and targets.y_original is None and targets.labels is None
    assert sum(len(v) for v in targets.splits.values()) == 50
