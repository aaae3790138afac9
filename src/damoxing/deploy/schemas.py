"""Request and response models of `damoxing serve`, generated from a run's own data schema.

A table run's rows have one field per feature column, typed as it was trained (numbers for numeric
columns, strings for categorical ones; null or a missing field is imputed as in training); a text
run takes texts; an image or sequence run takes arrays of the trained shape. Unknown fields,
NaN and infinities are refused (422 naming the field), so `/docs` shows the run's real fields.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, confloat, create_model

FiniteFloat = confloat(allow_inf_nan=False)
STRICT = ConfigDict(extra="forbid")


def row_model(preprocessing) -> type[BaseModel]:
    """A table run's one row: {column: number | string | null} for each feature column."""
    fields: dict[str, Any] = {}
    for column in preprocessing.inputs.columns_:
        if column["kind"] == "numeric":
            fields[column["name"]] = (Optional[FiniteFloat], dict(description=f"numeric; null is imputed as {column['impute']:.4g}",
                                                                 examples=[round(float(column["impute"]), 4)]))
        else:
            cats = [str(c) for c in column["categories"]]
            shown = ", ".join(cats[:20]) + (" ..." if len(cats) > 20 else "")
            fields[column["name"]] = (Optional[str], dict(max_length=10_000, examples=[str(column["impute"])],
                                                          description=f"category: {shown} (others go to the unknown bucket; null is imputed)"))
    return create_model("Row", __config__=ConfigDict(extra="forbid", populate_by_name=False), **_safe(fields))


def _safe(fields: dict[str, Any]) -> dict[str, Any]:
    """Column names as pydantic fields: names pydantic cannot take as attributes get an alias."""
    out = {}
    for i, (name, (kind, info)) in enumerate(fields.items()):
        if name.isidentifier() and not name.startswith(("_", "model_")) and not hasattr(BaseModel, name):
            out[name] = (kind, Field(None, **info))
        else:
            out[f"field_{i}"] = (kind, Field(None, alias=name, **info))
    return out


def predict_request(preprocessing, max_rows: int) -> type[BaseModel]:
    """The body of POST /predict for this run's data kind."""
    kind = preprocessing.schema.kind
    if kind == "table":
        row = row_model(preprocessing)
        items: Any = (list[row], Field(..., min_length=1, max_length=max_rows, description=f"1 to {max_rows} rows"))
        return create_model("PredictRequest", __config__=STRICT, rows=items)
    if kind == "text":
        texts = list[str]
        return create_model("PredictRequest", __config__=STRICT,
                            texts=(texts, Field(..., min_length=1, max_length=max_rows, description=f"1 to {max_rows} texts")))
    shape = tuple(preprocessing.schema.input_shape)
    nested: Any = FiniteFloat
    for _ in (shape[1:] if kind == "image" and len(shape) == 3 and shape[0] == 1 else shape):
        nested = list[nested]
    return create_model("PredictRequest", __config__=STRICT,
                        inputs=(list[nested], Field(..., min_length=1, max_length=max_rows,
                                                    description=f"1 to {max_rows} arrays, each of shape {shape}")))


def predict_response(schema) -> type[BaseModel]:
    if schema.task == "classification":
        return create_model("PredictResponse", predictions=(list[str], ...),
                            probabilities=(list[dict[str, float]], Field(..., description="per row: class -> probability")))
    return create_model("PredictResponse", predictions=(list[Union[float, list[float]]], ...))


class GenerateRequest(BaseModel):
    """POST /generate for a language model (prompt, sampling) or an image generator (n, seed)."""

    model_config = STRICT
    prompt: str = Field("", max_length=100_000)
    max_new_tokens: int = Field(50, ge=1, le=2000)
    temperature: FiniteFloat = Field(1.0, gt=0, le=100)
    top_k: Optional[int] = Field(None, ge=1)
    top_p: Optional[FiniteFloat] = Field(None, gt=0, le=1)
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(16, ge=1, le=256, description="images or table rows (vae/gan)")
    stream: bool = Field(True, description="language models: server-sent events, one `data:` per piece of text")


class ImagesResponse(BaseModel):
    png_base64: str
    n: int
    seed: int


class TextResponse(BaseModel):
    text: str
    warnings: list[str] = []


class EmbedRequest(BaseModel):
    model_config = STRICT
    texts: list[str] = Field(..., min_length=1)


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
