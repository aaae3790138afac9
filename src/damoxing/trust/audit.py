"""Fairness audit of a model's decisions across the groups of a sensitive column, and its mitigation.

    report = audit_classification(y, pred, keys, positive=1)        # per group, with intervals
    rule = fit_group_thresholds(proba_val, y_val, keys_val, "equalized_odds", positive=1)
    after = rule.decide(proba_test, keys_test)                         # inference/postprocess.py

Per group (and overall): the group's size, its base rate (share of true positives), accuracy,
selection rate (share of positive decisions), true and false positive rates, each with a
percentile bootstrap interval; resampling is stratified by group (each group's rows are resampled
within the group), so a group's interval reflects its own size. Between groups: the demographic
parity difference (largest - smallest selection rate) and ratio (smallest / largest), and the
equalized odds difference (the larger of the TPR and FPR gaps), as fairlearn defines and computes
them, with bootstrap intervals from the same resamples. A multi-class model is audited on its
accuracy and, one-vs-rest, on the positive class chosen. Regression: per-group MAE, RMSE and bias
(mean of prediction - target), and the gaps between groups; rates and parity need decisions.

Mitigation is fairlearn's ThresholdOptimizer (Hardt et al. 2016) fitted on validation
probabilities (float64: fairlearn 0.15 with pandas 3 raises a TypeError on float32 scores at
predict time), exported to plain JSON and applied without fairlearn (GroupThresholds).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from damoxing.core.errors import DataError, choices_text
from damoxing.inference.postprocess import GroupThresholds, threshold_text

SMALL_GROUP = 20
MAX_GROUPS = 30
RATES = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")
ERRORS = ("mae", "rmse", "bias")
OBJECTIVES = {"accuracy": "accuracy_score", "balanced_accuracy": "balanced_accuracy_score"}
CONSTRAINTS = ("demographic_parity", "equalized_odds")


def check_groups(keys: np.ndarray, column: str, where: str) -> list[str]:
    """The group names of a sensitive column (sorted); errors for one group or too many, warnings for small ones."""
    from damoxing.core.console import warn

    names, counts = np.unique(keys, return_counts=True)
    if len(names) < 2:
        raise DataError(f"The sensitive column '{column}' has a single value ({names[0]!r}) in the {len(keys)} rows of {where}; "
                        "an audit compares groups, so it needs at least two. Pick a column with two or more groups.")
    if len(names) > MAX_GROUPS:
        raise DataError(f"The sensitive column '{column}' has {len(names)} distinct values in {where} (it looks continuous or like an "
                        f"identifier); an audit compares at most {MAX_GROUPS} groups. Group it into bands in the data first.")
    small = [f"{n!r} ({c} rows)" for n, c in zip(names, counts) if c < SMALL_GROUP]
    if small:
        warn(f"group(s) {', '.join(small)} of '{column}' in {where} have fewer than {SMALL_GROUP} rows: their rates are "
             "noisy (see the wide intervals) and a gap involving them may be chance.")
    return [str(n) for n in names]


# --------------------------------------------------------------------------- resampling


def _group_weights(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R + 1, n) multinomial counts: row 0 is the data itself (all ones), then R bootstrap resamples."""
    picks = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
    counts = np.bincount(picks.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return np.vstack([np.ones((1, n)), counts]).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _classification_rates(w: np.ndarray, correct: np.ndarray, selected: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """Rates of one group under weights w (R+1, n): each (R+1,)."""
    n = w.sum(1)
    return {"accuracy": w @ correct / n, "selection_rate": w @ selected / n,
            "true_positive_rate": _ratio(w @ (selected & positive), w @ positive),
            "false_positive_rate": _ratio(w @ (selected & ~positive), w @ ~positive), "base_rate": w @ positive / n}


def _regression_errors(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    n = w.sum(1)
    residual = pred - y
    return {"mae": w @ np.abs(residual) / n, "rmse": np.sqrt(w @ residual**2 / n), "bias": w @ residual / n,
            "mean_prediction": w @ pred / n, "mean_target": w @ y / n}


def _interval(values: np.ndarray, confidence: float) -> Optional[list[float]]:
    """Percentile interval of the resampled values (row 0 is the point estimate, not a resample)."""
    resampled = values[1:]
    resampled = resampled[~np.isnan(resampled)]
    if len(resampled) == 0:
        return None
    tail = (1.0 - confidence) / 2
    return [float(q) for q in np.quantile(resampled, [tail, 1.0 - tail])]


def _value(values: np.ndarray) -> Optional[float]:
    return None if np.isnan(values[0]) else float(values[0])


def _per_group(keys: np.ndarray, names: list[str], compute, n_resamples: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """{group: {metric: (R+1,) values}} with stratified resamples; 'overall' resamples every row."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        rows = np.flatnonzero(keys == name)
        out[name] = compute(_group_weights(len(rows), n_resamples, rng), rows)
    out["overall"] = compute(_group_weights(len(keys), n_resamples, rng), np.arange(len(keys)))
    return out


def _gap(per_group: dict, names: list[str], metric: str) -> np.ndarray:
    """(R+1,) largest - smallest value of `metric` across groups, per resample (groups where it is undefined left out)."""
    stacked = np.vstack([per_group[n][metric] for n in names])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where every group is undefined
        return np.nanmax(stacked, 0) - np.nanmin(stacked, 0)


def _min_over_max(per_group: dict, names: list[str], metric: str) -> np.ndarray:
    stacked = np.vstack([per_group[n][metric] for n in names])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _ratio(np.nanmin(stacked, 0), np.nanmax(stacked, 0))


def _table(per_group: dict, keys: np.ndarray, names: list[str], metrics: tuple[str, ...], confidence: float, extra=None) -> list[dict]:
    rows = []
    for name in [*names, "overall"]:
        size = int(len(keys)) if name == "overall" else int((keys == name).sum())
        row = {"group": name, "count": size, "small": name != "overall" and size < SMALL_GROUP}
        for metric in metrics:
            row[metric] = _value(per_group[name][metric])
            row[f"{metric}_ci"] = _interval(per_group[name][metric], confidence)
        if extra:
            row.update(extra(name))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- classification


def audit_classification(y: np.ndarray, pred: np.ndarray, keys: np.ndarray, positive: int, n_resamples: int = 1000,
                         seed: int = 0, confidence: float = 0.95) -> dict:
    """Group metrics of class decisions `pred` (N,) against class ids `y` (N,); `positive` is the class id
    whose selection rate and TPR/FPR are measured (one-vs-rest for more than two classes)."""
    names = sorted(set(keys.tolist()))
    correct, selected, is_positive = pred == y, pred == positive, y == positive

    def compute(w, rows):
        return _classification_rates(w, correct[rows].astype(np.float64), selected[rows], is_positive[rows])

    per_group = _per_group(keys, names, compute, n_resamples, seed)
    one_outcome = [n for n in names if is_positive[keys == n].all() or not is_positive[keys == n].any()]
    _fairlearn_point_values(per_group, y, pred, is_positive, selected, keys, names, skip_rates=one_outcome)
    gaps = {"demographic_parity_difference": _gap(per_group, names, "selection_rate"),
            "demographic_parity_ratio": _min_over_max(per_group, names, "selection_rate"),
            "equalized_odds_difference": np.fmax(_gap(per_group, names, "true_positive_rate"), _gap(per_group, names, "false_positive_rate")),
            "accuracy_difference": _gap(per_group, names, "accuracy")}
    if not one_outcome:  # fairlearn's own numbers; with a group lacking an outcome it would count the undefined rate as 0
        gaps.update({k: np.concatenate([[v], gaps[k][1:]]) for k, v in _fairlearn_parity(is_positive, selected, keys).items()})
    summary = {name: {"value": _value(values), "ci": _interval(values, confidence)} for name, values in gaps.items()}
    positives = {n: int(is_positive[keys == n].sum()) for n in names}
    return {"task": "classification", "groups": _table(per_group, keys, names, RATES + ("base_rate",), confidence,
                                                       extra=lambda n: {"positives": positives.get(n, int(is_positive.sum()))}),
            "between_groups": summary, "confidence": confidence, "resamples": n_resamples, "one_outcome_groups": one_outcome}


def _fairlearn_point_values(per_group: dict, y, pred, is_positive, selected, keys, names: list[str], skip_rates: list[str]) -> None:
    """Put fairlearn's MetricFrame values in row 0 (the point estimate) of each group's metrics.

    A rate that is undefined for a group (a true positive rate without positives) stays undefined
    (None in the report), where fairlearn would return 0."""
    from fairlearn.metrics import (
        MetricFrame,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    frame = MetricFrame(metrics={"accuracy": accuracy_score}, y_true=y, y_pred=pred, sensitive_features=keys)
    rates = MetricFrame(metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                                 "false_positive_rate": false_positive_rate},
                        y_true=is_positive.astype(int), y_pred=selected.astype(int), sensitive_features=keys)
    for name in names:
        per_group[name]["accuracy"][0] = frame.by_group.loc[name, "accuracy"]
        per_group[name]["selection_rate"][0] = rates.by_group.loc[name, "selection_rate"]
        if name not in skip_rates:
            per_group[name]["true_positive_rate"][0] = rates.by_group.loc[name, "true_positive_rate"]
            per_group[name]["false_positive_rate"][0] = rates.by_group.loc[name, "false_positive_rate"]
    per_group["overall"]["accuracy"][0] = frame.overall["accuracy"]


def _fairlearn_parity(y_true: np.ndarray, y_pred: np.ndarray, keys: np.ndarray) -> dict[str, float]:
    """fairlearn's demographic parity difference and ratio and equalized odds difference on 0/1 decisions."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )

    yt, yp = y_true.astype(int), y_pred.astype(int)
    return {"demographic_parity_difference": float(demographic_parity_difference(yt, yp, sensitive_features=keys)),
            "demographic_parity_ratio": float(demographic_parity_ratio(yt, yp, sensitive_features=keys)),
            "equalized_odds_difference": float(equalized_odds_difference(yt, yp, sensitive_features=keys))}


# --------------------------------------------------------------------------- regression


def audit_regression(y: np.ndarray, pred: np.ndarray, keys: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Per-group MAE, RMSE and bias (mean prediction - target) with intervals, and the gaps between groups."""
    names = sorted(set(keys.tolist()))
    y, pred = np.asarray(y, dtype=np.float64).reshape(-1), np.asarray(pred, dtype=np.float64).reshape(-1)

    def compute(w, rows):
        return _regression_errors(w, y[rows], pred[rows])

    per_group = _per_group(keys, names, compute, n_resamples, seed)
    summary = {f"{m}_difference": {"value": _value(_gap(per_group, names, m)), "ci": _interval(_gap(per_group, names, m), confidence)}
               for m in ERRORS}
    return {"task": "regression", "groups": _table(per_group, keys, names, ERRORS + ("mean_prediction", "mean_target"), confidence),
            "between_groups": summary, "confidence": confidence, "resamples": n_resamples,
            "not_applicable": ["selection_rate", "true_positive_rate", "false_positive_rate", "demographic_parity_difference",
                               "demographic_parity_ratio", "equalized_odds_difference", "mitigation (--mitigate)"],
            "why_not": "they compare yes/no decisions between groups, and a regression model makes numbers, not decisions"}


# --------------------------------------------------------------------------- mitigation


def fit_group_thresholds(proba: np.ndarray, y: np.ndarray, keys: np.ndarray, constraints: str, objective: str, positive: int,
                         positive_class: str, sensitive: str, seed: int = 0, grid_size: int = 1000,
                         derived_from: Optional[str] = None) -> GroupThresholds:
    """fairlearn's ThresholdOptimizer on validation probabilities (N, 2) and labels, as a GroupThresholds rule."""
    from fairlearn.postprocessing import ThresholdOptimizer

    _check_fittable(y == positive, keys, constraints, sensitive)
    scores = np.asarray(proba, dtype=np.float64)[:, positive].reshape(-1, 1)  # float64: see the module docstring
    optimizer = ThresholdOptimizer(estimator=_stored_scores(), prefit=True, constraints=constraints, objective=OBJECTIVES[objective],
                                   predict_method="predict_proba", grid_size=grid_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        optimizer.fit(scores, (y == positive).astype(int), sensitive_features=keys.astype(str))
    groups = {}
    for name, rule in optimizer.interpolated_thresholder_.interpolation_dict.items():
        entry = {"p0": float(rule.p0), "operator0": rule.operation0.operator, "threshold0": threshold_text(rule.operation0.threshold),
                 "p1": float(rule.p1), "operator1": rule.operation1.operator, "threshold1": threshold_text(rule.operation1.threshold)}
        if "p_ignore" in rule:  # equalized odds: mix in a constant decision rate
            entry.update(p_ignore=float(rule.p_ignore), prediction_constant=float(rule.prediction_constant))
        groups[str(name)] = entry
    return GroupThresholds(sensitive=sensitive, positive_index=positive, positive_class=positive_class, constraints=constraints,
                           objective=OBJECTIVES[objective], seed=seed, groups=groups, derived_from=derived_from)


def _check_fittable(is_positive: np.ndarray, keys: np.ndarray, constraints: str, sensitive: str) -> None:
    """Equalized odds needs both outcomes in every validation group (fairlearn: 'Degenerate labels')."""
    if constraints != "equalized_odds":
        return
    degenerate = [name for name in sorted(set(keys.tolist())) if is_positive[keys == name].all() or not is_positive[keys == name].any()]
    if degenerate:
        raise DataError(f"Equalized odds balances true and false positive rates, so every group of '{sensitive}' needs both outcomes in "
                        f"the validation split; {choices_text(degenerate)} has only one. Use --mitigate demographic_parity, or more "
                        "validation data (data.split.val).")


def _stored_scores():
    """A prefit estimator for ThresholdOptimizer whose one input column IS the positive-class probability
    (nothing to pickle, no row bookkeeping)."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class StoredScores(ClassifierMixin, BaseEstimator):
        def fit(self, X, y=None):
            self.classes_ = np.array([0, 1])
            return self

        def __sklearn_is_fitted__(self) -> bool:
            return True

        def predict_proba(self, X) -> np.ndarray:
            s = np.asarray(X, dtype=np.float64).reshape(len(X), -1)[:, 0]
            return np.column_stack([1.0 - s, s])

    return StoredScores().fit(None)


def paired_accuracy(y: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict:
    """Accuracy before and after on the same rows, the change, and McNemar's exact test of it."""
    from damoxing.evaluation.paired import mcnemar

    correct_before, correct_after = before == y, after == y
    test = mcnemar(correct_before, correct_after)
    return {"accuracy_before": float(correct_before.mean()), "accuracy_after": float(correct_after.mean()),
            "accuracy_change": float(correct_after.mean() - correct_before.mean()), "mcnemar": test}


def expected_selection(rule: GroupThresholds, proba: np.ndarray, keys: np.ndarray) -> dict[str, float]:
    """Per group, the share of rows the rule decides positive on average (its P(positive) averaged over the rows)."""
    p = rule.positive_probability(np.asarray(proba)[:, rule.positive_index], keys)
    return {name: float(p[keys == name].mean()) for name in sorted(set(keys.tolist()))}


def constant_groups(selection: dict[str, float], tolerance: float = 0.01) -> list[str]:
    """Groups where the rule decides (nearly) the same for every row, e.g. 'release everyone': at least 99% or at most 1% positive."""
    return [name for name, rate in selection.items() if rate >= 1.0 - tolerance or rate <= tolerance]
