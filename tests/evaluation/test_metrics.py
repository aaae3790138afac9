"""Metrics: hand-worked cases, agreement with scikit-learn, baselines, bootstrap, calibration."""

import math
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from damoxing.core.errors import ConfigError, DataError
from damoxing.evaluation.metrics import (
    METRICS,
    WeightedMetrics,
    baseline_classification,
    baseline_regression,
    bootstrap_ci,
    bootstrap_weights,
    calibration_curve,
    classification_metrics,
    metric_direction,
    metric_values,
    regression_metrics,
    resample_weights,
)

pytestmark = pytest.mark.filterwarnings("error")  # "never warnings"

SCALAR_CLS = ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "roc_auc", "ece"]
SCALAR_REG = ["mse", "rmse", "mae", "r2"]


def softmax_data(n, k, seed, signal=1.0, drop_class=None):
    """Random labels and softmax probabilities that favour the true class by `signal`."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    if drop_class is not None:
        logits[:, drop_class] -= 20.0  # never the argmax
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def sklearn_classification(y, p):
    k = p.shape[1]
    labels = list(range(k))
    pred = p.argmax(axis=1)
    avg = dict(labels=labels, average="macro", zero_division=0)
    auc = skm.roc_auc_score(y, p[:, 1]) if k == 2 else skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "precision_macro": skm.precision_score(y, pred, **avg),
        "recall_macro": skm.recall_score(y, pred, **avg),
        "f1_macro": skm.f1_score(y, pred, **avg),
        "log_loss": skm.log_loss(y, p, labels=labels),
        "roc_auc": auc,
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
    }


# --------------------------------------------------------------------------- classification


def test_hand_computed_binary_case():
    # y = [0, 0, 1, 1]; argmax predictions = [0, 1, 1, 1]
    # confusion (rows true): [[1, 1], [0, 2]] -> accuracy 3/4
    # class 0: P = 1/1, R = 1/2, F1 = 2*1/(2+1) = 2/3;  class 1: P = 2/3, R = 2/2, F1 = 2*2/(2+3) = 0.8
    # roc_auc: positives score .7, .8 beat both negatives .1, .6 -> 1.0
    # ece: one sample per bin, |correct - confidence| = .1 + .6 + .3 + .2 = 1.2, / 4 = 0.3
    y = [0, 0, 1, 1]
    p = [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]]
    m = classification_metrics(y, p, class_names=["cat", "dog"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["precision_macro"] == pytest.approx(5 / 6)
    assert m["recall_macro"] == pytest.approx(0.75)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4)
    assert m["roc_auc"] == pytest.approx(1.0)
    assert m["ece"] == pytest.approx(0.3)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["per_class"]["cat"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_class"]["dog"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert isinstance(m["per_class"]["dog"]["support"], int) and isinstance(m["accuracy"], float)


@pytest.mark.parametrize(
    "k, drop_class, ties",
    [(2, None, False), (3, 2, False), (5, None, True)],
    ids=["binary", "3class-never-predicted", "5class-tied-scores"],
)
def test_matches_sklearn(k, drop_class, ties):
    y, p = softmax_data(300, k, seed=k, drop_class=drop_class)
    if ties:  # coarse probabilities create many tied scores for roc_auc
        p = np.round(p, 1)
        p[:, -1] = 1.0 - p[:, :-1].sum(axis=1)
        p = np.clip(p, 0, 1)
        p /= p.sum(axis=1, keepdims=True)
    if drop_class is not None:
        assert drop_class not in p.argmax(axis=1)
    ours, ref = classification_metrics(y, p), sklearn_classification(y, p)
    for name in ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "roc_auc"]:
        assert ours[name] == pytest.approx(ref[name], rel=1e-10, abs=1e-12), name
    assert ours["confusion_matrix"] == ref["confusion_matrix"]
    if drop_class is not None:
        assert ours["per_class"][str(drop_class)]["precision"] == 0.0  # zero division -> 0, no warning


def test_roc_auc_single_class_is_none_and_absent_classes_are_skipped():
    y, p = softmax_data(200, 4, seed=3)
    assert classification_metrics(np.zeros(200, dtype=int), p)["roc_auc"] is None
    y = np.where(y == 3, 0, y)  # class 3 absent from y_true
    expected = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in range(3)])
    assert classification_metrics(y, p)["roc_auc"] == pytest.approx(expected, rel=1e-12)


def test_balanced_accuracy_averages_only_classes_in_y_true():
    # predictions [0, 2, 1, 1]; class 2 never occurs in y_true: recalls 1/2 and 2/2 -> 0.75,
    # while recall_macro averages all three labels: (0.5 + 1 + 0) / 3 = 0.5
    y = np.array([0, 0, 1, 1])
    p = [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]]
    m = classification_metrics(y, p)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["recall_macro"] == pytest.approx(0.5)
    with pytest.warns(UserWarning):  # sklearn warns here; we must not
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, np.argmax(p, axis=1)))


def test_boolean_labels_are_accepted():
    assert classification_metrics(np.array([False, True]), [[0.7, 0.3], [0.4, 0.6]])["accuracy"] == 1.0


def test_log_loss_is_clipped_and_finite():
    m = classification_metrics([0, 1], [[0.0, 1.0], [0.0, 1.0]])
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 10
    assert m["log_loss"] == pytest.approx(skm.log_loss([0, 1], [[0.0, 1.0], [0.0, 1.0]], labels=[0, 1]))


@pytest.mark.parametrize(
    "y, p, fragment",
    [
        ([0, 1], [[2.0, -1.0], [0.5, 0.5]], "not logits"),
        ([0, 1], [[0.3, 0.3], [0.5, 0.5]], "sum to 1"),
        ([0, 3], [[0.5, 0.5], [0.5, 0.5]], "valid classes are 0..1"),
        ([0, 1, 0], [[0.5, 0.5]] * 2, "3 samples"),
        ([0.5, 1], [[0.5, 0.5]] * 2, "integer class indices"),
    ],
)
def test_invalid_classification_input_is_a_data_error(y, p, fragment):
    with pytest.raises(DataError, match=fragment):
        classification_metrics(y, p)


# --------------------------------------------------------------------------- regression


def test_regression_hand_computed():
    # errors [0, 0, 0, 2] -> mse 1, rmse 1, mae 0.5; SSE = 4, SST = 2.25+.25+.25+2.25 = 5 -> r2 = 1 - 4/5
    m = regression_metrics([1, 2, 3, 4], [1, 2, 3, 6])
    assert m == pytest.approx({"mse": 1.0, "rmse": 1.0, "mae": 0.5, "r2": 0.2})


@pytest.mark.parametrize("shape", [(200,), (200, 3)], ids=["single", "multi-output"])
def test_regression_matches_sklearn(shape):
    rng = np.random.default_rng(0)
    y = rng.normal(size=shape) * np.arange(1, 4)[: shape[-1] if len(shape) > 1 else 1].squeeze()
    pred = y + rng.normal(size=shape)
    m = regression_metrics(y, pred)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-12)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred), rel=1e-12)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-10)


def test_r2_of_constant_target_is_finite_like_sklearn():
    assert regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["r2"] == 0.0
    assert regression_metrics([0.1, 0.1, 0.1], [0.1, 0.1, 0.1])["r2"] == skm.r2_score([0.1] * 3, [0.1] * 3) == 1.0


# --------------------------------------------------------------------------- baselines


def test_baseline_classification_is_majority_class():
    y_train = np.array([0, 1, 1, 1, 2, 2])  # majority class 1, frequencies 1/6, 1/2, 1/3
    y_true = np.array([1, 0, 2, 2, 1, 0, 0, 1])
    m = baseline_classification(y_train, y_true, 3, class_names=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(np.mean(y_true == 1))
    assert m["log_loss"] == pytest.approx(-(3 * math.log(1 / 6) + 3 * math.log(1 / 2) + 2 * math.log(1 / 3)) / 8)
    assert m["roc_auc"] == pytest.approx(0.5)  # constant scores rank nothing
    assert m["per_class"]["b"]["recall"] == 1.0 and m["per_class"]["a"]["recall"] == 0.0


def test_baseline_classification_log_loss_finite_for_unseen_class():
    m = baseline_classification([0, 0, 1], [2, 0], 3)
    assert math.isfinite(m["log_loss"]) and m["accuracy"] == 0.5


def test_baseline_regression_predicts_training_mean():
    rng = np.random.default_rng(1)
    y_train, y_true = rng.normal(5, 2, size=(50, 2)), rng.normal(5, 2, size=(30, 2))
    m = baseline_regression(y_train, y_true)
    pred = np.tile(y_train.mean(axis=0), (30, 1))
    assert m["r2"] == pytest.approx(skm.r2_score(y_true, pred)) and m["r2"] <= 0
    same = baseline_regression(y_true[:, 0], y_true[:, 0])
    assert same["r2"] == pytest.approx(0.0, abs=1e-12) and same["mse"] == pytest.approx(np.var(y_true[:, 0]))


# --------------------------------------------------------------------------- weighted metrics (public)


def test_metric_values_with_unit_weights_are_the_reported_metrics():
    y, p = softmax_data(400, 4, seed=3)
    values = metric_values("classification", y, p, np.ones((1, 400)))
    point = classification_metrics(y, p)
    assert list(values) == ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "ece", "roc_auc"]
    assert {k: float(v[0]) for k, v in values.items()} == pytest.approx({k: point[k] for k in SCALAR_CLS})
    yr = np.random.default_rng(0).normal(size=(50, 2))
    reg = metric_values("regression", yr, yr * 0.5, np.ones((1, 50)))
    assert {k: float(v[0]) for k, v in reg.items()} == pytest.approx(regression_metrics(yr, yr * 0.5))


def test_integer_weights_equal_the_metrics_of_the_resample_they_describe():
    y, p = softmax_data(120, 3, seed=1)
    w = resample_weights(np.random.default_rng(5), 4, 120)
    assert w.shape == (4, 120) and (w.sum(axis=1) == 120).all()
    values = metric_values("classification", y, p, w)
    for r in range(4):
        rows = np.repeat(np.arange(120), w[r].astype(int))
        drawn = classification_metrics(y[rows], p[rows])
        for name in SCALAR_CLS:
            assert values[name][r] == pytest.approx(drawn[name]), name


def test_only_one_metric_skips_the_per_class_roc_auc():
    y, p = softmax_data(2000, 10, seed=0)
    w = resample_weights(np.random.default_rng(0), 100, 2000)
    one = WeightedMetrics("classification", y, p, only=["accuracy"])
    everything = WeightedMetrics("classification", y, p)
    assert list(one(w)) == ["accuracy"] and np.array_equal(one(w)["accuracy"], everything(w)["accuracy"])
    auc = metric_values("classification", y, p, np.ones((1, 2000)), only=["roc_auc"])["roc_auc"][0]
    assert auc == pytest.approx(classification_metrics(y, p)["roc_auc"])
    timings = {"one": [], "all": []}
    for _ in range(3):  # alternated, best of 3: the machine's load changes
        for key, evaluate in (("one", one), ("all", everything)):
            start = time.perf_counter()
            evaluate(w)
            timings[key].append(time.perf_counter() - start)
    assert min(timings["one"]) < 0.5 * min(timings["all"]), timings  # ~10x here: the K rank statistics dominate


def test_weighted_metrics_reject_unknown_names_and_bad_weights():
    y, p = softmax_data(20, 2, seed=0)
    with pytest.raises(ConfigError, match="'mse' is not a classification metric.*accuracy"):
        WeightedMetrics("classification", y, p, only=["mse"])
    with pytest.raises(DataError, match=r"shape \(R, 20\)"):
        metric_values("classification", y, p, np.ones((2, 19)))


def test_bootstrap_weights_come_in_bounded_chunks_of_the_same_rows():
    chunks = list(bootstrap_weights(np.random.default_rng(3), 10, 400_000))
    assert [len(c) for c in chunks] == [5, 5]  # 2,000,000 cells per chunk
    whole = resample_weights(np.random.default_rng(3), 5, 400_000)
    assert np.array_equal(chunks[0], whole)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded():
    y, p = softmax_data(300, 3, seed=0)
    a = bootstrap_ci("classification", y, p, n_resamples=200, seed=7)
    b = bootstrap_ci("classification", y, p, n_resamples=200, seed=7)
    c = bootstrap_ci("classification", y, p, n_resamples=200, seed=8)
    assert a == b
    assert a != c
    assert sorted(a) == sorted(SCALAR_CLS)  # confusion_matrix and per_class are not intervals


@pytest.mark.parametrize("k", [2, 10])
def test_bootstrap_classification_interval_contains_point(k):
    y, p = softmax_data(2000, k, seed=k, signal=1.5)
    point = classification_metrics(y, p)
    ci = bootstrap_ci("classification", y, p, n_resamples=300, seed=1)
    for name in SCALAR_CLS:
        low, high = ci[name]
        assert low < point[name] < high, name
        assert high - low < 0.2, name  # a real interval, not [-inf, inf]


@pytest.mark.parametrize("shape", [(500,), (500, 2)])
def test_bootstrap_regression_interval_contains_point(shape):
    rng = np.random.default_rng(2)
    y = rng.normal(size=shape)
    pred = 0.8 * y + 0.5 * rng.normal(size=shape)
    point = regression_metrics(y, pred)
    ci = bootstrap_ci("regression", y, pred, n_resamples=300)
    assert sorted(ci) == sorted(SCALAR_REG)
    for name in SCALAR_REG:
        assert ci[name][0] < point[name] < ci[name][1], name
    narrow = bootstrap_ci("regression", y, pred, n_resamples=300, confidence=0.5)
    assert narrow["mse"][1] - narrow["mse"][0] < ci["mse"][1] - ci["mse"][0]


def test_bootstrap_roc_auc_none_for_single_class():
    _, p = softmax_data(50, 3, seed=0)
    ci = bootstrap_ci("classification", np.ones(50, dtype=int), p, n_resamples=20)
    assert ci["roc_auc"] is None and ci["accuracy"][0] <= ci["accuracy"][1]


def test_bootstrap_is_fast():
    y, p = softmax_data(2000, 10, seed=0)
    start = time.perf_counter()
    ci = bootstrap_ci("classification", y, p, n_resamples=1000)
    assert time.perf_counter() - start < 2.0
    assert all(ci[name] is not None for name in SCALAR_CLS)


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="'classification', 'regression'"):
        bootstrap_ci("clasification", [0, 1], [[0.5, 0.5]] * 2)
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_ci("regression", [1.0, 2.0], [1.0, 2.0], confidence=95)


# --------------------------------------------------------------------------- calibration


def test_calibration_curve_bins():
    y, p = [0, 0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]]
    curve = calibration_curve(y, p)
    bins = curve["bins"]
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 4
    assert curve["ece"] == pytest.approx(0.3) == classification_metrics(y, p)["ece"]
    sixth = bins[5]  # confidence 0.6 falls in (0.5, 0.6] and was wrong
    assert sixth["lower"] == pytest.approx(0.5) and sixth["upper"] == pytest.approx(0.6)
    assert sixth["count"] == 1 and sixth["accuracy"] == 0.0 and sixth["confidence"] == pytest.approx(0.6)
    assert bins[0] == {"lower": 0.0, "upper": pytest.approx(0.1), "confidence": None, "accuracy": None, "count": 0}


def test_calibration_curve_multiclass_ece_matches_metrics():
    y, p = softmax_data(400, 4, seed=5)
    curve = calibration_curve(y, p, n_bins=10)
    assert curve["ece"] == pytest.approx(classification_metrics(y, p)["ece"], rel=1e-12)
    filled = [b for b in curve["bins"] if b["count"]]
    assert all(b["lower"] < b["confidence"] <= b["upper"] for b in filled)


# --------------------------------------------------------------------------- registry


def test_metric_direction():
    assert metric_direction("accuracy") == "max"
    assert metric_direction("r2") == "max"
    assert metric_direction("roc_auc") == "max"
    assert metric_direction("loss") == "min"
    assert metric_direction("log_loss") == "min"
    assert metric_direction("ece") == "min"
    assert metric_direction("rmse") == "min"
    assert metric_direction("perplexity") == "min"


def test_every_scalar_metric_is_registered_with_a_working_fn():
    generation = ["recon", "kl", "d_loss", "g_loss", "frechet_distance", "diversity"]  # computed by the generation task
    assert set(SCALAR_CLS + SCALAR_REG + ["loss", "perplexity"] + generation) == set(METRICS.names())
    y, p = softmax_data(100, 3, seed=1)
    assert METRICS.get("f1_macro").fn(y, p) == classification_metrics(y, p)["f1_macro"]
    assert METRICS.get("mae").fn([1.0, 2.0], [2.0, 2.0]) == 0.5
    assert METRICS.get("accuracy").task == "classification" and METRICS.get("r2").task == "regression"


def test_unknown_metric_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        metric_direction("acuracy")
    message = str(err.value)
    assert "Did you mean 'accuracy'?" in message
    assert "'r2'" in message and "'loss'" in message and "'log_loss'" in message
