"""Declared capabilities: which family has which (models/protocols.py), checked on built tiny models.

The table is the declaration made visible: a family that gains or loses a capability (or satisfies
one by accident, as an `embed` embedding layer would once have passed for a sentence encoder)
changes it here on purpose."""

from __future__ import annotations

import pytest

from damoxing.models import MODELS
from damoxing.models import protocols as P
from tests.models.test_contract import build, tiny_case

ON_MODELS = [P.OwnsUpdate, P.GroupsParameters, P.ReportsRunInfo, P.Generative, P.Interpolates, P.LanguageModel,
             P.SentenceEncoder, P.ShardsInUnits, P.Exportable, P.TrainsOnFeatures, P.CutsPadding]
ON_FAMILIES = [P.ResolvesConfig, P.DoesOneTask, P.FittedReference]

EXPECTED = {  # family -> the capabilities its models and its class declare
    "linear": {"Exportable"},
    "mlp": {"Exportable"},
    "cnn": {"Exportable"},
    "rnn": {"Exportable"},  # has an `embed` layer (nn.Embedding), but no sentence encoder
    "transformer": {"Exportable"},
    "gpt": {"LanguageModel", "Exportable"},
    "vae": {"Generative", "Interpolates", "DoesOneTask", "Exportable"},
    "gan": {"OwnsUpdate", "Generative", "DoesOneTask", "Exportable"},
    "pretrained": {"GroupsParameters", "ReportsRunInfo", "LanguageModel", "SentenceEncoder", "ResolvesConfig", "Exportable",
                   "TrainsOnFeatures", "CutsPadding"},
    "fasttext": {"Exportable"},
    "sklearn": {"FittedReference"},  # not a torch module: nothing to build here (export copies its ONNX graph)
}


@pytest.mark.parametrize("name", MODELS.names())
def test_each_family_declares_exactly_its_capabilities(name):
    family = MODELS.get(name)
    found = {p.__name__ for p in ON_FAMILIES if isinstance(family, p)}
    if "FittedReference" not in found:
        model = build(name, tiny_case(sorted(family.input_kinds)[0])[0])
        found |= {p.__name__ for p in ON_MODELS if isinstance(model, p)}
    assert found == EXPECTED[name]


def test_every_registered_family_is_in_the_table():
    assert set(EXPECTED) == set(MODELS.names())


def test_config_capabilities():
    from damoxing.models.gpt import GPTConfig
    from damoxing.models.mlp import MLPConfig

    assert isinstance(GPTConfig(), P.HasContextLength) and not isinstance(MLPConfig(), P.HasContextLength)
    assert not isinstance(GPTConfig(), P.ReadsTokenizer)
