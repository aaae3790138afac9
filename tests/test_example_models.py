"""The example configs build the seed articles' models exactly: the parameter counts the articles'
code gives (seed 000's PyTorch CNN and seed 001's Keras CNN, both on 28x28x1 MNIST images)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from damoxing.data.schema import DataSchema
from damoxing.models import count_parameters, create_model, resolve_size
from damoxing.spec import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_model(name: str, input_shape: tuple[int, ...]) -> torch.nn.Module:
    config = load_config(yaml.safe_load((EXAMPLES / name).read_text()))
    schema = DataSchema(kind="image", task="classification", input_shape=input_shape, n_outputs=10)
    return create_model(resolve_size(config.model), schema)


@pytest.mark.parametrize("example, input_shape, parameters", [
    ("digits-cnn.yaml", (1, 28, 28), 421_642),  # seed 000 on its MNIST input: pools after each conv
    ("seed001-keras-cnn.yaml", (1, 28, 28), 93_322),  # seed 001: Keras's default padding 'valid'
    ("seed001-keras-cnn.yaml", (1, 8, 8), 93_322),  # the bundled 8x8 digits, resized to 28x28 first
])
def test_example_builds_the_seed_model(example, input_shape, parameters):
    model = example_model(example, input_shape)
    assert count_parameters(model)[0] == parameters
    assert model(torch.zeros(2, *input_shape)).shape == (2, 10)


def test_resize_to_enlarges_before_the_first_conv():
    """Without resize_to the 8x8 digits cannot pass three valid 3x3 convs and two pools: the error names the fix."""
    from damoxing.core.errors import ConfigError

    config = load_config(yaml.safe_load((EXAMPLES / "seed001-keras-cnn.yaml").read_text()))
    schema = DataSchema(kind="image", task="classification", input_shape=(1, 8, 8), n_outputs=10)
    model_config = resolve_size(config.model).model_copy(update={"resize_to": None})
    with pytest.raises(ConfigError, match="resize_to"):
        create_model(model_config, schema)
