"""Train / val / test index splits."""

from __future__ import annotations

import numpy as np
import pytest

from damoxing.core.errors import DataError
from damoxing.data.split import split_indices


def check_partition(parts, n):
    joined = np.concatenate(parts)
    assert all(p.dtype == np.int64 for p in parts)
    assert len(joined) == n and len(np.unique(joined)) == n  # disjoint and complete
    assert joined.min() == 0 and joined.max() == n - 1


def test_sizes_and_partition():
    tr, va, te = split_indices(100, val=0.1, test=0.2, seed=3)
    check_partition((tr, va, te), 100)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)


def test_deterministic_for_a_seed():
    a = split_indices(200, seed=7)
    b = split_indices(200, seed=7)
    c = split_indices(200, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])


def test_stratified_keeps_class_proportions():
    labels = np.array(["rare"] * 40 + ["common"] * 360)
    tr, va, te = split_indices(400, labels=labels, val=0.1, test=0.2, seed=0)
    check_partition((tr, va, te), 400)
    for part in (tr, va, te):
        assert np.mean(labels[part] == "rare") == pytest.approx(0.1, abs=0.005)


def test_unstratified_can_drift():
    labels = np.array([0] * 40 + [1] * 360)
    fractions = {
        round(float(np.mean(labels[split_indices(400, labels, stratify=False, seed=s)[1]] == 0)), 3)
        for s in range(10)
    }
    assert len(fractions) > 1  # without stratification the validation share varies by seed


def test_zero_fractions():
    tr, va, te = split_indices(10, val=0, test=0.3)
    assert len(va) == 0 and len(te) == 3 and len(tr) == 7
    tr, va, te = split_indices(10, labels=np.arange(10) % 2, val=0.2, test=0)
    assert len(te) == 0 and len(va) == 2
    tr, va, te = split_indices(5, labels=np.array([0, 0, 0, 0, 1]), val=0, test=0)
    assert tr.tolist() == [0, 1, 2, 3, 4] and len(va) == len(te) == 0


def test_too_few_rows_in_a_class():
    labels = np.array(["a"] * 30 + ["tiny"] * 2)
    with pytest.raises(DataError) as info:
        split_indices(32, labels=labels)
    msg = str(info.value)
    assert "'tiny' (2 rows)" in msg and "data.split.stratify: false" in msg
    tr, va, te = split_indices(32, labels=labels, stratify=False)  # the suggested fix works
    check_partition((tr, va, te), 32)


def test_too_few_rows_for_all_classes_in_a_split():
    labels = np.arange(50) % 10  # 10 classes, 5 rows each; 10% validation = 5 rows < 10 classes
    with pytest.raises(DataError, match="validation.*stratify: false"):
        split_indices(50, labels=labels, val=0.1, test=0.2)


@pytest.mark.parametrize("val, test, needle", [(-0.1, 0.2, "data.split.val"),
                                               (0.5, 0.5, "below 1"),
                                               (0.1, float("nan"), "data.split.test")])
def test_bad_fractions(val, test, needle):
    with pytest.raises(DataError, match=needle):
        split_indices(100, val=val, test=test)


def test_label_count_mismatch():
    with pytest.raises(DataError, match="10 rows but 9 labels"):
        split_indices(10, labels=np.zeros(9))


def test_too_few_rows_to_split_at_all():
    with pytest.raises(DataError, match="2 rows are too few.*leaving none for training"):
        split_indices(2, val=0.1, test=0.2)
    tr, va, te = split_indices(3, val=0.1, test=0.2)
    assert (len(tr), len(va), len(te)) == (1, 1, 1)
