"""Where a verb that reads a run writes its results (always a NEW folder, never inside the run), and as what.

A run folder is never edited in place (explain, audit and a mitigation write beside it), and a
folder is written under a hidden `.NAME.partial` name and renamed when complete (RunWriter), so an
interrupted verb never leaves a half-written result that looks complete.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from damoxing.core.errors import UserError


def result_folder(run: Path, out: Optional[str | Path], prefix: str, option: str = "--out") -> Path:
    """`out` if given (it must not exist yet, or be empty, and must not lie inside the run), else
    <the run's parent>/<prefix>-<run name>-<YYYYmmdd-HHMMSS>[-k] (runs/explain-NAME-... beside runs/NAME)."""
    run = Path(run).resolve()
    if out is not None:
        path = Path(out)
        resolved = path.resolve()
        if resolved == run or run in resolved.parents:
            raise UserError(f"{option} '{out}' is inside the run folder '{run}'; a run folder is never changed. Choose a folder outside it.")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"{option} '{out}' already exists and is not empty; choose a new folder so nothing there is overwritten.")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = run.parent / (f"{prefix}-{run.name}-{stamp}" if prefix else f"{run.name}-{stamp}")
    path, k = base, 1
    while path.exists() or path.with_name(f".{path.name}.partial").exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars as Python numbers, NaN and infinities as None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_file(path: Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` into a hidden file beside `path`, then rename it over `path`: an interrupted or
    failed write leaves no truncated file that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.writing")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_table(frame, path: Path) -> Path:
    """A DataFrame as .parquet, or as .csv for any other suffix, written whole (write_file)."""
    parquet = Path(path).suffix.lower() == ".parquet"
    return write_file(path, lambda tmp: frame.to_parquet(tmp, index=False) if parquet else frame.to_csv(tmp, index=False))


def write_json(path: Path, data: Any) -> Path:
    """Strict JSON (json_safe: NaN as null), indented, written whole (write_file)."""
    text = json.dumps(json_safe(data), indent=2) + "\n"
    return write_file(path, lambda tmp: tmp.write_text(text))
