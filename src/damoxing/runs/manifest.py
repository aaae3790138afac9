"""manifest.json: what a run needs to be repeated and understood (versions, data fingerprint, seed,
timings, how training ended)."""

from __future__ import annotations

import platform
import sys
import time

from damoxing.core.version import __version__


def device_name(device) -> str:
    """The GPU's name on CUDA, else the CPU's (as the manifest records it)."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "numpy", "pandas", "scikit-learn", "pydantic", "safetensors", "transformers", "tokenizers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def build_manifest(cfg, data, result, device, params: int, trainable: int, timings: dict) -> dict:
    import torch

    return {
        "damoxing": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
        "task": data.task,
        "data": {"source": data.source, "fingerprint": data.fingerprint, **data.summary},
        "model": {"type": cfg.model.type, "format": "safetensors", "params": params, "trainable_params": trainable},
        "training": {
            "epochs_run": len(result.history), "best_epoch": result.best_epoch, "monitor": result.monitor,
            "best_score": result.best_score, "stopped": result.stopped, "message": result.message,
            "steps": result.steps, "samples_seen": result.samples_seen,
            "data_path": result.data_path, "distributed": result.strategy, "processes": _world_size(),
            "resumed_from": result.resumed_from,
        },
        "timings": timings,
    }


def _world_size() -> int:
    from damoxing.training.distributed import current

    return current().world
