"""`damoxing export RUN`: an export folder that a consumer can use without damoxing.

    runs/export-<run>-<time>/          (default; or --out DIR, a new folder)
        model.onnx | model.pt2         the exported model (deploy/export.py), checked before anything is written
        preprocessing.json             the run's, byte for byte: raw data -> the model's input, outputs -> predictions
        tokenizer.json                 the run's tokenizer, for text and language models
        postprocess.json               a mitigated run's group thresholds (`damoxing audit --mitigate`), which decide
                                       its classes from the probabilities; not part of the graph
        export.json                    ExportReport: what was exported, shapes, versions, every parity number
        README.md                      how to run it with onnxruntime on raw data (deploy/readme.py)

`--out FILE.onnx` (or FILE.pt2) writes the model to FILE and the other files beside it, under the
names above. Nothing that exists is ever overwritten: a taken name is refused before any work.
Everything is written into a hidden folder first; a new folder is then renamed into place in one
step, files going beside an existing one are linked in one by one, export.json last. A failed
export or parity check leaves nothing behind. The run folder is only read: runs are never edited,
so the record of the export is export.json, beside the exported file (not the run's manifest).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from damoxing.core.errors import UserError, choices_text
from damoxing.deploy.export import (
    FORMATS,
    ExportReport,
    RunLike,
    export_onnx,
    export_torch,
    open_run,
)
from damoxing.deploy.readme import readme

REPORT, README, PREPROCESSING, POSTPROCESS = "export.json", "README.md", "preprocessing.json", "postprocess.json"


@dataclass
class Destination:
    """Where an export goes: the model file's final path, and whether its folder is new."""

    model: Path
    new_folder: bool

    @property
    def folder(self) -> Path:
        return self.model.parent


def export_run(run: RunLike, format: str = "onnx", out: str | Path | None = None, opset: Optional[int] = None) -> ExportReport:
    """Export a run (see the module docstring) and return its report; `report.file` is the model's final path."""
    if format not in FORMATS:
        raise UserError(f"--format '{format}' is not an export format. Formats: {choices_text(FORMATS)} "
                        "(onnx: an ONNX graph, checked with onnxruntime; torch: a torch.export program, .pt2).")
    if opset is not None and format != "onnx":
        raise UserError("--opset applies to --format onnx only (a torch.export program has no opset).")
    predictor = open_run(run)
    copies = [PREPROCESSING, *sorted(predictor.preprocessing.files())]  # the run's own files, copied byte for byte
    copies += [name for name in (POSTPROCESS,) if (Path(predictor.path) / name).exists()]  # a mitigated run's group thresholds
    destination = plan(out, format, Path(predictor.path).name, [*copies, README, REPORT])
    staging, created = _stage(destination)
    try:
        model_name = destination.model.name
        report = export_onnx(predictor, staging / model_name, opset) if format == "onnx" else export_torch(predictor, staging / model_name)
        report.file = str(destination.model)
        for name in copies:
            shutil.copyfile(Path(predictor.path) / name, staging / name)
        record = {**report.to_dict(), "file": model_name, "files": [model_name, *copies, README, REPORT]}
        preprocessing = json.loads((staging / PREPROCESSING).read_text())
        (staging / README).write_text(readme(record, preprocessing, Path(predictor.path).name, model_name, [*copies, REPORT]))
        (staging / REPORT).write_text(json.dumps(record, indent=2) + "\n")
        _commit(staging, destination, [*copies, README, model_name, REPORT])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            _remove_if_empty(folder)
        raise
    return report


def plan(out: str | Path | None, format: str, run_name: str, files: list[str]) -> Destination:
    """The destination, refused (UserError, before any work) if anything it would write exists."""
    suffix = FORMATS[format]
    if out is None:
        return Destination(_free_folder(Path("runs"), f"export-{run_name}") / f"model{suffix}", new_folder=True)
    out = Path(out)
    other = next((s for f, s in FORMATS.items() if f != format and out.name.endswith(s)), None)
    if other:
        raise UserError(f"--out '{out}' ends in {other}, but --format {format} writes a {suffix} file. "
                        f"Use --out {out.with_suffix(suffix)}, or --format {'onnx' if other == '.onnx' else 'torch'}.")
    if out.name.endswith(suffix):
        taken = [p for p in [out, *(out.parent / name for name in files)] if os.path.lexists(p)]
        if taken:
            raise UserError(f"--out '{out}': {', '.join(repr(str(p)) for p in taken)} already exist(s), and an export never overwrites a file "
                            f"(it writes {out.name} and {', '.join(files)} beside it). Give a path in a new or empty folder, "
                            f"e.g. --out {out.parent / ('export-' + run_name) / out.name}.")
        return Destination(out, new_folder=not out.parent.exists())
    if os.path.lexists(out) and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out '{out}' already exists and is not an empty folder; an export never overwrites anything. "
                        f"Give a new folder (the model goes in it as model{suffix}), or a file path ending in {suffix}.")
    return Destination(out / f"model{suffix}", new_folder=True)


def _free_folder(parent: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = parent / f"{name}-{stamp}", 1
    while os.path.lexists(path):
        k += 1
        path = parent / f"{name}-{stamp}-{k}"
    return path


def _stage(destination: Destination) -> tuple[Path, list[Path]]:
    """A hidden folder beside the destination to write into, and the folders made for it, deepest
    first (removed again if the export fails)."""
    anchor = destination.folder if destination.new_folder else destination.model
    created, folder = [], anchor.parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    try:
        anchor.parent.mkdir(parents=True, exist_ok=True)
        staging = anchor.parent / f".{anchor.name}.partial-{os.getpid()}"
        staging.mkdir()
    except OSError as e:
        for made in created:
            _remove_if_empty(made)
        raise UserError(f"Cannot write the export to '{destination.folder}': {e.strerror or e}.") from None
    return staging, created


def _commit(staging: Path, destination: Destination, order: list[str]) -> None:
    """Put the staged files in place: the whole folder renamed at once, or each file linked beside the
    existing ones (a link never replaces a file), export.json last."""
    if destination.new_folder:
        try:
            os.rename(staging, destination.folder)  # only onto a missing or empty folder
        except OSError:
            raise UserError(f"'{destination.folder}' was created by someone else while exporting; nothing was written. Export again.") from None
        return
    placed: list[Path] = []
    try:
        for name in order:
            target = destination.folder / name if name != destination.model.name else destination.model
            os.link(staging / name, target)
            placed.append(target)
    except FileExistsError as e:
        for target in placed:
            target.unlink(missing_ok=True)
        raise UserError(f"'{e.filename2 or e.filename}' appeared while exporting; nothing was written. Export again.") from None
    shutil.rmtree(staging, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
