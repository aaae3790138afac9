"""bench/tune.py: what pruning saves, and what a second process buys (issue 14).

The seed MLP (seed 002: one hidden layer, SGD) over builtin:digits, N trials of the same TPE study
with the hyperband pruner and without it: epochs spent and the best validation accuracy; then the
pruned study again with 2 jobs against 1 (wall time). Each study in its own folder, one process.

    PYTHONPATH=src python bench/tune.py --trials 30 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

SEARCH = {"train.optimizer.lr": {"low": 1.0e-3, "high": 0.3, "log": True},
          "model.hidden": {"choices": [[64], [128], [256, 128]]},
          "model.dropout": {"low": 0.0, "high": 0.5}}


def config(folder: Path, epochs: int, trials: int, pruner: str) -> Path:
    data = {"name": f"digits-{pruner}", "data": {"source": "builtin:digits"},
            "model": {"type": "mlp", "hidden": [128], "activation": "relu"},
            "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
                      "monitor": "val_accuracy", "early_stopping": None},
            "cost": {"enabled": False}, "tracking": {"report": False},
            "tune": {"trials": trials, "pruner": pruner, "sampler": "tpe", "search": SEARCH}}
    path = folder / f"{pruner}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def study(folder: Path, epochs: int, trials: int, pruner: str, jobs: int = 1, tag: str = "") -> dict:
    from damoxing.core import console
    from damoxing.verbs.tune import tune

    started = time.perf_counter()
    with console.quiet(True):
        result = tune(config(folder, epochs, trials, pruner), out=folder / f"study-{pruner}{tag}", jobs=jobs)
    wall = time.perf_counter() - started
    epochs_spent = sum(r["epochs"] or 0 for r in result.trials)
    return {"pruner": pruner, "jobs": jobs, "trials": len(result.trials), "pruned": sum(r["state"] == "pruned" for r in result.trials),
            "epochs": epochs_spent, "best_val": result.best[0]["values"][0], "wall_s": round(wall, 1),
            "test_of_best": result.test["metrics"].get("accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--skip-jobs", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    rows = [study(folder, args.epochs, args.trials, "none"), study(folder, args.epochs, args.trials, "hyperband")]
    if not args.skip_jobs:
        rows.append(study(folder, args.epochs, args.trials, "hyperband", jobs=2, tag="-2jobs"))
    print(json.dumps(rows, indent=1))
    saved = 1 - rows[1]["epochs"] / rows[0]["epochs"]
    print("| pruner | jobs | trials | pruned | epochs spent | best val accuracy | test accuracy of the best | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pruner']} | {r['jobs']} | {r['trials']} | {r['pruned']} | {r['epochs']} | {r['best_val']:.4f} | "
              f"{r['test_of_best']:.4f} | {r['wall_s']} |")
    print(f"pruning saved {saved:.0%} of the epochs")
    if len(rows) == 3:
        print(f"2 jobs vs 1: {rows[1]['wall_s'] / rows[2]['wall_s']:.2f}x faster wall time")


if __name__ == "__main__":
    main()
