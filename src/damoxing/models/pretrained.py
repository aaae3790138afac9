"""Pretrained Hugging Face checkpoints from a local folder, fine-tuned three ways.

Encoders (BERT family, through `AutoModel`) get a new head on pooled token states, for text
classification and regression; decoders (GPT-2 format, `AutoModelForCausalLM`) are fine-tuned as
language models on a corpus and then continue text with `damoxing generate`. Text is read with the
checkpoint's own tokenizer (the data pipeline asks `config.tokenizer_path`).

    finetune: full    every weight trains
    finetune: frozen  the checkpoint stays fixed (run in eval mode, without autograd); only the head trains
    finetune: lora    low-rank adapters (peft) on the attention projections train, and the head

The module's `state_dict()` is what fine-tuning changed and nothing else (frozen: the head; lora:
the adapters and the head; full: every weight), so the run folder's model.safetensors stays small;
config.yaml keeps the base folder and its content hash (`base_sha256`), and building the model
onto a base whose hash differs is refused.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase, StrictModel
from damoxing.core.errors import ConfigError, RunFolderError
from damoxing.models import hf_checkpoint as ckpt
from damoxing.models.export_view import ExportView, rows_and_steps
from damoxing.models.registry import MODELS

SORTED_ROWS = 64  # predicting more rows than this on a CPU (no autograd): sorted by length, batches of this many


class LoraOptions(StrictModel):
    rank: int = Field(8, ge=1, description="rank r of each adapter: it adds r x (in + out) parameters per adapted layer")
    alpha: float = Field(16.0, gt=0, description="the adapter's output is scaled by alpha / rank")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: Optional[list[str]] = Field(None, description="names of the linear layers that get adapters; default by architecture (bert/roberta: query, value; distilbert: q_lin, v_lin; gpt2: c_attn)")


class PretrainedModelConfig(ModelConfigBase):
    type: Literal["pretrained"] = "pretrained"
    path: str = Field(..., description="a local checkpoint folder in Hugging Face format (config.json, weights, tokenizer), or a short name: minilm")
    finetune: Literal["full", "frozen", "lora"] = Field("full", description="full: every weight trains; frozen: only a new head; lora: adapters and the head")
    pooling: Literal["mean", "cls", "last"] = Field("mean", description="text -> one vector: mean over real tokens, the first token ([CLS]), or the last real token (decoders)")
    head_dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the new classification/regression head")
    head_lr: Optional[float] = Field(None, gt=0, description="learning rate of the new head; default train.optimizer.lr")
    layer_lr_decay: float = Field(1.0, gt=0, le=1, description="each layer trains at this times the lr of the layer above it (embeddings lowest); 1: one lr")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory, ~30% more time per step")
    lora: LoraOptions = LoraOptions()
    context_length: Optional[int] = Field(None, ge=2, description="the most tokens per text or block; default: the checkpoint's position limit")
    base_sha256: Optional[str] = Field(None, description="content hash of the checkpoint (config.json and weights), recorded at training; a different base is refused")
    PRESETS: ClassVar[dict] = {}  # the checkpoint fixes the architecture; `size` does not apply

    @classmethod
    def tiny(cls, schema, folder: Path) -> "PretrainedModelConfig":
        """A random 2-layer, width-32 checkpoint for `schema` written into `folder`: BERT for text, GPT-2 for a corpus."""
        architecture = "gpt2" if schema.kind == "corpus" else "bert"
        return cls(path=str(ckpt.write_tiny_checkpoint(folder, architecture, schema.vocab_size or 64)))

    @property
    def tokenizer_path(self) -> str:
        """The checkpoint folder: the data pipeline reads text with this tokenizer, so token ids match the weights."""
        return str(ckpt.find_checkpoint(self.path))


@MODELS.register("pretrained")
class PretrainedModel(nn.Module):
    config_class = PretrainedModelConfig
    input_kinds = frozenset({"text", "corpus"})
    cut_padding = True  # dynamic padding on the CPU (see `trimmed`); explain switches it off

    def __init__(self, config: PretrainedModelConfig, backbone: nn.Module, n_outputs: Optional[int], pad_id: Optional[int],
                 model_type: str, is_language_model: bool):
        """backbone: a transformers model (wrapped by peft for lora); n_outputs None for a language model."""
        super().__init__()
        self.config, self.pad_id, self.model_type, self.is_language_model = config, pad_id, model_type, is_language_model
        hf = backbone.config
        self.vocab_size = int(hf.vocab_size)
        self.context_length = int(config.context_length or ckpt.max_positions(hf.to_dict()) or 512)
        width = getattr(hf, "hidden_size", None) or getattr(hf, "n_embd", None) or getattr(hf, "d_model", None)
        if not width:
            raise ConfigError(f"The '{model_type}' checkpoint's config.json gives no hidden size (hidden_size, n_embd or d_model), so no head can be put on it.")
        self.hidden_size = int(width)
        self.head = None
        if n_outputs is not None and not is_language_model:
            self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(self.hidden_size, n_outputs))
        if config.gradient_checkpointing and config.finetune != "frozen":  # a frozen body keeps no activations anyway
            if not getattr(backbone, "supports_gradient_checkpointing", False):
                raise ConfigError(f"model.gradient_checkpointing: transformers has no gradient checkpointing for '{model_type}' models. Set it to false.")
            # non-reentrant checkpointing works when the inputs need no gradient (frozen embeddings, LoRA)
            if hasattr(backbone, "activation_checkpointing_enable"):  # the name in recent transformers
                backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.finetune == "frozen":
            backbone.requires_grad_(False)
        elif config.finetune == "lora":
            backbone = _add_lora(backbone, config.lora, model_type)
        self.backbone = backbone

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def resolve_config(cls, config, base_dir: Optional[Path]):
        """At training, before the data: find the checkpoint, check it, and record its hash and position limit."""
        ckpt.transformers_module()  # offline (HF_HUB_OFFLINE=1) before anything, the tokenizer included, imports transformers
        model = config.model
        folder = ckpt.find_checkpoint(model.path, base_dir)
        hf = ckpt.read_checkpoint(folder)
        if config.data.tokenizer.path is not None:
            raise ConfigError(f"data.tokenizer.path is set, but model.type 'pretrained' reads text with its checkpoint's own tokenizer "
                              f"(in '{folder}'), so token ids match the weights. Remove data.tokenizer.path.")
        limit = ckpt.max_positions(hf)
        if model.context_length and limit and model.context_length > limit:
            raise ConfigError(f"model.context_length {model.context_length} is more than the checkpoint's {limit} positions. Use at most {limit}.")
        path = model.path if model.path in ckpt.SHORT_NAMES and not Path(model.path).exists() else str(folder)
        digest = _check_hash(model, folder)
        return config.model_copy(update={"model": model.model_copy(update={
            "path": path, "context_length": model.context_length or limit, "base_sha256": digest})})

    @classmethod
    def from_config(cls, config: PretrainedModelConfig, schema) -> "PretrainedModel":
        folder = ckpt.find_checkpoint(config.path)
        hf = ckpt.read_checkpoint(folder, need_tokenizer=False)
        if config.base_sha256 is not None:  # a saved run: its tensors fit this exact base only
            _check_hash(config, folder)
        lm = schema.task == "language_modeling"
        if hf.get("is_encoder_decoder"):
            raise ConfigError(f"The checkpoint '{folder}' is an encoder-decoder ('{hf['model_type']}'); model.type 'pretrained' takes encoders "
                              "(BERT family) for classification and regression, and decoders (GPT-2 format) for language modelling.")
        if lm and config.finetune == "frozen":
            raise ConfigError("model.finetune 'frozen' trains only a new head on top of the checkpoint, and a language model has none. "
                              "Fine-tune a language model with finetune: lora (small) or full.")
        if schema.kind == "text" and schema.pad_id is None:
            raise ConfigError(f"The tokenizer of '{folder}' has no padding token (nor an end-of-text token to pad with), so texts cannot be batched.")
        backbone = _load_backbone(folder, hf, lm)
        rows = backbone.get_input_embeddings().num_embeddings
        if schema.vocab_size and schema.vocab_size > rows:
            raise ConfigError(f"The tokenizer has {schema.vocab_size} tokens but the checkpoint's embedding has only {rows} rows; "
                              "the tokenizer does not belong to these weights.")
        return cls(config, backbone, None if lm else schema.n_outputs, schema.pad_id, hf["model_type"], lm)

    @classmethod
    def encoder(cls, path: str, pad_id: Optional[int]) -> "PretrainedModel":
        """The checkpoint alone, frozen and without a head: a sentence encoder for `damoxing embed` (pad_id: its tokenizer's)."""
        folder = ckpt.find_checkpoint(path)
        hf = ckpt.read_checkpoint(folder, need_tokenizer=False)
        config = PretrainedModelConfig(path=str(folder), finetune="frozen")
        return cls(config, _load_backbone(folder, hf, False), None, pad_id, hf["model_type"], False)

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, n_outputs), or (B, T, vocab) next-token logits for a language model."""
        if self.is_language_model:
            return self.backbone(input_ids=x, use_cache=False).logits
        if self.head is not None and self._cuts(x) and x.shape[0] > SORTED_ROWS:  # _cuts first: no guard on an exported batch axis
            return self.head(self.features(x, SORTED_ROWS))  # many rows to predict: in length-sorted batches
        x = self.trimmed(x)
        real = self._real_tokens(x)
        return self.head(self.pool(self.hidden_states(x, real), real))

    def trimmed(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic padding on the CPU: (B, T) right-padded ids cut to the batch's own longest text.

        Columns that are padding in every row change nothing (attention and pooling skip them) but
        cost time. Kept whole on accelerators (reading the length back is a host sync per step), while
        exporting or tracing (the graph keeps T as its input axis), and in eval mode with gradients on
        (explain's integrated gradients swap in embeddings of the full length)."""
        if not self._cuts(x) or x.shape[1] < 2:
            return x
        used = (x != self.pad_id).any(0).nonzero()
        longest = int(used[-1]) + 1 if used.numel() else 1
        return x[:, :longest] if longest < x.shape[1] else x

    def _cuts(self, x: torch.Tensor) -> bool:
        """Whether batches of x may be cut or regrouped by length (see `trimmed`)."""
        if not self.cut_padding or self.pad_id is None or self.is_language_model or x.device.type != "cpu" or x.dim() != 2:
            return False
        if not self.training and torch.is_grad_enabled():
            return False
        return not (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing())

    # -- a frozen encoder runs once: the head trains on its pooled features ------------------------

    def frozen_head(self) -> Optional["FeatureHead"]:
        """With finetune 'frozen' and a head: the head alone, to train on `features` computed once; else None."""
        if self.config.finetune != "frozen" or self.head is None:
            return None
        return FeatureHead(self)

    def features(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """(N, T) ids -> (N, hidden) pooled features of the frozen encoder on the model's device:
        batched, in inference mode, in the order of x. Rows go through sorted by length, so each
        batch holds texts of about one length and is cut to its own longest (dynamic padding)."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        out = torch.empty(x.shape[0], self.hidden_size, device=device)
        with torch.inference_mode():
            lengths = (x != self.pad_id).sum(1) if self.pad_id is not None else torch.full((x.shape[0],), x.shape[1])
            order = torch.argsort(lengths.cpu(), stable=True)
            for rows in order.split(min(batch_size, 256)):  # more rows per batch would not run faster on a CPU
                xb = x[rows.to(x.device)].to(device)
                used = (xb != self.pad_id).any(0).nonzero() if self.pad_id is not None else None
                xb = xb[:, : int(used[-1]) + 1] if used is not None and used.numel() else xb
                real = self._real_tokens(xb)
                out[rows.to(device)] = self.pool(self._last_hidden(xb, real), real).float()
        self.train(was_training)
        return out.clone()  # made outside inference mode: a normal tensor, usable by autograd

    def hidden_states(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and their (B, T) real-token mask -> the last layer's (B, T, hidden) states."""
        if self.config.finetune == "frozen" and self.training:
            with torch.no_grad():  # nothing below the head trains: keep no activations for a backward pass
                return self._last_hidden(x, real)  # (in eval mode the caller decides: explain needs input gradients)
        return self._last_hidden(x, real)

    def _last_hidden(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=x, attention_mask=real.long(), output_hidden_states=self.is_language_model, use_cache=False)
        return out.hidden_states[-1] if self.is_language_model else out.last_hidden_state

    def _real_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x != self.pad_id if self.pad_id is not None else torch.ones_like(x, dtype=torch.bool)

    def pool(self, hidden: torch.Tensor, real: torch.Tensor, how: Optional[str] = None) -> torch.Tensor:
        """(B, T, C) -> (B, C): mean over real tokens, the first token, or the last real one (right padding)."""
        how = how or self.config.pooling
        if how == "cls":
            return hidden[:, 0]
        if how == "last":
            last = (real.sum(1) - 1).clamp_min(0)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        weights = real.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, hidden) sentence embeddings: mean over real tokens, L2-normalized (sentence-transformers style)."""
        real = self._real_tokens(x)
        return torch.nn.functional.normalize(self.pool(self._last_hidden(x, real).float(), real, "mean"), dim=-1)

    def export_view(self) -> ExportView:
        """The model as trained, for token ids (B, T) with T up to the context; LoRA adapters merged into a
        copy of the weights (peft merge_and_unload: W + scale * B A), so the graph holds plain linear layers
        and this model is left as it is."""
        module, what = self, f"the {self.model_type} checkpoint fine-tuned ({self.config.finetune})"
        if self.config.finetune == "lora":
            module = copy.deepcopy(self)
            module.backbone = module.backbone.merge_and_unload()
            what += ", adapters merged"
        return rows_and_steps(module.eval(), what + (", language model" if self.is_language_model else ""), most=self.context_length)

    def train(self, mode: bool = True) -> "PretrainedModel":
        super().train(mode)
        if self.config.finetune == "frozen":
            self.backbone.eval()  # a fixed feature extractor: no dropout noise in the features
        return self

    # -- what is saved: only what fine-tuning changed --------------------------------------------

    def state_dict(self, *, destination=None, prefix: str = "", keep_vars: bool = False):
        """The fine-tuned state: every weight (full), or only the trainable ones (frozen: head; lora: adapters + head).

        Tensors shared by two names (GPT-2's tied input and output embeddings) are kept once. As a
        submodule (a wrapper's state_dict fills `destination`), only this state goes in either."""
        state = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        keep = type(state)()
        if self.config.finetune != "full":
            trained = {prefix + name for name, p in self.named_parameters() if p.requires_grad}
            keep.update((k, v) for k, v in state.items() if k in trained)
        else:
            seen: set[int] = set()
            for name, tensor in state.items():
                if tensor.numel() and tensor.data_ptr() in seen:
                    continue
                seen.add(tensor.data_ptr())
                keep[name] = tensor
        if destination is None:
            return keep
        destination.update(keep)
        return destination

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a fine-tuned state onto the base weights; strict: exactly the tensors `state_dict()` names."""
        expected = set(self.state_dict().keys())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise RuntimeError(f"the saved tensors do not match this fine-tuned model (finetune '{self.config.finetune}'): "
                               f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        return result._replace(missing_keys=missing)

    def run_info(self) -> dict:
        """What the manifest records about the base and what was saved."""
        saved = self.state_dict()
        return {"finetune": self.config.finetune, "base": {"path": self.config.path, "model_type": self.model_type, "sha256": self.config.base_sha256},
                "saved_params": int(sum(t.numel() for t in saved.values()))}

    # -- optimizer: a head lr and layer-wise lr decay ---------------------------------------------

    def param_groups(self, optimizer) -> list[dict]:
        """Trainable parameters in groups by learning rate, and without weight decay for biases and norms (1-D)."""
        n_layers = int(getattr(self.backbone.config, "num_hidden_layers", None) or getattr(self.backbone.config, "n_layer", 0) or 0)
        groups: dict[tuple[float, bool], list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("head."):
                lr = self.config.head_lr or optimizer.lr
            else:
                lr = optimizer.lr * self.config.layer_lr_decay ** _depth_below_top(name, n_layers)
            groups.setdefault((lr, p.ndim >= 2), []).append(p)
        # the group at train.optimizer.lr first: the history's "lr" column is the first group's
        ordered = sorted(groups.items(), key=lambda item: (item[0][0] != optimizer.lr, -item[0][0], not item[0][1]))
        return [{"params": ps, "lr": lr, "weight_decay": optimizer.weight_decay if decays else 0.0} for (lr, decays), ps in ordered]

    # -- generation (language models) -----------------------------------------------------------

    @torch.no_grad()
    def generate_tokens(self, prompt: list[int], max_new_tokens: int, pick: Callable[[torch.Tensor], int]) -> Iterator[int]:
        """Yield up to max_new_tokens ids after `prompt`, with the model's own key/value cache.

        The prompt is cropped to the last context_length tokens; when the context is full the cache is
        rebuilt from the most recent half context (absolute positions cannot slide)."""
        if not self.is_language_model:
            raise ConfigError("This pretrained model has a classification/regression head, not a language-model head; it cannot generate text.")
        self.eval()
        device = next(self.parameters()).device
        tokens = list(prompt)[-self.context_length :]
        out = self.backbone(input_ids=torch.tensor([tokens], device=device), use_cache=True)
        cached = len(tokens)
        for _ in range(max_new_tokens):
            next_id = pick(out.logits[0, -1].float())
            yield next_id
            tokens.append(next_id)
            if cached + 1 > self.context_length:
                keep = tokens[-max(1, self.context_length // 2) :]
                out = self.backbone(input_ids=torch.tensor([keep], device=device), use_cache=True)
                cached = len(keep)
            else:
                out = self.backbone(input_ids=torch.tensor([[next_id]], device=device), past_key_values=out.past_key_values, use_cache=True)
                cached += 1


class FeatureHead(nn.Module):
    """A frozen pretrained model's head (the same parameters), reading pooled features instead of ids.

    Its state_dict names match the whole model's (head.*), and its parameter groups are the
    model's (head_lr), so the training loop treats it like any model."""

    def __init__(self, model: PretrainedModel):
        super().__init__()
        self.head = model.head
        self._groups = model.param_groups  # a bound method, not a submodule: the encoder stays out of this module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def param_groups(self, optimizer) -> list[dict]:
        return self._groups(optimizer)


def _load_backbone(folder: Path, hf: dict, lm: bool) -> nn.Module:
    """The checkpoint as a transformers model in float32: AutoModelForCausalLM for language modelling, else AutoModel."""
    transformers = ckpt.transformers_module()
    auto = transformers.AutoModelForCausalLM if lm else transformers.AutoModel
    try:
        backbone = auto.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    except ValueError as e:
        if lm and "Unrecognized configuration class" in str(e):
            raise ConfigError(f"The checkpoint '{folder}' is a '{hf['model_type']}' model, which cannot continue text: language modelling "
                              "needs a decoder checkpoint (GPT-2 format, with a causal language-model head).") from None
        raise ConfigError(f"transformers could not load the checkpoint '{folder}': {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ConfigError(f"transformers could not load the checkpoint '{folder}': {str(e).splitlines()[0]}") from None
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # BERT's pooler is not used (pooling is ours); dropping it leaves no parameter without a gradient
    return backbone


def _check_hash(config: PretrainedModelConfig, folder: Path) -> str:
    digest = ckpt.checkpoint_sha256(folder)
    if config.base_sha256 is not None and config.base_sha256 != digest:
        saved = {"full": "every weight", "frozen": "only the head", "lora": "only the LoRA adapters and the head"}[config.finetune]
        named = f" (model.path '{config.path}')" if config.path != str(folder) else ""
        raise RunFolderError(
            f"The checkpoint at '{folder}'{named} is not the one this run was trained on: its content hash is now "
            f"{digest[:16]}..., the run recorded {config.base_sha256[:16]}.... The run saved {saved}, which fit the original base weights only. "
            "Put the original checkpoint back at that path, or train again on the new one.")
    return digest


_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def _depth_below_top(name: str, n_layers: int) -> int:
    """0 for the top layer (and anything above it), n_layers for the embeddings: the exponent of layer_lr_decay."""
    found = _LAYER_INDEX.search(name)
    if found:
        return max(0, n_layers - 1 - int(found.group(1)))
    return n_layers if "embed" in name or ".wte." in name or ".wpe." in name else 0


def _add_lora(backbone: nn.Module, options: LoraOptions, model_type: str) -> nn.Module:
    """Wrap the backbone with peft LoRA adapters; the base weights are frozen by peft."""
    try:
        import peft
    except ImportError:
        raise ConfigError("model.finetune 'lora' needs the `peft` library: pip install 'damoxing[text]'.") from None
    targets = options.target_modules or ckpt.default_lora_targets(model_type)
    layers = ckpt.linear_layer_names(backbone)
    if not targets:
        raise ConfigError(f"model.finetune 'lora' needs to know which layers get adapters, and there is no default for '{model_type}' checkpoints. "
                          f"Set model.lora.target_modules to the names of its attention projections; its linear layers are named: {', '.join(layers)}.")
    from transformers.pytorch_utils import Conv1D

    names = [targets] if isinstance(targets, str) else targets
    fan_in_fan_out = any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in names for n, m in backbone.named_modules())  # GPT-2 stores weights transposed
    lora = peft.LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout, target_modules=targets,
                           fan_in_fan_out=fan_in_fan_out, bias="none")
    try:
        with warnings.catch_warnings():  # peft asks the model the deprecated `is_gradient_checkpointing` (transformers 5)
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(backbone, lora)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"model.lora.target_modules {names} names no layer of this '{model_type}' checkpoint ({str(e).splitlines()[0]}). "
                          f"Its linear layers are named: {', '.join(layers)}.") from None
