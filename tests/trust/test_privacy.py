"""train.privacy: DP-SGD with opacus through the one training loop (trust/privacy.py)."""

from __future__ import annotations

import json

import pytest
from conftest import write_yaml

QUIET = {"evaluate": {"bootstrap": 0}, "tracking": {"report": False}, "cost": {"enabled": False}}


def dp_config(privacy: dict, model: dict | None = None, source: str = "builtin:digits", **train) -> dict:
    return {"name": "dp", "data": {"source": source}, "model": model or {"type": "mlp", "size": "tiny"},
            "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "privacy": privacy, **train}, **QUIET}


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    from damoxing.api import train

    out = tmp_path_factory.mktemp("runs") / "dp_mlp"
    return train(dp_config({"epsilon": 2.0, "physical_batch_size": 16}), out=out, quiet=True)


def test_epsilon_spent_reaches_the_target_and_never_exceeds_it(mlp_run):
    spent = [record["epsilon"] for record in mlp_run.history]
    assert len(spent) == 2 and 0 < spent[0] < spent[1]  # spent grows epoch by epoch
    assert 0.9 * 2.0 <= spent[-1] <= 2.0 * 1.001
    block = mlp_run.manifest["privacy"]
    assert block["epsilon"] == pytest.approx(spent[-1])
    assert block["target_epsilon"] == 2.0 and block["accountant"] == "prv"
    assert block["delta"] < 1 / 1258 and block["noise_multiplier"] > 0.5
    assert block["sample_rate"] == pytest.approx(1 / 20)  # 64 of 1258 rows: 20 batches an epoch
    assert block["steps"] == 40 and block["physical_batch_size"] == 16
    saved = json.loads((mlp_run.path / "manifest.json").read_text())["privacy"]
    assert saved["epsilon"] == pytest.approx(spent[-1])
    history = [json.loads(line) for line in (mlp_run.path / "history.jsonl").read_text().splitlines()]
    assert [h["epsilon"] for h in history] == pytest.approx(spent)


def test_private_run_still_learns_and_reloads(mlp_run):
    from damoxing.api import evaluate

    assert mlp_run.metrics["test"]["accuracy"] > 0.5  # 10 classes: chance is 0.1
    again = evaluate(mlp_run.path)
    assert again["metrics"]["accuracy"] == pytest.approx(mlp_run.metrics["test"]["accuracy"])


@pytest.mark.slow
def test_tighter_budget_means_more_noise(tmp_path):
    from damoxing.api import train

    loose = train(dp_config({"epsilon": 8.0}, epochs=1), out=tmp_path / "loose", quiet=True).manifest["privacy"]
    tight = train(dp_config({"epsilon": 0.5, "accountant": "rdp"}, epochs=1), out=tmp_path / "tight", quiet=True).manifest["privacy"]
    assert tight["noise_multiplier"] > loose["noise_multiplier"]
    assert tight["epsilon"] <= 0.5 * 1.001 and loose["epsilon"] <= 8.0 * 1.001
    assert tight["accountant"] == "rdp"


@pytest.mark.slow
def test_batchnorm_is_replaced_recorded_and_the_run_reloads(tmp_path):
    import torch

    from damoxing.api import evaluate, load, train

    model = {"type": "cnn", "conv_channels": [4], "batch_norm": True, "dense": [16]}
    run = train(dp_config({"epsilon": 4.0}, model=model, source="builtin:digits_images", epochs=1), out=tmp_path / "cnn", quiet=True)
    replaced = run.manifest["privacy"]["replaced_layers"]
    assert replaced and all(r["from"] == "BatchNorm2d" and r["to"] == "GroupNorm" for r in replaced)
    loaded = load(run.path)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in loaded.model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.model.modules())
    assert evaluate(run.path)["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


@pytest.mark.parametrize("privacy, extra, words", [
    ({"epsilon": 0}, {}, "epsilon"),
    ({"epsilon": -1}, {}, "epsilon"),
    ({"epsilon": 1, "delta": 1.5}, {}, "delta"),
    ({"epsilon": 1, "max_grad_norm": 0}, {}, "max_grad_norm"),
    ({"epsilon": 1, "accountant": "gdpx"}, {}, "accountant"),
    ({"epsilon": 1, "physical_batch_size": 128}, {}, "physical_batch_size"),
    ({"epsilon": 1}, {"clip_grad_norm": 1.0}, "max_grad_norm"),
    ({"epsilon": 1}, {"grad_accum_steps": 2}, "grad_accum_steps"),
])
def test_bad_privacy_settings_exit_2(cli, tmp_path, privacy, extra, words):
    path = write_yaml(tmp_path / "c.yaml", dp_config(privacy, epochs=1, **extra))
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2, result.err
    assert words in result.err and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


def test_a_model_that_owns_its_update_is_refused(cli, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", dp_config({"epsilon": 1}, model={"type": "gan", "size": "tiny"}, epochs=1))
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2
    assert "own update" in result.err and "Traceback" not in result.err


def test_delta_not_below_one_over_n_warns(tmp_path, capsys):
    from damoxing.api import train

    run = train(dp_config({"epsilon": 8.0, "delta": 0.01}, epochs=1), out=tmp_path / "d")
    assert run.manifest["privacy"]["delta"] == 0.01
    assert "1/N" in capsys.readouterr().err


def test_report_shows_the_privacy_block(mlp_run, tmp_path):
    from damoxing.report.html import write_report

    html = write_report(mlp_run.path, tmp_path / "r.html").read_text()
    assert "<h2>Privacy</h2>" in html and "noise_multiplier" in html and "target_epsilon" in html


@pytest.mark.slow
def test_compare_draws_a_privacy_sweep(tmp_path):
    from damoxing.api import compare, train
    from damoxing.report.compare import build_page

    runs = {name: train(dp_config(privacy, epochs=1), out=tmp_path / name, quiet=True).path
            for name, privacy in (("eps1", {"epsilon": 1.0}), ("eps8", {"epsilon": 8.0}))}
    plain = dp_config(None, epochs=1)
    plain["train"].pop("privacy")
    runs["plain"] = train(plain, out=tmp_path / "plain", quiet=True).path
    result = compare(list(runs.values()), write=False)
    sweep = result.extra["privacy_sweep"]
    assert [p["epsilon"] for p in sweep["points"]] == [1.0, 8.0, None]
    assert sweep["points"][0]["spent"] <= 1.0 * 1.001
    assert "Price of privacy" in build_page(result, {})
    other = train(dp_config({"epsilon": 4.0}, epochs=1, batch_size=32), out=tmp_path / "other", quiet=True).path
    assert "privacy_sweep" not in compare([runs["eps1"], other], write=False).extra  # differs in more than epsilon


@pytest.fixture
def sequences(tmp_path):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(200, 8, 2))
    np.savez(tmp_path / "seq.npz", x=x, y=np.where(x[:, :, 0].mean(1) > 0, "up", "down"))
    return str(tmp_path / "seq.npz")


@pytest.mark.slow
def test_an_lstm_trains_as_dplstm_and_reloads_as_an_lstm(tmp_path, sequences):
    import torch

    from damoxing.api import evaluate, load, train

    run = train(dp_config({"epsilon": 8.0}, model={"type": "rnn", "size": "tiny", "cell": "lstm"}, source=sequences, epochs=1),
                out=tmp_path / "lstm", quiet=True)
    assert run.manifest["privacy"]["replaced_layers"] == [{"layer": "rnn", "from": "LSTM", "to": "DPLSTM"}]
    assert isinstance(load(run.path).model.rnn, torch.nn.LSTM)  # the same weights, under nn.LSTM's names
    assert evaluate(run.path)["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


def test_a_model_opacus_cannot_train_is_refused_naming_the_layer(cli, tmp_path, sequences):
    path = write_yaml(tmp_path / "c.yaml", dp_config({"epsilon": 1}, model={"type": "transformer", "size": "tiny"}, source=sequences, epochs=1))
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert "TransformerEncoder" in result.err and "differential privacy" in result.err
