"""Synthetic breast_cancer rows (issue 18's must-show): how faithful, private and useful the rows of
a vae and a gan trained on the bundled table are, beside an independent-columns baseline and the
real held-out rows, and whether a model trained on them predicts the real test rows.

Arms: examples/vae-breast-cancer.yaml (vae, beta 0.25), the same vae at beta 1, and a gan (small
preset, 300 epochs at lr 0.0002, keeping the epoch with the best validation frechet_distance), and
the example's vae trained with DP-SGD at epsilon 4 (60 epochs, batch 64, lr 0.005, no early
stopping: a private run may not look at validation loss epoch by epoch for free). Each trains on the same split (70/10/20, seed 0) and generates 1000 rows
(`damoxing.generate`, seed 0); the numbers are synthetic.quality.json's. Train-synthetic-test-real
twice: the report's gradient boosting, and damoxing's own mlp (examples' ladder settings) trained
with `damoxing.train` on the synthetic CSV and on the real training rows, both evaluated with
`damoxing.evaluate(run, data=real test rows)`.

    PYTHONPATH=src python bench/synthetic.py
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
QUIET = {"evaluate": {"bootstrap": 0}, "tracking": {"report": False}}
SPLIT = {"val": 0.1, "test": 0.2, "seed": 0}


def arms() -> dict[str, dict]:
    import yaml

    example = yaml.safe_load((HERE / "examples" / "vae-breast-cancer.yaml").read_text())
    vae_beta1 = json.loads(json.dumps(example))
    vae_beta1["model"]["beta"] = 1.0
    gan = {**json.loads(json.dumps(example)), "model": {"type": "gan", "size": "small"},
           "train": {"epochs": 300, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.0002, "betas": [0.5, 0.999]},
                     "monitor": "val_frechet_distance", "seed": 0}}  # the saved weights: the epoch whose samples were closest
    private = json.loads(json.dumps(example))
    private["train"] = {"epochs": 60, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.005}, "seed": 0, "privacy": {"epsilon": 4.0}}
    return {"vae beta 0.25 (example)": example, "vae beta 1": vae_beta1, "gan small, 300 epochs": gan,
            "vae beta 0.25, DP-SGD epsilon 4": private}


def mlp_accuracy(train_csv: Path, test_csv: Path, out: Path) -> float:
    """damoxing's mlp trained on one CSV (10% of it for validation), tested on the real test rows."""
    from damoxing.api import evaluate, train

    config = {"name": "tstr", "data": {"source": str(train_csv), "target": "label", "split": {"val": 0.1, "test": 0.0, "seed": 0}},
              "model": {"type": "mlp", "size": "small"}, **QUIET,
              "train": {"epochs": 30, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}, "monitor": "val_loss",
                        "early_stopping": {"patience": 8}, "seed": 0}}
    run = train(config, out=out, quiet=True)
    return evaluate(run.path, data=test_csv)["metrics"]["accuracy"]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from damoxing.api import generate, load, train
    from damoxing.inference.run_data import run_rows

    root = Path(tempfile.mkdtemp(prefix="bench-synthetic-"))
    print(f"# synthetic tables bench: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}\n")
    rows, reference_done = [], False
    for name, config in arms().items():
        folder = root / name.split()[0] / str(len(rows))
        started = time.perf_counter()
        run = train({**config, **QUIET, "data": {**config["data"], "split": SPLIT}}, out=folder / "run", quiet=True)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        generate(run.path, n=1000, out=folder / "synthetic.csv", seed=0)
        generate_s = time.perf_counter() - started
        report = json.loads((folder / "synthetic.quality.json").read_text())
        splits = run_rows(load(run.path))
        splits["train"].to_csv(folder / "real-train.csv", index=False)
        splits["test"].to_csv(folder / "real-test.csv", index=False)
        mlp_synthetic = mlp_accuracy(folder / "synthetic.csv", folder / "real-test.csv", folder / "mlp-synthetic")
        mlp_real = mlp_accuracy(folder / "real-train.csv", folder / "real-test.csv", folder / "mlp-real")
        rows.append((name, report, mlp_synthetic, mlp_real, train_s, generate_s))
        if not reference_done:
            reference_done = True
            rows.insert(0, ("independent columns (baseline)", {"fidelity": {"synthetic": report["fidelity"]["baseline"]},
                            "privacy": {"synthetic": report["privacy"]["baseline"]}}, None, None, None, None))
            rows.insert(1, ("real held-out rows (reference)", {"fidelity": {"synthetic": report["fidelity"]["reference"]}}, None, None, None, None))

    print("| rows | mean column distance | corr diff (mean / max) | two-sample AUC | closer to train | copies | membership AUC "
          "| DCR median (held-out 2.37) | TSTR gbm / TRTR gbm | TSTR mlp / TRTR mlp | train s | generate s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, report, mlp_synthetic, mlp_real, train_s, generate_s in rows:
        f = report["fidelity"]["synthetic"]
        p = report.get("privacy", {}).get("synthetic")
        u = report.get("utility")
        cells = [name, f"{f['mean_column_distance']:.3f}", f"{f['correlation']['mean_abs']:.3f} / {f['correlation']['max_abs']:.3f}",
                 f"{f['two_sample_auc']:.3f}",
                 f"{p['share_closer_to_train']:.2f}" if p else "-", str(p["copies"]) if p else "-",
                 f"{p['membership_auc']:.3f}" if p else "-", f"{p['dcr_median']:.2f}" if p else "-",
                 f"{u['synthetic']['accuracy']:.4f} / {u['real']['accuracy']:.4f}" if u else "-",
                 f"{mlp_synthetic:.4f} / {mlp_real:.4f}" if mlp_synthetic is not None else "-",
                 f"{train_s:.1f}" if train_s else "-", f"{generate_s:.1f}" if generate_s else "-"]
        print("| " + " | ".join(cells) + " |")
    first = next(r for r in rows if r[2] is not None)[1]
    print(f"\nbaseline accuracy (most frequent class): {first['utility']['baseline']['accuracy']:.4f}; "
          f"held-out rows' own DCR median: {first['privacy']['synthetic']['holdout_dcr_median']:.2f}; runs in {root}")


if __name__ == "__main__":
    main()
