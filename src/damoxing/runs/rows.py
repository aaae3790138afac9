"""The raw rows behind a run's splits: its source table read again and cut by splits.npz.

A run keeps row indices, not rows (splits.npz). Verbs that need what the model never saw as an
input - a sensitive column left out with `data.exclude`, the text of a row to show beside its
attributions - read the source again, drop the rows training dropped (a missing target), and take
the split's indices. The data fingerprint in manifest.json says whether the source is still the
one the run was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from damoxing.core.console import warn
from damoxing.core.errors import DataError, RunFolderError
from damoxing.runs.folder import read_json

SPLITS = ("train", "val", "test")


def split_indices(run: str | Path, split: str) -> np.ndarray:
    """Row indices of `split` (train | val | test) in the run's source table, from splits.npz."""
    file = Path(run) / "splits.npz"
    if not file.exists():
        raise RunFolderError(f"'{run}' has no splits.npz, so its {split} rows cannot be found in its data source.")
    with np.load(file, allow_pickle=False) as data:
        if split not in data.files:
            raise RunFolderError(f"'{file}' holds no '{split}' split (it has {', '.join(data.files)}).")
        return np.asarray(data[split], dtype=np.int64)


def source_table(config, run: str | Path) -> pd.DataFrame:
    """The run's source table with every column, numbered as when it was split (rows with a missing target dropped)."""
    from damoxing.data.sources import load_source

    manifest = read_json(Path(run) / "manifest.json")
    raw = load_source(_source(config.data.source, (manifest.get("data") or {}).get("source")), config.data.target, config.data.labels)
    if raw.kind != "table":
        raise DataError(f"The run '{run}' was trained on {raw.kind} data from '{config.data.source}', which has no columns to read.")
    if raw.fingerprint != (manifest.get("data") or {}).get("fingerprint"):
        warn(f"the data at {config.data.source} changed since '{run}' was trained (fingerprint differs); its rows may not be the run's.")
    frame = raw.frame
    if config.task in ("classification", "regression") and raw.target in frame.columns:  # as data.kinds' kept_rows: rows with a target
        frame = frame[frame[raw.target].notna().to_numpy()]
    return frame.reset_index(drop=True)


def _source(configured: str, recorded: str | None) -> str:
    """Where the source was found at training time (the manifest records the path it was read from: a
    relative data.source may have been found beside the config file), else the configured one."""
    if recorded and not configured.startswith("builtin:") and Path(recorded).exists():
        return recorded
    return configured


def split_rows(config, run: str | Path, split: str) -> pd.DataFrame:
    """The raw rows (every column of the source) of the run's `split`, in the order of splits.npz."""
    frame = source_table(config, run)
    index = split_indices(run, split)
    if len(index) and int(index.max()) >= len(frame):
        raise DataError(f"The {split} split of '{run}' refers to row {int(index.max())}, but '{config.data.source}' now has "
                        f"{len(frame)} rows: the data changed since the run was trained. Pass the data the run was trained on.")
    return frame.iloc[index].reset_index(drop=True)
