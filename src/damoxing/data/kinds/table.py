"""Tables: rows of named columns -> float32 (N, F), each column imputed, scaled or one-hot encoded
(`TabularPreprocessor`, fitted on the training rows). With a generative model the rows themselves
are what is modelled, and there is no target.

`prepare` is a list of small steps, so a new one is one more function called in order. Which
columns are used, and as what (numbers, categories, dates; ids, constants and free text dropped),
is decided by data/columns.py and shown as one summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.core.errors import DataError, choices_text, did_you_mean
from damoxing.data.columns import (
    ColumnPlan,
    all_dropped_message,
    finish_plan,
    show_plan,
    understand_columns,
)
from damoxing.data.kinds.base import (
    DATA_KINDS,
    DataKind,
    PreparedData,
    Preprocessing,
    assemble,
)
from damoxing.data.preprocess import TabularPreprocessor
from damoxing.data.raw import RawData
from damoxing.data.schema import DataSchema, ModelNeeds
from damoxing.data.sources import load_source
from damoxing.data.sources.arrays import read_input_arrays
from damoxing.data.sources.tables import has_column
from damoxing.data.targets import (
    TASKS,
    Targets,
    choose_task,
    drop_missing_targets,
    fit_targets,
    without_targets,
)

TABLE_FILES = (".csv", ".csv.gz", ".parquet", ".pq")


@DATA_KINDS.register("table")
class TableKind(DataKind):
    """A table's feature columns -> float32 (N, F); its target column -> classes or values."""

    name = "table"
    codec = TabularPreprocessor

    def prepare(self, raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> PreparedData:
        if config.task == "generation":
            return self._prepare_rows(raw, config)
        frame, n_dropped = drop_missing_targets(raw.frame, raw.target)
        if len(frame) == 0:
            raise DataError(f"'{raw.source}' has no rows with a value in the target column '{raw.target}'.")
        task = choose_task(frame[raw.target], config, TASKS, "task '{task}' needs text or images; "
                           f"'{raw.source}' is a table. Use task classification or regression.")
        features = select_features(frame, raw.target, config, raw.source)
        if not features:
            raise DataError(f"'{raw.source}' has no input columns besides the target '{raw.target}'.")
        frame = frame.reset_index(drop=True)
        targets = fit_targets(frame[raw.target].to_numpy(), task, config)
        plan = plan_columns(frame, features, config, raw.source)
        inputs = fit_inputs(frame.iloc[targets.splits["train"]], plan, config)
        summary = {"rows": len(frame) + n_dropped, "rows_dropped_missing_target": n_dropped, "columns": len(features),
                   "missing_values": {c: int(v) for c, v in frame[features].isna().sum().items() if v},
                   "column_summary": plan.rows()}
        return assemble(targets, table_preprocessing(targets, inputs, raw.target, features), inputs.transform(frame), raw, summary)

    def _prepare_rows(self, raw: RawData, config) -> PreparedData:
        """A table for a generative model: the rows are what is modelled, there is no target.

        Columns: data.features, else every column (less data.exclude), a label column included: the
        synthetic rows `damoxing generate` writes stand in for the whole table, so a model can be
        trained on them to predict that label (data.target names it for generate's utility check)."""
        frame = raw.frame.reset_index(drop=True)
        features = select_features(frame, None, config, raw.source)
        plan = plan_columns(frame, features, config, raw.source)
        targets = without_targets(len(frame), "generation", config)
        inputs = fit_inputs(frame.iloc[targets.splits["train"]], plan, config)
        summary = {"rows": len(frame), "columns": len(features), "column_summary": plan.rows()}
        return assemble(targets, table_preprocessing(targets, inputs, None, features), inputs.transform(frame), raw, summary)

    def transform_inputs(self, preprocessing: Preprocessing, data: Any) -> np.ndarray:
        """A DataFrame, a dict of columns, or an array (N, F) / (F,) with the columns in training order."""
        return preprocessing.inputs.transform(as_frame(data, preprocessing.feature_columns))

    def read_inputs(self, path: Path, target: Optional[str]) -> tuple[Any, Optional[np.ndarray]]:
        """CSV/Parquet -> (DataFrame, its target column or None); .npz -> (rows under 'x', targets under 'y' or None)."""
        name = path.name.lower()
        if name.endswith(TABLE_FILES):
            return read_table_inputs(path, target)
        if name.endswith(".npz"):
            return read_input_arrays(path)
        raise DataError(f"Input '{path}' must be .csv, .parquet or .npz for a model trained on a table.")

    def saved_rows(self, raw: RawData, config, preprocessing: Preprocessing) -> tuple[pd.DataFrame, Optional[np.ndarray]]:
        return kept_rows(raw, preprocessing)


# ------------------------------------------------------------------------------------- the steps


def select_features(frame: pd.DataFrame, excluded: Optional[str], config, source: str) -> list[str]:
    """The input columns: data.features (each must exist), else every column but `excluded` (the target);
    less data.exclude (each must exist too: a typo would silently keep a column, e.g. a sensitive one, in)."""
    features = config.data.features or [c for c in frame.columns if c != excluded]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise DataError(
            f"data.features names column(s) {missing} that '{source}' does not have.{did_you_mean(missing[0], frame.columns)} "
            f"Its columns: {choices_text(map(str, frame.columns))}."
        )
    unknown = [c for c in config.data.exclude if c not in frame.columns]
    if unknown:
        raise DataError(f"data.exclude names column(s) {unknown} that '{source}' does not have.{did_you_mean(unknown[0], frame.columns)} "
                        f"Its columns: {choices_text(map(str, frame.columns))}.")
    return [c for c in features if c not in set(config.data.exclude)]


def plan_columns(frame: pd.DataFrame, features: list[str], config, source: str) -> ColumnPlan:
    """Each feature column's kind (data.columns first, then the rules of data/columns.py); every column dropped is an error."""
    overrides = dict(config.data.columns or {})
    unknown = [c for c in overrides if c not in frame.columns]
    if unknown:
        raise DataError(f"data.columns names column(s) {unknown} that '{source}' does not have.{did_you_mean(unknown[0], frame.columns)} "
                        f"Its columns: {choices_text(map(str, frame.columns))}.")
    unused = [c for c in overrides if c not in features]
    if unused:
        raise DataError(f"data.columns names {unused}, which {'is' if len(unused) == 1 else 'are'} not among the feature columns "
                        f"(the target, or left out by data.features / data.exclude). Feature columns: {choices_text(map(str, features))}.")
    plan = understand_columns(frame, features, overrides)
    if not plan.kept:
        raise DataError(all_dropped_message(plan, source))
    return plan


def fit_inputs(train_rows: pd.DataFrame, plan: ColumnPlan, config) -> TabularPreprocessor:
    """Impute, scale and encode each kept column as data.preprocess says, fitted on the training rows; show the summary."""
    p = config.data.preprocess
    inputs = TabularPreprocessor(numeric_impute=p.numeric_impute, scaling=p.scaling, categorical=p.categorical,
                                 max_categories=p.max_categories, min_category_count=p.min_category_count)
    inputs.fit(train_rows, plan.kept, kinds=plan.kinds, date_formats=plan.date_formats)
    finish_plan(plan, inputs.columns_, p.max_categories, p.min_category_count)
    show_plan(plan)
    return inputs


def table_preprocessing(targets: Targets, inputs: TabularPreprocessor, target: Optional[str], features: list[str]) -> Preprocessing:
    schema = DataSchema(kind="table", task=targets.task, input_shape=(len(inputs.feature_names_out_),), n_outputs=targets.n_outputs,
                        class_names=targets.class_names, feature_names=list(inputs.feature_names_out_))
    return Preprocessing(schema=schema, target=target, feature_columns=list(features), inputs=inputs, labels=targets.labels,
                         target_scaler=targets.scaler)


def kept_rows(raw: RawData, preprocessing: Preprocessing) -> tuple[pd.DataFrame, Optional[np.ndarray]]:
    """The rows of a table `prepare` kept for a saved run: with a target value when the run predicts one.

    Returns (the rows, index reset; their target values or None)."""
    if raw.kind != "table":
        raise DataError(f"The run was trained on a table, but '{raw.source}' now holds {raw.kind} data.")
    frame = raw.frame
    labelled = preprocessing.schema.task in TASKS
    if labelled:
        if raw.target not in frame.columns:
            raise DataError(f"'{raw.source}' no longer has the target column '{raw.target}' the run was trained on.")
        frame = frame[frame[raw.target].notna().to_numpy()]
    frame = frame.reset_index(drop=True)
    return frame, (frame[raw.target].to_numpy() if labelled else None)


# ------------------------------------------------------------------------------- prediction inputs


def as_frame(data: Any, feature_columns: list[str]) -> pd.DataFrame:
    """A DataFrame or dict of columns as it is; an array's columns named in training order."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        return pd.DataFrame(data)
    array = np.asarray(data)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != len(feature_columns):
        raise DataError(
            f"An input array must have shape (N, {len(feature_columns)}) with columns in the order "
            f"{feature_columns}; got shape {array.shape}. Or pass a DataFrame / dict with those column names."
        )
    return pd.DataFrame(array, columns=feature_columns)


def read_table_inputs(path: Path, target: Optional[str]) -> tuple[pd.DataFrame, Optional[np.ndarray]]:
    """A CSV/Parquet file of inputs; its target column, when it has one, comes back as the targets."""
    raw = load_source(str(path), target if has_column(path, target) else None)
    frame = raw.frame
    y = frame[target].to_numpy() if target in frame.columns else None
    return frame, y
