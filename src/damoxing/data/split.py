"""Train / validation / test row indices: disjoint, covering every row, the same for a seed,
stratified by class when labels are given (pass labels only for classification)."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from damoxing.core.errors import DataError

_PART_NAMES = {"val": "validation", "test": "test"}


def split_indices(
    n: int,
    labels: np.ndarray | None = None,
    val: float = 0.1,
    test: float = 0.2,
    stratify: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (train_idx, val_idx, test_idx), each a sorted int64 array.

    The test rows are drawn first (round(test * n) rows, at least 1), then the validation rows
    from the rest (round(val * n) rows, at least 1), both with sklearn's train_test_split. A
    fraction of 0 gives an empty array. Stratified when `labels` is given and `stratify` is True."""
    from sklearn.model_selection import train_test_split

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"Cannot split {n!r} rows: the data needs at least one row.")
    n = int(n)
    for name, frac in (("val", val), ("test", test)):
        number = isinstance(frac, Real) and not isinstance(frac, bool)
        if not number or not math.isfinite(frac) or frac < 0:
            raise DataError(
                f"data.split.{name} is {frac!r}; it must be a fraction of the rows between 0 and 1 "
                "(e.g. 0.1), and 0 means no such split."
            )
    if val + test >= 1:
        raise DataError(
            f"data.split.val ({val}) + data.split.test ({test}) = {val + test:g}, which leaves no "
            "rows for training; the two together must be below 1 (e.g. val 0.1, test 0.2)."
        )

    strat: np.ndarray | None = None
    if labels is not None:
        y = np.asarray(labels).ravel()
        if len(y) != n:
            raise DataError(
                f"Cannot split: there are {n} rows but {len(y)} labels; they must match."
            )
        if stratify:
            strat = y.astype(str) if y.dtype == object else y
            _check_class_counts(strat, val, test)

    idx = np.arange(n, dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)

    def cut(rows: np.ndarray, size: int, part: str, asked: float) -> tuple[np.ndarray, np.ndarray]:
        """Take `size` of `rows` out as the `part` split (`asked`: the user's fraction)."""
        name = _PART_NAMES[part]
        if strat is not None:
            n_classes = len(np.unique(strat[rows]))
            if size < n_classes or len(rows) - size < n_classes:
                raise DataError(
                    f"Cannot stratify the {name} split: data.split.{part} = {asked:g} of {n} "
                    f"rows gives {size} rows, taken from {len(rows)} (leaving "
                    f"{len(rows) - size}), but there are {n_classes} classes and stratifying "
                    "puts every class into both parts. Use "
                    f"more data, a larger data.split.{part}, or data.split.stratify: false."
                )
        try:
            keep, taken = train_test_split(
                rows,
                test_size=size,
                random_state=seed,
                shuffle=True,
                stratify=None if strat is None else strat[rows],
            )
        except ValueError as e:
            reason = str(e).replace(" Adjust any of the aforementioned parameters.", "").rstrip(".")
            raise DataError(
                f"Cannot take a {name} split of data.split.{part} = {asked:g} ({size} rows) from "
                f"{len(rows)} rows: {reason}. Use more data or a different data.split.{part}"
                + (", or data.split.stratify: false." if strat is not None else ".")
            ) from None
        return np.asarray(keep, dtype=np.int64), np.asarray(taken, dtype=np.int64)

    # whole row counts from the fractions of all rows (at least one row for a non-zero fraction)
    n_test = max(1, round(test * n)) if test > 0 else 0
    n_val = max(1, round(val * n)) if val > 0 else 0
    if n_test + n_val >= n:
        raise DataError(
            f"{n} row{'s are' if n != 1 else ' is'} too few to split: data.split.val = {val:g} "
            f"takes {n_val} and data.split.test = {test:g} takes {n_test} (a non-zero fraction "
            "takes at least one row), leaving none for training. Use more data, or set "
            "data.split.val / data.split.test to 0."
        )
    rest, test_idx = (cut(idx, n_test, "test", test) if n_test else (idx, empty))
    if n_val:
        train_idx, val_idx = cut(rest, n_val, "val", val)
    else:
        train_idx, val_idx = rest, empty
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def _check_class_counts(y: np.ndarray, val: float, test: float) -> None:
    """Every class needs a row in each non-empty split."""
    parts = ["train"] + [p for p, f in (("validation", val), ("test", test)) if f > 0]
    if len(parts) == 1:
        return
    classes, counts = np.unique(y, return_counts=True)
    small = [(c, int(k)) for c, k in zip(classes, counts) if k < len(parts)]
    if not small:
        return
    small.sort(key=lambda ck: ck[1])
    named = ", ".join(f"'{c}' ({k} row{'s' if k != 1 else ''})" for c, k in small[:5])
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    raise DataError(
        f"Too few rows to stratify the split: "
        f"{'class' if len(small) == 1 else 'classes'} {named}{more} "
        f"{'has' if len(small) == 1 else 'have'} fewer than "
        f"{len(parts)} rows, but stratifying puts each class into every split "
        f"({', '.join(parts)}). Set data.split.stratify: false, or add more rows of that class."
    )
