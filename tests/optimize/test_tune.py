"""damoxing tune: every trial a real run on validation only, pruning, resume, parallel jobs, bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

SEARCH = {"train.optimizer.lr": {"low": 1.0e-3, "high": 0.1, "log": True}, "model.hidden": {"choices": [[8], [32]]}}


def write_config(folder: Path, search=None, **tune) -> Path:
    config = {"name": "iris", "data": {"source": "builtin:iris"}, "model": {"type": "mlp", "hidden": [16]},
              "train": {"epochs": 4, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01}, "monitor": "val_accuracy"},
              "cost": {"enabled": False}, "tracking": {"report": False},
              "tune": {"trials": 4, "pruner": "median", "search": SEARCH if search is None else search, **tune}}
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from damoxing.verbs.tune import tune

    folder = tmp_path_factory.mktemp("tune")
    config = write_config(folder)
    result = tune(config, out=folder / "study")
    return folder, config, result


def test_every_trial_is_a_run_scored_on_validation_only(study):
    folder, _, result = study
    assert len(result.trials) == 4
    for row in result.trials:
        run = Path(row["run"])
        metrics = json.loads((run / "metrics.json").read_text())
        assert "test" not in metrics and "val" in metrics  # the test split stays unseen by every trial
        assert not (run / "report.html").exists()
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["seed"] == row["number"]
        assert row["params"]["model.hidden"] in ([8], [32]) and saved["model"]["hidden"] == row["params"]["model.hidden"]
    assert result.test["split"] == "test" and "accuracy" in result.test["metrics"]  # scored once, for the best
    assert (folder / "study" / "tune.html").read_text().count("<tr>") >= 5
    saved = json.loads((folder / "study" / "tune.json").read_text())
    assert saved["best"][0]["number"] == result.best[0]["number"]


def test_best_yaml_trains_to_the_reported_score(study, tmp_path):
    from damoxing.verbs.train import train

    folder, _, result = study
    run = train(folder / "study" / "best.yaml", out=tmp_path / "best", quiet=True)
    assert run.metrics["val"]["accuracy"] == pytest.approx(result.best[0]["values"][0])


def test_rerunning_continues_the_study_without_duplicate_runs(study):
    from damoxing.verbs.tune import tune

    folder, config, _ = study
    result = tune(config, out=folder / "study", trials=6)
    numbers = [r["number"] for r in result.trials]
    assert numbers == list(range(6))
    assert sorted(p.name for p in (folder / "study").glob("trial-*")) == [f"trial-{n}" for n in range(6)]


def test_pruning_stops_poor_trials_early(tmp_path):
    from damoxing.verbs.tune import tune

    search = {"train.optimizer.lr": {"low": 1.0e-5, "high": 0.05, "log": True}}
    result = tune(write_config(tmp_path, search, trials=8, sampler="random"), out=tmp_path / "s")
    pruned = [r for r in result.trials if r["state"] == "pruned"]
    assert pruned, [r["state"] for r in result.trials]
    assert all(r["epochs"] < 4 for r in pruned)
    assert all("pruned at epoch" in (r["reason"] or "") for r in pruned)


@pytest.mark.slow
def test_two_jobs_share_one_journal_study(tmp_path):
    from damoxing.verbs.tune import tune

    result = tune(write_config(tmp_path, trials=4, pruner="none"), out=tmp_path / "s", jobs=2)
    assert len(result.trials) == 4 and len({r["run"] for r in result.trials}) == 4
    assert len({json.dumps(r["params"], sort_keys=True) for r in result.trials}) == 4  # workers sample differently


BAD = [
    ({"model.no_such_option": {"low": 1, "high": 2}}, {}, "model.no_such_option"),
    ({"train.optimizer.lr": {"low": 0.1, "high": 0.01}}, {}, "above high"),
    ({"train.optimizer.lr": {"low": 0.0, "high": 0.1, "log": True}}, {}, "low > 0"),
    ({"model.hidden": {"choices": []}}, {}, "choices is empty"),
    ({}, {}, "search space is empty"),
    ({"train.epochs": {"low": 0, "high": 3}}, {}, "train.epochs"),
    (SEARCH, {"metric": "val_r2"}, "val_r2"),
]


@pytest.mark.parametrize("search,tune,expected", BAD, ids=[b[2] for b in BAD])
def test_bad_search_spaces_are_named_before_any_trial(tmp_path, cli, search, tune, expected):
    result = cli("tune", write_config(tmp_path, search, **tune), "--out", tmp_path / "s")
    assert result.code == 2 and expected in result.err and "Traceback" not in result.err, result.err
    assert len(list((tmp_path / "s").glob("trial-*"))) <= (1 if expected == "val_r2" else 0)  # a task inferred from data: one trial finds out


def test_a_study_with_another_search_space_is_refused(study, cli):
    folder, _, _ = study
    other = write_config(folder / "study", {"train.optimizer.lr": {"low": 1.0e-4, "high": 0.1}})
    result = cli("tune", other, "--out", folder / "study")
    assert result.code == 2 and "another search space" in result.err


def test_an_unreachable_storage_fails_fast(tmp_path, cli):
    started = time.perf_counter()
    result = cli("tune", write_config(tmp_path), "--storage", "postgresql://nobody@127.0.0.1:1/none")
    assert result.code == 2 and "Cannot open the study storage" in result.err
    assert time.perf_counter() - started < 30
    assert cli("tune", write_config(tmp_path), "--storage", "not-a-url").code == 2


def _postgres_bin() -> Path | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


@pytest.fixture
def postgres(tmp_path):
    """A real PostgreSQL server from the Debian package, on a free port, for this test only."""
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it where apt works)")
    as_user = [] if os.getuid() != 0 else (["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else None)
    if as_user is None:
        pytest.skip("running as root without runuser: PostgreSQL refuses to start as root")
    data = Path(tempfile.mkdtemp(prefix="damoxing-pg-"))  # under /tmp: pytest's own folders are root-only
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "tune", "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                    f"-p {port} -k {data} -h 127.0.0.1", "start"], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([*as_user, str(binaries / "createdb"),
                        "-h", "127.0.0.1", "-p", str(port), "-U", "tune", "study"], check=True, capture_output=True)
        yield f"postgresql://tune@127.0.0.1:{port}/study"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_trials_on_a_postgresql_server(tmp_path, postgres):
    from damoxing.verbs.tune import tune

    result = tune(write_config(tmp_path, trials=2, pruner="none"), out=tmp_path / "s", storage=postgres)
    assert len(result.trials) == 2 and all(r["state"] == "complete" for r in result.trials)
    again = tune(write_config(tmp_path, trials=3, pruner="none"), out=tmp_path / "s", storage=postgres, trials=3)
    assert len(again.trials) == 3  # the server holds the study: a second command continues it


def test_a_diverging_trial_is_recorded_failed_and_the_study_goes_on(tmp_path):
    from damoxing.verbs.tune import tune

    config = write_config(tmp_path, {"train.optimizer.lr": {"choices": [1.0e+12, 0.05]}}, sampler="grid", pruner="none", trials=2)
    raw = yaml.safe_load(config.read_text())
    raw["train"]["optimizer"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    config.write_text(yaml.safe_dump(raw))
    result = tune(config, out=tmp_path / "study")
    by_choice = {t["params"]["train.optimizer.lr"]: t for t in result.trials}  # the chosen values, not choice indexes
    assert by_choice[1.0e12]["state"] == "fail" and "loss became" in by_choice[1.0e12]["reason"]
    assert by_choice[0.05]["state"] == "complete"
    assert result.best[0]["params"]["train.optimizer.lr"] == 0.05
