"""Benchmark (c), GPU: the `gpt` base preset (GPT-2 124M shape, T = 1024) - tokens/s and MFU.

The model is damoxing's own `gpt` family at `size: base` (12 layers, 12 heads, d_model 768,
context 1024, GPT-2's vocabulary of 50,257, tied embeddings), dropout 0, built by
`damoxing.models.create_model`. Data: random token ids (B x T = 16 x 1024 per step). AdamW lr 6e-4,
weight decay 0.1. Two loops in this one process on the same model class and data:

  damoxing   its training loop (`fit`, what `damoxing train` runs) with its CUDA defaults: data
             resident on the GPU, bf16 autocast, TF32, fused AdamW, torch.compile; attention is
             the model's SDPA (flash kernels on CUDA).
  raw        the same settings written by hand (nanoGPT-style loop), for the loop's own overhead.

tokens/s is measured over the epochs after the first (compilation excluded). MFU =
tokens/s x (6 N + 12 L d T) / peak, N = parameters without the position embeddings (nanoGPT's
convention), peak = 989e12 (H100/H200 SXM dense bf16; --peak-tflops to change).

    PYTHONPATH=src python bench/gpu_gpt.py [--steps 50] [--epochs 3]
    PYTHONPATH=src python bench/gpu_gpt.py --cpu-smoke   # the tiny preset on the CPU: checks the script

Not part of the test suite; needs a CUDA GPU (except --cpu-smoke) and the `gpt` model family.
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

VOCAB, BATCH, LR, SEED = 50_257, 16, 6e-4, 0


def require_gpt():
    """The gpt family's config class and the language_modeling task, or a clear exit."""
    from damoxing.models import MODELS
    from damoxing.tasks import TASKS

    missing = [what for what, ok in (("model family 'gpt'", "gpt" in MODELS), ("task 'language_modeling'", "language_modeling" in TASKS)) if not ok]
    if missing:
        print(f"error: bench/gpu_gpt.py needs the {' and the '.join(missing)}, which this damoxing does not register "
              f"(models: {', '.join(MODELS.names())}; tasks: {', '.join(TASKS.names())}). Merge the branch that adds them.",
              file=sys.stderr)
        sys.exit(2)
    return MODELS.get("gpt").config_class


def build(size: str, context: int):
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model, resolve_size

    config_class = require_gpt()
    config = resolve_size(config_class(type="gpt", size=size, dropout=0.0))
    schema = DataSchema(kind="corpus", task="language_modeling", input_shape=(context,), n_outputs=VOCAB, vocab_size=VOCAB)
    torch.manual_seed(SEED)
    return create_model(config, schema), config


def flops_per_token(model, config, context: int) -> float:
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    return 6 * n + 12 * config.layers * config.d_model * context


def run_damoxing(x, y, epochs: int, device, size: str, context: int) -> tuple[list[float], object]:
    from damoxing.config import TrainConfig
    from damoxing.tasks import TASKS
    from damoxing.training.loop import Split, fit

    model, config = build(size, context)
    train = TrainConfig(epochs=epochs, batch_size=BATCH, optimizer={"name": "adamw", "lr": LR, "weight_decay": 0.1}, seed=SEED)
    result = fit(model, Split(x, y), None, TASKS.get("language_modeling")(train), train, device)
    return [h["seconds"] for h in result.history], (model, config)


def run_raw(x, y, epochs: int, device, size: str, context: int) -> list[float]:
    model, _ = build(size, context)
    model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1, fused=cuda or None)
    step_model = torch.compile(model) if cuda else model
    xs, ys = x.to(device), y.to(device)
    g = torch.Generator(device=device).manual_seed(SEED)
    seconds = []
    for _ in range(epochs):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        order = torch.randperm(len(xs), device=device, generator=g)
        for i in range(0, len(xs), BATCH):
            idx = order[i : i + BATCH]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = step_model(xs[idx])
                loss = F.cross_entropy(logits.flatten(0, 1).float(), ys[idx].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    parser.add_argument("--cpu-smoke", action="store_true", help="the tiny preset on the CPU, 2 x 2 steps: checks the script, measures nothing")
    args = parser.parse_args()
    require_gpt()
    size, context, device = "base", 1024, torch.device("cuda")
    if args.cpu_smoke:
        size, context, device, args.steps, args.epochs = "tiny", 64, torch.device("cpu"), 2, 2
    elif not torch.cuda.is_available():
        print("error: bench/gpu_gpt.py needs a CUDA GPU; none is visible to torch here (--cpu-smoke checks the script on the CPU).",
              file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    g = torch.Generator().manual_seed(SEED)
    tokens = torch.randint(0, VOCAB, (BATCH * args.steps, context + 1), generator=g)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    results = {}
    results["damoxing (fit, CUDA defaults)"], (model, config) = run_damoxing(x, y, args.epochs, device, size, context)
    results["raw, same settings"] = run_raw(x, y, args.epochs, device, size, context)

    import importlib.metadata as md

    per_token = flops_per_token(model, config, context)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU smoke run ({platform.machine()}): not a measurement"
    print(f"device: {name}, CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores")
    print(f"versions: torch {md.version('torch')}, python {platform.python_version()}")
    print(f"model: gpt size {size}, {sum(p.numel() for p in model.parameters()):,} parameters, T {context}, batch {BATCH}, "
          f"{args.steps} steps x {args.epochs} epochs; {per_token / 1e6:.0f} MFLOP per token")
    print(f"{'loop':32s} {'tokens/s':>10s} {'MFU':>6s} {'epoch 1 s':>10s}")
    rates = {}
    for loop, seconds in results.items():
        rates[loop] = len(x) * context * (len(seconds) - 1) / sum(seconds[1:])
        mfu = rates[loop] * per_token / (args.peak_tflops * 1e12)
        print(f"{loop:32s} {rates[loop]:10.0f} {mfu:6.1%} {seconds[0]:10.2f}")
    ratio = rates["damoxing (fit, CUDA defaults)"] / rates["raw, same settings"]
    mfu = rates["damoxing (fit, CUDA defaults)"] * per_token / (args.peak_tflops * 1e12)
    print(f"damoxing / raw: {ratio:.2f}; target >= 45% MFU: {'met' if mfu >= 0.45 else 'NOT met'} ({mfu:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
