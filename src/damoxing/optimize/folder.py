"""The compressed run folder: a new run, written atomically (runs/folder.py's RunWriter), never the original.

It holds what any run holds, so `predict`, `evaluate`, `compare` and `export` take it, plus
compression.json (the before/after report) and a `compression` block in manifest.json. An int8 run
keeps the original's config.yaml, preprocessing and splits and holds model.onnx instead of
model.safetensors (manifest.json's model.format: onnx); a pruned or distilled run is a run of the
normal training loop (its own config.yaml: the pruned widths, the student), with the block added.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.errors import UserError

FILE = "compression.json"


def check_out(out: Optional[str | Path]) -> Optional[Path]:
    """--out must be a path that does not exist yet (a compressed run never replaces anything)."""
    if out is None:
        return None
    out = Path(out)
    if out.exists():
        raise UserError(f"--out '{out}' already exists; compress writes a new run folder and never replaces one. Give a path that "
                        "does not exist yet (or leave --out out for runs/<run>-<method>-<time>).")
    return out


def default_path(original: Path, method: str) -> Path:
    """<original>-<method>-<YYYYmmdd-HHMMSS>, beside the original run."""
    return _unique(original.parent / f"{original.name}-{method}-{time.strftime('%Y%m%d-%H%M%S')}")


def _unique(path: Path) -> Path:
    candidate, k = path, 1
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.name}-{k}")
    return candidate


def write_compressed_run(path: Path, copy_from: Path, skip: set[str], manifest: dict, compression: dict, *,
                         model_file: Optional[tuple[str, bytes]] = None, metrics: Optional[dict] = None,
                         predictions: Optional[dict] = None, report: bool = True) -> Path:
    """Write the new run: `copy_from`'s files but `skip`, the model file, metrics and predictions given,
    compression.json, manifest.json with its `compression` block, and report.html last."""
    from damoxing.runs.folder import RunWriter

    writer = RunWriter(path)
    for item in sorted(Path(copy_from).iterdir()):
        if item.name in skip or item.name.startswith("."):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, writer.file(item.name))
    if model_file is not None:
        writer.file(model_file[0]).write_bytes(model_file[1])
    if metrics is not None:
        writer.write_json("metrics.json", metrics)
    for split, arrays in (predictions or {}).items():
        np.savez(writer.file(f"predictions_{split}.npz"), **arrays)
    writer.write_json(FILE, compression)
    writer.write_manifest({**manifest, "compression": manifest_block(compression)})
    if report:
        from damoxing.report.html import write_report

        try:
            write_report(writer.tmp, writer.tmp / "report.html", run_name=path.name)
        except Exception as e:  # noqa: BLE001 - the run is complete without its report
            from damoxing.core.console import warn

            warn(f"could not write report.html ({type(e).__name__}: {e}); `damoxing report {path}` retries it.")
    return writer.commit()


def manifest_block(compression: dict) -> dict[str, Any]:
    """manifest.json's `compression`: method, settings, the original run, and the before/after headline figures."""
    quality, size, speed = compression["quality"], compression["size"], compression["speed"]
    return {
        "method": compression["method"], "settings": compression["settings"], "original_run": compression["original_run"],
        "metric": quality["metric"], "before": quality["before"]["value"], "after": quality["after"]["value"],
        "p_value": (quality.get("mcnemar") or quality["paired_bootstrap"])["p_value"], "agreement": quality.get("agreement"),
        "bytes": [size["before"]["bytes"], size["after"]["bytes"]],
        "params": [size["before"]["params"], size["after"]["params"]],
        "flops_per_sample": [size["before"]["flops_per_sample"], size["after"]["flops_per_sample"]],
        "latency_speedup": speed["latency_speedup"], "file": FILE,
    }


def derived_manifest(original_manifest: dict, method: str, original: Path, note: str) -> dict:
    """The original's manifest with the creation time, command and where the run derives from replaced."""
    return {**original_manifest, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
            "derived_from": {"run": str(original), "by": f"damoxing compress --method {method}", "note": note}}
