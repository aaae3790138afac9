"""From a data config to tensors: load the source, choose the data kind, let it prepare the splits.

`prepare_data` is the one entry point training uses; `read_inputs` reads a file of prediction
inputs for a saved run. `Preprocessing` is everything fitted on the training split that a saved run
needs to turn new raw inputs into model inputs and model outputs back into original label values;
it is saved as JSON (preprocessing.json), never pickled. What each kind does is in kinds/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.console import stage
from damoxing.core.errors import ConfigError, DataError
from damoxing.data.kinds import PreparedData, Preprocessing, choose_kind, data_kind
from damoxing.data.schema import ModelNeeds
from damoxing.data.sources import load_source, resolve_path

__all__ = ["PreparedData", "Preprocessing", "prepare_data", "read_inputs", "resolve_path"]


def prepare_data(config, needs: ModelNeeds, base_dir: Optional[Path] = None) -> PreparedData:
    """Config -> model-ready arrays for train/val/test plus the fitted Preprocessing.

    `needs` says what the model takes (models.data_needs(config.model)); `base_dir` is the config
    file's folder, where relative paths are also looked for."""
    config = _task_of_model(config, needs)
    source = resolve_path(config.data.source, base_dir)
    labels = resolve_path(config.data.labels, base_dir) if config.data.labels else None
    stage(f"loading {config.data.source}")
    raw = load_source(source, config.data.target, labels)
    kind = choose_kind(raw, config, needs)
    stage(f"preparing {kind.name} data: splits, preprocessing fitted on the training rows")
    return kind.prepare(raw, config, needs, base_dir)


def read_inputs(path: str | Path, kind: str, target: Optional[str]) -> tuple[Any, Optional[np.ndarray]]:
    """A file of prediction inputs for a model trained on `kind` data -> (raw inputs, the `target` values or None)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Input file '{path}' does not exist.")
    return data_kind(kind).read_inputs(path, target)


def _task_of_model(config, needs: ModelNeeds):
    """A family that always does one task (vae, gan: generation) sets it; labels in the data are then ignored."""
    fixed = needs.task
    if fixed is None or config.task == fixed:
        return config
    if config.task is not None:
        raise ConfigError(f"task is '{config.task}', but model.type '{needs.type}' does '{fixed}'. Set task: {fixed} (or leave it out).")
    return config.model_copy(update={"task": fixed})
