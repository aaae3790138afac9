"""Text for models: a tokenizer codec (Hugging Face `tokenizers`) and plain-text corpora.

* `TextCodec` - texts -> token ids (N, T), padded on the right and truncated to one fixed length.
  Its tokenizer is either trained on the training split (byte-level BPE, WordPiece or character
  level) or an existing one (`TextCodec.from_pretrained`: a damoxing run folder, a Hugging Face
  folder holding tokenizer.json, or a tokenizer.json file). The tokenizer is saved as
  tokenizer.json beside preprocessing.json (`files()`); `to_dict()` holds everything else. The
  attention mask of a batch is `ids != pad_id`.
* `TextCodec.pack` - the units of a corpus -> next-token blocks for language modelling.
* `find_text_column` - which column of a table holds the text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.errors import (
    ConfigError,
    DataError,
    UserError,
    choices_text,
    did_you_mean,
)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")  # ids 0, 1, 2 of every tokenizer damoxing trains
PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>")
EOS_NAMES = ("<eos>", "<|endoftext|>", "</s>", "<|eot_id|>", "[SEP]")
UNK_NAMES = ("<unk>", "[UNK]", "<|unk|>")
IGNORE_INDEX = -100  # target of a position past the end of the text: no loss there
DEFAULT_LENGTH_CAP = 512
MAX_SEEN_CHARACTERS = 20_000


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError("Text data needs the Hugging Face `tokenizers` library: pip install 'damoxing[text]'.") from None
    return tokenizers


def as_texts(values: Any) -> list[str]:
    """A string, a list / array / Series of strings -> a list of str (missing values become "")."""
    if isinstance(values, str):
        return [values]
    if hasattr(values, "tolist"):
        values = values.tolist()
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("")
        elif isinstance(v, str):
            out.append(v)
        else:
            out.append(str(v))
    return out


class TextCodec:
    """Texts -> token ids (N, T) with a Hugging Face tokenizer; fitted on the training split only.

    `__init__` only stores the options; `fit(texts)` trains the tokenizer, `fit_length(texts)` fixes
    the padded length T. Learned state ends in `_`.
    """

    KINDS = ("bpe", "wordpiece", "char")
    reads_files = True  # from_dict needs the run folder: the tokenizer is in tokenizer.json

    def __init__(self, kind: str = "bpe", vocab_size: int = 8000, min_frequency: int = 2, lowercase: bool = False,
                 max_length: Optional[int] = None):
        self.kind = kind
        self.vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.lowercase = lowercase
        self.max_length = max_length

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, texts: Iterable[str]) -> "TextCodec":
        """Train a tokenizer of `kind` on `texts` (the training split)."""
        if self.kind not in self.KINDS:
            raise ConfigError(f"data.tokenizer.kind '{self.kind}' is not valid.{did_you_mean(self.kind, self.KINDS)} Valid kinds: {choices_text(self.KINDS)}.")
        texts = as_texts(texts)
        if not any(t.strip() for t in texts):
            raise DataError(f"The {len(texts)} training text(s) are all empty; there is nothing to train a tokenizer on.")
        self.tokenizer_ = _train_tokenizer(self.kind, texts, self.vocab_size, self.min_frequency, self.lowercase)
        self.source_ = "trained"
        chars = set().union(*map(set, texts))
        self.seen_characters_ = "".join(sorted(chars)) if len(chars) <= MAX_SEEN_CHARACTERS else None
        self._find_special_ids(None)
        self.max_length_ = None
        return self

    def fit_length(self, texts: Iterable[str], cap: Optional[int] = None) -> "TextCodec":
        """Fix the padded length T: `max_length` if set, else the longest text in tokens (at most `cap`)."""
        cap = cap or DEFAULT_LENGTH_CAP
        if self.max_length is not None:
            self.max_length_ = int(self.max_length)
        else:
            lengths = [len(ids) for ids in self.encode(as_texts(texts), special_tokens=True)]
            self.max_length_ = max(1, min(max(lengths, default=1), cap))
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, max_length: Optional[int] = None) -> "TextCodec":
        """Wrap an existing tokenizer: a damoxing run folder (its tokenizer.json and settings), a
        Hugging Face model folder (tokenizer.json, or files `transformers` can turn into a fast
        tokenizer), or a tokenizer.json file. The padded length is fixed later by `fit_length`."""
        tk = _tokenizers()
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"The tokenizer path '{path}' does not exist. Give a run folder, a Hugging Face model folder holding tokenizer.json, or a tokenizer.json file.")
        run_prep = path / "preprocessing.json"
        if path.is_dir() and run_prep.exists() and (path / "tokenizer.json").exists():
            inputs = json.loads(run_prep.read_text()).get("inputs", {})
            if inputs.get("type") == "text":
                codec = cls.from_dict(inputs, path)
                codec.max_length, codec.max_length_ = max_length, None
                return codec
        file = path / "tokenizer.json" if path.is_dir() else path
        config_dir = path if path.is_dir() else path.parent
        if file.exists():
            try:
                tokenizer = tk.Tokenizer.from_file(str(file))
            except Exception as e:  # noqa: BLE001 - the library raises a bare Exception for a bad file
                raise DataError(f"'{file}' could not be read as a Hugging Face tokenizer: {e}.") from None
        elif path.is_dir():
            tokenizer = _fast_tokenizer_from_folder(path)
        else:
            raise DataError(f"'{path}' is not a tokenizer: give a tokenizer.json file or a folder holding one.")
        tokenizer.no_padding()  # this codec pads and truncates to its own length
        tokenizer.no_truncation()
        codec = cls(kind="pretrained", vocab_size=tokenizer.get_vocab_size(), min_frequency=1, max_length=max_length)
        codec.tokenizer_ = tokenizer
        codec.source_ = str(path)
        codec.seen_characters_ = None  # unknown: the training text of a pretrained tokenizer is not here
        codec._find_special_ids(_special_tokens_config(config_dir))
        codec.max_length_ = None
        return codec

    def _find_special_ids(self, declared: Optional[dict[str, str]]) -> None:
        """pad / eos / unk ids: declared in tokenizer_config.json, else found by their usual names."""
        declared = declared or {}
        padding = self.tokenizer_.padding or {}

        def find(role: str, names: tuple[str, ...]) -> Optional[int]:
            candidates = [declared.get(role), padding.get("pad_token") if role == "pad" else None, *names]
            for name in candidates:
                if name and self.tokenizer_.token_to_id(name) is not None:
                    return int(self.tokenizer_.token_to_id(name))
            return None

        self.eos_id_ = find("eos", EOS_NAMES)
        self.unk_id_ = find("unk", UNK_NAMES)
        pad = find("pad", PAD_NAMES)
        self.pad_id_ = pad if pad is not None else self.eos_id_  # GPT-2 style tokenizers pad with end-of-text
        self.vocab_size_ = int(self.tokenizer_.get_vocab_size(with_added_tokens=True))

    # -- transform ------------------------------------------------------------------------------

    def encode(self, texts: Iterable[str], special_tokens: bool = False) -> list[list[int]]:
        """Token ids of each text, neither padded nor truncated."""
        return [e.ids for e in self.tokenizer_.encode_batch(as_texts(texts), add_special_tokens=special_tokens)]

    def transform(self, texts: Any) -> np.ndarray:
        """Texts -> (N, T) int64 token ids, right-padded with `pad_id` and truncated to T = max_length_."""
        if getattr(self, "max_length_", None) is None:
            raise RuntimeError("TextCodec.transform called before fit_length")
        if self.pad_id_ is None:
            raise DataError(f"The tokenizer from '{self.source_}' has no padding token (none of {choices_text(PAD_NAMES)} or an end-of-text token), so texts cannot be padded to one length.")
        texts = as_texts(texts)
        if not texts:
            return np.zeros((0, self.max_length_), dtype=np.int64)
        tok = self._padded_tokenizer()
        return np.array([e.ids for e in tok.encode_batch(texts, add_special_tokens=True)], dtype=np.int64)

    def _padded_tokenizer(self):
        """A copy of the tokenizer that pads and truncates to max_length_ (the saved one does neither)."""
        cached = getattr(self, "_padded", None)
        if cached is not None and cached[0] == self.max_length_:
            return cached[1]
        tok = _tokenizers().Tokenizer.from_str(self.tokenizer_.to_str())
        tok.enable_truncation(max_length=self.max_length_)
        tok.enable_padding(pad_id=self.pad_id_, pad_token=self.tokenizer_.id_to_token(self.pad_id_) or "<pad>", length=self.max_length_)
        self._padded = (self.max_length_, tok)
        return tok

    def attention_mask(self, ids: np.ndarray) -> np.ndarray:
        """(N, T) bool: True where a real token is, False on padding."""
        return np.asarray(ids) != self.pad_id_

    def pack(self, units: list[str], block_size: int, unit: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Corpus units -> next-token blocks for language modelling.

        The token stream is <eos> unit1 unit2 ...: a line keeps its newline (it is text the model
        learns to write), a document is followed by <eos>. Blocks do not overlap; the last one is
        padded and its missing targets are IGNORE_INDEX.

        Returns:
            x (N, block_size) input ids, y (N, block_size) the id that follows each input, and the
            number of UTF-8 bytes of text the targets cover (for bits per byte).
        """
        texts = [u + "\n" for u in units] if unit == "line" else list(units)
        encoded = self.encode(texts)
        sep = [self.eos_id_] if (unit != "line" and self.eos_id_ is not None) else []
        start = [self.eos_id_] if self.eos_id_ is not None else []
        pieces = [np.asarray(start, dtype=np.int64)]
        for ids in encoded:
            pieces += [np.asarray(ids, dtype=np.int64), np.asarray(sep, dtype=np.int64)]
        stream = np.concatenate(pieces)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        inputs, targets = stream[:-1], stream[1:]
        n_blocks = max(1, math.ceil(len(targets) / block_size))
        x = np.full(n_blocks * block_size, self.pad_id_ if self.pad_id_ is not None else 0, dtype=np.int64)
        y = np.full(n_blocks * block_size, IGNORE_INDEX, dtype=np.int64)
        x[: len(inputs)], y[: len(targets)] = inputs, targets
        return x.reshape(n_blocks, block_size), y.reshape(n_blocks, block_size), n_bytes

    # -- back to text ---------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer_.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream_decode(self, ids: Iterable[int]) -> Iterator[str]:
        """Text pieces as ids arrive: each piece is printable at once (no half UTF-8 characters)."""
        from tokenizers.decoders import DecodeStream

        stream = DecodeStream(skip_special_tokens=True)
        for i in ids:
            piece = stream.step(self.tokenizer_, int(i))
            if piece:
                yield piece

    def unseen_characters(self, text: str) -> list[str]:
        """Characters of `text` that never occurred in the tokenizer's training text ([] if unknown)."""
        if self.seen_characters_ is None:
            return []
        return sorted(set(text) - set(self.seen_characters_))

    # -- saving ---------------------------------------------------------------------------------

    def files(self) -> dict[str, str]:
        """Files saved beside preprocessing.json: the tokenizer itself."""
        return {"tokenizer.json": self.tokenizer_.to_str(pretty=True)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "text", "version": 1, "tokenizer_kind": self.kind, "vocab_size": self.vocab_size,
            "min_frequency": self.min_frequency, "lowercase": self.lowercase, "max_length": self.max_length,
            "tokenizer_file": "tokenizer.json", "source_": self.source_, "max_length_": self.max_length_,
            "pad_id_": self.pad_id_, "eos_id_": self.eos_id_, "unk_id_": self.unk_id_, "vocab_size_": self.vocab_size_,
            "seen_characters_": self.seen_characters_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], folder: str | Path | None = None) -> "TextCodec":
        if not isinstance(d, dict) or d.get("type") != "text":
            raise DataError(f"TextCodec.from_dict got a '{d.get('type') if isinstance(d, dict) else type(d).__name__}' description, not 'text'.")
        if folder is None:
            raise DataError("A saved text codec needs its run folder: the tokenizer is in tokenizer.json beside preprocessing.json.")
        file = Path(folder) / d.get("tokenizer_file", "tokenizer.json")
        if not file.exists():
            raise DataError(f"'{file}' is missing; the run's tokenizer is saved there. The run folder may be damaged.")
        obj = cls(d["tokenizer_kind"], d["vocab_size"], d["min_frequency"], d["lowercase"], d["max_length"])
        obj.tokenizer_ = _tokenizers().Tokenizer.from_file(str(file))
        obj.source_ = d["source_"]
        obj.max_length_ = d["max_length_"]
        obj.pad_id_, obj.eos_id_, obj.unk_id_ = d["pad_id_"], d["eos_id_"], d["unk_id_"]
        obj.vocab_size_ = int(d["vocab_size_"])
        obj.seen_characters_ = d.get("seen_characters_")
        return obj


def _train_tokenizer(kind: str, texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool):
    tk = _tokenizers()
    from tokenizers import (
        Regex,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    specials = list(SPECIAL_TOKENS)
    if kind == "bpe":  # byte level: the 256 bytes are the alphabet, so no text is ever unknown
        tokenizer = tk.Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "wordpiece":  # BERT style: words split on spaces and punctuation, then into ##pieces
        tokenizer = tk.Tokenizer(models.WordPiece(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                            show_progress=False)
    else:  # char: every character is a token; the vocab_size most frequent are kept, the rest are <unk>
        tokenizer = tk.Tokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials, show_progress=False)
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return tokenizer if kind == "bpe" else _renumber_vocabulary(tokenizer)


def _renumber_vocabulary(tokenizer):
    """WordPiece / WordLevel ids in a fixed order (special tokens first, then by token text).

    Their trainers number tokens in hash-map order, so two trainings on the same text could give
    the same vocabulary under different ids; a run must be reproducible. Only the numbering changes:
    these models look tokens up by text, so every text is tokenized the same way."""
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    order = [t for t in SPECIAL_TOKENS if t in vocab] + sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    data["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    for added in data.get("added_tokens", []):
        added["id"] = data["model"]["vocab"][added["content"]]
    return _tokenizers().Tokenizer.from_str(json.dumps(data))


def _special_tokens_config(folder: Path) -> dict[str, str]:
    """pad/eos/unk token names declared in a Hugging Face folder's tokenizer_config.json / special_tokens_map.json."""
    out: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        file = folder / name
        if not file.exists():
            continue
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for role in ("pad", "eos", "unk"):
            value = data.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                out[role] = value
    return out


def _fast_tokenizer_from_folder(folder: Path):
    """A folder without tokenizer.json (e.g. only vocab.txt): let `transformers` build the fast tokenizer."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise DataError(f"'{folder}' has no tokenizer.json, and building one needs `transformers` (pip install 'damoxing[text]').") from None
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True).backend_tokenizer
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a folder it cannot use
        raise DataError(f"'{folder}' holds no tokenizer damoxing can use (no tokenizer.json; transformers said: {str(e).splitlines()[0]}).") from None


# ------------------------------------------------------------------------------------- tables


def is_text_column(values) -> bool:
    import pandas as pd

    return pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)


def find_text_column(frame, target: str, text: Optional[str], features: Optional[list[str]], source: str) -> str:
    """The column holding the text: data.text, else the only input column (which must hold text)."""
    columns = [str(c) for c in frame.columns]
    if text is not None:
        if text not in columns:
            raise DataError(f"data.text is '{text}', which is not a column of '{source}'.{did_you_mean(text, columns)} Its columns: {choices_text(columns)}.")
        if text == target:
            raise DataError(f"data.text and the target are both '{text}'; the text column must be another column.")
        return text
    candidates = features or [c for c in columns if c != target]
    if len(candidates) == 1 and candidates[0] in columns:
        column = candidates[0]
        if not is_text_column(frame[column]):
            raise DataError(f"The only input column of '{source}', '{column}', holds {frame[column].dtype} values, not text. "
                            "Text models (rnn, transformer, gpt) read a text column; for numbers use mlp, or numeric sequences in an .npz.")
        return column
    texty = [c for c in candidates if c in columns and is_text_column(frame[c])]
    raise DataError(f"'{source}' has {len(candidates)} input columns besides the target '{target}'; say which one holds the text with "
                    f"data.text (text-like columns: {choices_text(texty) if texty else 'none'}).")
