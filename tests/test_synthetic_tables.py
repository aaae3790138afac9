"""Synthetic tables: a vae (or gan) trained on a table writes rows in the table's own columns with a
fidelity, privacy and utility report; the report's measures tell copies and broken correlations
from good rows; every misuse is one clear error that writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from damoxing.evaluation import synthetic as measure


def labelled_table(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    height = rng.normal(170, 10, n)
    weight = height * 0.9 - 80 + rng.normal(0, 4, n)  # strongly correlated with height
    member = rng.random(n) < 0.3
    frame = pd.DataFrame({
        "height": height, "weight": weight, "age": rng.integers(18, 91, n), "city": rng.choice(["paris", "rome", "oslo"], n),
        "member": member, "joined": (pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")).strftime("%Y-%m-%d"),
        "label": np.where((height > 172) ^ member, "tall", "short"),
        "person_id": np.arange(n),  # an id: dropped before training, so not generated
    })
    frame.loc[rng.random(n) < 0.15, "weight"] = np.nan
    frame.loc[rng.random(n) < 0.1, "city"] = None
    return frame


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    from damoxing.api import train

    folder = tmp_path_factory.mktemp("synthetic")
    labelled_table().to_csv(folder / "people.csv", index=False)
    config = {"name": "vae-people", "data": {"source": str(folder / "people.csv"), "split": {"val": 0.1, "test": 0.2, "seed": 0}},
              "model": {"type": "vae", "latent_dim": 6, "hidden": [64, 64]},
              "train": {"epochs": 40, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}, "seed": 0},
              "evaluate": {"bootstrap": 0}, "cost": {"enabled": False}, "tracking": {"report": False}}
    return train(config, out=folder / "run", quiet=True)


@pytest.fixture(scope="module")
def generated(table_run, tmp_path_factory):
    from damoxing.api import generate

    out = tmp_path_factory.mktemp("out") / "synthetic.csv"
    path = generate(table_run.path, n=600, out=out, seed=1)
    text = out.with_name("synthetic.quality.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    assert sorted(p.name for p in out.parent.iterdir()) == ["synthetic.csv", "synthetic.quality.html", "synthetic.quality.json"]
    page = out.with_name("synthetic.quality.html").read_text()
    assert all(f"<h2>{s}</h2>" in page for s in ("Fidelity", "Columns", "Correlations", "Privacy", "Utility"))
    assert page.count("data:image/png;base64,") == 2  # the distributions and the correlation matrices
    return pd.read_csv(path), json.loads(text)


def test_rows_come_back_in_the_original_columns(generated):
    rows, _ = generated
    real = labelled_table().drop(columns="person_id")
    assert list(rows.columns) == list(real.columns) and len(rows) == 600
    assert set(rows["city"].dropna()) <= {"paris", "rome", "oslo"} and set(rows["label"]) <= {"tall", "short"}
    assert rows["age"].dtype.kind == "i" and rows["age"].between(18, 90).all()  # whole numbers in the seen range
    assert set(rows["member"]) <= {True, False}
    assert pd.to_datetime(rows["joined"], format="%Y-%m-%d").between("2021-01-01", "2022-12-31").all()
    assert abs(rows["weight"].isna().mean() - 0.15) < 0.06 and abs(rows["city"].isna().mean() - 0.1) < 0.06
    assert rows["height"].isna().sum() == 0
    assert abs(rows["height"].mean() - real["height"].mean()) < 4  # in the real units, not standardized ones


def test_the_quality_report_ranks_synthetic_rows_between_the_baseline_and_real_rows(generated):
    _, report = generated
    fidelity = report["fidelity"]
    assert set(fidelity) == {"synthetic", "baseline", "reference"} and report["held_out_rows"] == 100
    corr = {arm: fidelity[arm]["correlation"]["mean_abs"] for arm in fidelity}
    assert corr["synthetic"] < corr["baseline"]  # the vae kept the height-weight relation that independent columns lose
    assert fidelity["reference"]["two_sample_auc"] < 0.65  # real held-out rows cannot be told from training rows
    assert fidelity["baseline"]["two_sample_auc"] > fidelity["reference"]["two_sample_auc"] + 0.15  # broken relations can
    assert set(fidelity["synthetic"]["columns"]["city"]) >= {"tvd", "missing_real", "missing_other"}
    assert "ks" in fidelity["synthetic"]["columns"]["joined"]
    privacy = report["privacy"]["synthetic"]
    assert privacy["copies"] == 0 and 0.3 < privacy["share_closer_to_train"] < 0.75 and 0.3 < privacy["membership_auc"] < 0.75
    utility = report["utility"]
    assert utility["target"] == "label" and utility["task"] == "classification"
    assert utility["real"]["accuracy"] > utility["baseline"]["accuracy"] + 0.1
    assert utility["synthetic"]["accuracy"] > utility["baseline"]["accuracy"]  # trained on synthetic rows, tested on real ones


def test_copying_the_training_rows_shows_in_the_privacy_block():
    rng = np.random.default_rng(0)
    train, holdout = rng.normal(size=(300, 5)), rng.normal(size=(100, 5))
    copied = measure.closeness(train[:200], train, holdout, seed=0)
    assert copied["copies"] == 200 and copied["share_closer_to_train"] > 0.6
    assert copied["membership_auc"] > 0.75  # the copied training rows are picked out from the synthetic rows alone
    fresh = measure.closeness(rng.normal(size=(200, 5)), train, holdout, seed=0)
    assert fresh["copies"] == 0 and abs(fresh["share_closer_to_train"] - 0.5) < 0.12
    assert abs(fresh["membership_auc"] - 0.5) < 0.1


def test_the_two_sample_test_tells_broken_correlations_from_the_same_distribution():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 1))
    real = np.hstack([a, a + 0.1 * rng.normal(size=(400, 1))])
    b = rng.normal(size=(400, 1))
    same = np.hstack([b, b + 0.1 * rng.normal(size=(400, 1))])
    shuffled = np.column_stack([real[:, 0], rng.permutation(real[:, 1])])  # the marginals kept, the relation gone
    assert measure.two_sample_auc(real, same, seed=0) < 0.65
    assert measure.two_sample_auc(real, shuffled, seed=0) > 0.9


def test_a_gan_table_run_generates_parquet_with_a_default_row_count(tmp_path):
    from damoxing.api import generate, train

    config = {"name": "gan-iris", "data": {"source": "builtin:iris"}, "model": {"type": "gan", "size": "tiny"},
              "train": {"epochs": 2, "batch_size": 16}, "evaluate": {"bootstrap": 0}, "cost": {"enabled": False},
              "tracking": {"report": False}}
    run = train(config, out=tmp_path / "run", quiet=True)
    rows = pd.read_parquet(generate(run.path, out=tmp_path / "rows.parquet"))
    n_train = len(np.load(run.path / "splits.npz")["train"])
    assert len(rows) == n_train and rows.shape[1] == 5  # the four measurements and the species
    assert json.loads((tmp_path / "rows.quality.json").read_text())["utility"]["target"] == rows.columns[-1]


@pytest.mark.parametrize("case, pattern", [
    ("exists", "already exists"),
    ("suffix", "must end in .csv or .parquet"),
    ("target", "--target 'nope' is not one of the run's columns"),
    ("interpolate", "--interpolate draws images"),
    ("no_out", "Say where to write the rows"),
    ("n", "--n is 0"),
])
def test_generate_table_misuse_is_one_clear_error(cli, table_run, tmp_path, case, pattern):
    (tmp_path / "taken.csv").write_text("keep me")
    args = {
        "exists": ["--out", tmp_path / "taken.csv"],
        "suffix": ["--out", tmp_path / "rows.json"],
        "target": ["--out", tmp_path / "rows.csv", "--target", "nope"],
        "interpolate": ["--out", tmp_path / "rows.csv", "--interpolate"],
        "no_out": [],
        "n": ["--out", tmp_path / "rows.csv", "--n", "0"],
    }[case]
    result = cli("generate", table_run.path, *args)
    assert result.code == 2 and pattern in result.err and "Traceback" not in result.err, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.csv"] and (tmp_path / "taken.csv").read_text() == "keep me"


def test_serve_generates_table_rows_in_the_original_columns(table_run):
    from fastapi.testclient import TestClient

    from damoxing.deploy.serve import make_app

    with TestClient(make_app(table_run.path)) as client:
        first = client.post("/generate", json={"n": 5, "seed": 7}).json()
        again = client.post("/generate", json={"n": 5, "seed": 7}).json()
    assert first == again and first["n"] == 5 and len(first["rows"]) == 5  # the same seed, the same rows
    assert list(first["rows"][0]) == list(labelled_table().columns)[:-1]
    assert all(row["label"] in ("tall", "short") for row in first["rows"])


def test_a_numeric_label_and_too_few_rows(tmp_path, capsys):
    """A 0.0/1.0 label read from CSV stays one set of classes across real and synthetic rows; fewer
    rows than the report needs are written with the reason instead of a crash."""
    from damoxing.api import generate, train

    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    pd.DataFrame({"a": a, "b": a + rng.normal(0, 0.3, 300), "label": (a > 0).astype(float)}).to_csv(tmp_path / "t.csv", index=False)
    config = {"name": "floats", "data": {"source": str(tmp_path / "t.csv"), "target": "label"},
              "model": {"type": "vae", "latent_dim": 2, "hidden": [32]},
              "train": {"epochs": 30, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.005}},
              "evaluate": {"bootstrap": 0}, "tracking": {"report": False}, "cost": {"enabled": False}}
    run = train(config, out=tmp_path / "run", quiet=True)
    generate(run.path, n=300, out=tmp_path / "rows.csv")
    report = json.loads((tmp_path / "rows.quality.json").read_text())
    assert set(pd.read_csv(tmp_path / "rows.csv")["label"]) <= {0.0, 1.0}
    assert report["utility"]["synthetic"]["accuracy"] > report["utility"]["baseline"]["accuracy"]  # was 0.0: "0" vs "0.0"
    for n in (1, 5):
        generate(run.path, n=n, out=tmp_path / f"few{n}.csv")
        few = json.loads((tmp_path / f"few{n}.quality.json").read_text())
        assert "too few to measure" in few["skipped"] and len(pd.read_csv(tmp_path / f"few{n}.csv")) == n


def test_a_failed_write_leaves_none_of_the_three_files(table_run, tmp_path, monkeypatch):
    import damoxing.verbs.outputs as outputs
    from damoxing.api import generate

    real = outputs.write_file

    def failing(path, write):
        if str(path).endswith(".html"):
            raise OSError(28, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(outputs, "write_file", failing)
    with pytest.raises(OSError):
        generate(table_run.path, n=20, out=tmp_path / "rows.csv")
    assert list(tmp_path.iterdir()) == []  # a rerun to the same --out is not refused for a half-written set
    monkeypatch.setattr(outputs, "write_file", real)
    generate(table_run.path, n=20, out=tmp_path / "rows.csv")
    assert len(list(tmp_path.iterdir())) == 3


def test_the_summary_lines_show_a_dash_for_what_was_not_measured():
    from damoxing.inference.tables import summary_lines

    arm = {"mean_column_distance": None, "correlation": {"pairs": 0}, "two_sample_auc": None}
    lines = summary_lines({"fidelity": {"synthetic": arm, "baseline": arm}})
    assert "column distance -, corr diff -, two-sample AUC -" in lines[0]
