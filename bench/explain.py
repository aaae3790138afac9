"""How long `damoxing explain` takes on a table: integrated gradients for 1,000 rows, and permutation
importance with 30 repeats on a 10,000-row test split (targets: each under 30 s on 2 CPU cores).

A 50,000-row table (24 numeric columns, 3 categorical ones one-hot encoded: 38 model inputs, 27
original columns) with a binary target, an `mlp` `size: small` (one hidden layer of 128) trained
for 3 epochs; `data.split.test: 0.2` gives the 10,000-row test split. Timed, in one process,
alternating the pieces over the repeats:

  integrated gradients  trust.explain.attribute on 1,000 test rows (n_steps 50 Gauss-Legendre; rows
                        whose convergence delta is not small integrated again with 200, then 1000)
  permutation importance trust.importance.permutation_importance: 27 columns x 30 shuffles x 10,000
                        rows (8.1M rows scored in ~50k-row forward passes) + 1,000 bootstrap resamples
  explain, end to end   damoxing.explain(run, rows=1000): the above, the sanity check (3 randomized
                        copies on 200 rows) and writing the folder (Parquet, explain.json, explain.html)

    PYTHONPATH=src python bench/explain.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_table(path: Path, n: int = 50_000, seed: int = 0) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    numbers = rng.normal(size=(n, 24))
    frame = pd.DataFrame(numbers, columns=[f"x{i}" for i in range(24)])
    frame["city"] = rng.choice(["beijing", "shanghai", "shenzhen", "chengdu", "wuhan"], n)
    frame["plan"] = rng.choice(["free", "pro", "team"], n, p=[0.5, 0.3, 0.2])
    frame["channel"] = rng.choice(["web", "app", "store", "partner"], n)
    score = numbers[:, 0] - 0.7 * numbers[:, 1] + 0.4 * numbers[:, 2] * numbers[:, 3] + (frame["plan"] == "team") * 1.2 \
        - (frame["city"] == "chengdu") * 0.8 + rng.normal(0, 0.7, n)
    frame["label"] = np.where(score > 0, "yes", "no")
    frame.to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import damoxing
    from damoxing.inference.predictor import load
    from damoxing.runs.rows import split_rows
    from damoxing.trust.explain import attribute, make_explainer
    from damoxing.trust.importance import permutation_importance

    folder = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    make_table(folder / "table.csv")
    run = damoxing.train({"name": "bench", "data": {"source": str(folder / "table.csv"), "target": "label",
                                                    "split": {"val": 0.1, "test": 0.2}},
                          "model": {"type": "mlp", "size": "small"}, "train": {"epochs": 3, "batch_size": 256},
                          "evaluate": {"bootstrap": 0}, "tracking": {"report": False}}, out=folder / "runs" / "bench", quiet=True)
    predictor = load(run.path)
    rows = split_rows(predictor.config, run.path, "test")
    prep = predictor.preprocessing
    x = torch.as_tensor(prep.transform_inputs(rows))
    y = torch.as_tensor(prep.transform_targets(rows[prep.target].to_numpy()))
    explainer = make_explainer(predictor.model, "mlp", prep)
    with torch.no_grad():
        target = predictor.model(x[:1000]).argmax(1)
    print(f"test split {tuple(x.shape)} ({len(explainer.feature_names)} original columns); torch threads {torch.get_num_threads()}; "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}")

    def ig():
        return attribute(explainer, x[:1000], target, "integrated_gradients")

    def importance():
        return permutation_importance(predictor.model, x, y, "classification", explainer.groups, explainer.feature_names, n_repeats=30)

    def end_to_end():
        return damoxing.explain(run.path, rows=1000, out=folder / f"explain-{time.perf_counter_ns()}")

    pieces = {"integrated gradients, 1,000 rows": ig, "permutation importance, 30 x 10,000 rows": importance,
              "damoxing.explain end to end (1,000 rows)": end_to_end}
    wall: dict[str, list[float]] = {k: [] for k in pieces}
    cpu: dict[str, list[float]] = {k: [] for k in pieces}
    last = {}
    for r in range(args.repeats):
        order = list(pieces)[r % len(pieces):] + list(pieces)[: r % len(pieces)]
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            last[name] = pieces[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    print("\n| piece | median wall s | min wall s | median CPU s | target |\n|---|---|---|---|---|")
    for name in pieces:
        print(f"| {name} | {statistics.median(wall[name]):.2f} | {min(wall[name]):.2f} | {statistics.median(cpu[name]):.2f} | "
              f"{'< 30 s' if 'end to end' not in name else ''} |")
    delta = last["integrated gradients, 1,000 rows"].delta_summary()
    top = last["permutation importance, 30 x 10,000 rows"]["columns"][:3]
    print(f"\nIG: {delta['rows_converged']}/{delta['rows']} rows converged, steps used {delta['steps_used']}, max |delta| {delta['max_abs']:.2e}")
    print("top columns: " + ", ".join(f"{c['column']} {c['importance']:.4f} ({c['ci_low']:.4f}-{c['ci_high']:.4f})" for c in top))


if __name__ == "__main__":
    main()
