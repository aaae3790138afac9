"""Plain-text corpora for language modelling: a .txt file (one unit per non-blank line) or a folder
of .txt files and no IDX files (one unit per document). A corpus is split by these units, so no
line or document is cut between train and test."""

from __future__ import annotations

from pathlib import Path

from damoxing.core.errors import DataError
from damoxing.data.raw import RawData
from damoxing.data.sources.common import file_format, hash_files


def is_corpus(path: Path) -> bool:
    """A .txt file, or a folder with .txt files and no IDX files."""
    if path.is_file():
        return file_format(path) == "txt"
    has_idx = any(file_format(p) == "idx" for p in path.iterdir() if p.is_file())
    return not has_idx and any(path.rglob("*.txt"))


def load_corpus(path: Path, source: str, target: str | None, labels: str | None) -> RawData:
    if target is not None or labels is not None:
        raise DataError(
            f"'{source}' is a plain-text corpus for language modelling; it has no target or labels. "
            "Remove data.target / data.labels (to classify texts, use a CSV/Parquet table with a text column and a label column)."
        )
    units, unit, files = read_corpus(path, source)
    return RawData("corpus", None, None, None, None, source, hash_files(*files), texts=units, text_unit=unit)


def read_corpus(path: Path, source: str) -> tuple[list[str], str, list[Path]]:
    """A .txt file -> its non-blank lines ("line" units); a folder -> its .txt files ("document" units).

    Returns (units, unit name, files read)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"The folder '{source}' holds no .txt files; a corpus folder needs one or more UTF-8 .txt documents.")
        units = [text for text in (_read_text(f, str(f)) for f in files) if text.strip()]
        if not units:
            raise DataError(f"The corpus '{source}' is empty: its {len(files)} .txt file(s) hold no text.")
        return units, "document", files
    units = [line for line in _read_text(path, source).splitlines() if line.strip()]
    if not units:
        raise DataError(f"The corpus '{source}' is empty: it holds no text, only blank lines or whitespace.")
    return units, "line", [path]


def _read_text(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"'{source}' is not UTF-8 text ({e.reason} at byte {e.start}). Save it as UTF-8.") from None
    except OSError as e:
        raise DataError(f"'{source}' could not be read: {e}.") from None
