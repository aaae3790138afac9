"""What privacy costs in time: DP-SGD's epoch time against the same training without it, and a
federated run's wall time (issue 18's targets: <= 3x per epoch on CPU; 10 clients x 30 rounds on
digits under 2 minutes).

Arms, each on the builtin digits, batch 64, Adam lr 0.005, one torch thread per process:
  seed MLP   64 -> 128 -> 10 (tabular digits)
  small CNN  conv 8, 16 (3x3) -> dense 32 (digits as 1x8x8 images)
each trained non-private and with train.privacy {epsilon: 4} (opacus per-sample gradients,
Poisson batches), in turns (private / plain alternating, `--repeats` times) so a busy machine
slows both alike. Per-epoch time: the history's `seconds`, epoch 1 left out (warm-up), median over
epochs and repeats; it leaves out the accountant (the noise search before training, epsilon after
each epoch), which the whole train call's seconds (manifest timings, median over repeats) include.
The federated arm: the seed MLP, 10 clients x 30 rounds, fraction 0.5, whole
`damoxing.train` call.

    PYTHONPATH=src python bench/privacy.py [--repeats 3] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

QUIET = {"evaluate": {"bootstrap": 0}, "tracking": {"report": False}, "cost": {"enabled": False}}
MODELS = {
    "seed MLP": ("builtin:digits", {"type": "mlp", "hidden": [128], "activation": "relu"}),
    "small CNN": ("builtin:digits_images", {"type": "cnn", "conv_channels": [8, 16], "dense": [32]}),
}


def config(source: str, model: dict, epochs: int, privacy: dict | None = None, federated: dict | None = None) -> dict:
    train = {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.005}, "seed": 0}
    if privacy:
        train["privacy"] = privacy
    if federated:
        train["federated"] = federated
    return {"name": "bench", "data": {"source": source}, "model": model, "train": train, **QUIET}


def epoch_seconds(run) -> list[float]:
    return [row["seconds"] for row in run.history[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from damoxing.api import train

    root = Path(tempfile.mkdtemp(prefix="bench-privacy-"))
    print(f"# privacy bench: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.repeats} repeats x {args.epochs} epochs\n")
    print("| model | non-private s/epoch | DP-SGD s/epoch | overhead | train call s plain / DP | epsilon spent | test acc plain / DP |")
    print("|---|---|---|---|---|---|---|")
    for name, (source, model) in MODELS.items():
        times, calls = {"plain": [], "dp": []}, {"plain": [], "dp": []}
        last = {}
        for r in range(args.repeats):
            for arm in (("dp", "plain") if r % 2 else ("plain", "dp")):
                privacy = {"epsilon": 4.0} if arm == "dp" else None
                run = train(config(source, model, args.epochs, privacy), out=root / f"{name}-{arm}-{r}".replace(" ", "_"), quiet=True)
                times[arm] += epoch_seconds(run)
                calls[arm].append(run.manifest["timings"]["total_seconds"])
                last[arm] = run
        plain, dp = statistics.median(times["plain"]), statistics.median(times["dp"])
        call = f"{statistics.median(calls['plain']):.2f} / {statistics.median(calls['dp']):.2f}"
        print(f"| {name} | {plain:.3f} | {dp:.3f} | {dp / plain:.2f}x | {call} | {last['dp'].manifest['privacy']['epsilon']:.3f} "
              f"| {last['plain'].metrics['test']['accuracy']:.3f} / {last['dp'].metrics['test']['accuracy']:.3f} |")
    source, model = MODELS["seed MLP"]
    started = time.perf_counter()
    run = train(config(source, model, 1, federated={"clients": 10, "rounds": 30, "fraction": 0.5}), out=root / "federated", quiet=True)
    print(f"\nfederated seed MLP, 10 clients x 30 rounds (fraction 0.5): {time.perf_counter() - started:.1f} s for the whole train call, "
          f"training {run.manifest['training']['train_seconds'] if 'train_seconds' in run.manifest.get('training', {}) else run.manifest['timings']['train_seconds']:.1f} s, "
          f"test accuracy {run.metrics['test']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
