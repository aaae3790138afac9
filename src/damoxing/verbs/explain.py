"""`damoxing explain RUN [INPUT] [--method M] [--rows N] [--out DIR]`: why the model predicted what it did.

    run -> rows (INPUT, or the run's test split) -> attributions per row (trust/explain.py, captum)
        -> the sanity check (randomized copies of the model) -> tables: permutation importance on the
        test split with intervals (trust/importance.py) -> a NEW folder: explain.json, explain.html,
        attributions as Parquet (tables, tokens) or NPZ (images, sequences, token ids)

The run folder itself is never touched; its report.html says how to get here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.console import warn
from damoxing.core.errors import DataError, UserError

DEFAULT_ROWS = {"table": 1000, "image": 32, "sequence": 32, "text": 50}
SANITY_ROWS = {"table": 200, "image": 16, "sequence": 16, "text": 20}
IMPORTANCE_ROWS = 10_000  # permutation importance on at most this many test rows (a seeded sample beyond)


@dataclass
class ExplainResult:
    """What `explain` returns: the folder written, its explain.json as a dict, and the attributions."""

    path: Path
    summary: dict
    attributions: Any  # damoxing.trust.explain.Attributions
    display: Any = None  # the raw rows explained (a DataFrame) where there are any


def explain(run: str | Path, input: str | Path | None = None, *, method: str = "integrated_gradients", rows: Optional[int] = None,
            out: str | Path | None = None, sanity: bool = True, repeats: int = 30, seed: int = 0) -> ExplainResult:
    """Attributions of a run's predictions for INPUT's rows (default: its test split), with checks.

    Args:
        method: integrated_gradients | saliency | occlusion | feature_ablation (what applies depends on the data).
        rows: explain the first N rows (default 1000 table rows, 32 images or sequences, 50 texts).
        out: a new folder (default: beside the run, explain-<run>-<time>).
        sanity: also attribute with randomized copies of the model and report the rank correlation.
        repeats: permutation importance repeats per column (tables).
    """

    from damoxing.inference.predictor import load
    from damoxing.trust.explain import (
        attribute,
        check_method,
        make_explainer,
        sanity_check,
    )
    from damoxing.verbs.outputs import result_folder

    predictor = load(run)
    kind, family = predictor.schema.kind, predictor.config.model.type
    if predictor.task_name not in ("classification", "regression"):
        raise UserError(f"explain attributes a classifier's or regressor's prediction to its inputs; '{predictor.path}' is a "
                        f"{predictor.task_name} run (model '{family}'), which has no single prediction per input to explain.")
    check_method(method, kind, family)
    folder = result_folder(predictor.path, out, "explain")
    n = rows or DEFAULT_ROWS[kind]
    x, display, row_ids = _inputs(predictor, input, n)
    explainer = make_explainer(predictor.model, family, predictor.preprocessing)
    target = _targets(predictor, x)
    started = time.perf_counter()
    result = attribute(explainer, x, target, method)
    seconds = time.perf_counter() - started
    summary = _summary(predictor, result, method, input, seconds)
    if sanity:
        k = min(len(x), SANITY_ROWS[kind])
        summary["sanity"] = sanity_check(explainer, x[:k], target[:k], method, result.values[:k],
                                         None if result.mask is None else result.mask[:k], draws=3 if kind != "text" else 1, seed=seed)
    importance = None
    if kind == "table":
        importance = _importance(predictor, explainer, repeats, seed)
        summary["importance"] = importance
    _check_convergence(summary)
    _write(folder, predictor, result, x.numpy(), summary, display, row_ids, importance)
    return ExplainResult(path=folder, summary=summary, attributions=result, display=display)


def _targets(predictor, x):
    """The output explained for each row: the predicted class (classification) or the one output (regression)."""
    import torch

    from damoxing.models.runtime import model_outputs

    if predictor.task_name == "regression":
        return torch.zeros(len(x), dtype=torch.long)
    return model_outputs(predictor.model, x, 1024).argmax(1).long()


# --------------------------------------------------------------------------- rows


def _inputs(predictor, input, n: int):
    """(model inputs (N, ...) as a tensor, the raw rows as a DataFrame or None, the rows' ids)."""
    import torch

    kind = predictor.schema.kind
    if input is not None:
        from damoxing.inference.predictor import read_table_or_arrays

        data, _ = read_table_or_arrays(input, kind, predictor.preprocessing.target, predictor.preprocessing)
        data = data.iloc[:n].reset_index(drop=True) if hasattr(data, "iloc") else np.asarray(data)[:n]
        if len(data) == 0:
            raise DataError(f"'{input}' has no rows to explain.")
        x = predictor.preprocessing.transform_inputs(data)
        return torch.as_tensor(x), data if hasattr(data, "iloc") else None, np.arange(len(data))
    if kind in ("table", "text"):
        from damoxing.runs.rows import split_indices, split_rows

        frame = split_rows(predictor.config, predictor.path, "test").iloc[:n].reset_index(drop=True)
        _check_not_empty(predictor, frame)
        return torch.as_tensor(predictor.preprocessing.transform_inputs(frame)), frame, split_indices(predictor.path, "test")[:n]
    from damoxing.runs.rows import split_indices
    from damoxing.verbs.evaluate import run_data

    x = run_data(predictor).x["test"][:n]  # the run's own arrays: its saved preprocessing on its test indices
    _check_not_empty(predictor, x)
    return torch.as_tensor(x), None, split_indices(predictor.path, "test")[:n]


def _check_not_empty(predictor, rows) -> None:
    if len(rows) == 0:
        raise DataError(f"'{predictor.path}' has no test split (data.split.test is 0); pass INPUT, a file of rows to explain.")


# --------------------------------------------------------------------------- global importance


def _importance(predictor, explainer, repeats: int, seed: int) -> Optional[dict]:
    """Permutation importance per original column on the run's test split (at most IMPORTANCE_ROWS rows)."""
    import torch

    from damoxing.runs.rows import split_rows
    from damoxing.trust.importance import permutation_importance

    frame = split_rows(predictor.config, predictor.path, "test")
    if len(frame) < 2:
        warn("the run's test split has fewer than 2 rows; permutation importance is left out.")
        return None
    if len(frame) > IMPORTANCE_ROWS:
        frame = frame.sample(IMPORTANCE_ROWS, random_state=seed).reset_index(drop=True)
    prep = predictor.preprocessing
    x = torch.as_tensor(prep.transform_inputs(frame))
    y = torch.as_tensor(prep.transform_targets(frame[prep.target].to_numpy()))
    return permutation_importance(predictor.model, x, y, predictor.task_name, explainer.groups, explainer.feature_names,
                                  n_repeats=repeats, seed=seed, output_scale=explainer.output_scale)


# --------------------------------------------------------------------------- summary and files


def _summary(predictor, result, method: str, input, seconds: float) -> dict:
    from damoxing.trust.explain import METHODS

    summary = {"run": str(predictor.path), "kind": result.kind, "model": predictor.config.model.type, "task": predictor.task_name,
               "method": method, "method_description": METHODS[method], "rows": int(len(result.target)),
               "input": str(input) if input is not None else "the run's test split", "seconds": round(seconds, 3),
               "explained_output": "the logit of the predicted class" if predictor.task_name == "classification" else
               "the prediction, in the target's units", "convergence_delta": result.delta_summary(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if result.kind == "table":
        mean_abs = np.abs(result.values).mean(0)
        order = np.argsort(-mean_abs)
        summary["mean_abs_attribution"] = [{"column": result.feature_names[i], "value": float(mean_abs[i])} for i in order]
    return summary


def _check_convergence(summary: dict) -> None:
    delta = summary.get("convergence_delta")
    if delta and delta["rows_converged"] < delta["rows"]:
        warn(f"{delta['rows'] - delta['rows_converged']} of {delta['rows']} rows did not converge even with {max(delta['steps_used'])} "
             f"integration steps ({delta['tolerance']}); their attributions do not add up to the output and are marked in the files.")


def _class_names(predictor, target: np.ndarray) -> list[str]:
    if predictor.task_name != "classification":
        return ["prediction"] * len(target)
    return [str(predictor.classes_[int(t)]) for t in target]


def _write(folder: Path, predictor, result, inputs: np.ndarray, summary: dict, display, row_ids: np.ndarray, importance: Optional[dict]) -> None:
    """explain.json, explain.html and the attributions (Parquet for tables and tokens, NPZ for arrays), atomically."""
    from damoxing.report.explain import build_explain_page, heatmap_grid
    from damoxing.runs.folder import RunWriter
    from damoxing.verbs.outputs import json_safe

    writer = RunWriter(folder)
    classes = _class_names(predictor, result.target)
    files = []
    if result.kind == "table":
        _table_files(writer, result, row_ids, classes, importance)
        files += ["attributions.parquet"] + (["importance.parquet"] if importance else [])
    else:
        arrays = {"attributions": result.values.astype(np.float32), "target": result.target.astype(np.int64),
                  "output": result.output, "baseline_output": result.baseline_output, "row": np.asarray(row_ids, dtype=np.int64)}
        if result.delta is not None:
            arrays.update(delta=result.delta, steps=result.steps, converged=result.converged)
        if result.kind == "text":
            arrays.update(mask=result.mask, ids=inputs.astype(np.int64))
        np.savez(writer.file("attributions.npz"), **arrays)
        files.append("attributions.npz")
    tokens = _tokens(predictor, inputs, result.mask) if result.kind == "text" else None
    if tokens is not None:
        _token_file(writer, result, tokens, row_ids)
        files.append("tokens.parquet")
    grid = None
    if result.kind in ("image", "sequence"):
        grid = heatmap_grid(inputs, result.values, classes)
        if grid:
            import base64

            writer.file("heatmaps.png").write_bytes(base64.b64decode(grid))
            files.append("heatmaps.png")
    summary["files"] = files + ["explain.json", "explain.html"]
    writer.write_text("explain.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    writer.write_text("explain.html", build_explain_page(summary, result, classes, display=display, tokens=tokens, grid=grid))
    writer.commit()


def _table_files(writer, result, row_ids, classes, importance) -> None:
    import pandas as pd

    frame = pd.DataFrame({"row": np.asarray(row_ids, dtype=np.int64), "target": classes, "output": result.output,
                          "baseline_output": result.baseline_output})
    if result.delta is not None:
        frame["delta"], frame["steps"], frame["converged"] = result.delta, result.steps, result.converged
    for j, name in enumerate(result.feature_names):
        frame[f"attribution[{name}]"] = result.values[:, j]
    frame.to_parquet(writer.file("attributions.parquet"), index=False)
    if importance:
        pd.DataFrame(importance["columns"]).to_parquet(writer.file("importance.parquet"), index=False)


def _tokens(predictor, ids: np.ndarray, masks: np.ndarray) -> list[list[str]]:
    """Each text's real tokens as readable pieces (byte-level 'Ġ' as a space, WordPiece '##' joined)."""
    codec = predictor.preprocessing.inputs
    wordpiece = type(codec.tokenizer_.model).__name__ == "WordPiece"
    return [[token_text(codec.tokenizer_.id_to_token(int(i)) or "", wordpiece) for i, m in zip(row, mask) if m]
            for row, mask in zip(ids, masks)]


def token_text(token: str, wordpiece: bool = False) -> str:
    """A vocabulary entry as the text it stands for: byte-level BPE marks a space with 'Ġ' and a newline with 'Ċ';
    WordPiece marks a word's continuation with '##', so its other tokens start a word (a space before)."""
    if wordpiece:
        return token[2:] if token.startswith("##") else " " + token
    return token.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ")


def _token_file(writer, result, tokens, row_ids) -> None:
    import pandas as pd

    records = []
    for i, pieces in enumerate(tokens):
        values = result.values[i][result.mask[i]]
        for position, (piece, value) in enumerate(zip(pieces, values)):
            records.append({"row": int(row_ids[i]), "position": position, "token": piece, "attribution": float(value)})
    pd.DataFrame(records, columns=["row", "position", "token", "attribution"]).to_parquet(writer.file("tokens.parquet"), index=False)


def summary_lines(result: ExplainResult) -> list[str]:
    """What `damoxing explain` prints: the method, the delta, the sanity check, the top columns."""
    s = result.summary
    lines = [f"{s['method']} on {s['rows']} {s['kind']} rows of {s['run']} ({s['seconds']:.2f} s)"]
    d = s.get("convergence_delta")
    if d:
        lines.append(f"convergence delta: max |delta| {d['max_abs']:.2e}, median relative {d['median_relative']:.2e}; "
                     f"{d['rows_converged']}/{d['rows']} rows converged (steps {d['steps_used']})")
    sanity = s.get("sanity")
    if sanity and sanity.get("global_spearman") is not None:
        lines.append(f"sanity check: rank correlation with a randomized model {sanity['global_spearman']:.2f} (global), "
                     f"{sanity['row_spearman_median']:.2f} (median per row); {'passed' if sanity['passed'] else 'NOT passed'} (< 0.5)")
    importance = s.get("importance")
    if importance:
        top = importance["columns"][:5]
        lines.append("permutation importance (loss increase, 95% CI): " + ", ".join(
            f"{r['column']} {r['importance']:.3g} ({r['ci_low']:.3g}-{r['ci_high']:.3g})" for r in top))
    lines.append(f"explain page: {result.path / 'explain.html'}")
    return lines
