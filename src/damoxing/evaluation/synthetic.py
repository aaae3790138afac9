"""How good, how private and how useful a synthetic table is, measured against the real rows.

Three blocks, each computed for the synthetic rows beside two yardsticks:

    baseline   "independent columns": each column drawn on its own from the training rows (every
               column's distribution exact, every relation between columns lost)
    reference  the real held-out rows: what a generator as good as the data itself would score
               (only sample size keeps it from perfect)

* fidelity: per column a distribution distance (numbers and dates: the Kolmogorov-Smirnov
  statistic and the Wasserstein distance in training standard deviations; categories: the total
  variation distance between frequencies) and the missing rates; the mean and largest absolute
  difference between the Pearson correlations of every pair of numeric columns; and a classifier
  two-sample test: gradient boosting told to separate real training rows from the other rows
  (equal numbers, 5-fold cross-validated ROC AUC; 0.5: it cannot tell them apart, 1.0: always can).
* privacy: distance to closest record (DCR) in model space (the run's own scaling and one-hot
  encoding). For each synthetic row the nearest training row and the nearest held-out row, the
  training rows sampled down to as many as there are held-out rows (20 draws, averaged): a
  generator that learnt the distribution is as close to one as to the other (share closer to
  training about 0.5); one that copies its training rows is much closer to them (share near 1,
  exact copies counted). And a membership-inference attack from the synthetic rows alone: each real
  row scored by its distance to the nearest synthetic row, the ROC AUC of training against held-out
  rows (0.5: membership is not given away).
* utility (train-synthetic-test-real): when a label column is known, a gradient boosting model
  trained on the synthetic rows and one trained on the real training rows, both tested on the real
  held-out rows, beside predicting the most frequent class (or the mean).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

FOLDS = 5
TWO_SAMPLE_MAX = 5000  # rows per side in the two-sample test (more adds little and costs time)
DCR_MAX = 5000  # synthetic rows whose closest records are looked up
SUBSAMPLES = 20  # draws of training rows the share closer to training is averaged over
COPY_DISTANCE = 1e-6  # nearer than this to a training row (in model space): a copy


def independent_columns(train: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The baseline generator: n rows, each column drawn with replacement from the training rows on its own."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: train[c].to_numpy()[rng.integers(0, len(train), n)] for c in train.columns}).astype(train.dtypes.to_dict())


# --------------------------------------------------------------------------------------------- fidelity


def _as_numbers(values: pd.Series, kind: str) -> np.ndarray:
    """A numeric or date column as float64 (NaN where missing): dates as days since 1970."""
    if kind == "date":
        stamps = pd.to_datetime(values.astype(object).where(values.notna()), errors="coerce", format="mixed", utc=True)
        return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan) / 86400
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def column_distances(real: pd.DataFrame, other: pd.DataFrame, kinds: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per column: ks and wasserstein_sd (numbers, dates) or tvd (categories), and both missing rates."""
    from scipy.stats import ks_2samp, wasserstein_distance

    out = {}
    for name, kind in kinds.items():
        row: dict[str, float] = {"missing_real": float(real[name].isna().mean()), "missing_other": float(other[name].isna().mean())}
        if kind in ("numeric", "date"):
            a, b = _as_numbers(real[name], kind), _as_numbers(other[name], kind)
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            if len(a) and len(b):
                sd = float(a.std()) or 1.0
                row.update(ks=float(ks_2samp(a, b).statistic), wasserstein_sd=float(wasserstein_distance(a, b)) / sd)
        else:
            p = real[name].dropna().astype(str).value_counts(normalize=True)
            q = other[name].dropna().astype(str).value_counts(normalize=True)
            row["tvd"] = float(0.5 * p.subtract(q, fill_value=0).abs().sum())
        out[str(name)] = row
    return out


def correlation_difference(real: pd.DataFrame, other: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """Mean and largest |corr_real - corr_other| over the pairs of numeric (and date) columns."""
    names = [c for c, k in kinds.items() if k in ("numeric", "date")]
    if len(names) < 2:
        return {"pairs": 0}
    a = pd.DataFrame({c: _as_numbers(real[c], kinds[c]) for c in names}).corr()
    b = pd.DataFrame({c: _as_numbers(other[c], kinds[c]) for c in names}).corr()
    diff = (a - b).abs().to_numpy()
    upper = np.triu_indices(len(names), k=1)
    values = np.nan_to_num(diff[upper], nan=0.0)
    worst = int(np.argmax(values))
    return {"pairs": len(values), "mean_abs": float(values.mean()), "max_abs": float(values[worst]),
            "worst_pair": [str(names[upper[0][worst]]), str(names[upper[1][worst]])]}


def two_sample_auc(real: np.ndarray, other: np.ndarray, seed: int) -> Optional[float]:
    """Cross-validated ROC AUC of a classifier separating `real` rows from `other` rows (equal numbers);
    None with fewer than 2 rows on a side."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    n = min(len(real), len(other), TWO_SAMPLE_MAX)
    if n < 2:
        return None
    x = np.vstack([real[rng.choice(len(real), n, replace=False)], other[rng.choice(len(other), n, replace=False)]])
    y = np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(n_splits=min(FOLDS, n), shuffle=True, random_state=seed)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    return float(cross_val_score(model, x, y, cv=folds, scoring="roc_auc").mean())


def fidelity(train: pd.DataFrame, train_x: np.ndarray, other: pd.DataFrame, other_x: np.ndarray, kinds: dict[str, str],
             seed: int) -> dict[str, Any]:
    """The fidelity block of `other` rows against the real training rows (`*_x`: the rows in model space)."""
    columns = column_distances(train, other, kinds)
    distances = [row.get("ks", row.get("tvd")) for row in columns.values()]
    present = [d for d in distances if d is not None]
    return {"rows": len(other), "columns": columns, "mean_column_distance": float(np.mean(present)) if present else None,
            "correlation": correlation_difference(train, other, kinds),
            "two_sample_auc": two_sample_auc(train_x, other_x, seed)}


# ---------------------------------------------------------------------------------------------- privacy


def _nearest(rows: np.ndarray, against: np.ndarray) -> np.ndarray:
    """Each row's Euclidean distance to its nearest row of `against`."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=1).fit(against).kneighbors(rows)[0][:, 0]


def closeness(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, seed: int) -> dict[str, Any]:
    """Distances to closest records of encoded synthetic rows (see the module's docstring).

    The share closer to training is averaged over SUBSAMPLES draws of the training rows: a generator
    whose rows all sit in one place (a collapsed one) would otherwise stake the whole share on one
    comparison and read as 0 or 1."""
    rng = np.random.default_rng(seed)
    rows = synthetic[rng.choice(len(synthetic), min(len(synthetic), DCR_MAX), replace=False)]
    to_holdout = _nearest(rows, holdout)
    shares = []
    for _ in range(SUBSAMPLES):
        to_train = _nearest(rows, train[rng.choice(len(train), min(len(train), len(holdout)), replace=False)])
        shares.append(float(np.mean(to_train < to_holdout) + 0.5 * np.mean(to_train == to_holdout)))
    closer = float(np.mean(shares))
    to_all = _nearest(rows, train)
    holdout_to_train = _nearest(holdout, train)
    return {"rows": len(rows), "share_closer_to_train": closer, "share_spread": float(np.std(shares)), "expected_share": 0.5,
            "dcr_median": float(np.median(to_all)), "dcr_5th_percentile": float(np.percentile(to_all, 5)),
            "holdout_dcr_median": float(np.median(holdout_to_train)),
            "copies": int(np.sum(to_all < COPY_DISTANCE)), "copy_share": float(np.mean(to_all < COPY_DISTANCE)),
            "membership_auc": membership_auc(rows, train, holdout, rng)}


def membership_auc(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, rng: np.random.Generator) -> Optional[float]:
    """A membership-inference attack that sees only the synthetic rows: it scores each real row by how
    close its nearest synthetic row is, and guesses "was in the training set" for the closest. The
    ROC AUC of that score, training rows (sampled to as many as the held-out rows, SUBSAMPLES draws
    averaged) against held-out rows: 0.5, the synthetic rows give membership away no better than a
    coin; 1.0, every training row can be picked out."""
    from sklearn.metrics import roc_auc_score

    n = min(len(train), len(holdout))
    if n < 2:
        return None
    holdout_score = -_nearest(holdout, synthetic)
    aucs = []
    for _ in range(SUBSAMPLES):
        member_score = -_nearest(train[rng.choice(len(train), n, replace=False)], synthetic)
        aucs.append(roc_auc_score(np.r_[np.ones(n), np.zeros(len(holdout))], np.r_[member_score, holdout_score]))
    return float(np.mean(aucs))


# ---------------------------------------------------------------------------------------------- utility


def label_keys(values: pd.Series) -> pd.Series:
    """Class labels as comparable text: numbers through float (1, 1.0 and Int64 1 are one class), the rest as text."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(float).map(repr)
    return values.astype(str)


def is_class_label(values: pd.Series) -> bool:
    """A label to classify: text, bools, or whole numbers with at most 20 distinct values."""
    present = values.dropna()
    if not pd.api.types.is_numeric_dtype(present.dtype) or pd.api.types.is_bool_dtype(present.dtype):
        return True
    numbers = present.astype(float)
    return bool((numbers == numbers.round()).all()) and present.nunique() <= 20


def utility(train: pd.DataFrame, synthetic: pd.DataFrame, test: pd.DataFrame, target: str,
            encoder: Callable[[pd.DataFrame, list[str]], Callable[[pd.DataFrame], np.ndarray]], seed: int) -> dict[str, Any]:
    """Train-synthetic-test-real: the same model fitted on synthetic and on real training rows, scored on real test rows.

    `encoder(frame, columns)` fits an input encoding on `frame` and returns the function that applies it."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    features = [c for c in train.columns if c != target]
    classify = is_class_label(train[target])
    scores: dict[str, Any] = {"target": str(target), "task": "classification" if classify else "regression",
                              "model": "HistGradientBoosting", "test_rows": int(test[target].notna().sum())}
    test = test[test[target].notna()]
    for name, rows in (("real", train), ("synthetic", synthetic)):
        rows = rows[rows[target].notna()]
        if len(rows) < 2 or (classify and label_keys(rows[target]).nunique() < 2):
            scores[name] = {"error": f"the {name} rows hold fewer than 2 {'classes' if classify else 'values'} of '{target}'"}
            continue
        encode = encoder(rows, features)
        y, y_test = rows[target], test[target]
        if classify:
            y, y_test = label_keys(y), label_keys(y_test)
            model = HistGradientBoostingClassifier(random_state=seed).fit(encode(rows), y)
            result = {"accuracy": float(accuracy_score(y_test, model.predict(encode(test))))}
            if len(model.classes_) == 2 and y_test.nunique() == 2:
                proba = model.predict_proba(encode(test))[:, 1]
                result["roc_auc"] = float(roc_auc_score(y_test == model.classes_[1], proba))
        else:
            model = HistGradientBoostingRegressor(random_state=seed).fit(encode(rows), y.astype(float))
            result = {"r2": float(r2_score(y_test.astype(float), model.predict(encode(test))))}
        scores[name] = result
    if classify:
        majority = label_keys(train[target].dropna()).mode().iloc[0]
        scores["baseline"] = {"accuracy": float((label_keys(test[target]) == majority).mean()), "predicts": majority}
    else:
        scores["baseline"] = {"r2": float(r2_score(test[target].astype(float), np.full(len(test), float(train[target].mean()))))}
    return scores
