"""Start a model from another run's weights (`model.init_from: RUN_DIR`): pretrain, then fine-tune.

Options the new config leaves unset are taken from the source run's model (same family), so a
fine-tuning config only names what changes. Tensors whose name and shape match are loaded; the
rest (a new classification head, a resized layer) keep their fresh initialisation, and the
report says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from damoxing.errors import ConfigError, RunFolderError


def source_run(init_from: str, base_dir: Optional[Path]) -> Path:
    """The run folder named by model.init_from (relative paths: working directory, then the config's folder)."""
    from damoxing.run_folder import is_run

    path = Path(init_from).expanduser()
    if not path.exists() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if not is_run(path):
        raise RunFolderError(f"model.init_from is '{init_from}', which is not a damoxing run folder (it needs config.yaml, model.safetensors, "
                             "preprocessing.json and manifest.json). Pass the folder that `damoxing train` printed for the pretraining run.")
    return path.resolve()


def inherit_options(model_config, run: Path):
    """The model config with every option not set explicitly taken from the source run (when it is the same family)."""
    from damoxing.config import load_config

    source = load_config(run / "config.yaml").model
    if source.type != model_config.type:
        return model_config.model_copy(update={"init_from": str(run)})
    explicit = model_config.model_fields_set | {"type", "init_from"}
    updates: dict[str, Any] = {k: getattr(source, k) for k in type(model_config).model_fields if k not in explicit}
    return model_config.model_copy(update={**updates, "init_from": str(run)})


def load_init_weights(model, run: Path) -> dict:
    """Copy the source run's tensors into `model` where name and shape match; returns what was and was not loaded."""
    from safetensors.torch import load_file

    source = load_file(str(run / "model.safetensors"))
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
