"""Column understanding on a 100,000-row table: the time `prepare` adds for the summary table.

Times `understand_columns` (kinds, missing and distinct counts, bad cells, date formats) and the
fit of the preprocessing it feeds, against the fit before column understanding existed (every text
column one-hot encoded, the dates and the id included), on the same table read from CSV.

    PYTHONPATH=src python bench/columns.py [ROWS]
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from damoxing.data.columns import finish_plan, understand_columns
from damoxing.data.preprocess import TabularPreprocessor


def table(n: int, seed: int = 0) -> pd.DataFrame:
    """An id, a date-time column (7 unparsable), a 5,000-value category, numbers with a bad cell, ±inf, a constant."""
    rng = np.random.default_rng(seed)
    stamps = (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1461, n), unit="D")
              + pd.to_timedelta(rng.integers(0, 24, n), unit="h"))
    when = stamps.strftime("%Y-%m-%d %H:%M").to_numpy().astype(object)
    when[:7] = "not a date"
    amount = rng.normal(50, 10, n).round(2).astype(object)
    amount[10] = "?"
    speed = rng.normal(0, 1, n)
    speed[20:23] = [np.inf, np.inf, -np.inf]
    return pd.DataFrame({"row_id": np.arange(n), "when": when, "vehicle": [f"V{i:05d}" for i in rng.integers(0, 5000, n)],
                         "amount": amount, "speed": speed, "site": "A", "color": rng.choice(["red", "green", "blue"], n)})


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(rows: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        table(rows).to_csv(path, index=False)
        frame = pd.read_csv(path, low_memory=False)
    features = list(frame.columns)
    plan = understand_columns(frame, features, {})
    understand = best_of(3, lambda: understand_columns(frame, features, {}))
    new = TabularPreprocessor()
    fit_new = best_of(3, lambda: (new.fit(frame, plan.kept, kinds=plan.kinds, date_formats=plan.date_formats),
                                  finish_plan(plan, new.columns_, 100, 1)))
    fit_old = best_of(3, lambda: TabularPreprocessor().fit(frame, features))
    print(f"{rows:,} rows x {len(features)} columns: understand_columns {understand:.3f} s; "
          f"fit {fit_new:.3f} s ({len(new.feature_names_out_)} inputs); fit without it {fit_old:.3f} s")
    print(plan.table_text())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
