"""What the contract cannot see: the GPT's key/value cache, its context window and presets, and the
rnn / transformer options that change how a sequence becomes one vector."""

from __future__ import annotations

import pytest
import torch

from damoxing.data.schema import DataSchema
from damoxing.models import create_model, resolve_size
from damoxing.models.gpt import GPT, GPTConfig
from damoxing.models.rnn import RNNConfig
from damoxing.models.transformer import TransformerConfig

LM = DataSchema(kind="corpus", task="language_modeling", input_shape=(16,), n_outputs=30, vocab_size=30, pad_id=0)


def tiny_gpt(**options) -> GPT:
    torch.manual_seed(0)
    return create_model(GPTConfig(size="tiny", context_length=16, **options), LM).eval()


def test_cached_generation_matches_recomputing_the_whole_window():
    """Greedy decoding with the KV cache (and its rebuilds past the context) equals the plain loop that
    recomputes the last context_length tokens at every step (nanoGPT's generate)."""
    model = tiny_gpt()
    prompt = [3, 7, 1, 4, 1, 5]
    cached = list(model.generate_tokens(prompt, 30, lambda logits: int(logits.argmax())))  # 36 tokens > context 16
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(30):
            window = torch.tensor([tokens[-16:]])
            tokens.append(int(model(window)[0, -1].argmax()))
    recomputed = tokens[len(prompt):]
    # identical until the first cache rebuild; after it the cached model sees the most recent half window
    assert cached[: 16 - len(prompt) + 1] == recomputed[: 16 - len(prompt) + 1]
    assert len(cached) == 30


def test_one_cached_step_gives_the_same_logits_as_the_full_forward():
    model = tiny_gpt()
    ids = torch.tensor([[5, 9, 2, 8, 8, 1]])
    cache = model.new_cache("cpu")
    with torch.no_grad():
        model.forward_features(ids[:, :5], cache)
        step = model.logits(model.forward_features(ids[:, 5:], cache))[0, -1]
        full = model(ids)[0, -1]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_are_stored_once_and_untied_have_their_own_head():
    tied, untied = tiny_gpt(), tiny_gpt(tie_embeddings=False)
    assert "lm_head.weight" not in tied.state_dict() and "lm_head.weight" in untied.state_dict()
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 30 * 64


def test_residual_projections_are_scaled_for_depth():
    model = create_model(GPTConfig(size="tiny", layers=8), LM)
    std = model.blocks[0].attn.proj.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * 8) ** 0.5, rel=0.15)


def test_base_preset_is_gpt2_small_shape():
    config = resolve_size(GPTConfig(size="base"))
    assert (config.layers, config.heads, config.d_model, config.context_length) == (12, 12, 768, 1024)


def test_a_block_longer_than_the_context_is_a_config_error():
    from damoxing.core.errors import ConfigError

    with pytest.raises(ConfigError, match="context"):
        create_model(GPTConfig(size="tiny", context_length=8), LM)


def test_a_classification_gpt_cannot_generate():
    from damoxing.core.errors import ConfigError

    schema = DataSchema(kind="text", task="classification", input_shape=(8,), n_outputs=2, vocab_size=30, pad_id=0)
    model = create_model(GPTConfig(size="tiny"), schema)
    with pytest.raises(ConfigError, match="cannot generate"):
        next(model.generate_tokens([1, 2], 3, lambda logits: 0))


TEXT = DataSchema(kind="text", task="classification", input_shape=(6,), n_outputs=3, vocab_size=20, pad_id=0)
SEQ = DataSchema(kind="sequence", task="regression", input_shape=(6, 4), n_outputs=1)


@pytest.mark.parametrize("options", [
    {"cell": "rnn"}, {"cell": "gru", "pooling": "mean"}, {"cell": "lstm", "bidirectional": True, "pooling": "max", "layers": 2},
])
def test_rnn_options(options):
    text = create_model(RNNConfig(size="tiny", **options), TEXT)
    x = torch.tensor([[4, 5, 6, 0, 0, 0], [7, 0, 0, 0, 0, 0]])
    assert text(x).shape == (2, 3)
    assert create_model(RNNConfig(size="tiny", **options), SEQ)(torch.randn(2, 6, 4)).shape == (2, 1)


@pytest.mark.parametrize("options", [{"positional": "learned"}, {"pooling": "mean"}, {"positional": "sinusoidal", "pooling": "cls"}])
def test_transformer_options(options):
    model = create_model(TransformerConfig(size="tiny", **options), TEXT)
    assert model(torch.tensor([[4, 5, 6, 0, 0, 0], [0, 0, 0, 0, 0, 0]])).isfinite().all()  # an empty text too
    assert create_model(TransformerConfig(size="tiny", **options), SEQ)(torch.randn(2, 6, 4)).shape == (2, 1)


def test_heads_must_divide_d_model():
    from damoxing.core.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple"):
        create_model(TransformerConfig(size="tiny", d_model=30, heads=4), TEXT)
