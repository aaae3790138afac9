"""`damoxing embed RUN_OR_CHECKPOINT INPUT --out FILE`: sentence embeddings of every text in a file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from damoxing.core.console import note
from damoxing.core.errors import UserError
from damoxing.inference.embeddings import embed, read_texts, write_embeddings

__all__ = ["embed", "embed_file"]


def embed_file(source: str | Path, input: str | Path, out: str | Path, column: Optional[str] = None, batch_size: int = 64) -> Path:
    """Embed the texts of a .txt / CSV / Parquet file into `out` (.npy: an N x D array; .parquet: text, embedding)."""
    out = Path(out)
    if out.suffix.lower() not in (".npy", ".parquet"):
        raise UserError(f"--out '{out}' must end in .npy or .parquet.")
    if batch_size < 1:
        raise UserError(f"--batch-size is {batch_size}; it must be 1 or more.")
    local = Path(source)
    if not local.exists() and local.parent != Path(".") and local.parent.is_dir():  # runs/nope: a path, not a hub name
        raise UserError(f"'{source}' does not exist: '{local.parent}' holds no '{local.name}'. Give a run folder of model.type "
                        "'pretrained', a checkpoint folder, or a short name such as 'minilm'.")
    texts = read_texts(Path(input), column)
    if not texts:  # an empty file would embed to a (0, D) array without a word
        raise UserError(f"'{input}' holds no text to embed (it is empty or only blank lines); give a file with one text per line.")
    vectors = embed(source, texts, batch_size=batch_size)
    write_embeddings(out, texts, vectors)
    note(f"embedded {len(texts)} texts into {vectors.shape[1]} dimensions")
    return out
