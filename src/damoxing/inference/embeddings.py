"""`damoxing embed SOURCE INPUT --out FILE`: sentence embeddings, the feature-extraction use of a pretrained model.

SOURCE is a run folder of a `pretrained` model (its fine-tuned encoder, adapters included) or a
checkpoint folder / short name (`minilm`). Each text becomes the mean of the last layer's states
over its real tokens, L2-normalized: the sentence-transformers recipe, so `minilm` gives the
vectors all-MiniLM-L6-v2 is published with. Texts are batched by length, each batch padded only to
its own longest text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from damoxing.core.errors import DataError, UserError, choices_text, did_you_mean
from damoxing.models.protocols import SentenceEncoder

OUTPUT_SUFFIXES = (".npy", ".parquet")


def embed(source: str | Path, texts: Sequence[str], batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """(N, hidden) float32 unit vectors for `texts`, from a pretrained run folder or a checkpoint folder / short name."""
    model, codec, max_length = load_encoder(source, device)
    return encode(model, codec, list(texts), max_length, batch_size)


def load_encoder(source: str | Path, device: str = "auto"):
    """(model with `.embed`, text codec, longest token count) for a run folder or a checkpoint."""
    from damoxing.models.runtime import pick_device
    from damoxing.runs.folder import is_run

    torch_device = pick_device(device)
    if is_run(source):
        from damoxing.inference.predictor import load

        predictor = load(source, device=str(torch_device))
        if not isinstance(predictor.model, SentenceEncoder):
            raise UserError(f"'{source}' is a run of model '{predictor.config.model.type}', which has no sentence encoder to embed with. "
                            "Give a run of model.type 'pretrained', or a checkpoint folder, or a short name such as 'minilm'.")
        return predictor.model, predictor.preprocessing.inputs, predictor.model.context_length
    from damoxing.data.text import TextCodec
    from damoxing.models import hf_checkpoint as ckpt
    from damoxing.models.pretrained import PretrainedModel

    ckpt.transformers_module()  # offline before the tokenizer may import transformers
    folder = ckpt.find_checkpoint(str(source))
    ckpt.read_checkpoint(folder)  # a clear error for a folder that is not a checkpoint or has no tokenizer
    codec = TextCodec.from_pretrained(folder)
    model = PretrainedModel.encoder(str(folder), codec.pad_id_).to(torch_device).eval()
    return model, codec, _sentence_length(folder) or model.context_length


def _sentence_length(folder: Path) -> Optional[int]:
    """sentence-transformers checkpoints say how many tokens their embeddings were trained on."""
    file = folder / "sentence_bert_config.json"
    try:
        value = json.loads(file.read_text()).get("max_seq_length") if file.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def encode(model, codec, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(codec.tokenizer_.to_str())
    tokenizer.enable_truncation(max_length=max_length)  # truncation keeps the closing special tokens
    ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=True)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    device = next(model.parameters()).device
    out = np.zeros((len(ids), model.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(1, max(len(ids[i]) for i in rows))
        batch = torch.full((len(rows), width), codec.pad_id_, dtype=torch.long)
        for r, i in enumerate(rows):
            batch[r, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
        out[rows] = model.embed(batch.to(device)).cpu().numpy()
    return out


def read_texts(path: Path, column: Optional[str] = None) -> list[str]:
    """A .txt file (one text per non-blank line) or a CSV/Parquet table's text column."""
    import pandas as pd

    from damoxing.data.text import as_texts, is_text_column

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Input file '{path}' does not exist.")
    name = path.name.lower()
    if name.endswith(".txt"):
        try:
            return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise DataError(f"'{path}' is not UTF-8 text ({e.reason} at byte {e.start}). Save it as UTF-8.") from None
    if name.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(path)
    elif name.endswith((".parquet", ".pq")):
        frame = pd.read_parquet(path)
    else:
        raise DataError(f"Input '{path}' must be a .txt file (one text per line) or a .csv / .parquet table with a text column.")
    columns = [str(c) for c in frame.columns]
    if column is None:
        texty = [c for c in columns if is_text_column(frame[c])]
        if len(texty) != 1:
            raise DataError(f"'{path}' has {len(texty)} text columns ({choices_text(texty) if texty else 'none'}); say which one to embed with --column.")
        column = texty[0]
    if column not in columns:
        raise DataError(f"'{path}' has no column '{column}'.{did_you_mean(column, columns)} Its columns: {choices_text(columns)}.")
    return as_texts(frame[column])


def write_embeddings(path: Path, texts: list[str], vectors: np.ndarray) -> Path:
    """.npy: the (N, D) float32 array; .parquet: columns text and embedding (a fixed-size list of D floats)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise UserError(f"--out '{path}' must end in {' or '.join(OUTPUT_SUFFIXES)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, vectors.astype(np.float32))
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(vectors.astype(np.float32).reshape(-1))
    table = pa.table({"text": pa.array(texts, pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    pq.write_table(table, path)
    return path
