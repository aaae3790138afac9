"""RawData: what a source yields before any preprocessing (a table, images, or a text corpus)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class RawData:
    """What a source yields before any preprocessing."""

    kind: str  # "table" | "image" | "corpus"
    frame: pd.DataFrame | None  # table: every column, target included
    images: np.ndarray | None  # image: (N, C, H, W) as stored (uint8 or float)
    labels: np.ndarray | None  # image: (N,) labels, any dtype; None if absent
    target: str | None  # table: target column name; image: "label"
    source: str  # what the user wrote, e.g. "builtin:digits" or the path
    fingerprint: str  # sha256 hex of the underlying bytes / array contents (first 16 chars)
    texts: list[str] | None = None  # corpus: its units (lines of one file, or documents of a folder)
    text_unit: str | None = None  # corpus: "line" | "document"

    @property
    def n_rows(self) -> int:
        if self.kind == "table":
            assert self.frame is not None
            return len(self.frame)
        if self.kind == "corpus":
            assert self.texts is not None
            return len(self.texts)
        assert self.images is not None
        return int(self.images.shape[0])
