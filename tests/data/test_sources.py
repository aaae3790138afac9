"""Reading real files written to tmp_path: tables, numpy arrays, IDX files and folders, builtins."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import DataError, UserError
from damoxing.data.sources import RawData, load_source
from damoxing.data.sources.builtin import BUILTINS, list_builtins, load_builtin

# ------------------------------------------------------------------------------------- helpers


def write_idx(path: Path, arr: np.ndarray, gz: bool = False, cut: int = 0) -> Path:
    """Write `arr` in the real IDX format: 0x0000, type code, ndim, big-endian dims, data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    code = codes[arr.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if cut:
        data = data[:-cut]
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def images_and_labels(n=12, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, UserError)
    return str(info.value)


# --------------------------------------------------------------------------------------- tables


def test_csv_with_text_categories_and_nans(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("age,city,income,label\n30,paris,1.5,yes\n,berlin,,no\n41,,2.5,yes\n")
    raw = load_source(str(path))
    assert isinstance(raw, RawData)
    assert raw.kind == "table" and raw.target == "label" and raw.source == str(path)
    assert raw.images is None and raw.labels is None
    assert raw.frame.shape == (3, 4)
    assert raw.frame["age"].isna().sum() == 1 and raw.frame["city"].isna().sum() == 1
    assert list(raw.frame["label"]) == ["yes", "no", "yes"]
    assert len(raw.fingerprint) == 16
    int(raw.fingerprint, 16)


def test_csv_target_defaults_to_last_column_and_named_target(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,price\n1,2,3.5\n4,5,6.5\n")
    assert load_source(str(path)).target == "price"
    assert load_source(str(path), target="a").target == "a"
    other = tmp_path / "u.csv"
    other.write_text("class,a,b\nx,1,2\ny,3,4\n")
    assert load_source(str(other)).target == "class"


def test_csv_gz_and_fingerprint_depends_on_bytes(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    a = tmp_path / "a.csv.gz"
    frame.to_csv(a, index=False)
    b = tmp_path / "b.csv"
    frame.to_csv(b, index=False)
    c = tmp_path / "c.csv"
    frame.assign(x=[1.0, 2.0, 4.0]).to_csv(c, index=False)
    ra, rb, rc = (load_source(str(p)) for p in (a, b, c))
    pd.testing.assert_frame_equal(ra.frame, rb.frame)
    assert ra.target == "y"
    assert rb.fingerprint == load_source(str(b)).fingerprint
    assert rb.fingerprint != rc.fingerprint


def test_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    frame = pd.DataFrame({"f": [0.5, 1.5], "colour": ["red", "blue"], "target": [1.0, 2.0]})
    frame.to_parquet(path)
    raw = load_source(str(path))
    assert raw.kind == "table" and raw.target == "target"
    assert list(raw.frame.columns) == ["f", "colour", "target"]
    assert list(raw.frame["colour"]) == ["red", "blue"]


def test_missing_target_column_lists_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("height,weight,species\n1,2,a\n3,4,b\n")
    msg = error(load_source, str(path), target="specie")
    assert "'specie'" in msg and "'height'" in msg and "'weight'" in msg
    assert "Did you mean 'species'" in msg


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "empty"),
        ("a,b,label\n", "no data rows"),
        ('a,b\n1,2\n3,4,5,6\n"x,1\n', "could not be parsed"),
    ],
)
def test_bad_csv(tmp_path, content, needle):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    msg = error(load_source, str(path))
    assert needle in msg and "bad.csv" in msg


def test_bad_parquet_names_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("a,b\n1,2\n")
    msg = error(load_source, str(path))
    assert "fake.parquet" in msg and "Parquet" in msg


def test_single_column_table_loads(tmp_path):
    path = tmp_path / "one.csv"  # e.g. rows to predict on for a one-feature model
    path.write_text("x\n1.5\n2.5\n")
    raw = load_source(str(path))
    assert raw.frame["x"].tolist() == [1.5, 2.5] and raw.target == "x"


def test_missing_path_and_unknown_extension(tmp_path):
    missing = tmp_path / "nope" / "data.csv"
    msg = error(load_source, str(missing))
    assert "does not exist" in msg and str(missing.absolute()) in msg
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"PK")
    msg = error(load_source, str(odd))
    assert ".csv" in msg and ".parquet" in msg and ".npz" in msg and "idx" in msg.lower()


def test_labels_argument_rejected_for_tables(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,label\n1,2\n")
    assert "data.target" in error(load_source, str(path), labels="l.npy")


# ---------------------------------------------------------------------------------------- numpy


def test_npz_nhwc_is_transposed(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 7, 6, 3), dtype=np.uint8)
    y = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    raw = load_source(str(tmp_path / "d.npz"))
    assert raw.kind == "image" and raw.target == "label" and raw.frame is None
    assert raw.images.shape == (10, 3, 7, 6) and raw.images.dtype == np.uint8
    np.testing.assert_array_equal(raw.images[4, 2], x[4, :, :, 2])
    np.testing.assert_array_equal(raw.labels, y)


def test_npz_nchw_and_nhw(tmp_path):
    x = np.random.default_rng(1).random((8, 3, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.array(["cat", "dog"] * 4))
    raw = load_source(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(raw.images, x)
    assert list(raw.labels[:2]) == ["cat", "dog"]
    np.savez(tmp_path / "b.npz", X=x[:, 0])
    raw = load_source(str(tmp_path / "b.npz"))
    assert raw.images.shape == (8, 1, 5, 5) and raw.labels is None


def test_npz_2d_is_a_table(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez(tmp_path / "t.npz", data=x, target=np.array([0, 1, 0, 1]))
    raw = load_source(str(tmp_path / "t.npz"))
    assert raw.kind == "table" and raw.target == "label"
    assert list(raw.frame.columns) == ["f0", "f1", "f2", "label"]
    assert raw.frame["f2"].tolist() == [2.0, 5.0, 8.0, 11.0]


def test_npz_unknown_keys_are_listed(tmp_path):
    np.savez(tmp_path / "k.npz", pixels=np.zeros((2, 3, 3)), answers=np.zeros(2))
    msg = error(load_source, str(tmp_path / "k.npz"))
    assert "'pixels'" in msg and "'answers'" in msg and "'x'" in msg


def test_npz_ragged_images_report_shapes(tmp_path):
    ragged = np.empty(3, dtype=object)
    ragged[0], ragged[1], ragged[2] = np.zeros((8, 8)), np.zeros((6, 6)), np.zeros((8, 8))
    np.savez(tmp_path / "r.npz", x=ragged, y=np.array([0, 1, 2]))
    msg = error(load_source, str(tmp_path / "r.npz"))
    assert "different shapes" in msg and "same shape" in msg


def test_npz_label_count_mismatch(tmp_path):
    np.savez(tmp_path / "m.npz", x=np.zeros((5, 4, 4)), y=np.zeros(4))
    msg = error(load_source, str(tmp_path / "m.npz"))
    assert "5 rows" in msg and "4 labels" in msg and "(5, 1, 4, 4)" in msg


def test_npy_with_labels_file(tmp_path):
    x, y = images_and_labels()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    raw = load_source(str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"))
    assert raw.images.shape == (12, 1, 6, 5)
    np.testing.assert_array_equal(raw.labels, y)
    alone = load_source(str(tmp_path / "x.npy"))
    assert alone.labels is None and alone.fingerprint != raw.fingerprint
    np.save(tmp_path / "short.npy", y[:-2])
    msg = error(load_source, str(tmp_path / "x.npy"), labels=str(tmp_path / "short.npy"))
    assert "12 rows" in msg and "10 labels" in msg
    msg = error(load_source, str(tmp_path / "x.npy"), labels=str(tmp_path / "gone.npy"))
    assert "gone.npy" in msg and "does not exist" in msg


# ------------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels(tmp_path, gz):
    x, y = images_and_labels()
    suffix = ".gz" if gz else ""
    img = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x, gz=gz)
    lab = write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y, gz=gz)
    raw = load_source(str(img), labels=str(lab))
    assert raw.kind == "image" and raw.images.dtype == np.uint8
    np.testing.assert_array_equal(raw.images[:, 0], x)
    np.testing.assert_array_equal(raw.labels, y)


def test_idx_float_big_endian(tmp_path):
    x = np.linspace(-1, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    raw = load_source(str(write_idx(tmp_path / "x.idx", x)))
    np.testing.assert_array_equal(raw.images[:, 0], x)
    assert raw.images.dtype.byteorder in ("=", "<", "|")


def test_idx_truncated_and_bad_magic(tmp_path):
    x, _ = images_and_labels()
    path = write_idx(tmp_path / "t-images-idx3-ubyte", x, cut=7)
    msg = error(load_source, str(path))
    assert "truncated" in msg and "(12, 6, 5)" in msg and "t-images-idx3-ubyte" in msg
    gzpath = write_idx(tmp_path / "t-images-idx3-ubyte.gz", x, gz=True)
    gzpath.write_bytes(gzpath.read_bytes()[:-20])
    assert "gzip" in error(load_source, str(gzpath))
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 20)
    assert "magic number is 0x12340803" in error(load_source, str(bad))


def test_idx_labels_file_as_source(tmp_path):
    _, y = images_and_labels()
    path = write_idx(tmp_path / "l.idx", y)
    assert "labels" in error(load_source, str(path))


def test_mnist_folder_concatenates_train_then_t10k(tmp_path):
    x1, y1 = images_and_labels(n=10, seed=1)
    x2, y2 = images_and_labels(n=4, seed=2)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x2, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y2, gz=True)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x1, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y1, gz=True)
    (tmp_path / "README.txt").write_text("not data")
    raw = load_source(str(tmp_path))
    assert raw.images.shape == (14, 1, 6, 5)
    np.testing.assert_array_equal(raw.images[:10, 0], x1)
    np.testing.assert_array_equal(raw.images[10:, 0], x2)
    np.testing.assert_array_equal(raw.labels, np.concatenate([y1, y2]))


def test_folder_errors(tmp_path):
    (tmp_path / "notes.md").write_text("x")  # (a folder of .txt files would be a text corpus)
    msg = error(load_source, str(tmp_path))
    assert "notes.md" in msg and "train-images-idx3-ubyte" in msg and ".txt documents" in msg  # both things a folder can be
    x, _ = images_and_labels()
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    assert "labels" in error(load_source, str(tmp_path))


# ------------------------------------------------------------------------------------- builtins


def test_builtin_tables_and_images():
    iris = load_source("builtin:iris")
    assert iris.kind == "table" and iris.target == "label" and iris.source == "builtin:iris"
    assert set(iris.frame["label"]) == {"setosa", "versicolor", "virginica"}
    assert "sepal_length_cm" in iris.frame.columns
    digits = load_source("builtin:digits")
    assert digits.frame.shape == (1797, 65) and digits.frame.columns[0] == "pixel_0"
    images = load_source("builtin:digits_images")
    assert images.images.shape == (1797, 1, 8, 8) and images.images.max() == 16
    assert sorted(set(images.labels.tolist())) == list(range(10))
    cancer = load_builtin("breast_cancer")
    assert set(cancer.frame["label"]) == {"malignant", "benign"}
    diabetes = load_builtin("diabetes")
    assert diabetes.target == "target" and diabetes.frame["target"].dtype == np.float64
    assert iris.fingerprint == load_source("builtin:iris").fingerprint != digits.fingerprint


def test_builtin_copy_is_independent():
    a = load_builtin("iris")
    a.frame.iloc[0, 0] = -99.0
    assert load_builtin("iris").frame.iloc[0, 0] != -99.0


def test_unknown_builtin_and_list():
    msg = error(load_source, "builtin:irsi")
    assert "Did you mean 'iris'" in msg and "'digits'" in msg and "'diabetes'" in msg
    rows = {d["name"]: d for d in list_builtins()}
    assert set(rows) == set(BUILTINS)
    assert rows["digits_images"]["shape"] == "1x8x8" and rows["digits"]["shape"] == "64 features"
    assert rows["iris"]["n_classes"] == 3 and rows["diabetes"]["n_classes"] is None
    assert rows["wine"]["rows"] == 178 and rows["diabetes"]["task"] == "regression"


class _Evil:
    def __reduce__(self):
        return (print, ("PWNED",))


def test_object_arrays_are_never_fully_unpickled(tmp_path, capsys):
    bad = np.empty(2, dtype=object)
    bad[0], bad[1] = _Evil(), 1
    np.savez(tmp_path / "evil.npz", x=bad)
    assert "never unpickles" in error(load_source, str(tmp_path / "evil.npz"))
    assert "PWNED" not in capsys.readouterr().out
    names = np.array(["cat", "dog", "cat"])  # string labels as a plain string array are fine
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 4, 4)), y=names)
    assert load_source(str(tmp_path / "ok.npz")).labels.tolist() == ["cat", "dog", "cat"]
