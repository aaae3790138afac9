"""`damoxing evaluate RUN [--data FILE]`: re-evaluate a saved run on its own test split or on new labelled data."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from damoxing.core.console import warn


def evaluate(run: str | Path, data: str | Path | None = None) -> dict:
    """Re-evaluate a saved run: on its own test split (default) or on a labelled file."""
    from damoxing.core.errors import DataError
    from damoxing.data.pipeline import prepare_data
    from damoxing.evaluation.score import evaluate_predictions
    from damoxing.inference.predictor import load, read_table_or_arrays
    from damoxing.models import data_needs
    from damoxing.runs.folder import read_json

    predictor = load(run)
    prep = predictor.preprocessing
    if predictor.postprocess is not None:
        from damoxing.core.console import note

        note(f"{predictor.path} applies group thresholds on '{predictor.postprocess.sensitive}' (postprocess.json): the metrics are those of "
             "its 0/1 decisions, so log_loss, roc_auc and ece describe hard predictions, not probabilities.")
    if predictor.task_name == "language_modeling":
        return _evaluate_language_model_run(predictor, data)
    if predictor.task_name == "generation":
        return _evaluate_generation(predictor, data)
    if data is None:
        prepared = prepare_data(_run_data_config(predictor), data_needs(predictor.config.model))
        manifest = read_json(predictor.path / "manifest.json")
        if prepared.fingerprint != manifest["data"]["fingerprint"]:
            warn(f"the data at {prepared.source} changed since this run was trained (fingerprint differs); "
                 "its test split may not be the one in metrics.json.")
        y = prepared.y_original["test"]
        train_targets = prepared.y_original["train"]
        out = predictor.task.predictions(_outputs(predictor, prepared.x["test"]))
        if predictor.task_name == "regression":
            out = prep.decode_regression(out)
        if predictor.postprocess is not None:  # a mitigated run: its decisions, given each test row's sensitive value
            out = _thresholded(predictor, out)
        return evaluate_predictions(predictor.task, y, out, predictor.schema, train_targets)
    inputs, targets = read_table_or_arrays(data, predictor.schema.kind, prep.target)
    if targets is None:
        raise DataError(f"'{data}' has no target values ('{prep.target}'); evaluate needs labelled data. Use `damoxing predict` for unlabelled inputs.")
    keep = ~_is_missing(targets)
    if not keep.all():
        warn(f"dropped {int((~keep).sum())} row(s) whose target '{prep.target}' is missing.")
        inputs = inputs[keep] if not hasattr(inputs, "iloc") else inputs.loc[keep]
        targets = targets[keep]
    return predictor.evaluate(inputs, targets)


def _thresholded(predictor, proba: np.ndarray) -> np.ndarray:
    """The run's group thresholds applied to its own test split (the sensitive column read from its source rows)."""
    from damoxing.inference.postprocess import one_hot
    from damoxing.runs.rows import split_rows

    rows = split_rows(predictor.config, predictor.path, "test")
    return one_hot(predictor.decisions(proba, rows), proba.shape[1])


def _run_data_config(predictor):
    """The run's config, reading text with the run's own tokenizer (a retrained one could number tokens differently)."""
    config = predictor.config
    if predictor.schema.kind not in ("text", "corpus"):
        return config
    tokenizer = config.data.tokenizer.model_copy(update={"path": str(predictor.path)})
    return config.model_copy(update={"data": config.data.model_copy(update={"tokenizer": tokenizer})})


def _evaluate_language_model_run(predictor, data: str | Path | None) -> dict:
    """A language model on its own test split, or on a .txt file / folder, beside the unigram baseline of its training text."""
    import contextlib

    import torch

    from damoxing.core.errors import DataError
    from damoxing.data.pipeline import prepare_data
    from damoxing.data.sources import load_source
    from damoxing.models import data_needs
    from damoxing.runs.folder import read_json

    prepared = prepare_data(_run_data_config(predictor), data_needs(predictor.config.model))  # the training tokens, for the baseline
    if prepared.fingerprint != read_json(predictor.path / "manifest.json")["data"]["fingerprint"]:
        warn(f"the data at {prepared.source} changed since this run was trained (fingerprint differs).")
    x, y, n_bytes = prepared.x["test"], prepared.y["test"], prepared.summary["split_bytes"]["test"]
    if data is not None:
        raw = load_source(str(data))
        if raw.kind != "corpus":
            raise DataError(f"This run is a language model; evaluate it on a .txt file or a folder of .txt files, not '{data}'.")
        x, y, n_bytes = predictor.preprocessing.inputs.pack(raw.texts, predictor.schema.input_shape[0], raw.text_unit)
    if len(x) == 0:
        raise DataError("This run has no test text (data.split.test is 0); pass --data FILE.txt to evaluate on other text.")
    task = predictor.task
    metrics = task.evaluate_split(predictor.model, torch.as_tensor(x), torch.as_tensor(y), n_bytes, 64, contextlib.nullcontext)
    return {"metrics": metrics, "baseline": task.unigram_baseline(prepared.y["train"], y, predictor.schema.vocab_size, n_bytes)}


def _evaluate_generation(predictor, data: str | Path | None) -> dict:
    """A generative run on its own test split (default) or on a file of images/rows (labels not needed)."""
    from damoxing.data.pipeline import prepare_data
    from damoxing.inference.predictor import read_table_or_arrays
    from damoxing.models import data_needs
    from damoxing.runs.folder import read_json

    prepared = prepare_data(predictor.config, data_needs(predictor.config.model))
    if prepared.fingerprint != read_json(predictor.path / "manifest.json")["data"]["fingerprint"]:
        warn(f"the data at {prepared.source} changed since this run was trained (fingerprint differs).")
    splits = {"train": prepared.x["train"], "test": prepared.x["test"]}
    if data is not None:
        inputs, _ = read_table_or_arrays(data, predictor.schema.kind, None)
        splits["test"] = predictor.preprocessing.transform_inputs(inputs)
    result = predictor.task.evaluate(predictor.model, splits, predictor.device, 1024, contextlib.nullcontext)
    if "test" not in result:
        from damoxing.core.errors import DataError

        raise DataError("The test data has fewer than 2 rows; generative metrics compare sets of samples, so give at least 2.")
    return {"metrics": result["test"], "baseline": result["baseline"]["test"], "reference": result["reference"]["test"]}


def _outputs(predictor, x: np.ndarray):
    import torch

    from damoxing.models.runtime import model_outputs

    return model_outputs(predictor.model, torch.as_tensor(x), 1024)


def _is_missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.isna(pd.Series(values)).to_numpy()
