"""Defaults that hold up: `model: {type: mlp}` with only a source (and the bundled data's target)
matches a careful hand-written PyTorch MLP with early stopping, on the run's own test rows.

The hand-written model is what a careful engineer writes without damoxing: standardized features
(and target, for regression) fitted on the training rows, Linear(F, 128) -> ReLU -> Linear, Adam
at lr 1e-3, batch 32, up to 500 epochs, early stopping on the validation loss with patience 20 and
the best epoch's weights restored. It trains on the run's own train/val rows (splits.npz) and is
scored on the run's test rows, on proper scores that show under- and over-training (log loss for
the classifiers, RMSE for the regressor), not accuracy, which ties on these small test splits.

"Within noise" is a non-inferiority check: a paired bootstrap (evaluation/paired.py) of defaults
minus hand-written on the same test rows, whose 95% interval must reach below TOLERANCE (the
defaults are not worse by more than that with 95% confidence). TOLERANCE is 0.02 nats of log loss
per row, or 2% of the hand-written RMSE: far below the gap of the old fixed defaults (20 epochs,
no early stopping: wine's log loss 0.33 against 0.0002, interval 0.28-0.40), which fail this test.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from damoxing.data.sources.builtin import load_builtin
from damoxing.evaluation.paired import paired_bootstrap

CASES = [("wine", "log_loss"), ("breast_cancer", "log_loss"), ("diabetes", "rmse")]


def handwritten_mlp(x: np.ndarray, y: np.ndarray, splits: dict, classification: bool, seed: int = 0) -> np.ndarray:
    """Test-row predictions of the hand-written MLP: class probabilities (N, K) or values (N,)."""
    torch.manual_seed(seed)
    train, val, test = splits["train"], splits["val"], splits["test"]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8
    xs = torch.tensor((x - mean) / std, dtype=torch.float32)
    if classification:
        ys, loss_fn, outputs = torch.tensor(y, dtype=torch.long), nn.CrossEntropyLoss(), int(y.max()) + 1
    else:
        y_mean, y_std = y[train].mean(), y[train].std()
        ys, loss_fn, outputs = torch.tensor((y - y_mean) / y_std, dtype=torch.float32), nn.MSELoss(), 1
    model = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, outputs))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    predict = (lambda rows: model(xs[rows])) if classification else (lambda rows: model(xs[rows]).squeeze(1))
    best, best_weights, waited = float("inf"), None, 0
    for _ in range(500):
        model.train()
        for batch in torch.randperm(len(train)).split(32):
            rows = train[batch.numpy()]
            optimizer.zero_grad()
            loss_fn(predict(rows), ys[rows]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(predict(val), ys[val]).item()
        if val_loss < best:
            best, best_weights, waited = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= 20:
                break
    model.load_state_dict(best_weights)
    with torch.no_grad():
        out = predict(test)
    return torch.softmax(out, 1).numpy() if classification else out.numpy() * y_std + y_mean


@pytest.mark.slow
@pytest.mark.parametrize("name, metric", CASES)
def test_defaults_match_a_handwritten_mlp_with_early_stopping(tmp_path, name, metric):
    from damoxing.api import train

    run = train({"data": {"source": f"builtin:{name}"}, "model": {"type": "mlp"}}, out=tmp_path / name, quiet=True)
    splits = dict(np.load(run.path / "splits.npz"))
    saved = np.load(run.path / "predictions_test.npz")
    raw = load_builtin(name)
    x, y = raw.frame.drop(columns=[raw.target]).to_numpy(np.float64), raw.frame[raw.target].to_numpy()
    classification = metric != "rmse"
    if classification:  # class names -> indices in sorted order, as the run's label encoder does
        y = np.unique(y, return_inverse=True)[1]
    np.testing.assert_allclose(saved["y_true"], y[splits["test"]])  # the run's test rows, in the run's order
    ours = saved["proba"] if classification else saved["y_pred"]
    theirs = handwritten_mlp(x, y, splits, classification)
    result = paired_bootstrap(metric, saved["y_true"], ours, theirs, n_resamples=2000, seed=0)
    tolerance = 0.02 if classification else 0.02 * result["b"]
    assert result["ci"][0] <= tolerance, (  # lower is better for both scores: a - b > 0 means the defaults are worse
        f"{name}: the defaults' test {metric} is {result['a']:.4f}, the hand-written MLP's {result['b']:.4f}; "
        f"paired 95% interval of the difference {result['ci']} lies above the tolerance {tolerance:.4f}")
    assert run.manifest["training"]["chosen_defaults"]["early_stopping.patience"] > 0
