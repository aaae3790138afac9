"""Tiny random Hugging Face checkpoints written into folders, and a generated two-topic sentence set.

`write_tiny_bert` / `write_tiny_gpt2` save a 2-layer, hidden-32 model with `save_pretrained` and a
tokenizer built with the `tokenizers` library (a WordPiece vocabulary written here; a byte-level
BPE trained on the given texts), in the same files a real checkpoint folder has.
"""

from __future__ import annotations

import atexit
import functools
import json
import random
import shutil
import string
import tempfile
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

ROOT = Path(__file__).resolve().parents[1]


def _make_topics():
    """examples/data/make_topics.py: the repository's generator of topic sentences."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_topics", ROOT / "examples" / "data" / "make_topics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def two_topic_sentences(n: int = 200, seed: int = 0, topics: tuple[str, str] = ("sports", "cooking")) -> tuple[list[str], list[str]]:
    """n generated sentences about two topics, balanced (one in six borrows a noun from another topic)."""
    make_topics = _make_topics()
    rng = random.Random(seed)
    labels = [topics[i % 2] for i in range(n)]
    rng.shuffle(labels)
    return [make_topics.sentence(topic, rng) for topic in labels], labels


def write_topics_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    import pandas as pd

    texts, labels = two_topic_sentences(n, seed)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def _words(texts) -> list[str]:
    import re

    return sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower())})


def write_wordpiece_tokenizer(folder: Path, words: list[str]) -> int:
    """A BERT-style WordPiece tokenizer (lowercasing, [CLS] text [SEP]) as tokenizer.json, vocab.txt and tokenizer_config.json."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    pieces = list(string.ascii_lowercase + string.digits + ".,!?'-") + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(SPECIALS + pieces + list(words)))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                             special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64,
        **{f"{role}_token": token for role, token in zip(("pad", "unk", "cls", "sep", "mask"), SPECIALS)}}))
    return len(vocab)


def write_bpe_tokenizer(folder: Path, texts: list[str], vocab_size: int = 320) -> int:
    """A GPT-2 style byte-level BPE with <|endoftext|>, trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "model_max_length": 64}))
    return tokenizer.get_vocab_size()


def _quiet_transformers():
    from damoxing.models.hf_checkpoint import transformers_module

    return transformers_module()


def write_tiny_bert(folder: Path, texts: list[str] | None = None, tokenizer: bool = True, vocab_size: int | None = None,
                    seed: int = 0, model_type: str = "bert") -> Path:
    """A random 2-layer, hidden-32 encoder (BertModel, or AlbertModel for model_type 'albert') with a WordPiece tokenizer."""
    import torch

    transformers = _quiet_transformers()
    folder = Path(folder)
    if tokenizer:
        vocab_size = write_wordpiece_tokenizer(folder, _words(texts or two_topic_sentences(40)[0]))
    sizes = dict(vocab_size=vocab_size or 64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(seed)
    if model_type == "albert":
        model = transformers.AlbertModel(transformers.AlbertConfig(embedding_size=16, **sizes))
    else:
        model = transformers.BertModel(transformers.BertConfig(**sizes))
    model.save_pretrained(str(folder))
    return folder


def write_tiny_gpt2(folder: Path, texts: list[str] | None = None, tokenizer: bool = True, vocab_size: int | None = None, seed: int = 0) -> Path:
    """A random 2-layer, width-32 GPT-2 language model (tied embeddings) with a byte-level BPE tokenizer."""
    import torch

    transformers = _quiet_transformers()
    folder = Path(folder)
    if tokenizer:
        vocab_size = write_bpe_tokenizer(folder, texts or two_topic_sentences(40)[0])
    eos = (vocab_size or 64) - 1 if not tokenizer else 0  # <|endoftext|> is the first token the trainer adds
    config = transformers.GPT2Config(vocab_size=vocab_size or 64, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                     bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


@functools.lru_cache(maxsize=None)
def tiny_checkpoint(kind: str, vocab_size: int) -> Path:
    """A tiny model checkpoint (no tokenizer) whose vocabulary fits a test schema: BERT for text, GPT-2 for a corpus."""
    folder = Path(tempfile.mkdtemp(prefix=f"damoxing-tiny-{kind}-"))
    atexit.register(shutil.rmtree, folder, True)
    writer = write_tiny_gpt2 if kind == "corpus" else write_tiny_bert
    return writer(folder, tokenizer=False, vocab_size=vocab_size)
