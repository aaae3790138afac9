"""Metrics over numpy arrays: classification, regression, do-nothing baselines, bootstrap intervals
and calibration. Every result is JSON-ready (python floats, ints, lists, None); nothing warns.

Shapes: N samples, K classes, T regression outputs, R bootstrap resamples.

One code path computes each metric for R weighted copies of the data at once: row r of a (R, N)
weight matrix says how many times each sample is drawn. The point estimate is the single all-ones
row, a bootstrap is R multinomial rows, so the interval and the estimate can never disagree in
definition. The values match scikit-learn (``zero_division=0``, ``labels=range(K)``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from damoxing.core.errors import ConfigError, DataError
from damoxing.core.registry import Registry

TASKS = ("classification", "regression")
ECE_BINS = 10


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MetricInfo:
    """What the training loop needs to know about a monitored metric."""

    name: str
    task: str  # "classification", "regression", "language_modeling" or "any"
    greater_is_better: bool
    fn: Optional[Callable[..., float]] = None  # fn(y_true, pred) -> float; None when the loop computes it


METRICS: Registry[MetricInfo] = Registry("metric")


def metric_direction(name: str) -> str:
    """'max' if a larger value of metric `name` is better, else 'min'. Unknown name -> ConfigError."""
    return "max" if METRICS.get(name).greater_is_better else "min"


# --------------------------------------------------------------------------- validation


def _check_labels(y: object, n_classes: int, what: str = "y_true") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise DataError(f"{what} must be a non-empty 1-D array of class indices, got shape {y.shape}.")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise DataError(f"{what} must hold integer class indices, got dtype {y.dtype}.")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(f"{what} holds class {int(y.min() if y.min() < 0 else y.max())}; valid classes are 0..{n_classes - 1}.")
    return y.astype(np.int64, copy=False)


def _check_proba(proba: object) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:  # binary, probability of class 1
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise DataError(f"proba must have shape (N, K) with N >= 1 and K >= 2 classes, got {p.shape}.")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise DataError("proba must hold finite probabilities in [0, 1] (softmax outputs, not logits).")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-3):
        raise DataError(
            f"proba rows must sum to 1 (they sum to {sums.min():.4g}..{sums.max():.4g}); "
            "pass softmax probabilities, not logits."
        )
    return np.clip(p, 0.0, 1.0)


def _check_classification(y_true: object, proba: object) -> tuple[np.ndarray, np.ndarray]:
    p = _check_proba(proba)
    y = _check_labels(y_true, p.shape[1])
    if len(y) != len(p):
        raise DataError(f"y_true has {len(y)} samples but proba has {len(p)}.")
    return y, p


def _check_class_names(class_names: object, n_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n_classes)]
    names = [str(c) for c in class_names]  # type: ignore[union-attr]
    if len(names) != n_classes or len(set(names)) != n_classes:
        raise DataError(f"class_names must be {n_classes} distinct names, got {names}.")
    return names


def _check_regression(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if yt.shape != yp.shape:
        raise DataError(f"y_true has shape {yt.shape} but y_pred has shape {yp.shape}.")
    if yt.ndim not in (1, 2) or yt.size == 0:
        raise DataError(f"regression targets must have shape (N,) or (N, T) with N >= 1, got {yt.shape}.")
    if not (np.all(np.isfinite(yt)) and np.all(np.isfinite(yp))):
        raise DataError("regression targets and predictions must be finite (no NaN or inf).")
    return yt.reshape(len(yt), -1), yp.reshape(len(yp), -1)


# --------------------------------------------------------------------------- weighted core


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0.0 where den == 0 (sklearn's zero_division=0), without warnings."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of x over the last axis where mask; NaN for rows with no True."""
    count = mask.sum(axis=-1)
    total = np.where(mask, x, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


class _Groups:
    """Sum (R, N) sample weights into groups given by integer keys (N,) in [0, n_groups)."""

    def __init__(self, keys: np.ndarray, n_groups: int, values: Optional[np.ndarray] = None):
        self.order = np.argsort(keys, kind="stable")
        sorted_keys = keys[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        self.present = sorted_keys[self.starts]
        self.values = None if values is None else values[self.order]
        self.n_groups = n_groups

    def sums(self, w: np.ndarray) -> np.ndarray:
        """(R, N) weights -> (R, n_groups) per-group sums of weight (times value, if given)."""
        ws = w[:, self.order]
        if self.values is not None:
            ws = ws * self.values
        out = np.zeros((len(w), self.n_groups))
        out[:, self.present] = np.add.reduceat(ws, self.starts, axis=1)
        return out


def _ece_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index (N,) for equal-width bins (lower, upper] on [0, 1]; 0 falls in the first bin."""
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], confidence, side="left")


class _AUC:
    """Rank-based (Mann-Whitney) ROC AUC of `score` (N,) against boolean `positive` (N,): the
    weighted share of (positive, negative) pairs ranked correctly, ties counting half."""

    def __init__(self, score: np.ndarray, positive: np.ndarray):
        self.pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
        self.neg = neg[np.argsort(score[neg], kind="stable")]
        neg_scores = score[self.neg]
        # negatives scored below (lo) and at-or-below (hi) each positive, as prefix lengths
        self.lo = np.searchsorted(neg_scores, score[self.pos], side="left")
        self.hi = np.searchsorted(neg_scores, score[self.pos], side="right")

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """(R, N) weights -> (R,) AUC, NaN where a resample lacks positives or negatives."""
        cum = np.zeros((len(w), len(self.neg) + 1))
        np.cumsum(w[:, self.neg], axis=1, out=cum[:, 1:])
        w_pos = w[:, self.pos]
        wins = 0.5 * (w_pos * (cum[:, self.lo] + cum[:, self.hi])).sum(axis=1)
        pairs = w_pos.sum(axis=1) * cum[:, -1]
        return np.divide(wins, pairs, out=np.full(len(w), np.nan), where=pairs > 0)


class _Classification:
    """Per-sample quantities of a classification result, ready for weighted evaluation.

    `with_auc=False` leaves roc_auc out: its K per-class rank statistics cost about ten times all
    the other metrics together, which a caller that wants one other metric need not pay."""

    def __init__(self, y: np.ndarray, proba: np.ndarray, with_auc: bool = True):
        n, k = proba.shape
        self.n, self.k = n, k
        pred = proba.argmax(axis=1)
        eps = np.finfo(np.float64).eps
        self.sample_loss = -np.log(np.clip(proba[np.arange(n), y], eps, 1 - eps))
        confidence = proba.max(axis=1)
        self.cells = _Groups(y * k + pred, k * k)
        self.ece = _Groups(_ece_bins(confidence, ECE_BINS), ECE_BINS, (pred == y) - confidence)
        self.auc_defined = with_auc and len(np.unique(y)) > 1
        if not self.auc_defined:
            self.aucs = []
        elif k == 2:
            self.aucs = [_AUC(proba[:, 1], y == 1)]
        else:
            self.aucs = [_AUC(proba[:, c], y == c) for c in range(k)]

    def evaluate(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """(R, N) weights -> {metric: (R,)} plus '_confusion' (R, K, K)."""
        n = w.sum(axis=1)
        cm = self.cells.sums(w).reshape(len(w), self.k, self.k)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        support, predicted = cm.sum(axis=2), cm.sum(axis=1)
        precision, recall = _div(tp, predicted), _div(tp, support)
        out = {
            "accuracy": tp.sum(axis=1) / n,
            "balanced_accuracy": _masked_mean(recall, support > 0),
            "precision_macro": precision.mean(axis=1),
            "recall_macro": recall.mean(axis=1),
            "f1_macro": _div(2 * tp, support + predicted).mean(axis=1),
            "log_loss": w @ self.sample_loss / n,
            "ece": np.abs(self.ece.sums(w)).sum(axis=1) / n,
            "_confusion": cm,
        }
        if self.auc_defined:
            per_class = np.column_stack([auc(w) for auc in self.aucs])
            out["roc_auc"] = _masked_mean(per_class, ~np.isnan(per_class))
        return out


def _regression_eval(w: np.ndarray, yt: np.ndarray, yp: np.ndarray) -> dict[str, np.ndarray]:
    """(R, N) weights, (N, T) targets and predictions -> {metric: (R,)}, outputs averaged uniformly."""
    n = w.sum(axis=1, keepdims=True)
    err = yp - yt
    mse = w @ err**2 / n
    sse = mse * n
    centred = yt - yt.mean(axis=0)  # centring first keeps the weighted variance accurate
    sq = w @ centred**2
    mean = w @ centred / n
    sst = np.maximum(sq - n * mean**2, 0.0)
    constant = sst <= 1e-12 * sq  # a constant target column (in this resample)
    r2 = np.where(constant, np.where(sse == 0, 1.0, 0.0), 1.0 - _div(sse, sst))
    return {
        "mse": mse.mean(axis=1),
        "rmse": np.sqrt(mse).mean(axis=1),
        "mae": (w @ np.abs(err) / n).mean(axis=1),
        "r2": r2.mean(axis=1),
    }


# --------------------------------------------------------------------------- public metrics


def classification_metrics(y_true, proba, class_names=None) -> dict:
    """Metrics of class probabilities `proba` (N, K) against class indices `y_true` (N,) in [0, K).

    Returns accuracy, balanced_accuracy, precision/recall/f1_macro (averaged over all K classes),
    log_loss, roc_auc (binary: on proba[:, 1]; multiclass: one-vs-rest macro over the classes
    present in y_true; None if y_true holds one class), ece (10 bins), confusion_matrix (K x K,
    rows = true class) and per_class {name: {precision, recall, f1, support}}.
    """
    y, p = _check_classification(y_true, proba)
    names = _check_class_names(class_names, p.shape[1])
    values = _Classification(y, p).evaluate(np.ones((1, len(y))))
    cm = values.pop("_confusion")[0].astype(np.int64)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    precision, recall, f1 = _div(tp, predicted), _div(tp, support), _div(2 * tp, support + predicted)
    out: dict = {name: float(v[0]) for name, v in values.items()}
    out.setdefault("roc_auc", None)
    out["confusion_matrix"] = cm.tolist()
    out["per_class"] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(names)
    }
    return out


def regression_metrics(y_true, y_pred) -> dict:
    """mse, rmse, mae and r2 of `y_pred` against `y_true`, both (N,) or (N, T).

    Multi-output values are the plain mean over the T outputs (sklearn's 'uniform_average'; rmse is
    the mean of per-output rmse). r2 of a constant target is 1.0 if predicted exactly, else 0.0.
    """
    yt, yp = _check_regression(y_true, y_pred)
    return {name: float(v[0]) for name, v in _regression_eval(np.ones((1, len(yt))), yt, yp).items()}


def calibration_curve(y_true, proba, n_bins: int = ECE_BINS) -> dict:
    """Reliability-diagram data: confidence = max probability, correct = (argmax == y_true).

    `y_true` (N,), `proba` (N, K). Returns {"ece": float, "bins": [...]} with all `n_bins`
    equal-width bins (lower, upper]; an empty bin has count 0 and confidence/accuracy None.
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}.")
    y, p = _check_classification(y_true, proba)
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    index = _ece_bins(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "confidence": float(conf_sum[b] / count[b]) if count[b] else None,
            "accuracy": float(correct_sum[b] / count[b]) if count[b] else None,
            "count": int(count[b]),
        }
        for b in range(n_bins)
    ]
    return {"ece": float(np.abs(correct_sum - conf_sum).sum() / len(y)), "bins": bins}


# --------------------------------------------------------------------------- baselines


def baseline_classification(y_train, y_true, n_classes: int, class_names=None) -> dict:
    """classification_metrics of doing nothing: always predict the training majority class, with
    probabilities = training class frequencies. `y_train` (M,), `y_true` (N,) class indices."""
    if int(n_classes) < 2:
        raise DataError(f"n_classes must be at least 2, got {n_classes}.")
    y_train = _check_labels(y_train, int(n_classes), "y_train")
    freq = np.bincount(y_train, minlength=int(n_classes)) / len(y_train)
    y = _check_labels(y_true, int(n_classes))
    return classification_metrics(y, np.tile(freq, (len(y), 1)), class_names)


def baseline_regression(y_train, y_true) -> dict:
    """regression_metrics of doing nothing: always predict the training mean. `y_train` (M,) or
    (M, T), `y_true` (N,) or (N, T)."""
    y_train = np.asarray(y_train, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)
    if y_train.size == 0 or y_train.shape[1:] != y.shape[1:] or not np.all(np.isfinite(y_train)):
        raise DataError(f"y_train (shape {y_train.shape}) must be finite, non-empty and shaped like y_true {y.shape}.")
    return regression_metrics(y, np.broadcast_to(y_train.mean(axis=0), y.shape))


# --------------------------------------------------------------------------- weighted metrics (public)

SCALAR_METRICS = {
    "classification": ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "ece", "roc_auc"),
    "regression": ("mse", "rmse", "mae", "r2"),
}
CELLS_PER_CHUNK = 2_000_000  # bootstrap weights are built this many (resample, sample) cells at a time


class WeightedMetrics:
    """The scalar metrics of one set of predictions, for R weighted copies of its N rows at once.

    The inputs are checked and the per-row quantities computed once; each call then takes an
    (R, N) weight matrix (row r: how often each row is drawn) and returns {metric: (R,)}. The
    all-ones row gives exactly the values of classification_metrics / regression_metrics, so a
    bootstrap (or a paired comparison of two models on the same weight rows) and the point
    estimate share one definition.

    Args:
        task: "classification" (pred = (N, K) probabilities, y_true = (N,) class indices) or
            "regression" (y_true and pred (N,) or (N, T)).
        only: metric names to compute (default: all of SCALAR_METRICS[task]). Leaving roc_auc out
            skips its per-class rank statistics, which cost about ten times all the others.
    Attributes:
        names: the metrics computed. n: rows. width: values per row (T for regression, else 1).
    """

    def __init__(self, task: str, y_true, pred, only: Optional[Collection[str]] = None):
        if task not in SCALAR_METRICS:
            raise ConfigError(f"Unknown task '{task}' for weighted metrics. Valid tasks: {', '.join(repr(t) for t in SCALAR_METRICS)}.")
        valid = SCALAR_METRICS[task]
        self.names = valid if only is None else tuple(only)
        unknown = [name for name in self.names if name not in valid]
        if unknown:
            raise ConfigError(f"'{unknown[0]}' is not a {task} metric computed from predictions. Valid: {', '.join(valid)}.")
        if task == "classification":
            y, p = _check_classification(y_true, pred)
            self._evaluate = _Classification(y, p, with_auc="roc_auc" in self.names).evaluate
            self.n, self.width = len(y), 1
        else:
            yt, yp = _check_regression(y_true, pred)
            self._evaluate = partial(_regression_eval, yt=yt, yp=yp)
            self.n, self.width = len(yt), yt.shape[1]

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """(R, N) weights -> {metric: (R,)}; NaN where a metric is undefined (roc_auc without both classes)."""
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.n:
            raise DataError(f"weights must have shape (R, {self.n}) (one column per row), got {w.shape}.")
        values = self._evaluate(w)
        return {name: values.get(name, np.full(len(w), np.nan)) for name in self.names}


def metric_values(task: str, y_true, pred, weights: np.ndarray, only: Optional[Collection[str]] = None) -> dict[str, np.ndarray]:
    """{metric: (R,)} for R weighted copies of the rows: WeightedMetrics(task, y_true, pred, only)(weights)."""
    return WeightedMetrics(task, y_true, pred, only)(weights)


def resample_weights(rng: np.random.Generator, n_resamples: int, n: int) -> np.ndarray:
    """(R, N) counts: how often each of N rows is drawn in each of R resamples of size N."""
    idx = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
    return np.bincount(idx.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def bootstrap_weights(rng: np.random.Generator, n_resamples: int, n: int, width: int = 1) -> Iterator[np.ndarray]:
    """R resample weight rows (see resample_weights) in chunks of about CELLS_PER_CHUNK (resample,
    row, output) cells, so memory stays bounded; the same rng state gives the same rows."""
    chunk = max(1, CELLS_PER_CHUNK // (n * width))
    for start in range(0, n_resamples, chunk):
        yield resample_weights(rng, min(chunk, n_resamples - start), n)


def check_labels(y: object, n_classes: int, what: str = "y_true") -> np.ndarray:
    """(N,) integer class indices in [0, n_classes), or a DataError naming `what`."""
    return _check_labels(y, n_classes, what)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(task: str, y_true, pred, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Percentile bootstrap intervals {metric: [low, high]} for every scalar metric of `task`.

    `pred` is proba (N, K) for "classification", y_pred (N,) or (N, T) for "regression". Resamples
    are evaluated vectorised (WeightedMetrics), in chunks of (resample, sample) cells; the same
    seed gives the same intervals. Resamples where a metric is undefined (e.g. roc_auc with a
    single class) are left out of that metric's interval; a metric undefined on the full data gets None.
    """
    if task not in TASKS:
        raise ConfigError(f"Unknown task '{task}' for bootstrap_ci. Valid tasks: {', '.join(repr(t) for t in TASKS)}.")
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}.")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be between 0 and 1, got {confidence!r}.")
    evaluate = WeightedMetrics(task, y_true, pred)
    rng = np.random.default_rng(seed)
    parts = [evaluate(w) for w in bootstrap_weights(rng, n_resamples, evaluate.n, evaluate.width)]
    tail = (1.0 - confidence) / 2
    out: dict = {}
    for name in evaluate.names:
        values = np.concatenate([part[name] for part in parts])
        values = values[~np.isnan(values)]
        out[name] = [float(q) for q in np.quantile(values, [tail, 1.0 - tail])] if len(values) else None
    return out


def ci_label(level: Optional[float]) -> str:
    """How an interval at coverage `level` is labelled: 0.9 -> '90% CI'. Runs saved before metrics.json
    recorded the level ({split}_ci_level) used 0.95."""
    return f"{(0.95 if level is None else level) * 100:g}% CI"


# --------------------------------------------------------------------------- registration


def _one(compute: Callable[..., dict], name: str, y_true, pred) -> float:
    return compute(y_true, pred)[name]


for _name, _better in [
    ("accuracy", True), ("balanced_accuracy", True), ("precision_macro", True), ("recall_macro", True),
    ("f1_macro", True), ("log_loss", False), ("roc_auc", True), ("ece", False),
]:  # fmt: skip
    METRICS.register(_name)(MetricInfo(_name, "classification", _better, partial(_one, classification_metrics, _name)))
for _name, _better in [("mse", False), ("rmse", False), ("mae", False), ("r2", True)]:
    METRICS.register(_name)(MetricInfo(_name, "regression", _better, partial(_one, regression_metrics, _name)))
METRICS.register("perplexity")(MetricInfo("perplexity", "language_modeling", False))
METRICS.register("loss")(MetricInfo("loss", "any", False))
for _name in ("recon", "kl", "d_loss", "g_loss", "frechet_distance"):  # computed by the generation task
    METRICS.register(_name)(MetricInfo(_name, "generation", False))
# diversity: 0 for a generator collapsed to one sample, about 1 for the real data
METRICS.register("diversity")(MetricInfo("diversity", "generation", True))
