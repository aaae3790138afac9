"""`damoxing generate RUN`: new data from a generative run. A language model continues a text
prompt (inference/text.py); a vae or gan draws new images (inference/images.py) or, trained on a
table, new rows in the table's own columns with a quality report (inference/tables.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from damoxing.core.console import note
from damoxing.core.errors import UserError
from damoxing.inference.images import generate_images
from damoxing.inference.predictor import load
from damoxing.inference.text import generate_text
from damoxing.runs.folder import check_run, read_json


def run_schema(run: str | Path) -> dict:
    """A run folder's data schema (task, kind, ...), read from its preprocessing.json without loading the model."""
    return read_json(check_run(run) / "preprocessing.json")["schema"]


def run_task(run: str | Path) -> str:
    """The task of a run folder, read from its preprocessing.json without loading the model."""
    return run_schema(run)["task"]


def generate(run: str | Path, *, prompt: str = "", max_new_tokens: int = 100, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None, seed: Optional[int] = None,
             on_text: Optional[Callable[[str], Any]] = None, n: Optional[int] = None, out: str | Path | None = None,
             interpolate: bool = False, target: Optional[str] = None):
    """New data from a saved run. Language models: the continuation of `prompt` (streamed to `on_text`
    piece by piece). vae/gan on images: `n` images (default 64) written to `out` (.png grid or .npz);
    vae/gan on a table: `n` rows (default: as many as the training split) written to `out` (.csv or
    .parquet) with FILE.quality.json and .html beside it (`target`: the label column of its utility check).
    Returns the file's path."""
    schema = run_schema(run)
    if schema["task"] == "generation":
        if schema["kind"] == "table":
            return generate_table(run, n=n, seed=0 if seed is None else seed, out=out, target=target, interpolate=interpolate)
        if target is not None:
            raise UserError(f"--target names the label column of a synthetic table; '{run}' generates images. Leave out --target.")
        return generate_images(run, n=64 if n is None else n, seed=0 if seed is None else seed, out=out, interpolate=interpolate)
    predictor = load(run)
    if predictor.task_name == "language_modeling":
        ignored = [name for name, given in (("--out", out is not None), ("--n", n is not None), ("--interpolate", interpolate),
                                            ("--target", target is not None)) if given]
        if ignored:  # image options a language model would silently ignore
            raise UserError(f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} for vae and gan runs (images or table rows); "
                            f"'{predictor.path}' is a language model, which continues --prompt and prints the text. "
                            "Leave them out, or redirect the output to a file.")
        return generate_text(predictor, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed, on_text=on_text)
    raise UserError(f"'{predictor.path}' is a {predictor.task_name} run ({predictor.config.model.type} on {predictor.schema.kind} data); "
                    "generate needs a generative run: a language model (task language_modeling, e.g. model gpt on a .txt corpus) "
                    "or a vae or gan (images or table rows). "
                    "Use `damoxing predict` for this run.")


def generate_table(run: str | Path, n: Optional[int], seed: int, out: str | Path | None, target: Optional[str] = None,
                   interpolate: bool = False) -> Path:
    """n rows (default: as many as the training split) from a vae/gan table run, written to `out`
    (.csv or .parquet) with FILE.quality.json and FILE.quality.html beside it; none may exist. Returns `out`."""
    from damoxing.inference.run_data import split_indices
    from damoxing.inference.tables import check_table_request, quality_path, summary_lines, synthesize
    from damoxing.report.synthetic import build_page
    from damoxing.verbs.outputs import write_file, write_json, write_table

    predictor = load(run)
    n = n if n is not None else max(len(split_indices(predictor.path).get("train", ())), 1)
    out = check_table_request(predictor.path, out, n, interpolate)
    made = synthesize(predictor, n, seed, target)
    page = build_page(made.report, made.train, made.rows, made.kinds, out.name)  # everything made before anything is written
    lines = summary_lines(made.report)
    written: list[Path] = []
    try:
        written.append(write_table(made.rows, out))
        written.append(write_json(quality_path(out), made.report))
        written.append(write_file(quality_path(out, ".html"), lambda tmp: tmp.write_text(page)))
    except BaseException:
        for file in written:  # all three or none: a rerun to the same --out must not be refused for a half-written set
            file.unlink(missing_ok=True)
        raise
    note(f"wrote {len(made.rows):,} synthetic rows x {made.rows.shape[1]} columns to {out}")
    for line in lines:
        note(line)
    note(f"quality report: {quality_path(out)} ({quality_path(out, '.html').name} to read)")
    return out
