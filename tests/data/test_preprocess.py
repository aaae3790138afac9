"""Input transforms of tables and images: fitting on train only, JSON round trips, unseen values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import ConfigError, DataError
from damoxing.data.preprocess import ImagePreprocessor, TabularPreprocessor
from damoxing.data.sources import load_source
from damoxing.data.targets import LabelEncoder


def roundtrip(obj):
    """to_dict -> JSON text -> dict -> from_dict, as a run folder would do."""
    return type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "age": [20.0, np.nan, 40.0, 60.0, 30.0, 50.0],
            "city": ["paris", "berlin", None, "paris", "rome", "paris"],
            "flag": [True, False, True, True, False, True],
            "const": [7.0] * 6,
            "label": ["a", "b", "a", "b", "a", "b"],
        }
    )


# ----------------------------------------------------------------------------------------- table


def test_tabular_onehot_standard(frame):
    cols = ["age", "city", "flag", "const"]
    pre = TabularPreprocessor().fit(frame, cols)
    x = pre.transform(frame)
    assert x.dtype == np.float32 and x.shape == (6, len(pre.feature_names_out_))
    assert pre.feature_names_out_[:5] == ["age", "city=berlin", "city=paris", "city=rome",
                                          "city=<other>"]
    assert not np.isnan(x).any()
    age = x[:, 0]
    assert abs(age.mean()) < 1e-6 and abs(age.std() - 1) < 1e-5  # NaN imputed with the mean 40
    assert age[1] == pytest.approx(0.0, abs=1e-6)
    # missing city -> most frequent ('paris')
    assert x[2, 1:5].tolist() == [0, 1, 0, 0]
    const = x[:, pre.feature_names_out_.index("const")]
    assert np.all(const == 0)  # constant column: no division by zero


def test_tabular_unseen_category_and_column_order(frame):
    cols = ["age", "city", "flag"]
    for mode in ("onehot", "ordinal"):
        pre = TabularPreprocessor(categorical=mode).fit(frame, cols)
        new = pd.DataFrame({"extra": [1, 2], "city": ["tokyo", "rome"], "flag": [False, True],
                            "age": [20.0, 20.0]})
        x = pre.transform(new)
        if mode == "onehot":
            unknown = pre.feature_names_out_.index("city=<other>")
            rome = pre.feature_names_out_.index("city=rome")
            assert x[0, unknown] == 1 and x[0, rome] == 0 and x[1, rome] == 1
        else:
            city = x[:, pre.feature_names_out_.index("city")]
            assert city[0] == 0 and city[1] == 3  # 0 = unknown; berlin=1, paris=2, rome=3
        # same rows, shuffled column order -> same output
        np.testing.assert_array_equal(pre.transform(new[["flag", "age", "city"]]), x)


def test_tabular_missing_column_is_named(frame):
    pre = TabularPreprocessor().fit(frame, ["age", "city"])
    with pytest.raises(DataError) as info:
        pre.transform(frame.drop(columns=["city"]))
    msg = str(info.value)
    assert "'city'" in msg and "'age'" in msg and "missing" in msg


def test_tabular_text_in_numeric_column(frame):
    pre = TabularPreprocessor().fit(frame, ["age"])
    with pytest.raises(DataError, match="'age'.*'\\?'"):
        pre.transform(pd.DataFrame({"age": ["12", "?"]}))
    np.testing.assert_allclose(pre.transform(pd.DataFrame({"age": ["40", None]}))[:, 0], 0,
                               atol=1e-6)


def test_tabular_minmax_median_max_categories():
    frame = pd.DataFrame({"v": [0.0, 10.0, np.nan, 4.0], "c": ["a", "a", "b", "c"]})
    pre = TabularPreprocessor(numeric_impute="median", scaling="minmax", max_categories=1)
    x = pre.fit(frame, ["v", "c"]).transform(frame)
    np.testing.assert_allclose(x[:, 0], [0.0, 1.0, 0.4, 0.4])
    assert pre.feature_names_out_ == ["v", "c=a", "c=<other>"]
    assert x[:, 2].tolist() == [0, 0, 1, 1]  # rare categories go to the unknown bucket


def test_tabular_bad_option():
    with pytest.raises(ConfigError, match="'minmax'"):
        TabularPreprocessor(scaling="minmx").fit(pd.DataFrame({"a": [1.0]}), ["a"])


def test_tabular_json_roundtrip_identical(frame):
    for kwargs in ({}, {"categorical": "ordinal", "scaling": "minmax", "numeric_impute": "median"}):
        pre = TabularPreprocessor(**kwargs).fit(frame, ["age", "city", "flag", "const"])
        again = roundtrip(pre)
        test = frame.assign(city=["x", None, "rome", "paris", "berlin", "y"])
        np.testing.assert_array_equal(pre.transform(test), again.transform(test))
        assert again.feature_names_out_ == pre.feature_names_out_


def mixed_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Numbers with missing values, whole numbers, categories (one rare), bools and dates."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "height": rng.normal(170, 10, n), "age": rng.integers(18, 91, n),
        "city": rng.choice(["paris", "rome", "oslo"], n), "member": rng.random(n) < 0.3,
        "code": rng.choice([1, 2, 3], n),  # numbers read as categories
        "joined": (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D")).strftime("%d/%m/%Y"),
    })
    frame.loc[rng.random(n) < 0.2, "height"] = np.nan
    frame.loc[rng.random(n) < 0.1, "city"] = None
    frame.loc[0, "city"] = "rare"
    return frame


def fit_mixed(frame: pd.DataFrame, **options) -> TabularPreprocessor:
    return TabularPreprocessor(min_category_count=2, **options).fit(
        frame, list(frame.columns), kinds={"code": "categorical", "joined": "date"}, date_formats={"joined": "%d/%m/%Y"})


@pytest.mark.parametrize("categorical", ["onehot", "ordinal"])
def test_inverse_transform_gives_back_the_original_columns(categorical):
    frame = mixed_table()
    pre = roundtrip(fit_mixed(frame, categorical=categorical))  # the facts decoding needs survive the JSON
    back = pre.inverse_transform(pre.transform(frame))
    assert list(back.columns) == list(frame.columns) and back.isna().sum().sum() == 0  # no seed: no missing values
    present = frame["height"].notna()
    np.testing.assert_allclose(back["height"][present], frame["height"][present], rtol=1e-6)
    assert back["age"].dtype == "Int64" and (back["age"] == frame["age"]).all()
    city = frame["city"].where(frame["city"] != "rare", "<other>").fillna(pre.columns_[2]["impute"])
    assert (back["city"] == city).all()  # the rare value went into the bucket, so it comes back as the bucket
    assert back["member"].tolist() == frame["member"].tolist() and back["code"].tolist() == frame["code"].tolist()
    assert (back["joined"] == frame["joined"]).all()  # dates put back together, in their own format


def test_inverse_transform_clips_rounds_and_keeps_missing_rates():
    frame = mixed_table(2000)
    pre = fit_mixed(frame)
    x = pre.transform(frame)
    x[:, 1] *= 5  # ages far outside the training range
    back = pre.inverse_transform(x, seed=0)
    assert back["age"].min() >= 18 and back["age"].max() <= 90  # clipped to the range seen in training
    assert abs(back["height"].isna().mean() - frame["height"].isna().mean()) < 0.03
    assert abs(back["city"].isna().mean() - frame["city"].isna().mean()) < 0.03
    assert back["age"].isna().sum() == 0  # a column without missing values stays without
    with pytest.raises(DataError, match="rows of"):
        pre.inverse_transform(x[:, :3])


def test_inverse_transform_never_invents_the_bucket_without_rare_values():
    frame = pd.DataFrame({"c": ["a", "b"] * 10})
    pre = TabularPreprocessor().fit(frame, ["c"])
    x = np.array([[0.1, 0.2, 5.0]])  # the <other> column largest
    assert pre.inverse_transform(x)["c"].tolist() == ["b"]


def test_inverse_transform_keeps_the_number_type_each_column_had():
    frame = pd.DataFrame({"ints": [1, 2, 3, 4], "whole_floats": [0.0, 1.0, 0.0, 1.0], "codes": [1.0, 2.0, 1.0, np.nan]})
    pre = TabularPreprocessor().fit(frame, list(frame.columns), kinds={"codes": "categorical"})
    back = pre.inverse_transform(pre.transform(frame))
    assert back["ints"].dtype == "Int64" and back["ints"].tolist() == [1, 2, 3, 4]
    assert back["whole_floats"].dtype == np.float64 and back["whole_floats"].tolist() == [0.0, 1.0, 0.0, 1.0]  # 0.0/1.0 stays floats
    assert back["codes"].dtype == np.float64 and back["codes"].tolist() == [1.0, 2.0, 1.0, 1.0]
    np.testing.assert_array_equal(pre.transform(back), pre.transform(frame.fillna({"codes": 1.0})))  # read back as the same categories


def test_inverse_transform_of_preprocessing_saved_without_the_facts():
    frame = pd.DataFrame({"n": [1.0, 2.0, 4.0, np.nan]})
    saved = TabularPreprocessor().fit(frame, ["n"]).to_dict()
    for key in ("missing", "min", "max", "integer"):
        del saved["columns_"][0][key]
    back = TabularPreprocessor.from_dict(saved).inverse_transform(np.array([[10.0]]), seed=0)
    assert back["n"].tolist() == pytest.approx([10 * saved["columns_"][0]["scale"] + saved["columns_"][0]["offset"]])


def test_fitted_on_train_only():
    raw = load_source("builtin:diabetes")
    train = raw.frame.iloc[:100]
    cols = [c for c in raw.frame.columns if c != raw.target]
    pre = TabularPreprocessor().fit(train, cols)
    x_train = pre.transform(train)
    x_all = pre.transform(raw.frame)
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    assert np.abs(x_all.mean(axis=0)).max() > 0.01  # stats come from train, not the full data
    full = TabularPreprocessor().fit(raw.frame, cols)
    assert pre.columns_[0]["offset"] != pytest.approx(full.columns_[0]["offset"])


# ---------------------------------------------------------------------------------------- images


def test_image_preprocessor_uint8_standard_and_roundtrip():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 3, 4, 4), dtype=np.uint8)
    pre = ImagePreprocessor().fit(images[:10])
    assert pre.scale_ == 255.0
    out = pre.transform(images[:10])
    assert out.dtype == np.float32 and out.shape == (10, 3, 4, 4)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_array_equal(roundtrip(pre).transform(images), pre.transform(images))
    with pytest.raises(DataError, match=r"\(3, 5, 4\).*\(3, 4, 4\)"):
        pre.transform(np.zeros((2, 3, 5, 4), dtype=np.uint8))


def test_image_preprocessor_digits_scale_and_modes():
    images = load_source("builtin:digits_images").images
    mm = ImagePreprocessor("minmax").fit(images)
    assert mm.scale_ == 16.0
    out = mm.transform(images)
    assert out.min() == 0.0 and out.max() == 1.0
    none = ImagePreprocessor("none").fit(images)
    np.testing.assert_array_equal(none.transform(images), images.astype(np.float32))
    flat = np.full((3, 1, 2, 2), 0.5, dtype=np.float32)
    assert np.all(ImagePreprocessor().fit(flat).transform(flat) == 0)  # std 0 -> 1, no NaN


@pytest.mark.parametrize("mode", ["standard", "minmax", "none"])
def test_image_inverse_transform_gives_back_the_data_units(mode):
    images = load_source("builtin:digits_images").images  # 0-16
    pre = roundtrip(ImagePreprocessor(mode).fit(images[:500]))
    np.testing.assert_allclose(pre.inverse_transform(pre.transform(images)), images, atol=1e-4)


def test_from_dict_wrong_type():
    with pytest.raises(DataError, match="'labels'.*'tabular'"):
        TabularPreprocessor.from_dict(LabelEncoder().fit([1, 2]).to_dict())
