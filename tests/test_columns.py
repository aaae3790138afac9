"""Column understanding on a generated table: an id column, a date column, a 5,000-value category, a
mostly-numeric column with a few bad cells, ±inf and a constant column, each handled as described,
shown in one summary table, saved in the run, and re-applied identically to new rows at predict time."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from damoxing.core.errors import DataError
from damoxing.data.columns import understand_columns


def messy_table(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1461, n), unit="D")
              + pd.to_timedelta(rng.integers(0, 24, n), unit="h"))
    when = stamps.strftime("%Y-%m-%d %H:%M").to_numpy().astype(object)
    when[:5] = "someday"  # 5 dates that do not parse
    vehicle = np.array([f"V{i:05d}" for i in rng.permutation(np.resize(np.arange(5000), n))], dtype=object)
    amount = rng.normal(50, 10, n).round(2).astype(object)
    amount[[10, 11, 12]] = "oops"  # a few non-numbers in a column of numbers
    speed = rng.normal(0, 1, n)
    speed[[20, 21]], speed[22] = np.inf, -np.inf
    label = np.where((stamps.month.to_numpy() >= 7) ^ (speed > 0), "yes", "no")
    return pd.DataFrame({"row_id": np.arange(n) + 1000, "when": when, "vehicle": vehicle, "amount": amount,
                         "speed": speed, "site": "A", "color": rng.choice(["red", "green", "blue"], n), "label": label})


def summary_of(plan) -> dict[str, dict]:
    return {row["column"]: row for row in plan.rows()}


def test_each_column_is_understood(capsys):
    frame = messy_table()
    plan = understand_columns(frame, [c for c in frame.columns if c != "label"], {})
    kinds = {c.name: c.kind for c in plan.columns}
    assert kinds == {"row_id": "id", "when": "date", "vehicle": "categorical", "amount": "numeric",
                     "speed": "numeric", "site": "constant", "color": "categorical"}
    assert plan.kept == ["when", "vehicle", "amount", "speed", "color"]
    info = {c.name: c for c in plan.columns}
    assert info["when"].date_format == "%Y-%m-%d %H:%M" and info["when"].bad_cells == 5
    assert info["amount"].bad_cells == 3 and info["amount"].examples == ["'oops'"]
    assert info["speed"].infinite == 3
    assert info["vehicle"].distinct == 5000 and info["row_id"].distinct == 6000
    err = capsys.readouterr().err
    assert "column 'when': 5 value(s) are not a date (e.g. 'someday')" in err
    assert "column 'amount': 3 value(s) are not a number (e.g. 'oops')" in err
    assert "column 'speed': 3 value(s) are infinite" in err


def test_integers_are_an_id_only_when_nearly_unique_and_id_like():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"customer_id": rng.permutation(500) * 7, "Unnamed: 0": np.arange(500), "step": np.arange(500),
                          "age": rng.integers(18, 90, 500), "score": rng.normal(size=500)})
    kinds = {c.name: c.kind for c in understand_columns(frame, list(frame.columns), {}).columns}
    # named like an id (or a saved pandas index) -> id; unique but named like a quantity -> a number
    assert kinds == {"customer_id": "id", "Unnamed: 0": "id", "step": "numeric", "age": "numeric", "score": "numeric"}


def test_free_text_and_overrides():
    rng = np.random.default_rng(2)
    words = np.array(["good", "bad", "late", "fast", "broken", "fine", "again", "never"])
    notes = [" ".join(rng.choice(words, 6)) + f" #{i}" for i in range(300)]
    frame = pd.DataFrame({"note": notes, "code": rng.integers(1, 5, 300),
                          "day": [f"2021-03-{i % 28 + 1:02d}" for i in range(299)] + ["x"], "ymd": rng.integers(1, 9, 300) + 20200100})
    auto = understand_columns(frame, list(frame.columns), {}).columns
    assert {c.name: c.kind for c in auto} == {"note": "text", "code": "numeric", "day": "date", "ymd": "numeric"}
    assert auto[2].bad_cells == 1 and auto[2].date_format == "%Y-%m-%d"
    chosen = understand_columns(frame, list(frame.columns), {"note": "drop", "code": "categorical", "day": "categorical", "ymd": "date"})
    assert {c.name: (c.kind, c.rule) for c in chosen.columns} == {
        "note": ("drop", "data.columns"), "code": ("categorical", "data.columns"), "day": ("categorical", "data.columns"),
        "ymd": ("date", "data.columns")}
    assert chosen.columns[3].date_format == "%Y%m%d" and chosen.columns[3].bad_cells == 0


def write_run_inputs(tmp_path, frame: pd.DataFrame, **data) -> str:
    from conftest import write_yaml

    frame.to_csv(tmp_path / "messy.csv", index=False)
    return write_yaml(tmp_path / "c.yaml", {
        "name": "messy", "data": {"source": "messy.csv", "target": "label", **data},
        "model": {"type": "mlp", "hidden": [8]}, "train": {"epochs": 1, "batch_size": 256}, "evaluate": {"bootstrap": 0},
    })


def test_train_shows_the_summary_saves_it_and_predicts_new_rows_the_same_way(tmp_path, cli):
    import damoxing

    cfg = write_run_inputs(tmp_path, messy_table())
    result = cli("train", cfg, "--out", tmp_path / "run")
    assert result.code == 0, result.err
    table = result.err[result.err.index("columns:\n"):]
    header = table.splitlines()[1].split()
    assert header == ["column", "kind", "missing", "distinct", "action"]
    assert "row_id   id" in table and "site     constant" in table and "dropped: a single value" in table
    assert re.search(r"vehicle +categorical +0 +5000 +100 categories, \d{4} others -> <other>", table)
    assert "column 'vehicle' has 5000 distinct values" in result.err  # the high-cardinality warning names the column
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    saved = {row["column"]: row for row in manifest["data"]["column_summary"]}
    assert saved["row_id"]["kind"] == "id" and saved["when"]["kind"] == "date" and saved["amount"]["missing"] == 0
    assert "3 non-number(s) -> missing" in saved["amount"]["action"] and "3 ±inf -> missing" in saved["speed"]["action"]

    model = damoxing.load(tmp_path / "run")
    prep = model.preprocessing
    assert prep.inputs.feature_columns_ == ["when", "vehicle", "amount", "speed", "color"]  # row_id and site are not needed
    assert prep.feature_columns[0] == "row_id"  # an array input still has every column, in the table's order
    names = prep.schema.feature_names
    assert [n for n in names if n.startswith("when.")] == [f"when.{p}" for p in
                                                          ("year", "month", "day_of_week", "day_of_year", "hour")]
    assert "vehicle=<other>" in names and len([n for n in names if n.startswith("vehicle=")]) == 101
    new = pd.DataFrame({"when": ["2023-07-14 18:00", "garbage"], "vehicle": ["V00001", "never seen"],
                        "amount": ["12.5", "oops"], "speed": [0.5, np.inf], "color": ["red", "blue"]})
    x = prep.transform_inputs(new)
    col = next(c for c in prep.inputs.columns_ if c["name"] == "when")
    parts = np.array([2023, 7, 4, 195, 18], dtype=float)  # 14 July 2023 is a Friday (4), day 195, 18:00
    assert np.allclose(x[0, :5], (parts - col["offset"]) / np.array(col["scale"]), atol=1e-5)
    assert np.allclose(x[1, :5], (np.array(col["impute"]) - col["offset"]) / np.array(col["scale"]), atol=1e-5)
    assert x[1, names.index("vehicle=<other>")] == 1 and np.isfinite(x).all()
    assert len(model.predict(new)) == 2
    new.to_csv(tmp_path / "new.csv", index=False)  # from a file, the cells read as missing are named, not imputed silently
    result = cli("predict", tmp_path / "run", tmp_path / "new.csv")
    assert result.code == 0 and len(result.out.strip().splitlines()) == 3, result.err
    assert "3 cell(s) hold values the model cannot read" in result.err
    assert "'when': 1 (e.g. 'garbage')" in result.err and "'amount': 1 (e.g. 'oops')" in result.err and "'speed': 1 (e.g. 'inf')" in result.err
    new.iloc[:1].to_csv(tmp_path / "clean.csv", index=False)
    assert "cannot read" not in cli("predict", tmp_path / "run", tmp_path / "clean.csv").err
    new.assign(speed=["fast", "0.1"]).to_csv(tmp_path / "text.csv", index=False)  # text in a strict numeric column is refused
    refused = cli("predict", tmp_path / "run", tmp_path / "text.csv")
    assert refused.code == 2 and "'fast'" in refused.err and "cannot read" not in refused.err  # no warning that claims imputing


def test_quiet_silences_the_table_but_not_the_warnings(tmp_path, cli):
    cfg = write_run_inputs(tmp_path, messy_table(600))
    result = cli("train", cfg, "--out", tmp_path / "run", "--quiet")
    assert result.code == 0, result.err
    assert "columns:" not in result.err and "value(s) are not a number" in result.err


def test_an_override_naming_a_missing_column_is_an_error(tmp_path, cli):
    cfg = write_run_inputs(tmp_path, messy_table(300), columns={"vehicel": "drop"})
    result = cli("train", cfg, "--out", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert "data.columns names column(s) ['vehicel']" in result.err and "vehicle" in result.err and "row_id" in result.err


def test_an_unknown_override_kind_is_a_config_error(tmp_path, cli):
    cfg = write_run_inputs(tmp_path, messy_table(300), columns={"vehicle": "image"})
    result = cli("train", cfg, "--out", tmp_path / "run")
    assert result.code == 2 and "data.columns" in result.err and "categorical" in result.err


def test_every_column_dropped_says_which_rule_and_how_to_keep_them(tmp_path, cli):
    frame = messy_table(300)[["row_id", "site", "label"]]
    cfg = write_run_inputs(tmp_path, frame)
    result = cli("train", cfg, "--out", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert "Every feature column of" in result.err
    assert "'row_id': nearly unique values, like a row id" in result.err
    assert "'site': a single value in every row" in result.err
    assert "data.columns: {row_id: categorical}" in result.err
    kept = cli("train", write_run_inputs(tmp_path, frame, columns={"row_id": "numeric"}), "--out", tmp_path / "run2")
    assert kept.code == 0, kept.err  # the override keeps it


def test_the_target_column_cannot_be_overridden(tmp_path):
    from damoxing.api import train

    cfg = write_run_inputs(tmp_path, messy_table(300), columns={"label": "numeric"})
    with pytest.raises(DataError, match="not among the feature columns"):
        train(cfg, out=tmp_path / "run", quiet=True)


@pytest.mark.slow
def test_an_exported_runs_readme_code_reads_dates_and_bad_cells_as_damoxing_does(tmp_path):
    import os

    from damoxing.api import export, load, train

    frame = messy_table(800)
    run = train(write_run_inputs(tmp_path, frame), out=tmp_path / "run", quiet=True)
    export(run.path, out=tmp_path / "export")
    text = (tmp_path / "export" / "README.md").read_text()
    assert 'col["kind"] == "date"' in text
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path / "export")
    try:
        exec(compile(text.split("```python\n")[-1].split("```")[0], "README.md", "exec"), namespace)  # noqa: S102 - the code under test
    finally:
        os.chdir(cwd)
    rows = frame.drop(columns=["label"]).head(40)  # holds the unparsed dates, the non-numbers and ±inf
    labels, proba = namespace["predict"](rows)
    predictor = load(run.path)
    assert list(labels) == list(predictor.predict(rows))
    np.testing.assert_allclose(proba, predictor.predict_proba(rows), atol=1e-5)
