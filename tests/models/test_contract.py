"""One contract for every registered model family (its own tiny config), timm/Keras style:
build from a tiny schema -> forward shape -> finite gradients for every trainable parameter ->
batch size 1 -> a bf16 autocast forward -> save/load (safetensors) gives identical outputs ->
config dump -> load -> build gives the same model -> a few optimizer steps reduce the loss; and every
size preset validates. A new family gets all of this by registering, by its config's `tiny()`
(models/protocols.py), and by its input kind having a tiny batch here. A family that always does
one task (DoesOneTask: vae, gan) is checked under that task; one that owns its update (OwnsUpdate:
gan) is stepped by its own optimizers."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from damoxing.config import ModelConfigBase, Size, TrainConfig, dump_config
from damoxing.data.schema import DataSchema
from damoxing.models import MODELS, create_model, family_task, resolve_size
from damoxing.models.protocols import (
    FittedReference,
    Generative,
    ModelFamily,
    OwnsUpdate,
)
from damoxing.tasks import TASKS
from damoxing.training.optim import build_optimizer


def tiny_case(kind: str):
    """(schema, x, y, task name) for a data kind; shapes tiny so every family runs in milliseconds."""
    g = torch.Generator().manual_seed(0)
    if kind == "table":
        schema = DataSchema(kind="table", task="classification", input_shape=(6,), n_outputs=3)
        x = torch.randn(24, 6, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        return schema, x, y, "classification"
    if kind == "image":
        schema = DataSchema(kind="image", task="classification", input_shape=(1, 8, 8), n_outputs=4)
        x = torch.randn(16, 1, 8, 8, generator=g)
        y = torch.arange(16) % 4
        x[torch.arange(16), 0, y, y] += 3.0  # a learnable signal: a bright pixel on the diagonal
        return schema, x, y, "classification"
    if kind == "text":  # token ids, right-padded with 0; the class is which of two tokens the text holds
        schema = DataSchema(kind="text", task="classification", input_shape=(10,), n_outputs=2, vocab_size=20, pad_id=0)
        lengths = torch.randint(2, 11, (24,), generator=g)
        x = torch.randint(3, 20, (24, 10), generator=g)
        y = torch.arange(24) % 2
        x[:, 0] = 1 + y  # token 1 or 2 says the class
        x[torch.arange(10) >= lengths[:, None]] = 0
        return schema, x, y, "classification"
    if kind == "sequence":  # (N, T, F) values; the class is the sign of feature 0's mean
        schema = DataSchema(kind="sequence", task="classification", input_shape=(7, 3), n_outputs=2)
        x = torch.randn(24, 7, 3, generator=g)
        y = (x[:, :, 0].mean(1) > 0).long()
        return schema, x, y, "classification"
    if kind == "corpus":  # next-token blocks of a repeating pattern; the last block's tail is past the end
        schema = DataSchema(kind="corpus", task="language_modeling", input_shape=(12,), n_outputs=16, vocab_size=16, pad_id=0)
        stream = torch.arange(8 * 12 + 1) % 5 + 3
        x, y = stream[:-1].view(8, 12).clone(), stream[1:].view(8, 12).clone()
        x[-1, 8:], y[-1, 8:] = 0, -100
        return schema, x, y, "language_modeling"
    pytest.skip(f"no tiny case for data kind '{kind}' yet")


# task -> the shape of task.loss's outputs for a batch x
OUTPUT_SHAPES = {
    "classification": lambda x, schema: (x.shape[0], schema.n_outputs),
    "regression": lambda x, schema: (x.shape[0], schema.n_outputs),
    "language_modeling": lambda x, schema: (x.shape[0], x.shape[1], schema.n_outputs),  # logits at every position
    "generation": lambda x, schema: tuple(x.shape),  # reconstructions (vae) or fakes (gan), shaped like the data
}


def cases():
    for name, family in MODELS.items():
        if isinstance(family, FittedReference):  # not a torch module (sklearn: tests/test_ladder.py)
            continue
        for kind in sorted(family.input_kinds):
            yield pytest.param(name, kind, id=f"{name}-{kind}")


@functools.lru_cache(maxsize=None)
def tiny_config(name: str, kind: str):
    """The family's own tiny config for the tiny case of `kind` (written files live until the tests end)."""
    folder = Path(tempfile.mkdtemp(prefix=f"damoxing-contract-{name}-{kind}-"))
    atexit.register(shutil.rmtree, folder, True)
    return MODELS.get(name).config_class.tiny(tiny_case(kind)[0], folder)


def build(name: str, schema: DataSchema) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(tiny_config(name, schema.kind), schema)


@pytest.mark.parametrize("name,kind", list(cases()))
def test_forward_shape_and_finite_gradients(name, kind):
    schema, x, y, task_name = tiny_case(kind)
    task_name = family_task(name) or task_name
    model = build(name, schema)
    task = TASKS.get(task_name)(TrainConfig())
    loss, out = task.loss(model, x, y)
    assert tuple(out.shape) == OUTPUT_SHAPES[task_name](x, schema)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name,kind", list(cases()))
def test_save_load_gives_identical_outputs(name, kind, tmp_path):
    schema, x, _, _ = tiny_case(kind)
    model = build(name, schema).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    torch.manual_seed(123)  # a different init: the loaded weights must replace it
    other = create_model(tiny_config(name, schema.kind), schema).eval()
    other.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    with torch.no_grad():
        assert torch.equal(model(x), other(x))
        if isinstance(model, Generative):  # a generative model's other half (a GAN's generator) must match too
            assert torch.equal(model.sample(4, torch.Generator().manual_seed(0)), other.sample(4, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_family_has_the_registered_surface(name):
    family = MODELS.get(name)
    assert isinstance(family, ModelFamily) and issubclass(family.config_class, ModelConfigBase)
    assert family.config_class.model_fields["type"].default == name  # `type: Literal[name]`, the config union's tag
    assert family.input_kinds and family_task(name) in (None, *TASKS.names())


@pytest.mark.parametrize("name,kind", list(cases()))
def test_a_batch_of_one(name, kind):
    """One row gives the row of a full batch's output (eval), and trains (a last batch can be a single row)."""
    schema, x, y, task_name = tiny_case(kind)
    model = build(name, schema).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), model(x)[:1], rtol=1e-4, atol=1e-5)
    model.train()
    if isinstance(model, OwnsUpdate):
        optimizers = model.configure_optimizers(TrainConfig(), build_optimizer)
        parts = model.train_step(x[:1], optimizers, contextlib.nullcontext)
        assert all(torch.isfinite(v) for v in parts.values()), parts
        return
    task = TASKS.get(family_task(name) or task_name)(TrainConfig())
    loss, out = task.loss(model, x[:1], None if y is None else y[:1])
    assert out.shape[0] == 1 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name,kind", list(cases()))
def test_a_bf16_autocast_forward_on_cpu(name, kind):
    """Under CPU bf16 autocast (train.precision: bf16) the outputs are finite, shaped alike and near fp32's."""
    schema, x, _, _ = tiny_case(kind)
    model = build(name, schema).eval()
    with torch.no_grad():
        reference = model(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == reference.shape and torch.isfinite(low.float()).all()
    scale = reference.abs().max().item() + 1e-3
    assert (low.float() - reference).abs().max().item() <= 0.05 * scale + 0.02, f"{name}: bf16 strays from fp32"


@pytest.mark.parametrize("name,kind", list(cases()))
def test_config_dump_load_build_gives_the_same_model(name, kind, tmp_path):
    """The resolved model config, written as a run's config.yaml and read back (spec.load_config), builds
    a model that gives identical outputs once the saved weights are loaded."""
    from damoxing.spec import load_config

    schema, x, _, _ = tiny_case(kind)
    config = resolve_size(tiny_config(name, kind))
    full = load_config({"name": "contract", "data": {"source": "builtin:iris"}, "model": config.model_dump(mode="json")})
    (tmp_path / "config.yaml").write_text(dump_config(full))
    loaded = load_config(tmp_path / "config.yaml").model
    assert loaded == config
    model = build(name, schema).eval()
    torch.manual_seed(123)
    other = create_model(loaded, schema).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_size_preset_validates(name):
    """Each preset names only the family's options, with values its config accepts; a family with
    presets has one for every size, each setting the same options."""
    config_class = MODELS.get(name).config_class
    presets = config_class.PRESETS
    sizes = typing.get_args(Size)
    assert not presets or set(presets) == set(sizes), f"{name}: presets for {sorted(presets)}, sizes are {sizes}"
    base = tiny_config(name, sorted(MODELS.get(name).input_kinds)[0]).model_dump()
    for size, values in presets.items():
        assert set(values) <= set(config_class.model_fields) - {"type", "size"}, f"{name} {size}: {sorted(values)}"
        assert set(values) == set(presets[sizes[0]]), f"{name}: preset {size} sets other options than {sizes[0]}"
        validated = config_class.model_validate({**base, **values, "size": size})
        assert all(getattr(validated, k) == v for k, v in values.items())
        resolved = resolve_size(config_class.model_validate({**{k: v for k, v in base.items() if k not in values}, "size": size}))
        assert all(getattr(resolved, k) == v for k, v in values.items())


@pytest.mark.parametrize("name,kind", list(cases()))
def test_a_few_steps_reduce_the_loss(name, kind):
    schema, x, y, task_name = tiny_case(kind)
    model = build(name, schema)
    if isinstance(model, OwnsUpdate):
        return check_own_update(model, x)
    task = TASKS.get(family_task(name) or task_name)(TrainConfig())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(30):
        loss, _ = task.loss(model, x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.9, f"{name}: loss {first:.4f} -> {loss.item():.4f}"


def check_own_update(model, x):
    """A model that owns its update plays a game (a GAN): no single loss must fall, so check that its
    own steps report finite parts and move every parameter; tests/models/test_gan.py checks each player learns."""
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizers = model.configure_optimizers(TrainConfig(optimizer={"name": "adam", "lr": 0.01}), build_optimizer)
    for _ in range(5):
        parts = model.train_step(x, optimizers, contextlib.nullcontext)
        assert "loss" in parts and all(torch.isfinite(v) for v in parts.values()), parts
    for k, p in model.named_parameters():
        assert not torch.equal(before[k], p), f"{k} did not move"


def test_unknown_model_lists_valid_ones():
    from damoxing.core.errors import ConfigError

    with pytest.raises(ConfigError, match="Valid models"):
        MODELS.get("resnet9000")


def test_model_that_does_not_take_the_data_kind_says_which_do():
    from damoxing.core.errors import ConfigError
    from damoxing.models.cnn import CNNConfig

    schema = DataSchema(kind="table", task="classification", input_shape=(5,), n_outputs=2)
    with pytest.raises(ConfigError, match="takes 'image' data") as info:
        create_model(CNNConfig(), schema)
    assert "'mlp'" in str(info.value)


def test_seed_cnns_are_expressible():
    from damoxing.models.cnn import CNN, CNNConfig

    # seed 000: conv 32 -> pool -> conv 64 -> pool -> FC 128 -> 10 on 28x28x1 (64 * 7 * 7 flattened)
    seed000 = CNN((1, 28, 28), 10, CNNConfig(conv_channels=[32, 64], pool_every=1, dense=[128], dropout=0.0))
    convs = [m for m in seed000.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64] and seed000.dense[0].in_features == 64 * 7 * 7
    assert seed000(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # seed 001 (Keras): 3 valid convs 32/64/64, pools after the first two, dense 64 on 28x28x1
    seed001 = CNN((1, 28, 28), 10, CNNConfig(conv_channels=[32, 64, 64], padding="valid", pool_every=1, pool_last=False,
                                            dense=[64], dropout=0.0))
    assert seed001.dense[0].in_features == 64 * 3 * 3  # Keras's model.summary(): (3, 3, 64) -> 576
    assert seed001(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


TEXT_FAMILIES = [name for name, family in MODELS.items() if "text" in family.input_kinds]


@pytest.mark.parametrize("name", TEXT_FAMILIES)
def test_padding_does_not_change_text_outputs(name):
    """A text padded to 10 tokens gives the same output as the same text with no padding at all."""
    schema, x, _, _ = tiny_case("text")
    model = build(name, schema).eval()
    row = x[1:2].clone()
    length = int((row != schema.pad_id).sum())
    assert 0 < length < row.shape[1]
    with torch.no_grad():
        padded = model(row)
        unpadded = model(row[:, :length])
    torch.testing.assert_close(padded, unpadded, rtol=1e-4, atol=1e-5)
