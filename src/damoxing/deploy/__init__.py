"""Shipping a run: export (ONNX, torch.export) and serving over HTTP.

    export.py     export_onnx / export_torch / check_file: a run's model as a file, checked against the run
    exporters.py  the torch.onnx / torch.export calls that work (torch 2.13 workarounds), pickle-free .pt2
    parity.py     the parity check: max absolute difference and agreement of predictions over input shapes
    bundle.py     `damoxing export`: the export folder (model, preprocessing, export.json, README.md)
    readme.py     the folder's README: how to run the model with onnxruntime on raw data
"""
