"""Start a model from another run's weights (`model.init_from: RUN_DIR`): pretrain, then fine-tune.

Tensors whose name and shape match are loaded; the rest (a new classification head, a resized
layer) keep their fresh initialisation, and the report says which. (Finding the run and taking
the model options it sets is the train verb's part: verbs/train.py.)
"""

from __future__ import annotations

from pathlib import Path

from damoxing.core.errors import ConfigError


def load_init_weights(model, weights: Path) -> dict:
    """Copy the tensors of a run's `weights` file into `model` where name and shape match; returns what was and was not loaded."""
    from safetensors.torch import load_file

    run = weights.parent
    source = load_file(str(weights))
    own = model.state_dict()
    loaded = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise ConfigError(f"model.init_from: none of the {len(source)} tensors of {run} fits this model (no name and shape in common). "
                          "Fine-tune with the same model type and sizes as the pretraining run.")
    model.load_state_dict(loaded, strict=False)
    return {
        "from": str(run),
        "loaded": len(loaded),
        "total": len(own),
        "new": sorted(k for k in own if k not in source),
        "shape_differs": {k: {"source": list(source[k].shape), "model": list(own[k].shape)} for k in sorted(source) if k in own and k not in loaded},
        "unused": sorted(k for k in source if k not in own),
    }


def describe(report: dict) -> str:
    """One line for the console."""
    parts = [f"model.init_from: loaded {report['loaded']} of {report['total']} tensors from {report['from']}"]
    if report["new"]:
        parts.append(f"new (trained from scratch): {', '.join(report['new'])}")
    if report["shape_differs"]:
        parts.append("shape differs, left fresh: " + ", ".join(f"{k} {tuple(v['source'])} -> {tuple(v['model'])}" for k, v in report["shape_differs"].items()))
    if report["unused"]:
        parts.append(f"not used: {', '.join(report['unused'])}")
    return "; ".join(parts)
