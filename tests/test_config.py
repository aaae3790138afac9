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


def test_schema_lists_every_model_family_and_forbids_extras():
    schema = config_schema()
    text = json.dumps(schema)
    for family in ("linear", "mlp", "cnn"):
        assert f'"const": "{family}"' in text or f'"{family}"' in text
    assert schema["additionalProperties"] is False
