"""`damoxing export RUN [--format onnx|torch] [--out FILE|DIR] [--opset N]`: a run's model for deployment.

The run is loaded (and its files checked), its model exported by its family's export view and
checked against the run's own model on the run's own test rows (deploy/export.py), then written
with the run's preprocessing, a report and a README into a new folder (deploy/bundle.py). The run
folder is only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from damoxing.deploy.export import ExportReport

PT2_WARNING = ("{file} is a torch.export archive. damoxing wrote it without pickled members, but torch.export.load "
               "unpickles members a changed file may add, which can run code: load it only from a source you trust, or with "
               "damoxing.deploy.exporters.load_program, which refuses such members. For files you share, use --format onnx.")


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None, opset: Optional[int] = None) -> ExportReport:
    """Export a run and return its report (`report.file`: the model's path; `report.parity`: the check).

    Args:
        run: a run folder.
        format: "onnx" (an ONNX graph, checked with onnxruntime) or "torch" (a torch.export program, .pt2).
        out: a new folder, or the model file's path (ending in .onnx / .pt2); default runs/export-<run>-<time>/.
        opset: the ONNX opset (18 or later); default the exporter's.
    Raises:
        UserError: not a run, an unknown format, an --out that exists; ExportFailed (exit 1) when the
        exporter fails or the parity check does (nothing is written then).
    """
    from damoxing.deploy.bundle import export_run

    return export_run(run, format=format, out=out, opset=opset)
