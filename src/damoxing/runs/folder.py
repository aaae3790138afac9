"""The run folder: everything one training run leaves behind, and nothing that is a pickle.

    config.yaml          resolved config (every default filled)
    model.safetensors    weights (or model.onnx: a model saved as an ONNX graph, e.g. a scikit-learn
                         reference of `damoxing ladder`; manifest.json's model.format says which)
    preprocessing.json   fitted preprocessing, label encoding and the data schema
    metrics.json         {"val": {...}, "test": {...}, "baseline": {...}, "test_ci": {...}}
    history.jsonl        one line per epoch
    manifest.json        versions, data fingerprint, seed, timings, costs
    splits.npz           row indices of train/val/test in the source (plain int arrays)

A run is written into a hidden temporary folder and renamed into place at the end, so a crash
never leaves a half-written run that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from damoxing.core.errors import RunFolderError

REQUIRED = ("config.yaml", "preprocessing.json", "manifest.json")
MODEL_FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx"}  # a run holds one: its model.format


def new_run_path(out: str | Path | None, name: str) -> Path:
    """runs/<name>-<YYYYmmdd-HHMMSS>[-k] (or exactly `out` when it is given and does not exist yet)."""
    if out is not None:
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            if is_run(out):
                raise RunFolderError(f"--out '{out}' already holds a run; choose a new folder so that run is not overwritten.")
            base = out  # a parent folder: put the run inside it
        else:
            return out
    else:
        base = Path("runs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{name}-{stamp}"
    k = 1
    while path.exists():
        k += 1
        path = base / f"{name}-{stamp}-{k}"
    return path


class RunWriter:
    """Writes a run into `<parent>/.<name>.partial`, then renames it to its final path.

    `fresh=False` keeps what an interrupted run left there (its checkpoint, for --resume).
    """

    def __init__(self, final_path: Path, fresh: bool = True):
        self.path = Path(final_path)
        self.tmp = self.partial_path(self.path)
        if fresh and self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def partial_path(final_path: Path) -> Path:
        """Where a run is written until it is complete (and where its checkpoints live)."""
        final_path = Path(final_path)
        return final_path.parent / f".{final_path.name}.partial"

    def discard(self, name: str) -> None:
        """Remove a file or folder from the run being written (e.g. checkpoints once it is complete)."""
        target = self.tmp / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def write_text(self, name: str, text: str) -> None:
        (self.tmp / name).write_text(text)

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2, default=_json_default) + "\n")

    def write_jsonl(self, name: str, rows: list[dict]) -> None:
        self.write_text(name, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))

    def file(self, name: str) -> Path:
        return self.tmp / name

    def commit(self) -> Path:
        if self.path.exists():
            shutil.rmtree(self.path)  # only ever an empty --out folder: new_run_path refuses a run
        os.replace(self.tmp, self.path)
        return self.path


def _json_default(obj: Any):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def is_run(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and all((path / f).exists() for f in REQUIRED) and model_format(path) is not None


def model_format(path: str | Path) -> str | None:
    """'safetensors' (torch weights) or 'onnx' (an ONNX graph), by the model file the run holds; None if neither."""
    return next((fmt for fmt, name in MODEL_FILES.items() if (Path(path) / name).exists()), None)


def check_run(path: str | Path) -> Path:
    """The path, if it is a run folder; else a RunFolderError saying what is missing."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"Run folder '{path}' does not exist. `damoxing runs` lists the runs under ./runs.")
    if not path.is_dir():
        raise RunFolderError(f"'{path}' is a file, not a run folder. Pass the folder that `damoxing train` printed.")
    missing = [f for f in REQUIRED if not (path / f).exists()]
    if model_format(path) is None:
        missing.append(" or ".join(MODEL_FILES.values()))
    if missing:
        raise RunFolderError(
            f"'{path}' is not a damoxing run: it lacks {', '.join(missing)}. "
            "Pass the folder that `damoxing train` printed (runs/<name>-<time>)."
        )
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"'{path}' could not be read as JSON ({e}); the run folder may be damaged.") from None


def read_history(path: Path) -> list[dict]:
    file = Path(path) / "history.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def resume_paths(run: str | Path) -> tuple[Path, Path]:
    """(the run's final path, its checkpoint file) for `--resume RUN`, where RUN is the run folder
    printed when training started (or its hidden `.NAME.partial` folder)."""
    from damoxing.training.checkpoint import FILE_NAME, CheckpointError

    run = Path(run)
    if run.name.startswith(".") and run.name.endswith(".partial"):
        final = run.parent / run.name[1 : -len(".partial")]
    else:
        final = run
    if is_run(final):
        raise CheckpointError(f"'{final}' is a complete run; there is nothing to resume. Start a new run to train further.")
    checkpoint = RunWriter.partial_path(final) / "checkpoints" / FILE_NAME
    if not checkpoint.exists():
        raise CheckpointError(
            f"There is no checkpoint to resume for '{final}' (looked for '{checkpoint}'). A run can be resumed when it "
            "was started with train.checkpoint_every and stopped after its first checkpoint; pass the run folder it "
            "printed when it started."
        )
    return final, checkpoint
