"""Benchmark (b), GPU: seed 000's CNN on 50k synthetic 3x32x32 images, batch 512: damoxing vs raw loops and Lightning.

Model (the same nn.Module class for every loop, built by damoxing's factory; seed 000's forward):
conv 3->32 + ReLU + 2x2 max-pool, conv 32->64 + ReLU + 2x2 max-pool, FC 4096->128 + ReLU, FC
128->10. Data: 50,000 standard-normal images with random labels (10 classes), the same tensors
for every loop. Adam lr 1e-3, batch 512, shuffled each epoch, no validation.

Loops, all in this one process:
  damoxing             damoxing's training loop (`fit`, what `damoxing train` runs) with its CUDA
                       defaults: data resident on the GPU, bf16 autocast, TF32, channels_last,
                       fused Adam, torch.compile.
  raw, plain           the loop people write: GPU-resident tensors, randperm, index, fp32, eager.
  raw, same settings   the raw loop with every one of damoxing's settings applied by hand (the fair
                       reference for the loop's own overhead: target damoxing >= 0.95x of it).
  Lightning            LightningModule + DataLoader from host memory (4 workers, pinned),
                       precision bf16-mixed, no logger/checkpointing/progress bar.
Throughput is images/s over the epochs after the first (compilation and warm-up excluded);
the first epoch's time is printed too.

    PYTHONPATH=src python bench/gpu_cnn.py [--epochs 6]
    PYTHONPATH=src python bench/gpu_cnn.py --cpu-smoke   # a small CPU run that checks the script works

Not part of the test suite; needs a CUDA GPU (except --cpu-smoke, whose numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import torch
import torch.nn.functional as F

N, BATCH, LR, SEED = 50_000, 512, 1e-3, 0
DEVICE = torch.device("cuda")
TF32_DEFAULTS = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)


def cnn() -> torch.nn.Module:
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model
    from damoxing.models.cnn import CNNConfig

    torch.manual_seed(SEED)
    schema = DataSchema(kind="image", task="classification", input_shape=(3, 32, 32), n_outputs=10)
    return create_model(CNNConfig(conv_channels=[32, 64], pool_every=1, dense=[128], dropout=0.0), schema)


def synthetic() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED)
    return torch.randn(N, 3, 32, 32, generator=g), torch.randint(0, 10, (N,), generator=g)


def steady_rate(epoch_seconds: list[float]) -> float:
    """Images/s over the epochs after the first."""
    return N * (len(epoch_seconds) - 1) / sum(epoch_seconds[1:])


def run_damoxing(x, y, epochs: int) -> list[float]:
    from damoxing.config import TrainConfig
    from damoxing.tasks import TASKS
    from damoxing.training.loop import Split, fit

    config = TrainConfig(epochs=epochs, batch_size=BATCH, optimizer={"name": "adam", "lr": LR}, seed=SEED)
    result = fit(cnn(), Split(x, y), None, TASKS.get("classification")(config), config, DEVICE)
    print(f"  damoxing: data path {result.data_path}, train_seconds {result.train_seconds:.2f}", file=sys.stderr)
    return [h["seconds"] for h in result.history]


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def run_raw(x, y, epochs: int, fast: bool) -> list[float]:
    """fast: damoxing's defaults for this device, by hand (on CUDA: TF32, channels_last, fused Adam,
    compile, bf16 autocast; on CPU there are none)."""
    device = DEVICE
    fast = fast and device.type == "cuda"
    model = cnn().to(device)
    xs, ys = x.to(device), y.to(device)
    # TF32 is a process-wide switch (damoxing's run turned it on): set it for this loop explicitly
    torch.backends.cuda.matmul.fp32_precision = "tf32" if fast else TF32_DEFAULTS[0]
    torch.backends.cudnn.conv.fp32_precision = "tf32" if fast else TF32_DEFAULTS[1]
    if fast:
        model = model.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=fast or None)
    step_model = torch.compile(model) if fast else model
    g = torch.Generator(device=device).manual_seed(SEED)
    seconds = []
    for _ in range(epochs):
        sync()
        started = time.perf_counter()
        order = torch.randperm(N, device=device, generator=g)
        for i in range(0, N, BATCH):
            idx = order[i : i + BATCH]
            if fast:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = F.cross_entropy(step_model(xs[idx]), ys[idx])
            else:
                loss = F.cross_entropy(step_model(xs[idx]), ys[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync()
        seconds.append(time.perf_counter() - started)
    return seconds


def run_lightning(x, y, epochs: int) -> list[float]:
    import logging

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # importing lightning sets INFO: its tips and banners
    from torch.utils.data import DataLoader, TensorDataset

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = cnn()

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    class EpochTimer(L.Callback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, module):
            sync()
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync()
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    cuda = DEVICE.type == "cuda"
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, num_workers=4, pin_memory=cuda,
                        persistent_workers=True, generator=torch.Generator().manual_seed(SEED))
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if cuda else "cpu", devices=1,
                        precision="bf16-mixed" if cuda else "32-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(Module(), loader)
    return timer.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cpu-smoke", action="store_true", help="2,048 images on the CPU, 2 epochs: checks the script, measures nothing")
    args = parser.parse_args()
    global N, DEVICE
    if args.cpu_smoke:
        N, DEVICE, args.epochs = 2048, torch.device("cpu"), 2
    elif not torch.cuda.is_available():
        print("error: bench/gpu_cnn.py needs a CUDA GPU; none is visible to torch here (--cpu-smoke checks the script on the CPU).",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    x, y = synthetic()
    loops = {
        "damoxing (fit, CUDA defaults)": lambda: run_damoxing(x, y, args.epochs),
        "raw, plain (fp32, eager)": lambda: run_raw(x, y, args.epochs, fast=False),
        "raw, same settings as damoxing": lambda: run_raw(x, y, args.epochs, fast=True),
        "Lightning (4 workers, bf16-mixed)": lambda: run_lightning(x, y, args.epochs),
    }
    results = {}
    for name, fn in loops.items():
        results[name] = fn()

    import importlib.metadata as md

    name = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"CPU smoke run ({platform.machine()}): not a measurement"
    print(f"device: {name}, CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores")
    print("versions: " + ", ".join(f"{p} {md.version(p)}" for p in ("torch", "lightning")) + f", python {platform.python_version()}")
    print(f"data: {N} x 3x32x32 synthetic, batch {BATCH}, {args.epochs} epochs (rates over epochs 2..{args.epochs})")
    same = steady_rate(results["raw, same settings as damoxing"])
    print(f"{'loop':36s} {'images/s':>10s} {'epoch 1 s':>10s} {'x raw same':>10s}")
    for name, seconds in results.items():
        rate = steady_rate(seconds)
        print(f"{name:36s} {rate:10.0f} {seconds[0]:10.2f} {rate / same:10.2f}")
    ratio = steady_rate(results["damoxing (fit, CUDA defaults)"]) / same
    print(f"target damoxing >= 0.95 x raw (same settings): {'met' if ratio >= 0.95 else 'NOT met'} ({ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
