"""`damoxing predict RUN INPUT [--out FILE]`: predictions of a saved run for new raw inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.errors import UserError
from damoxing.inference.predictor import load, read_table_or_arrays
from damoxing.verbs.outputs import write_table


def predict(run: str | Path, data: Any) -> np.ndarray:
    """Predictions of a saved run for raw inputs (a DataFrame, a dict of columns or an array)."""
    return load(run).predict(data)


def predict_file(run: str | Path, input: str | Path, out: Optional[str | Path] = None):
    """Predictions for the rows (or images) of a file, as a table: `prediction`, and `proba_<class>`
    for a classifier. With `out` (.csv or .parquet) the table is written there; returns the table."""
    import pandas as pd

    if out is not None and Path(out).suffix.lower() not in (".csv", ".parquet"):
        raise UserError(f"--out '{out}' must end in .csv or .parquet.")
    predictor = load(run)
    inputs, _ = read_table_or_arrays(input, predictor.schema.kind, predictor.preprocessing.target, predictor.preprocessing)
    frame = pd.DataFrame({"prediction": predictor.predict(inputs)})
    if predictor.task_name == "classification":
        proba = predictor.predict_proba(inputs)
        for j, name in enumerate(predictor.classes_):
            frame[f"proba_{name}"] = proba[:, j]
    if out is not None:
        write_table(frame, Path(out))
    return frame
