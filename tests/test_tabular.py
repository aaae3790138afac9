"""A CSV damoxing has never seen, with text categories and missing values: an MLP reaches what a
careful hand-written PyTorch script (scikit-learn preprocessing, same split, same network) reaches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from conftest import write_yaml


def make_csv(path, n=1200, seed=0):
    rng = np.random.default_rng(seed)
    city = rng.choice(["beijing", "shanghai", "shenzhen", "chengdu"], n)
    plan = rng.choice(["free", "pro", "team"], n, p=[0.5, 0.3, 0.2])
    age = rng.normal(40, 12, n)
    spend = rng.gamma(2.0, 50.0, n)
    score = (0.04 * (age - 40) + 0.01 * (spend - 100) + (plan == "pro") * 1.0 + (plan == "team") * 1.8
             - (city == "chengdu") * 1.2 + rng.normal(0, 0.5, n))
    label = np.where(score > 0.6, "churn", "stay")
    frame = pd.DataFrame({"city": city, "age": age, "plan": plan, "spend": spend, "label": label})
    for col, frac in (("age", 0.1), ("city", 0.08), ("spend", 0.05)):
        frame.loc[rng.random(n) < frac, col] = np.nan
    frame.loc[rng.random(n) < 0.02, "label"] = np.nan  # dropped with a warning
    frame.to_csv(path, index=False)
    return frame


def hand_written(frame: pd.DataFrame, splits, epochs: int, seed: int = 0) -> float:
    """What a careful person writes by hand: impute, scale, one-hot, a 2-layer MLP with Adam."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = frame.dropna(subset=["label"]).reset_index(drop=True)
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), ["age", "spend"]),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), ["city", "plan"]),
    ], sparse_threshold=0)
    y = (frame["label"] == "churn").to_numpy().astype(np.int64)
    train, test = splits["train"], splits["test"]
    x_train = torch.tensor(prep.fit_transform(frame.iloc[train]), dtype=torch.float32)
    x_test = torch.tensor(prep.transform(frame.iloc[test]), dtype=torch.float32)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    yt = torch.tensor(y[train])
    for _ in range(epochs):
        for idx in torch.randperm(len(yt)).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x_train[idx]), yt[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float((net(x_test).argmax(1).numpy() == y[test]).mean())


def test_mlp_on_unseen_csv_matches_hand_written_pytorch(tmp_path, capsys):
    from damoxing.api import train

    frame = make_csv(tmp_path / "customers.csv")
    cfg = write_yaml(tmp_path / "c.yaml", {
        "name": "churn", "data": {"source": "customers.csv", "target": "label"},  # relative to the config file
        "model": {"type": "mlp", "hidden": [32]},
        "train": {"epochs": 30, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}},
    })
    run = train(cfg, out=tmp_path / "run", quiet=True)
    assert "dropped" in capsys.readouterr().err  # rows with a missing target are reported
    assert run.config.task == "classification"
    splits = dict(np.load(run.path / "splits.npz"))
    reference = hand_written(frame, splits, epochs=30)
    ours = run.metrics["test"]["accuracy"]
    assert ours >= reference - 0.03, (ours, reference)
    assert ours > run.metrics["baseline"]["test"]["accuracy"] + 0.15

    import damoxing

    model = damoxing.load(run.path)
    new = pd.DataFrame({"plan": ["team", "free"], "city": ["hangzhou", None], "age": [30.0, np.nan], "spend": [500.0, 10.0]})
    preds = model.predict(new)  # an unseen city and missing values are handled
    assert set(preds) <= {"churn", "stay"} and preds[0] == "churn"


def test_regression_is_inferred_for_float_target(tmp_path):
    from damoxing.api import train

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "price": 3 * x[:, 0] - x[:, 1] + 100 + rng.normal(0, 0.1, 300)}).to_csv(tmp_path / "p.csv", index=False)
    run = train({"data": {"source": str(tmp_path / "p.csv"), "target": "price"}, "model": "linear",
                 "train": {"epochs": 30, "optimizer": {"name": "adam", "lr": 0.05}}}, out=tmp_path / "r", quiet=True)
    assert run.config.task == "regression"
    assert run.metrics["test"]["r2"] > 0.95 and run.metrics["baseline"]["test"]["r2"] < 0.05
    pred = __import__("damoxing").load(run.path).predict(pd.read_csv(tmp_path / "p.csv").head(3))
    assert np.all(np.abs(pred - 100) < 15)  # predictions come back in the target's units, not standardized
