"""A saved run, loaded back: `damoxing.load(path).predict(df_or_array)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.console import warn
from damoxing.core.errors import RunFolderError, UserError
from damoxing.runs.folder import check_run, model_format, read_json, verify_run


class Predictor:
    """The model and preprocessing of one run folder, ready to predict.

    The model is the torch model of config.yaml with model.safetensors' weights, or, for a run
    that holds model.onnx instead, an `inference.onnx_model.OnnxModel` (same calls, ONNX Runtime).

    Attributes:
        path: the run folder.
        config: the run's resolved config.
        task: classification | regression | ...
        model_format: "safetensors" | "onnx".
        classes_: original label values (classification).
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        import torch
        from safetensors.torch import load_file

        from damoxing.data.pipeline import Preprocessing
        from damoxing.models import create_model
        from damoxing.spec import load_config
        from damoxing.tasks import TASKS

        self.path = check_run(path)
        verify_run(self.path)  # every file against its sha256 in manifest.json (damoxing --no-verify skips it)
        self.config = load_config(self.path / "config.yaml")
        try:
            self.preprocessing = Preprocessing.from_dict(read_json(self.path / "preprocessing.json"), self.path)
        except (KeyError, TypeError, ValueError) as e:
            raise RunFolderError(f"'{self.path / 'preprocessing.json'}' is damaged: it lacks or garbles {e}. "
                                 "Train the run again; a run's files are not meant to be edited.") from None
        self.schema = self.preprocessing.schema
        self.task_name = self.schema.task
        self.task = TASKS.get(self.task_name)(self.config.train)
        self.device = torch.device(device)
        self.model_format = model_format(self.path)
        if self.model_format == "onnx":  # e.g. a scikit-learn reference of `damoxing ladder`
            from damoxing.inference.onnx_model import OnnxModel

            self.model = OnnxModel.load(self.path / "model.onnx")
        else:
            self.model = create_model(self.config.model, self.schema)
            if self.config.train.privacy is not None and self.config.train.federated is None:  # trained with DP-SGD: the same DP-trainable layers it was saved with
                from damoxing.models.private_layers import replace_private_layers

                self.model, _ = replace_private_layers(self.model, for_loading=True)
            try:
                state = load_file(str(self.path / "model.safetensors"))
            except Exception as e:  # safetensors raises its own error type for a truncated or garbled file
                raise RunFolderError(f"'{self.path / 'model.safetensors'}' cannot be read ({e}); the file is damaged. "
                                     "Train the run again.") from None
            try:
                self.model.load_state_dict(state)
            except RuntimeError as e:
                raise RunFolderError(f"The weights in '{self.path / 'model.safetensors'}' do not fit the model its config.yaml describes "
                                     f"(was config.yaml edited?): {' '.join(str(e).split())[:400]}") from None
        self.model.to(self.device).eval()
        from damoxing.inference.postprocess import read_postprocess

        self.postprocess = read_postprocess(self.path)  # group thresholds of a mitigated run (`damoxing audit --mitigate`), else None

    @property
    def classes_(self) -> Optional[np.ndarray]:
        return None if self.preprocessing.labels is None else np.asarray(self.preprocessing.labels.classes_, dtype=object)

    def outputs(self, data: Any, batch_size: int = 1024) -> np.ndarray:
        """Raw model outputs for raw inputs (DataFrame, dict of columns or array)."""
        import torch

        if self.task_name == "generation":
            raise UserError(f"'{self.path}' is a generative run (model '{self.config.model.type}'); it makes new samples rather than "
                            "predictions. Use `damoxing generate RUN --out FILE.png` (or .npz), or `damoxing evaluate RUN`.")

        from damoxing.models.runtime import model_outputs

        x = torch.as_tensor(self.preprocessing.transform_inputs(data), device=self.device)
        return self.task.predictions(model_outputs(self.model, x, batch_size))

    def predict_proba(self, data: Any) -> np.ndarray:
        """(N, K) class probabilities, columns in the order of `classes_`."""
        if self.task_name != "classification":
            raise UserError(f"predict_proba needs a classifier; this run's task is '{self.task_name}'. Use predict.")
        return self.outputs(data)

    def predict(self, data: Any) -> np.ndarray:
        """Predictions in the target's own terms: original label values, or values in target units."""
        out = self.outputs(data)
        if self.task_name == "classification":
            return self.preprocessing.decode_labels(self.decisions(out, data))
        return self.preprocessing.decode_regression(out)

    def decisions(self, proba: np.ndarray, data: Any) -> np.ndarray:
        """Class ids from probabilities: the most likely class, or the run's group thresholds applied to
        each row's sensitive value in `data` (a mitigated run; see inference/postprocess.py)."""
        if self.postprocess is None:
            return proba.argmax(axis=1)
        return self.postprocess.decide(proba, self.postprocess.sensitive_column(data))

    def decider(self, data: Any):
        """For Task.evaluate: (split, probabilities) -> the thresholded decisions as 0/1 probabilities, for a
        mitigated run (its group thresholds need each row's sensitive value, from `data`); None otherwise."""
        if self.postprocess is None or self.task_name != "classification":
            return None
        from damoxing.inference.postprocess import one_hot

        return lambda split, proba: one_hot(self.decisions(proba, data), proba.shape[1])

    def generate(self, prompt: str = "", **options: Any) -> str:
        """Continue `prompt` (language models); options as `damoxing.inference.text.generate_text`. Returns the new text."""
        from damoxing.inference.text import generate_text

        return generate_text(self, prompt, **options)

    def evaluate(self, data: Any, targets: Any) -> dict:
        """Metrics of this model on labelled raw data, scored by the task's own `evaluate` with the
        run's `evaluate:` settings and seed: {"split": "test", "metrics", "ci", "ci_level", ...}.
        No baseline: the run's training targets are not read."""
        from damoxing.data.pipeline import PreparedData
        from damoxing.models.runtime import autocast_context
        from damoxing.tasks import EvaluationSettings, one_split

        if self.task_name not in ("classification", "regression"):
            raise UserError(f"model.evaluate(data, targets) scores predictions against targets; this run's task is '{self.task_name}'. "
                            f"Use damoxing.evaluate('{self.path}') (its own splits, or data=FILE).")
        x = self.preprocessing.transform_inputs(data)
        y = self.preprocessing.labels.transform(np.asarray(targets)) if self.task_name == "classification" else np.asarray(targets, dtype=np.float64)
        prepared = PreparedData(task=self.task_name, preprocessing=self.preprocessing, x={"test": x}, y={"test": y},
                                y_original={"train": None, "test": y}, indices={}, fingerprint="", source="", summary={})
        metrics = self.task.evaluate(self.model, prepared, EvaluationSettings.from_config(self.config),
                                     autocast_context(self.config.train, self.device), splits=("test",), decide=self.decider(data))
        return one_split(metrics, "test")


def read_table_or_arrays(path: str | Path, kind: str, target: Optional[str], preprocessing=None) -> tuple[Any, Optional[np.ndarray]]:
    """Read a file of prediction inputs for a model trained on `kind` data: (raw inputs, `target` values or None).

    Each data kind reads its own files (CSV/Parquet/NPZ tables, image arrays, sequences; see damoxing.data.kinds).
    With the run's `preprocessing`, a table's cells that will be read as missing (infinities, text
    that is not a number or not a date) are reported in one warning, never silently imputed."""
    from damoxing.data.pipeline import read_inputs

    inputs, targets = read_inputs(path, kind, target)
    check = getattr(getattr(preprocessing, "inputs", None), "imputed_cells", None)
    if check is not None and hasattr(inputs, "columns"):
        lost = check(inputs)
        if lost:
            listed = "; ".join(f"'{name}': {c['count']} (e.g. {', '.join(map(repr, c['examples']))})" for name, c in lost.items())
            warn(f"{path}: {sum(c['count'] for c in lost.values())} cell(s) hold values the model cannot read and are treated "
                 f"as missing (imputed as in training): {listed}.")
    return inputs, targets


def load(path: str | Path, device: str = "cpu") -> Predictor:
    """A saved run as a Predictor: `.predict(df_or_array)`, `.predict_proba(...)`."""
    return Predictor(path, device=device)
