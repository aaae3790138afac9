"""Images (N, C, H, W) -> float32, scaled and normalised per channel on the training images
(`ImagePreprocessor`). Their labels are classes (by default) or values; a generative model learns
the images alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.core.errors import DataError
from damoxing.data.kinds.base import (
    DATA_KINDS,
    DataKind,
    PreparedData,
    Preprocessing,
    assemble,
)
from damoxing.data.preprocess import ImagePreprocessor
from damoxing.data.raw import RawData
from damoxing.data.schema import DataSchema, ModelNeeds
from damoxing.data.sources import load_source
from damoxing.data.targets import (
    TASKS,
    Targets,
    choose_task,
    fit_targets,
    without_targets,
)

IMAGE_TASKS = ("classification", "regression", "generation")


@DATA_KINDS.register("image")
class ImageKind(DataKind):
    """Images (N, C, H, W) -> normalised float32; their labels -> classes or values (none for generation)."""

    name = "image"
    codec = ImagePreprocessor

    def prepare(self, raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> PreparedData:
        images = raw.images
        targets = image_targets(raw, config)
        inputs = ImagePreprocessor(mode=config.data.preprocess.image).fit(images[targets.splits["train"]])
        schema = DataSchema(kind="image", task=targets.task, input_shape=tuple(int(d) for d in images.shape[1:]),
                            n_outputs=targets.n_outputs, class_names=targets.class_names)
        prep = Preprocessing(schema=schema, target=raw.target, feature_columns=None, inputs=inputs, labels=targets.labels,
                             target_scaler=targets.scaler)
        summary = {"rows": len(images), "image_shape": list(images.shape[1:])}
        return assemble(targets, prep, inputs.transform(images), raw, summary)

    def transform_inputs(self, preprocessing: Preprocessing, data: Any) -> np.ndarray:
        """An array (N, C, H, W), or (N, H, W) for single-channel images."""
        images = np.asarray(data)
        if images.ndim == 3:
            images = images[:, None]
        return preprocessing.inputs.transform(images)

    def read_inputs(self, path: Path, target: Optional[str]) -> tuple[Any, Optional[np.ndarray]]:
        """An .npz / .npy / IDX file of images -> (images, labels or None)."""
        raw = load_source(str(path))
        if raw.kind != "image":
            raise DataError(f"This model was trained on images; '{path}' holds a table. Give an .npz / .npy / IDX file of images.")
        return raw.images, raw.labels

    def saved_rows(self, raw: RawData, config, preprocessing: Preprocessing) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if raw.kind != "image":
            raise DataError(f"The run was trained on images, but '{raw.source}' now holds {raw.kind} data.")
        return raw.images, (raw.labels if preprocessing.schema.task in TASKS else None)


def image_targets(raw: RawData, config) -> Targets:
    """Classes by default when the images have labels; without labels (or for generation) only the split."""
    default = "classification" if raw.labels is not None else "generation"
    if (config.task or default) in TASKS and raw.labels is None:
        raise DataError(f"'{raw.source}' holds images but no labels; task '{config.task}' needs them. Give data.labels (a .npy or IDX labels file) or store them under 'y' in the .npz.")
    values = None if raw.labels is None else pd.Series(raw.labels, name=raw.target)
    task = choose_task(values, config, IMAGE_TASKS, "task '{task}' does not apply to images: use classification or regression "
                       "(with labels) or generation (a vae or gan).", default=default)
    if task not in TASKS:
        return without_targets(len(raw.images), task, config)  # a generative model learns the images alone
    return fit_targets(raw.labels, task, config)
