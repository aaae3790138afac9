import json

import pytest

from damoxing.config import apply_overrides, dump_config, parse_override
from damoxing.core.errors import ConfigError
from damoxing.spec import config_schema, load_config

BASE = {"data": {"source": "builtin:iris"}, "model": {"type": "mlp"}}


def test_defaults_are_filled_and_dump_round_trips():
    cfg = load_config(BASE)
    assert cfg.train.epochs == 20 and cfg.train.optimizer.name == "adam"
    import yaml

    again = load_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_model_shorthand_string():
    assert load_config({**BASE, "model": "cnn"}).model.type == "cnn"


@pytest.mark.parametrize(
    "text,key,value",
    [("train.epochs=5", "train.epochs", 5), ("train.optimizer.lr=1e-3", "train.optimizer.lr", 0.001),
     ("model.hidden=[8, 4]", "model.hidden", [8, 4]), ("name=abc", "name", "abc"), ("train.clip_grad_norm=", "train.clip_grad_norm", None)],
)
def test_parse_override_yaml_scalars(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_apply_and_validate():
    cfg = load_config(BASE, {"train.epochs": 3, "model.hidden": [8]})
    assert cfg.train.epochs == 3 and cfg.model.hidden == [8]
    assert BASE["model"] == {"type": "mlp"}  # the input is not mutated


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="holds a value"):
        apply_overrides({"name": "x"}, {"name.sub": 1})


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"model": {"type": "mpl"}}, ["'mpl'", "Did you mean 'mlp'", "'cnn'", "'linear'"]),
        ({"train": {"epoch": 3}}, ["Unknown key 'train.epoch'", "Did you mean 'epochs'"]),
        ({"model": {"type": "mlp", "hiden": [3]}}, ["Unknown key 'model.hiden'", "Did you mean 'hidden'"]),
        ({"train": {"optimizer": {"name": "adma"}}}, ["'train.optimizer.name'", "Did you mean 'adam'", "'sgd'"]),
        ({"train": {"epochs": 0}}, ["'train.epochs'", "greater than or equal to 1"]),
        ({"train": {"device": "gpu"}}, ["'train.device'", "'gpu'"]),
        ({"data": {}}, ["'data.source' is required"]),
        ({"task": "clasification"}, ["'task'", "Did you mean 'classification'"]),
    ],
)
def test_bad_configs_name_key_value_and_choices(patch, expected):
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, **patch})
    for text in expected:
        assert text in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(empty)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def schema_families(schema: dict) -> list[str]:
    """The model types the schema's `model` union accepts, read from its discriminator mapping and
    checked against the union's members: each maps to its own options (type const = the name), extras forbidden."""
    model = schema["properties"]["model"]
    mapping = model["discriminator"]["mapping"]
    assert model["discriminator"]["propertyName"] == "type"
    assert sorted(m["$ref"] for m in model["oneOf"]) == sorted(mapping.values())
    for name, ref in mapping.items():
        options = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert options["properties"]["type"]["const"] == name and options["additionalProperties"] is False
    return sorted(mapping)


def test_schema_lists_every_model_family_and_forbids_extras():
    from damoxing.models import MODELS

    schema = config_schema()
    assert schema_families(schema) == MODELS.names()
    assert {"linear", "mlp", "cnn", "gpt", "vae", "gan"} <= set(MODELS.names())
    assert schema["additionalProperties"] is False


def test_the_family_check_fails_when_a_family_is_left_out_of_the_registry(monkeypatch):
    """The check above, against a schema built with linear and mlp removed from the registry (their
    names still occur elsewhere in the schema, e.g. in descriptions)."""
    from damoxing.models import MODELS
    from damoxing.spec import config_class

    every = MODELS.names()
    monkeypatch.setattr(MODELS, "_entries", {k: v for k, v in MODELS._entries.items() if k not in ("linear", "mlp")})
    config_class.cache_clear()
    try:
        schema = config_schema()
    finally:
        monkeypatch.undo()
        config_class.cache_clear()
    assert "mlp" in json.dumps(schema)  # a text search would still find it
    assert schema_families(schema) != every and "mlp" not in schema_families(schema)


def test_schema_lists_every_registered_name(cli):
    """`damoxing schema`'s Literal choices come from the registries: optimizers, schedules, tasks,
    losses, and the monitors (val_<metric> for every metric some task declares, and train_loss)."""
    from damoxing.tasks import LOSSES, TASKS, all_monitors
    from damoxing.training.optim import OPTIMIZERS, SCHEDULES

    result = cli("schema")
    assert result.code == 0 and json.loads(result.out) == config_schema()
    defs = json.loads(result.out)["$defs"]
    assert sorted(defs["OptimizerConfig"]["properties"]["name"]["enum"]) == OPTIMIZERS.names()
    assert sorted(defs["ScheduleConfig"]["properties"]["name"]["enum"]) == SCHEDULES.names()
    assert defs["TrainConfig"]["properties"]["loss"]["enum"] == ["auto", *LOSSES]
    task = config_schema()["properties"]["task"]["anyOf"][0]["enum"]
    assert sorted(task) == TASKS.names()
    monitors = defs["TrainConfig"]["properties"]["monitor"]["enum"]
    assert monitors == all_monitors()
    assert {"val_loss", "val_accuracy", "val_r2", "val_perplexity", "val_frechet_distance", "val_recon", "val_d_loss", "train_loss"} <= set(monitors)


def test_a_bad_optimizer_name_lists_the_registered_ones():
    from damoxing.training.optim import OPTIMIZERS

    with pytest.raises(ConfigError) as info:
        load_config({**BASE, "train": {"optimizer": {"name": "lion"}}})
    for name in OPTIMIZERS.names():
        assert f"'{name}'" in str(info.value)


@pytest.mark.parametrize(
    "patch,listed,absent",
    [
        ({"task": "regression", "train": {"monitor": "val_acuracy"}}, ["for regression", "'val_r2'", "'val_mse'"], ["val_accuracy'"]),
        ({"model": {"type": "gan"}, "train": {"monitor": "val_fid"}}, ["for generation", "'val_d_loss'", "'val_frechet_distance'"], ["val_recon"]),
        ({"train": {"monitor": "val_acuracy"}}, ["Did you mean 'val_accuracy'", "classification:", "regression:"], []),
    ],
)
def test_an_unknown_monitor_lists_the_tasks_monitors(patch, listed, absent):
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, **patch})
    message = str(info.value)
    for text in listed:
        assert text in message
    for text in absent:
        assert text not in message
