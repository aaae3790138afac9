"""The full config: every section of config.py plus what the registries hold.

config.py types each section with plain names; this module, the only one that sees every registry,
narrows them: `model:` becomes the union of every registered family's options (chosen by
`model.type`), and `task`, `train.loss`, `train.optimizer.name`, `train.schedule.name` and
`train.monitor` (from the validation metrics each task declares) become Literals of the registered names. So a name is declared once, where the thing is defined, and the
config (its validation errors and its JSON Schema) lists exactly what exists.

It sits above models, tasks and training, and below runs and verbs: `load_config` is for whoever
reads a config file (a verb, a saved run).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, create_model

from damoxing.config import (
    ConfigBase,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    read_yaml,
)
from damoxing.core.errors import ConfigError, choices_text, did_you_mean
from damoxing.models import MODELS
from damoxing.tasks import LOSSES, TASKS, all_monitors
from damoxing.training.optim import OPTIMIZERS, SCHEDULES


def _narrowed(base: type[BaseModel], **fields: tuple[Any, Any]) -> type[BaseModel]:
    """A subclass of `base` whose named fields take a new type, keeping their defaults and descriptions."""
    updates = {}
    for name, (annotation, default) in fields.items():
        description = base.model_fields[name].description
        updates[name] = (annotation, Field(default, description=description))
    return create_model(base.__name__, __base__=base, __module__=base.__module__, **updates)


def _one_of(names: list[str]) -> Any:
    return Literal[tuple(names)]  # type: ignore[valid-type]


@functools.lru_cache(maxsize=1)
def config_class() -> type[ConfigBase]:
    """The Config class: ConfigBase with registered names as Literals and `model` as a union over every family."""
    optimizer = _narrowed(OptimizerConfig, name=(_one_of(OPTIMIZERS.names()), "adam"))
    schedule = _narrowed(ScheduleConfig, name=(_one_of(SCHEDULES.names()), "constant"))
    train = _narrowed(TrainConfig, optimizer=(optimizer, optimizer()), schedule=(schedule, schedule()),
                      loss=(_one_of(["auto", *LOSSES]), "auto"), monitor=(_one_of(all_monitors()), "val_loss"))
    families = tuple(entry.config_class for _, entry in MODELS.items())
    model_union = Annotated[Union[families], Field(discriminator="type")]  # type: ignore[valid-type]
    return create_model("Config", __base__=ConfigBase, __module__=__name__, model=(model_union, ...),
                        task=(Optional[_one_of(TASKS.names())], Field(None, description=ConfigBase.model_fields["task"].description)),
                        train=(train, train()))


def config_schema() -> dict[str, Any]:
    """JSON Schema of the config, for editors' autocompletion."""
    return config_class().model_json_schema()


def load_config(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None):
    """Validate a config from a YAML path or a dict, with dotted-key overrides applied first."""
    data = dict(source) if isinstance(source, dict) else read_yaml(source)
    data = apply_overrides(data, overrides or {})
    model = data.get("model")
    if isinstance(model, str):  # `model: mlp` is shorthand for `model: {type: mlp}`
        data["model"] = {"type": model}
    try:
        return config_class().model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, data)) from None


# ---------------------------------------------------------------------------------------------
# Error messages


def _allowed_keys(data: dict[str, Any], loc: tuple) -> list[str]:
    """The keys valid at a location of the config, found by walking the Config model."""
    cls: Any = config_class()
    node: Any = data
    for part in loc[:-1]:
        if isinstance(node, dict):
            node = node.get(part)
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        if part == "model" and cls is config_class():
            type_name = node.get("type") if isinstance(node, dict) else None
            if type_name not in MODELS:
                return []
            cls = MODELS.get(type_name).config_class
            continue
        cls = _unwrap_model(field.annotation)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


def _unwrap_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(error: ValidationError, data: dict[str, Any]) -> str:
    """One paragraph naming every bad key, its value and what would be valid."""
    lines = []
    tags = set(MODELS.names())
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in tags))
        key = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        value = err.get("input")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(data, loc)
            lines.append(
                f"Unknown key '{key}'.{did_you_mean(loc[-1], allowed)}"
                + (f" Valid keys here: {choices_text(allowed)}." if allowed else "")
            )
        elif kind == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag", value)
            lines.append(
                f"'{key}.type' is '{tag}', which is not a model.{did_you_mean(tag, MODELS.names())} "
                f"Valid model types: {choices_text(MODELS.names())}."
            )
        elif kind == "union_tag_not_found":
            lines.append(f"'{key}' needs a 'type'. Valid model types: {choices_text(MODELS.names())}.")
        elif kind == "literal_error" and loc == ("train", "monitor"):
            lines.append(monitor_error(value, data))
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]
            lines.append(f"'{key}' is {value!r}, which is not valid.{did_you_mean(value, choices)} Valid values: {expected}.")
        elif kind == "missing":
            lines.append(f"'{key}' is required but missing.")
        else:
            lines.append(f"'{key}' is {value!r}: {err['msg']}.")
    return "Invalid config: " + " ".join(lines)


def monitor_error(value: Any, data: dict[str, Any]) -> str:
    """An unknown train.monitor: the monitors of the config's task when the config fixes one (task:, or
    a model family that always does one task), else every task's."""
    from damoxing.models import family_task

    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    model_type = model.get("type") if model.get("type") in MODELS else None
    task = (family_task(model_type) if model_type else None) or data.get("task")
    if task in TASKS:
        valid = TASKS.get(task).monitors(model_type)
        return f"'train.monitor' is {value!r}, which task '{task}' does not compute.{did_you_mean(value, valid)} Valid monitors for {task}: {choices_text(valid)}."
    per_task = "; ".join(f"{name}: {choices_text(t.monitors(model_type))}" for name, t in TASKS.items())
    return f"'train.monitor' is {value!r}, which no task computes.{did_you_mean(value, all_monitors())} Valid monitors by task: {per_task}."
