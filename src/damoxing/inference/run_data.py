"""A run's own data, rebuilt: its source read again, its fitted preprocessing applied, its split
indices taken (data/saved.py), so a verb that needs the rows a run was trained and tested on
(evaluate, export's parity check, and later compress, explain, audit) sees exactly those arrays."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from damoxing.core.console import warn


def run_data(predictor):
    """The run's splits rebuilt from its source with its saved preprocessing and split indices; a
    warning when the source changed since training (its fingerprint differs from the manifest's)."""
    from damoxing.data.saved import rebuild_data
    from damoxing.runs.folder import read_json

    manifest = read_json(predictor.path / "manifest.json")
    indices = split_indices(predictor.path)
    config = predictor.config
    prepared = rebuild_data(config, predictor.preprocessing, indices, _source_folder(config.data.source, manifest))
    _warn_if_changed(prepared.fingerprint, manifest, prepared.source)
    return prepared


def _warn_if_changed(fingerprint: str, manifest: dict, source: str) -> None:
    if fingerprint != manifest.get("data", {}).get("fingerprint"):
        warn(f"the data at {source} changed since this run was trained (fingerprint differs); "
             "its splits may not hold the rows it was trained and tested on.")


def split_indices(run: Path) -> dict[str, np.ndarray]:
    """The run's splits.npz: split name -> row indices (a RunFolderError when it is missing or damaged)."""
    from damoxing.core.errors import RunFolderError

    file = Path(run) / "splits.npz"
    try:
        with np.load(file, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # missing, truncated, not an .npz
        raise RunFolderError(f"'{file}' (the run's split indices) cannot be read ({type(e).__name__}: {e}); the run folder is damaged.") from None


def _source_folder(source: str, manifest: dict) -> Optional[Path]:
    """Where a relative data.source is found from any working directory: the config's folder or the
    working directory recorded at training time, else the folder read off the recorded path."""
    if not source.startswith("builtin:") and not Path(source).is_absolute():
        for key in ("config_dir", "working_dir"):
            folder = manifest.get(key)
            if folder and (Path(folder) / source).exists():
                return Path(folder)
    return config_folder(source, manifest.get("data", {}).get("source", ""))


def config_folder(config_source: str, recorded: str) -> Optional[Path]:
    """The folder a relative data.source was found in at training time (the config file's folder),
    from the path the manifest recorded; None when the source is not relative or was found as written."""
    relative, found = Path(config_source), Path(recorded)
    n = len(relative.parts)
    if config_source.startswith("builtin:") or relative.is_absolute() or len(found.parts) <= n or found.parts[-n:] != relative.parts:
        return None
    return Path(*found.parts[:-n])


def run_rows(predictor) -> dict:
    """A table run's own rows in their original columns, before any preprocessing: split name ->
    DataFrame of the run's feature columns (the rows its splits.npz names)."""
    from damoxing.data.kinds.table import kept_rows
    from damoxing.data.sources import load_source, resolve_path
    from damoxing.runs.folder import read_json

    config = predictor.config
    manifest = read_json(predictor.path / "manifest.json")
    source = resolve_path(config.data.source, _source_folder(config.data.source, manifest))
    raw = load_source(source, config.data.target)
    _warn_if_changed(raw.fingerprint, manifest, raw.source)
    frame, _ = kept_rows(raw, predictor.preprocessing)
    columns = predictor.preprocessing.feature_columns
    return {split: frame.iloc[rows[rows < len(frame)]][columns].reset_index(drop=True) for split, rows in split_indices(predictor.path).items()}
