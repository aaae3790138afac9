"""Column understanding: what each feature column of a table is, decided once when data is prepared.

Every feature column gets one kind, from `data.columns` when the config names it, else from these
rules (measured on every row of the table; nothing here looks at the target):

    constant     one distinct value, or none at all             -> dropped
    id           nearly unique strings, or nearly unique integers
                 named like an id (id, user_id, key, index, ...) -> dropped (a row label, not a feature)
    text         nearly unique strings of several words         -> dropped (table models read no free text)
    date         strings that parse as dates / times            -> year, month, day of week, day of
                                                                   year (and hour when times are present)
    numeric      numbers, or strings that are mostly numbers    -> a few non-numbers become missing, reported
    categorical  everything else                                -> one-hot / ordinal, rare values in "<other>"

±inf in a numeric column is reported and treated as missing. The result is one summary table
(column, kind, missing, distinct, action), printed as a note and kept in the run's manifest.
`parse_dates` and `DATE_PARTS` are shared with `TabularPreprocessor`, which re-applies a date
column's saved format to new rows.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.core.console import note, warn

OVERRIDES = ("numeric", "categorical", "text", "date", "drop")  # what data.columns may say
KEPT = ("numeric", "categorical", "date")  # the kinds a table model reads
DATE_PARTS = ("year", "month", "day_of_week", "day_of_year", "hour")
NEARLY_UNIQUE = 0.95  # distinct / present at or above this: an id (or free text)
MOSTLY = 0.9  # this share of values parsing as numbers (or dates) makes the column numeric (or a date)
MIN_ROWS_FOR_ID = 20  # fewer present values than this never make an id
SAMPLE = 200  # distinct values looked at to guess whether strings are numbers or dates
ID_NAME = re.compile(r"(^|[^a-z])(id|ids|key|uuid|guid|index|idx)$|^id([^a-z]|$)|^unnamed: 0$", re.IGNORECASE)
RULES = {
    "constant": "a single value in every row",
    "empty": "no values at all",
    "id": "nearly unique values, like a row id",
    "text": "free text (nearly unique, several words)",
    "drop": "data.columns says drop",
}


@dataclass
class ColumnInfo:
    """One feature column: its kind, counts over every row, and what was done with it."""

    name: Any  # as the table names it (a string for every file damoxing reads)
    kind: str  # numeric | categorical | date | text | id | constant | empty | drop
    missing: int
    distinct: int
    rule: str  # "auto" or "data.columns"
    bad_cells: int = 0  # numeric: text that is not a number; date: text that is not a date (made missing)
    examples: list[str] = field(default_factory=list)
    infinite: int = 0  # numeric: ±inf values (made missing)
    date_format: Optional[str] = None
    action: str = ""

    @property
    def kept(self) -> bool:
        return self.kind in KEPT

    def row(self) -> dict[str, Any]:
        return {"column": self.name, "kind": self.kind, "missing": self.missing, "distinct": self.distinct,
                "action": self.action, "rule": self.rule}


@dataclass
class ColumnPlan:
    """Every feature column's decision; `kept` (in table order) and `kinds` feed TabularPreprocessor.fit."""

    columns: list[ColumnInfo]

    @property
    def kept(self) -> list[str]:
        return [c.name for c in self.columns if c.kept]

    @property
    def kinds(self) -> dict[str, str]:
        return {c.name: c.kind for c in self.columns if c.kept}

    @property
    def date_formats(self) -> dict[str, Optional[str]]:
        return {c.name: c.date_format for c in self.columns if c.kind == "date"}

    def rows(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.columns]

    def table_text(self) -> str:
        """The summary as aligned plain text: one header line, one line per column."""
        head = ("column", "kind", "missing", "distinct", "action")
        lines = [(c.name, c.kind, str(c.missing), str(c.distinct), c.action) for c in self.columns]
        widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(4)]
        fmt = "  ".join(f"{{:{'>' if i in (2, 3) else '<'}{w}}}" for i, w in enumerate(widths)) + "  {}"
        return "\n".join(fmt.format(*r) for r in [head, *lines])


# ------------------------------------------------------------------------------------------ deciding


def understand_columns(frame: pd.DataFrame, features: list[str], overrides: dict[str, str]) -> ColumnPlan:
    """Decide every feature column's kind (data.columns first, then the rules above) and report bad cells."""
    plan = ColumnPlan([classify(frame[name], name, overrides.get(name)) for name in features])
    for c in plan.columns:
        if c.bad_cells:
            what = "a date" if c.kind == "date" else "a number"
            warn(f"column '{c.name}': {c.bad_cells} value(s) are not {what} (e.g. {', '.join(c.examples)}); "
                 "they are treated as missing.")
        if c.infinite:
            warn(f"column '{c.name}': {c.infinite} value(s) are infinite (±inf); they are treated as missing.")
    return plan


def classify(values: pd.Series, name: Any, override: Optional[str]) -> ColumnInfo:
    """One column's kind and counts (`name` as the table has it; `override` from data.columns or None)."""
    present = values.dropna()
    info = ColumnInfo(name=name, kind="", missing=int(len(values) - len(present)),
                      distinct=int(present.nunique()), rule="data.columns" if override else "auto")
    if override == "drop":
        info.kind = "drop"
    elif override is None and info.distinct <= 1:
        info.kind = "empty" if len(present) == 0 else "constant"
    elif override in ("categorical", "text"):
        info.kind = override
    elif pd.api.types.is_datetime64_any_dtype(values.dtype):
        info.kind, info.date_format = "date", "ISO8601"
    elif pd.api.types.is_bool_dtype(values.dtype):
        info.kind = "categorical"
    elif pd.api.types.is_numeric_dtype(values.dtype) and override != "date":
        info.kind = "numeric" if override == "numeric" or not _integer_id(present, str(name), info.distinct) else "id"
        info.infinite = int(np.isinf(pd.to_numeric(present).to_numpy(dtype=np.float64)).sum())
    else:
        _classify_text(present.astype(str), info, override)
    return info


def _integer_id(present: pd.Series, name: str, distinct: int) -> bool:
    """Nearly unique whole numbers named like an id ("Unnamed: 0" is a saved pandas index). Unnamed
    unique integers stay numbers: a time step or a count can be unique too."""
    return (pd.api.types.is_integer_dtype(present.dtype) and _nearly_unique(len(present), distinct)
            and bool(ID_NAME.search(name)))


def _nearly_unique(n_present: int, distinct: int) -> bool:
    return n_present >= MIN_ROWS_FOR_ID and distinct >= NEARLY_UNIQUE * n_present


def _classify_text(text: pd.Series, info: ColumnInfo, override: Optional[str]) -> None:
    """Strings: numbers, dates, an id, free text or categories (in that order), unless data.columns decided."""
    sample = pd.Series(pd.unique(text)[:SAMPLE], dtype=object)
    if override == "numeric" or (override is None and _numbers(sample).notna().mean() >= MOSTLY):
        info.kind = "numeric"
        numbers = _numbers(text)
        _bad(text, numbers.isna(), info)
        info.infinite = int(np.isinf(numbers.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
        return
    date_format = guess_date_format(sample) if override in (None, "date") else None
    if override == "date" or date_format is not None:
        info.kind, info.date_format = "date", date_format
        _bad(text, parse_dates(text, date_format).isna(), info)
        return
    if _nearly_unique(len(text), info.distinct):
        words = sample.str.count(r"\s+").mean() + 1
        info.kind = "text" if words >= 3 else "id"
        return
    info.kind = "categorical"


def _numbers(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text.str.strip(), errors="coerce")


def _bad(text: pd.Series, failed: pd.Series, info: ColumnInfo) -> None:
    bad = text[failed.to_numpy()]
    info.bad_cells = int(len(bad))
    info.examples = [repr(v) for v in pd.unique(bad)[:3]]


def guess_date_format(sample: pd.Series) -> Optional[str]:
    """The strftime format most of the sample's strings parse with, or None when they are not dates."""
    from pandas.tseries.api import guess_datetime_format

    with_digits = sample[sample.str.contains(r"\d", regex=True)]
    if len(with_digits) < MOSTLY * len(sample) or len(sample) == 0:
        return None
    for value in with_digits[:5]:
        fmt = guess_datetime_format(str(value).strip())
        if fmt is not None and parse_dates(sample, fmt).notna().mean() >= MOSTLY:
            return fmt
    return None


def parse_dates(values: pd.Series, date_format: Optional[str]) -> pd.Series:
    """Values -> UTC timestamps (NaT where missing or not a date in `date_format`; None: any format pandas reads)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return pd.to_datetime(values, utc=True)
    text = values.astype(object).where(values.notna())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_datetime(text, format=date_format or "mixed", errors="coerce", utc=True)


def date_parts(stamps: pd.Series, parts: list[str]) -> np.ndarray:
    """(N, len(parts)) float64: the named parts of UTC timestamps, NaN where a timestamp is missing."""
    dt = stamps.dt
    columns = {"year": dt.year, "month": dt.month, "day_of_week": dt.day_of_week, "day_of_year": dt.day_of_year,
               "hour": dt.hour}
    return np.column_stack([columns[p].to_numpy(dtype=np.float64, na_value=np.nan) for p in parts])


def has_times(stamps: pd.Series) -> bool:
    """Whether any timestamp has a time of day (then the hour is one of its parts)."""
    present = stamps.dropna()
    return bool(((present.dt.hour != 0) | (present.dt.minute != 0) | (present.dt.second != 0)).any())


# ------------------------------------------------------------------------------------------ reporting


def finish_plan(plan: ColumnPlan, fitted_columns: list[dict[str, Any]], max_categories: int, min_count: int) -> None:
    """Fill each column's action from what the fitted preprocessing did; warn about high-cardinality columns."""
    fitted = {c["name"]: c for c in fitted_columns}
    for c in plan.columns:
        if not c.kept:
            c.action = f"dropped: {RULES.get(c.kind, 'free text')}"
            continue
        col = fitted[c.name]
        if c.kind == "date":
            c.action = f"parsed ({c.date_format or 'any format'}) -> {', '.join(col['parts'])}"
        elif c.kind == "numeric":
            made_missing = [f"{n} {what} -> missing" for n, what in ((c.bad_cells, "non-number(s)"), (c.infinite, "±inf")) if n]
            c.action = "; ".join(["imputed, scaled", *made_missing])
        else:
            kept, other = len(col["categories"]), int(col.get("other", 0))
            c.action = f"{kept} categories" + (f", {other} others -> {col.get('bucket')}" if other else "")
            if other and c.distinct > max_categories:
                warn(f"column '{c.name}' has {c.distinct} distinct values: the {kept} most frequent in the training rows are "
                     f"kept and {other} others share the input '{c.name}={col.get('bucket')}' (data.preprocess.max_categories: "
                     f"{max_categories}, min_category_count: {min_count}). Raise max_categories to keep more, or set "
                     f"data.columns: {{{c.name}: drop}}.")
        if c.bad_cells and c.kind == "date":
            c.action += f"; {c.bad_cells} unparsed -> missing"


def show_plan(plan: ColumnPlan) -> None:
    """The summary table as one note (silenced by --quiet)."""
    note("columns:\n" + "\n".join("  " + line for line in plan.table_text().splitlines()))


def all_dropped_message(plan: ColumnPlan, source: str) -> str:
    reasons = "; ".join(f"'{c.name}': {RULES.get(c.kind, c.kind)}" for c in plan.columns)
    example = plan.columns[0].name if plan.columns else "NAME"
    return (f"Every feature column of '{source}' was dropped ({reasons}), so the model would have no inputs. "
            f"To keep a column, name its kind in the config, e.g. data.columns: {{{example}: categorical}} "
            "(numeric, categorical, date).")
