"""A run's post-processing of its model's outputs: group-specific decision thresholds (postprocess.json).

`damoxing audit RUN --sensitive COLUMN --mitigate equalized_odds` fits fairlearn's
ThresholdOptimizer on the run's validation predictions and writes a NEW run folder: the same model
plus this file, which `Predictor` (predict, evaluate, and whatever serves a Predictor) applies:

    {"type": "group_thresholds", "version": 1, "sensitive": "sex", "positive_class": "Yes",
     "positive_index": 1, "constraints": "equalized_odds", "objective": "balanced_accuracy_score",
     "seed": 0, "groups": {"Female": {"p0": 0.4, "operator0": ">", "threshold0": 0.61,
                                      "p1": 0.6, "operator1": ">", "threshold1": "-inf",
                                      "p_ignore": 0.1, "prediction_constant": 0.8}, ...}}

For a row of group g whose model probability of the positive class is s:

    P(positive) = p0 [s op0 t0] + p1 [s op1 t1]              (op: '>' or '<'; t may be +-inf)
    P(positive) = p_ignore c + (1 - p_ignore) P(positive)    (equalized odds only)

and the decision is positive where P(positive) >= u, with one u ~ U(0, 1) per row drawn from
numpy's RandomState(seed): exactly fairlearn's ThresholdOptimizer.predict(X, random_state=seed),
without fairlearn at prediction time and without a pickle. The same input gives the same
decisions; a row whose P(positive) is strictly between 0 and 1 is a coin flip by design.
Infinite thresholds are stored as the strings "inf" / "-inf" (strict JSON has no Infinity).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.errors import DataError, RunFolderError, choices_text

FILE = "postprocess.json"
MISSING_GROUP = "<missing>"


def group_keys(values: Any) -> np.ndarray:
    """Sensitive values as the text keys of `groups`: 1.0 and 1 are '1', a missing value is '<missing>'."""
    import pandas as pd

    series = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values.astype(object)
    out = np.empty(len(series), dtype=object)
    for i, v in enumerate(series.to_numpy()):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
            out[i] = MISSING_GROUP
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v.item() if isinstance(v, np.generic) else v)
    return out


def threshold_text(value: float) -> float | str:
    """A threshold for strict JSON: finite values as they are, infinities as 'inf' / '-inf'."""
    value = float(value)
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


@dataclass(frozen=True)
class GroupThresholds:
    """Fitted per-group decision rules for one binary classifier (see the module docstring)."""

    sensitive: str
    positive_index: int
    positive_class: str
    constraints: str
    objective: str
    seed: int
    groups: dict[str, dict[str, Any]]
    derived_from: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "group_thresholds", "version": 1, "sensitive": self.sensitive, "positive_class": self.positive_class,
                "positive_index": self.positive_index, "constraints": self.constraints, "objective": self.objective,
                "seed": self.seed, "derived_from": self.derived_from, "groups": self.groups}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GroupThresholds":
        if not isinstance(d, dict) or d.get("type") != "group_thresholds":
            raise RunFolderError(f"{FILE} describes a '{d.get('type') if isinstance(d, dict) else type(d).__name__}' "
                                 "post-processing; this version of damoxing applies 'group_thresholds' only.")
        return cls(sensitive=d["sensitive"], positive_index=int(d["positive_index"]), positive_class=str(d["positive_class"]),
                   constraints=d["constraints"], objective=d["objective"], seed=int(d["seed"]), groups=dict(d["groups"]),
                   derived_from=d.get("derived_from"))

    # -- applying -------------------------------------------------------------------------------

    def positive_probability(self, scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """P(positive decision) per row, from the model's positive-class probability `scores` (N,) and group keys (N,)."""
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        unknown = sorted(set(keys.tolist()) - set(self.groups))
        if unknown:  # fairlearn would silently predict 0 for them
            raise DataError(f"The '{self.sensitive}' column holds {choices_text(unknown)}, group(s) the thresholds of this run were not "
                            f"fitted for; it knows {choices_text(sorted(self.groups))}. Predict those rows with the original run"
                            + (f" ({self.derived_from})." if self.derived_from else "."))
        p = np.zeros(len(s))
        for name, rule in self.groups.items():
            rows = keys == name
            q = rule["p0"] * _compare(s[rows], rule["operator0"], rule["threshold0"]) + rule["p1"] * _compare(s[rows], rule["operator1"], rule["threshold1"])
            if "p_ignore" in rule:
                q = rule["p_ignore"] * rule["prediction_constant"] + (1.0 - rule["p_ignore"]) * q
            p[rows] = q
        return p

    def decide(self, proba: np.ndarray, sensitive_values: Any) -> np.ndarray:
        """Class ids (N,) from the model's probabilities (N, 2) and each row's sensitive value."""
        proba = np.asarray(proba)
        p = self.positive_probability(proba[:, self.positive_index], group_keys(sensitive_values))
        positive = p >= np.random.RandomState(self.seed).rand(len(p))
        return np.where(positive, self.positive_index, 1 - self.positive_index).astype(np.int64)

    def sensitive_column(self, data: Any) -> Any:
        """The sensitive values of raw input rows (a DataFrame or a dict of columns); a clear error when absent."""
        columns = list(data.columns) if hasattr(data, "columns") else (list(data) if isinstance(data, dict) else None)
        if columns is None or self.sensitive not in columns:
            where = f"its columns: {choices_text([str(c) for c in columns])}" if columns is not None else "it is an array without column names"
            raise DataError(f"This run applies group thresholds (postprocess.json, written by `damoxing audit --mitigate`), which need each "
                            f"row's '{self.sensitive}' value; the input has no '{self.sensitive}' column ({where}). Add the column, "
                            "or predict with the original run" + (f" ({self.derived_from})." if self.derived_from else "."))
        return data[self.sensitive]


def _compare(s: np.ndarray, operator: str, threshold: float | str) -> np.ndarray:
    t = float(threshold)  # "inf" / "-inf" parse back to infinities
    return (s > t) if operator == ">" else (s < t)


def read_postprocess(run: str | Path) -> Optional[GroupThresholds]:
    """The run's post-processing, or None when it has none."""
    file = Path(run) / FILE
    if not file.exists():
        return None
    try:
        return GroupThresholds.from_dict(json.loads(file.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RunFolderError(f"'{file}' could not be read ({type(e).__name__}: {e}); the run folder may be damaged.") from None


def one_hot(class_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Decisions as (N, K) 0/1 'probabilities', for metrics that take probabilities."""
    out = np.zeros((len(class_ids), n_classes), dtype=np.float32)
    out[np.arange(len(class_ids)), class_ids] = 1.0
    return out
