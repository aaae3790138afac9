"""Benchmark (a), CPU: seed 002's MLP on digits, damoxing vs raw PyTorch, Lightning and Keras 3.

Every loop trains the same model (64 -> 128 -> ReLU -> 10) from the same initial weights on the
same rows (damoxing's own training split of builtin:digits, standardized) with SGD lr 0.01
momentum 0.9, batch 64, shuffled every epoch, 10 epochs, no validation. The figure is training
seconds: for damoxing the `train_seconds` its loop records (FitResult, manifest.json), for the
peers the wall time of their training call. Each loop runs `--repeats` times; the median is
reported with the ratio to the raw in-memory loop.

    PYTHONPATH=src python bench/cpu_mlp.py [--repeats 7] [--threads N]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPOCHS, BATCH, LR, MOMENTUM, SEED = 10, 64, 0.01, 0.9, 0


def config() -> dict:
    return {
        "name": "bench-mlp",
        "data": {"source": "builtin:digits", "split": {"val": 0.0, "test": 0.2, "seed": 0}},
        "model": {"type": "mlp", "hidden": [128], "activation": "relu", "dropout": 0.0},
        "train": {"epochs": EPOCHS, "batch_size": BATCH, "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM},
                  "seed": SEED},
    }


def torch_mlp() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def run_damoxing(tmp: str, k: int) -> tuple[float, float]:
    import damoxing

    run = damoxing.train(config(), out=f"{tmp}/run{k}", quiet=True)
    return run.manifest["timings"]["train_seconds"], run.metrics["test"]["accuracy"]


def run_raw(x, y, xt, yt) -> tuple[float, float]:
    """The loop one writes by hand: tensors in memory, randperm, index, step."""
    model = torch_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    g = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - started, accuracy(model, xt, yt)


def run_dataloader(x, y, xt, yt) -> tuple[float, float]:
    """The same loop over a DataLoader (0 workers: the fastest setting for in-memory tensors this small)."""
    from torch.utils.data import DataLoader, TensorDataset

    model = torch_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(SEED))
    started = time.perf_counter()
    for _ in range(EPOCHS):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return time.perf_counter() - started, accuracy(model, xt, yt)


def run_lightning(x, y, xt, yt) -> tuple[float, float]:
    import logging

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # importing lightning sets INFO: its tips and banners
    from torch.utils.data import DataLoader, TensorDataset

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch_mlp()

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR, momentum=MOMENTUM)

    module = Module()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(SEED))
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    started = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - started, accuracy(module.net, xt, yt)


def run_keras(x, y, xt, yt) -> tuple[float, float]:
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xn, yn = x.numpy(), y.numpy()
    started = time.perf_counter()
    model.fit(xn, yn, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0)
    seconds = time.perf_counter() - started
    pred = np.asarray(model.predict(xt.numpy(), verbose=0)).argmax(-1)
    return seconds, float((pred == yt.numpy()).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from damoxing.data.pipeline import prepare_data
    from damoxing.models import data_needs
    from damoxing.spec import load_config

    cfg = load_config(config())
    data = prepare_data(cfg, data_needs(cfg.model))
    x, y = torch.as_tensor(data.x["train"]), torch.as_tensor(data.y["train"])
    xt, yt = torch.as_tensor(data.x["test"]), torch.as_tensor(data.y["test"])

    import tempfile

    tmp = tempfile.mkdtemp(prefix="bench-mlp-")
    loops = {
        "damoxing (train_seconds)": lambda k: run_damoxing(tmp, k),
        "raw PyTorch, in-memory tensors": lambda k: run_raw(x, y, xt, yt),
        "raw PyTorch, DataLoader": lambda k: run_dataloader(x, y, xt, yt),
        "Lightning": lambda k: run_lightning(x, y, xt, yt),
        "Keras 3 (torch backend)": lambda k: run_keras(x, y, xt, yt),
    }
    for fn in loops.values():  # one untimed warm-up each: imports, allocator, first-call costs
        fn(-1)
    times: dict[str, list[float]] = {name: [] for name in loops}
    accs: dict[str, list[float]] = {name: [] for name in loops}
    for k in range(args.repeats):  # interleaved, so drift in machine load hits every loop alike
        for name, fn in loops.items():
            seconds, acc = fn(k)
            times[name].append(seconds)
            accs[name].append(acc)

    import importlib.metadata as md

    print(f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print("versions: " + ", ".join(f"{p} {md.version(p)}" for p in ("torch", "lightning", "keras", "numpy")) + f", python {platform.python_version()}")
    print(f"data: {len(x)} training rows, {len(xt)} test rows; {EPOCHS} epochs, batch {BATCH}; {args.repeats} repeats")
    raw = statistics.median(times["raw PyTorch, in-memory tensors"])
    print(f"{'loop':34s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'x raw':>6s} {'test acc':>8s}")
    for name in loops:
        t = times[name]
        print(f"{name:34s} {statistics.median(t):9.3f} {min(t):7.3f} {max(t):7.3f} {statistics.median(t) / raw:6.2f} {statistics.median(accs[name]):8.4f}")
    ratio = statistics.median(times["damoxing (train_seconds)"]) / raw
    print(f"target damoxing <= 1.10 x raw in-memory: {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    sys.exit(main())
