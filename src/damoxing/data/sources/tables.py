"""CSV (.csv, .csv.gz) and Parquet (.parquet, .pq) tables -> RawData of kind "table"."""

from __future__ import annotations

import zlib
from pathlib import Path

import pandas as pd

from damoxing.core.errors import DataError
from damoxing.data.raw import RawData
from damoxing.data.sources.common import hash_files, list_text, resolve_target


def load_table(path: Path, fmt: str, source: str, target: str | None, labels: str | None) -> RawData:
    """A table keeps its target in a column (`target`, or found by name); a labels file is refused."""
    if labels is not None:
        raise DataError(
            f"A separate labels file ('{labels}') was given for the table '{source}', but a "
            "table keeps its target in a column: remove the labels setting and name the "
            "column with data.target instead."
        )
    frame = read_csv(path, source) if fmt == "csv" else read_parquet(path, source)
    frame.columns = [str(c) for c in frame.columns]
    target = resolve_target(frame, target, source)
    return RawData("table", frame, None, None, target, source, hash_files(path))


def read_csv(path: Path, source: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"The CSV file '{source}' is empty: it has no header and no rows."
        ) from None
    except pd.errors.ParserError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"The CSV file '{source}' could not be parsed: {first}. Check that every row has the "
            "same number of comma-separated fields as the header and that quotes are closed."
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"The CSV file '{source}' is not UTF-8 text ({e.reason} at byte {e.start}). Save it as "
            "UTF-8 CSV."
        ) from None
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"The CSV file '{source}' could not be read: {e}.") from None
    if len(frame) == 0:
        raise DataError(
            f"The CSV file '{source}' has a header ({list_text([str(c) for c in frame.columns])}) "
            "but no data rows."
        )
    return frame


def read_parquet(path: Path, source: str) -> pd.DataFrame:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except (pyarrow.ArrowException, OSError, ValueError) as e:
        raise DataError(
            f"The Parquet file '{source}' could not be read: {e}. Check that it is a complete "
            "Parquet file (not a CSV renamed to .parquet)."
        ) from None
    if len(frame) == 0:
        raise DataError(
            f"The Parquet file '{source}' has columns "
            f"({list_text([str(c) for c in frame.columns])}) but no rows."
        )
    return frame


def has_column(path: Path, column: str | None) -> bool:
    """Whether the CSV/Parquet file has `column`, read from its header alone."""
    if column is None:
        return False
    if path.name.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        return column in pq.read_schema(path).names
    try:
        return column in pd.read_csv(path, nrows=0).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return False  # read_csv, when the file is read in full, says what is wrong with it
