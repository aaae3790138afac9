"""train.federated: FedAvg/FedProx over simulated clients, secure summation, client-level DP (trust/federated.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_yaml

QUIET = {"evaluate": {"bootstrap": 0}, "tracking": {"report": False}, "cost": {"enabled": False}}


def fed_config(federated: dict, **train) -> dict:
    return {"name": "fed", "data": {"source": "builtin:digits"}, "model": {"type": "mlp", "size": "tiny"},
            "train": {"epochs": 10, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}, "federated": federated, **train}, **QUIET}


def test_secure_sum_equals_the_plain_sum_and_hides_each_client():
    from damoxing.trust.federated import pair_masks, plain_sum, secure_sum

    g = torch.Generator().manual_seed(0)
    parts = [{"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)} for _ in range(5)]
    secure, plain = secure_sum(parts, seed=7), plain_sum(parts)
    for k in plain:
        torch.testing.assert_close(secure[k], plain[k], rtol=0, atol=1e-9)
    # what client 0 sends is its contribution plus masks far larger than it: the server cannot read it
    masks = [pair_masks(0, j, {"w": (4, 3)}, 7, "cpu")["w"] for j in range(1, 5)]
    sent = parts[0]["w"].double() + sum(masks)
    assert (sent - parts[0]["w"].double()).abs().mean() > 10 * parts[0]["w"].abs().mean()


def test_partitions_cover_every_row_once_and_dirichlet_skews_labels():
    from damoxing.trust.federated import partition

    y = np.repeat(np.arange(10), 100)
    for kind in ("iid", "dirichlet"):
        parts, _ = partition(y, len(y), 10, kind, 0.1, np.random.default_rng(0))
        rows = np.concatenate(parts)
        assert len(parts) == 10 and all(len(p) for p in parts)
        assert sorted(rows.tolist()) == list(range(len(y)))
    iid, _ = partition(y, len(y), 10, "iid", 0.1, np.random.default_rng(0))
    skew, _ = partition(y, len(y), 10, "dirichlet", 0.1, np.random.default_rng(0))
    labels_seen = lambda parts: np.mean([len(np.unique(y[p])) for p in parts])  # noqa: E731
    assert labels_seen(iid) == 10 and labels_seen(skew) < 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from damoxing.api import train

    root = tmp_path_factory.mktemp("fed")
    fed = {"clients": 10, "rounds": 30, "fraction": 0.5}
    return {
        "central": train(fed_config(None), out=root / "central", quiet=True),
        "iid": train(fed_config(fed), out=root / "iid", quiet=True),
        "secure": train(fed_config({**fed, "secure_aggregation": True}), out=root / "secure", quiet=True),
        "skewed": train(fed_config({**fed, "partition": "dirichlet", "alpha": 0.1}), out=root / "skewed", quiet=True),
    }


def test_fedavg_iid_is_close_to_central_training(runs):
    central, iid = runs["central"].metrics["test"]["accuracy"], runs["iid"].metrics["test"]["accuracy"]
    assert abs(central - iid) <= 0.03, (central, iid)
    history = runs["iid"].history
    assert len(history) == 30 and [h["round"] for h in history] == list(range(1, 31))
    assert all(h["clients"] == 5 for h in history)
    block = runs["iid"].manifest["federated"]
    assert block["clients_per_round"] == 5 and sum(block["train_rows_per_client"]) == 1258


def test_secure_aggregation_trains_the_same_model(runs):
    from safetensors.torch import load_file

    plain = load_file(str(runs["iid"].path / "model.safetensors"))
    secure = load_file(str(runs["secure"].path / "model.safetensors"))
    for k in plain:
        torch.testing.assert_close(secure[k], plain[k], rtol=1e-4, atol=1e-5)  # float32 last bits, over 30 rounds
    assert runs["secure"].manifest["federated"]["secure_aggregation"] is True


def test_non_iid_clients_are_worse_and_reported_per_client(runs):
    iid, skewed = runs["iid"].metrics["federated"]["metrics"], runs["skewed"].metrics["federated"]["metrics"]
    assert len(skewed["accuracy"]["per_client"]) == 10
    assert skewed["accuracy"]["worst"] < iid["accuracy"]["worst"]
    assert skewed["accuracy"]["spread"] > iid["accuracy"]["spread"]
    assert runs["skewed"].metrics["test"]["accuracy"] < runs["iid"].metrics["test"]["accuracy"]
    for summary in (iid, skewed):
        acc = summary["accuracy"]
        assert acc["worst"] == min(acc["per_client"]) and acc["mean"] == pytest.approx(np.mean(acc["per_client"]))


def test_client_level_dp_spends_its_epsilon_round_by_round(tmp_path):
    from damoxing.api import train

    run = train(fed_config({"clients": 10, "rounds": 5, "fraction": 1.0}, privacy={"epsilon": 8.0}), out=tmp_path / "dp", quiet=True)
    spent = [h["epsilon"] for h in run.history]
    assert all(a < b for a, b in zip(spent, spent[1:])) and spent[-1] <= 8.0 * 1.001
    block = run.manifest["federated"]["privacy"]
    assert block["level"] == "client" and block["accountant"] == "rdp" and block["noise_multiplier"] > 0
    assert block["epsilon"] == pytest.approx(spent[-1])


@pytest.mark.parametrize("federated, words", [
    ({"clients": 5000}, "more than the"),
    ({"alpha": 0}, "alpha"),
    ({"fraction": 0}, "fraction"),
    ({"fraction": 1.5}, "fraction"),
    ({"partition": "zipf"}, "partition"),
])
def test_bad_federated_settings_exit_2(cli, tmp_path, federated, words):
    path = write_yaml(tmp_path / "c.yaml", fed_config(federated))
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2, result.err
    assert words in result.err and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


def test_dirichlet_needs_labels(cli, tmp_path):
    config = {**fed_config({"partition": "dirichlet"}), "data": {"source": "builtin:diabetes"}}
    result = cli("train", write_yaml(tmp_path / "c.yaml", config), "--out", tmp_path / "run")
    assert result.code == 2 and "partition: iid" in result.err
