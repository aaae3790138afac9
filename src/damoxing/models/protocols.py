"""What a model family must have, and the optional capabilities it may declare: one place for both.

Every registered family class is a `ModelFamily`. Beyond that, a family opts into a capability by
defining the members of its Protocol below; the code that needs the capability asks
`isinstance(model, Protocol)`, never `hasattr`. (runtime_checkable protocols check that the
members exist, not their signatures: the signatures here are the contract, and
tests/models/test_contract.py exercises them on every family that declares one.)

On a model instance:
    OwnsUpdate        configure_optimizers + train_step: the training loop hands it its batches and
                      schedules its optimizers' learning rates, and it runs its own
                      forward/backward/step (gan: two players)                   training/step.py
    GroupsParameters  param_groups(optimizer config): parameters in groups with their own lr and
                      weight decay (pretrained: head lr, layer-wise decay)       training/loop.py
    ReportsRunInfo    run_info(): extra facts for manifest.json's model block (pretrained: the base
                      checkpoint, its hash, what was saved)                      verbs/train.py
    Generative        loss_parts, losses(x), sample(n): a model of the data itself, no labels (vae,
                      gan; the class too: its loss_parts name the generation task's metrics)
                                                                                 tasks/generation.py
    Interpolates      interpolate(n): decodings along a line in its latent space (vae)
                                                                                 inference/images.py
    LanguageModel     vocab_size, context_length, generate_tokens(prompt, ...): continues text with
                      its own key/value cache (gpt, pretrained decoders)         inference/text.py,
                                                                                 tasks/language_modeling.py
    SentenceEncoder   hidden_size, context_length, embed(ids): one unit vector per text (pretrained)
                                                                                 inference/embeddings.py
    TrainsOnFeatures  frozen_head() + features(x, batch_size): a frozen encoder under a head; the loop
                      computes the features once per split and trains the head alone on them
                      (pretrained, finetune: frozen)                             training/loop.py
    CutsPadding       pad_id + trimmed(ids): cuts a batch of right-padded ids to its longest text; the
                      loop then groups training batches by length (pretrained)  training/batches.py
    ShardsInUnits     fsdp_units(): the submodules FSDP shards one by one (default: the elements of
                      every nn.ModuleList)                                       training/distributed.py
    Exportable        export_view(): what to export and how to feed it (models/export_view.py): the
                      model itself, rnn's packing-free twin, vae's decoder, gan's generator,
                      pretrained with LoRA merged (every torch family)           deploy/export.py

On a family class:
    ResolvesConfig    resolve_config(config, base_dir): completes the whole config before the data is
                      read (pretrained: finds its checkpoint, records its hash)  verbs/train.py
    DoesOneTask       task: the one task it does whatever the data holds (vae, gan: "generation")
                                                                                 models/registry.py
    FittedReference   fitted_by: not a torch module; `damoxing train` fits it with that library and
                      saves it as ONNX (sklearn)                                 verbs/train.py

On a family's config (its pydantic options):
    HasContextLength  context_length: the most tokens it reads at once (gpt, pretrained)
    ReadsTokenizer    tokenizer_path: the tokenizer text must be read with (pretrained: its
                      checkpoint's own)                                          models/registry.py

Every family's config also has `tiny(schema, folder)` (config.py's ModelConfigBase): the smallest
config that runs on `schema`, for the contract tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing this module stays cheap (the CLI's start-up imports it)
    import torch
    from torch import nn

    from damoxing.config import OptimizerConfig, TrainConfig
    from damoxing.models.export_view import ExportView


@runtime_checkable
class ModelFamily(Protocol):
    """A registered model class: `@MODELS.register(name)` above it (models/registry.py)."""

    config_class: type  # its pydantic options: `type: Literal[name]`, `size` presets (PRESETS), its own fields
    input_kinds: frozenset  # the data kinds it accepts, e.g. {"table", "image"}

    def from_config(self, config: Any, schema: Any) -> nn.Module:
        """(classmethod) Build the model for data described by `schema` (a DataSchema)."""
        ...


@runtime_checkable
class OwnsUpdate(Protocol):
    def configure_optimizers(self, config: TrainConfig, build_optimizer: Callable[..., torch.optim.Optimizer]) -> dict[str, torch.optim.Optimizer]:
        """Its optimizers by name, built with `build_optimizer(params, config.optimizer)`; refuse (ConfigError)
        the train settings it cannot honour (e.g. grad clipping)."""
        ...

    def train_step(self, x: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer], autocast: Callable) -> dict[str, torch.Tensor]:
        """One update on a batch x: device scalars {"loss": ..., other parts}; no host sync."""
        ...


@runtime_checkable
class GroupsParameters(Protocol):
    def param_groups(self, optimizer: OptimizerConfig) -> list[dict]:
        """Trainable parameters as torch param groups ({"params", "lr", "weight_decay"}), the group at
        optimizer.lr first (the history's lr column is the first group's)."""
        ...


@runtime_checkable
class ReportsRunInfo(Protocol):
    def run_info(self) -> dict:
        """JSON-able facts merged into manifest.json's "model" block."""
        ...


@runtime_checkable
class Generative(Protocol):
    loss_parts: tuple[str, ...]  # (class attribute) what `losses` reports besides "loss"; the generation task's metrics

    def losses(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({"loss": ..., other parts} as device scalars, outputs shaped like x) without updating."""
        ...

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n new samples (n, *input_shape); the same generator seed gives the same samples on any device."""
        ...


@runtime_checkable
class Interpolates(Protocol):
    def interpolate(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n decodings (n, *input_shape) along a straight line between two latent points."""
        ...


@runtime_checkable
class LanguageModel(Protocol):
    vocab_size: int
    context_length: int

    def generate_tokens(self, prompt: list[int], max_new_tokens: int, pick: Callable[[torch.Tensor], int]) -> Iterator[int]:
        """Yield up to max_new_tokens ids after `prompt`; `pick` turns the next-token logits (V,) into an id."""
        ...


@runtime_checkable
class SentenceEncoder(Protocol):
    hidden_size: int
    context_length: int

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), right-padded -> (B, hidden_size) L2-normalized float32 vectors."""
        ...


@runtime_checkable
class TrainsOnFeatures(Protocol):
    def frozen_head(self) -> Optional[nn.Module]:
        """The trainable part alone, reading features (N, F) instead of the data, or None when the
        encoder trains too; its parameters are the model's own, so training it trains the model."""
        ...

    def features(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The fixed encoder's features (N, F) for the rows of x, in order, without autograd."""
        ...


@runtime_checkable
class CutsPadding(Protocol):
    pad_id: Optional[int]
    cut_padding: bool  # False keeps every batch at its full length (explain's attributions need it)

    def trimmed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded ids -> (B, T') with T' the batch's longest text (or x itself where it does not cut)."""
        ...


@runtime_checkable
class ShardsInUnits(Protocol):
    def fsdp_units(self) -> list[nn.Module]:
        """The submodules FSDP shards one at a time, so only one unit's full parameters exist at once."""
        ...


@runtime_checkable
class Exportable(Protocol):
    def export_view(self) -> ExportView:
        """The module to export, what it reads (the data's rows or latent vectors) and which input axes vary."""
        ...


@runtime_checkable
class ResolvesConfig(Protocol):
    def resolve_config(self, config: Any, base_dir: Optional[Path]) -> Any:
        """(classmethod) The whole config, completed and checked before the data is read."""
        ...


@runtime_checkable
class FittedReference(Protocol):
    fitted_by: str  # the library that fits it instead of the training loop (sklearn: "scikit-learn", saved as ONNX)


@runtime_checkable
class DoesOneTask(Protocol):
    task: str  # a registered task name


@runtime_checkable
class HasContextLength(Protocol):
    context_length: Optional[int]


@runtime_checkable
class ReadsTokenizer(Protocol):
    tokenizer_path: str  # a folder holding tokenizer.json
