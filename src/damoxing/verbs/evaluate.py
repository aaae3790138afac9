"""`damoxing evaluate RUN [--data FILE] [--split val|test]`: re-evaluate a saved run.

On the run's own splits it reproduces metrics.json exactly: the source is read again, the run's
fitted preprocessing (preprocessing.json) is applied, not refitted, its split indices (splits.npz)
pick the rows, and the task's own `evaluate` (the one training ran) scores them with the run's
`evaluate:` settings, seed and evaluation batch size. On a new file (--data) the same `evaluate`
scores that file as the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.console import warn
from damoxing.core.errors import DataError, UserError
from damoxing.inference.run_data import run_data

SPLITS = ("val", "test")


def evaluate(run: str | Path, data: str | Path | None = None, split: str = "test") -> dict:
    """Re-evaluate a saved run on one of its own splits (default test) or on a file (`data`).

    Returns {"split", "metrics", and where the task has them "baseline", "ci" + "ci_level" (the
    intervals' coverage), "calibration", "reference"}: the split's entries of metrics.json.
    """
    from damoxing.inference.predictor import load
    from damoxing.models.runtime import autocast_context
    from damoxing.tasks import EvaluationSettings, one_split

    if split not in SPLITS:
        raise UserError(f"--split is '{split}'; a run is evaluated on one of its own splits: {', '.join(SPLITS)}.")
    predictor = load(run)
    if predictor.postprocess is not None:
        from damoxing.core.console import note

        note(f"{predictor.path} applies group thresholds on '{predictor.postprocess.sensitive}' (postprocess.json): the metrics are those of "
             "its 0/1 decisions, so log_loss, roc_auc and ece describe hard predictions, not probabilities.")
    if data is None:
        prepared = run_data(predictor)
        if len(prepared.x.get(split, ())) == 0:
            raise DataError(f"This run has no {split} split (data.split.{split} is 0); pass --data FILE to evaluate on other data.")
    elif predictor.task_name in ("classification", "regression"):
        return predictor.evaluate(*labelled_rows(predictor, data))
    else:
        prepared, split = file_data(predictor, data), "test"
    settings = EvaluationSettings.from_config(predictor.config)
    autocast = autocast_context(predictor.config.train, predictor.device)
    metrics = predictor.task.evaluate(predictor.model, prepared, settings, autocast, splits=(split,), **split_decider(predictor))
    if split not in metrics:
        raise DataError(f"The {split} data has too few rows to evaluate (generative metrics compare sets of samples: give at least 2).")
    return one_split(metrics, split)


# --------------------------------------------------------------------------- a mitigated run's decisions


def split_decider(predictor) -> dict:
    """{"decide": ...} for Task.evaluate on the run's own splits when the run applies group thresholds
    (a mitigated run: each split's sensitive values are read from its source rows), else {}."""
    if predictor.postprocess is None or predictor.task_name != "classification":
        return {}
    from damoxing.inference.postprocess import one_hot
    from damoxing.runs.rows import split_rows

    def decide(split: str, proba: np.ndarray) -> np.ndarray:
        rows = split_rows(predictor.config, predictor.path, split)
        return one_hot(predictor.decisions(proba, rows), proba.shape[1])

    return {"decide": decide}


# --------------------------------------------------------------------------- a file given with --data


def file_data(predictor, path: str | Path):
    """A file for a language model or a generative run, as the test split of a PreparedData (with the
    run's own training split, which the task's baseline needs)."""
    if predictor.task_name == "language_modeling":
        return _corpus_file(predictor, path)
    return _sample_file(predictor, path)


def _prepared(predictor, x: dict, y: dict, source: str, summary: Optional[dict] = None):
    from damoxing.data.pipeline import PreparedData

    return PreparedData(task=predictor.task_name, preprocessing=predictor.preprocessing, x=x, y=y, y_original=dict(y),
                        indices={}, fingerprint="", source=source, summary=summary or {})


def labelled_rows(predictor, path: str | Path) -> tuple[Any, np.ndarray]:
    """(inputs, targets) of a labelled CSV/Parquet/NPZ, rows with a missing target dropped (with a warning)."""
    from damoxing.inference.predictor import read_table_or_arrays

    target = predictor.preprocessing.target
    inputs, targets = read_table_or_arrays(path, predictor.schema.kind, target, predictor.preprocessing)
    if targets is None:
        raise DataError(f"'{path}' has no target values ('{target}'); evaluate needs labelled data. Use `damoxing predict` for unlabelled inputs.")
    keep = ~_is_missing(targets)
    if not keep.all():
        warn(f"dropped {int((~keep).sum())} row(s) whose target '{target}' is missing.")
        inputs = inputs[keep] if not hasattr(inputs, "iloc") else inputs.loc[keep]
        targets = targets[keep]
    return inputs, targets


def _corpus_file(predictor, path: str | Path):
    """A .txt file or folder for a language model; the baseline's unigram counts come from the run's training split."""
    from damoxing.data.sources import load_source

    raw = load_source(str(path))
    if raw.kind != "corpus":
        raise DataError(f"This run is a language model; evaluate it on a .txt file or a folder of .txt files, not '{path}'.")
    own = run_data(predictor)
    x, y, n_bytes = predictor.preprocessing.inputs.pack(raw.texts, predictor.schema.input_shape[0], raw.text_unit)
    if len(x) == 0:
        raise DataError(f"'{path}' holds no text to evaluate on.")
    return _prepared(predictor, {"train": own.x["train"], "test": x}, {"train": own.y["train"], "test": y}, str(path),
                     {"split_bytes": {"test": n_bytes}})


def _sample_file(predictor, path: str | Path):
    """Images or rows for a generative run (labels not needed); the baseline's statistics come from the run's training split."""
    from damoxing.inference.predictor import read_table_or_arrays

    own = run_data(predictor)
    inputs, _ = read_table_or_arrays(path, predictor.schema.kind, None)
    x = predictor.preprocessing.transform_inputs(inputs)
    return _prepared(predictor, {"train": own.x["train"], "test": x}, {}, str(path))


def _is_missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.isna(pd.Series(values)).to_numpy()
