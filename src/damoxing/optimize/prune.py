"""Pruning of mlp and cnn models (see verbs/compress.py)."""

from __future__ import annotations

PRUNABLE = ("mlp", "cnn")
