"""`damoxing compare` on runs that differ only in one train.federated setting draws utility against
that setting (the global model and its worst client, a central run as the reference line); any
other set of runs draws nothing."""

from __future__ import annotations

import pytest

FED = {"clients": 5, "rounds": 3, "fraction": 1.0, "partition": "dirichlet", "alpha": 1.0}


def config(federated: dict | None, name: str) -> dict:
    train = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}, "seed": 0}
    if federated is not None:
        train["federated"] = federated
    return {"name": name, "data": {"source": "builtin:digits"}, "model": {"type": "mlp", "size": "tiny"}, "train": train,
            "evaluate": {"bootstrap": 0}, "tracking": {"report": False}, "cost": {"enabled": False}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from damoxing.api import train

    folder = tmp_path_factory.mktemp("fedsweep")
    made = {f"alpha{a}": train(config({**FED, "alpha": a}, f"alpha{a}"), out=folder / f"alpha{a}", quiet=True).path
            for a in (10.0, 0.1, 1.0)}
    made["central"] = train(config(None, "central"), out=folder / "central", quiet=True).path
    made["iid"] = train(config({**FED, "partition": "iid", "clients": 4}, "iid"), out=folder / "iid", quiet=True).path
    return made


def test_compare_draws_utility_against_the_one_federated_setting_that_differs(runs):
    from damoxing.api import compare
    from damoxing.report.compare import build_page

    result = compare([runs["alpha0.1"], runs["alpha10.0"], runs["alpha1.0"], runs["central"]], write=False)
    sweep = result.extra["federated_sweep"]
    assert sweep["parameter"] == "train.federated.alpha" and sweep["metric"] == "accuracy"
    assert [p["setting"] for p in sweep["points"]] == [0.1, 1.0, 10.0]  # sorted by the setting
    assert all(p["worst_client"] <= p["value"] + 1e-9 for p in sweep["points"])  # the worst client is no better than the whole
    assert sweep["central"] == next(r.value for r in result.runs if r.name == "central")
    assert "privacy_sweep" not in result.extra
    assert "Federated settings" in build_page(result, {})


def test_runs_differing_in_more_than_one_setting_draw_no_federated_curve(runs):
    from damoxing.api import compare
    from damoxing.report.compare import build_page

    result = compare([runs["alpha1.0"], runs["iid"]], write=False)  # partition and clients both differ
    assert "federated_sweep" not in result.extra and "Federated settings" not in build_page(result, {})
    assert "federated_sweep" not in compare([runs["alpha1.0"], runs["central"]], write=False).extra  # one federated run is no sweep
