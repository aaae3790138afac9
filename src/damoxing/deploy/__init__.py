"""Shipping a run: export (ONNX, torch.export) and serving over HTTP."""
