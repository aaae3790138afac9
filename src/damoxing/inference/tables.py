"""Synthetic tables from generative runs (vae, gan trained on a table): `damoxing generate RUN --n
1000 --out synthetic.csv`.

Rows come out of the model in its own units (scaled numbers, one-hot categories) and are decoded
into the original columns by the run's fitted TabularPreprocessor (`inverse_transform`: scaling
undone, numbers clipped to their training range, whole-number columns rounded, categories
decoded, dates put back together, each column's missing rate kept). Their report holds the
fidelity, privacy and utility blocks of evaluation/synthetic.py, measured against the run's own
training and test rows (read again from its data source) beside an independent-columns baseline
and the real held-out rows. `damoxing generate` (verbs/generate.py) writes both: the table to
--out (.csv or .parquet), the report beside it as FILE.quality.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from damoxing.core.console import warn
from damoxing.core.errors import DataError, UserError
from damoxing.inference.run_data import run_rows

TABLE_SUFFIXES = (".csv", ".parquet")
MAX_ROWS = 1_000_000
MIN_MEASURED = 10  # fewer synthetic rows than this are written without a quality report
LABEL_NAMES = ("label", "target", "y", "class")


def quality_path(out: Path, suffix: str = ".json") -> Path:
    """synthetic.csv -> synthetic.quality.json (or .quality.html)"""
    return out.with_name(out.stem + ".quality" + suffix)


def check_table_request(path: Path, out: Optional[Path], n: int, interpolate: bool) -> Path:
    """The --out file (.csv/.parquet; neither it nor its quality report may exist yet) of a request for n rows."""
    if interpolate:
        raise UserError(f"--interpolate draws images along a line in a vae's latent space; '{path}' generates table rows. Leave out --interpolate.")
    if out is None:
        raise UserError("Say where to write the rows: --out FILE.csv or --out FILE.parquet (the quality report goes beside it, FILE.quality.json).")
    out = Path(out)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise UserError(f"--out '{out}' must end in .csv or .parquet: '{path}' generates table rows.")
    if n < 1 or n > MAX_ROWS:
        raise UserError(f"--n is {n}; ask for between 1 and {MAX_ROWS:,} rows.")
    for file in (out, quality_path(out), quality_path(out, ".html")):
        if file.exists():
            raise UserError(f"'{file}' already exists; generate never overwrites a file. Choose another --out, or move the file away.")
    return out


@dataclass
class Synthetic:
    """Generated rows, their quality report, and the real rows the report compared them with."""

    rows: pd.DataFrame
    report: dict[str, Any]  # fidelity, privacy and utility blocks, or `skipped` with the reason
    train: Optional[pd.DataFrame]  # the run's real training rows (None: its data could not be read again)
    kinds: dict[str, str]  # column -> numeric | categorical | date


def synthesize(predictor, n: int, seed: int = 0, target: Optional[str] = None) -> Synthetic:
    """n rows from a vae/gan table run in its original columns, and their quality report.

    Args:
        predictor: the loaded run (inference.predictor.load).
        n: how many rows.
        seed: the noise seed (and the seed of the missing values and of the quality checks).
        target: the label column for the train-synthetic-test-real check (default: data.target,
            else a column named label/target/y/class; None found: the check is skipped).
    """
    target = label_column(predictor, target)
    rows = sample_rows(predictor, n, seed)
    kinds = {str(c["name"]): c["kind"] for c in predictor.preprocessing.inputs.columns_}
    report: dict[str, Any] = {"run": str(predictor.path), "rows": len(rows), "seed": seed, "columns": kinds}
    try:
        splits = run_rows(predictor)
    except (DataError, OSError) as e:
        warn(f"the quality report is skipped: the run's data cannot be read again ({e})")
        return Synthetic(rows, {**report, "skipped": f"the run's data cannot be read again: {e}"}, None, kinds)
    splits = {name: part[list(rows.columns)] for name, part in splits.items()}  # the columns the model reads
    train = splits.get("train", pd.DataFrame(columns=list(rows.columns)))
    held_out = next((splits[s] for s in ("test", "val") if len(splits.get(s, ())) >= 2), None)
    report.update(quality(predictor, rows, train, held_out, kinds, target, seed))
    return Synthetic(rows, report, train, kinds)


def sample_rows(predictor, n: int, seed: int) -> pd.DataFrame:
    """n decoded rows from a table run's generator (the same seed: the same rows, missing values included)."""
    from damoxing.tasks import draw_samples

    return predictor.preprocessing.inputs.inverse_transform(draw_samples(predictor.model, n, seed).cpu().numpy(), seed=seed)


def records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: missing values as None, numpy scalars as plain numbers."""
    return json.loads(rows.to_json(orient="records", date_format="iso"))


def label_column(predictor, target: Optional[str]) -> Optional[str]:
    columns = [str(c) for c in predictor.preprocessing.inputs.feature_columns_]  # the columns the rows have
    if target is not None:
        if target not in columns:
            from damoxing.core.errors import choices_text, did_you_mean

            raise UserError(f"--target '{target}' is not one of the run's columns.{did_you_mean(target, columns)} "
                            f"Its columns: {choices_text(columns)}.")
        return target
    configured = predictor.config.data.target
    if configured in columns:
        return configured
    return next((c for c in columns if c.lower() in LABEL_NAMES), None)


def quality(predictor, synthetic: pd.DataFrame, train: pd.DataFrame, held_out: Optional[pd.DataFrame], kinds: dict[str, str],
            target: Optional[str], seed: int) -> dict[str, Any]:
    """The fidelity / privacy / utility blocks (evaluation/synthetic.py) of `synthetic` against the run's real rows."""
    from damoxing.evaluation import synthetic as measure

    if len(train) < 2:
        return {"skipped": "the run's training split has fewer than 2 rows"}
    if len(synthetic) < MIN_MEASURED:
        return {"skipped": f"{len(synthetic)} rows are too few to measure (at least {MIN_MEASURED}); generate more with --n"}
    encode = predictor.preprocessing.inputs.transform
    baseline = measure.independent_columns(train, len(synthetic), seed)
    train_x, synthetic_x, baseline_x = encode(train), encode(synthetic), encode(baseline)
    report: dict[str, Any] = {"fidelity": {"synthetic": measure.fidelity(train, train_x, synthetic, synthetic_x, kinds, seed),
                                           "baseline": measure.fidelity(train, train_x, baseline, baseline_x, kinds, seed)}}
    if held_out is None:
        skipped = {"skipped": "the run has no held-out rows (test or val split) to compare with"}
        return {**report, "privacy": skipped, "utility": skipped}
    held_x = encode(held_out)
    report["held_out_rows"] = len(held_out)
    report["fidelity"]["reference"] = measure.fidelity(train, train_x, held_out, held_x, kinds, seed)
    report["privacy"] = {"synthetic": measure.closeness(synthetic_x, train_x, held_x, seed),
                         "baseline": measure.closeness(baseline_x, train_x, held_x, seed)}
    if target is None:
        report["utility"] = {"skipped": "no label column: pass --target COLUMN (or set data.target) to train on synthetic rows and test on real ones"}
    else:
        report["utility"] = measure.utility(train, synthetic, held_out, target, _encoder(predictor), seed)
    return report


def _encoder(predictor):
    """An input encoding fitted afresh on some rows (the run's column kinds, its preprocessing settings)."""
    from damoxing.data.preprocess import TabularPreprocessor

    saved = predictor.preprocessing.inputs
    kinds = {c["name"]: c["kind"] for c in saved.columns_}
    formats = {c["name"]: c.get("format") for c in saved.columns_ if c["kind"] == "date"}

    def fit(rows: pd.DataFrame, columns: list[str]):
        encoder = TabularPreprocessor(saved.numeric_impute, saved.scaling, saved.categorical, saved.max_categories,
                                      saved.min_category_count)
        encoder.fit(rows, columns, kinds={c: kinds[c] for c in columns}, date_formats=formats)
        return encoder.transform

    return fit


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for the console: each block's headline numbers, synthetic beside its yardsticks."""
    if "fidelity" not in report:
        return []
    f = report["fidelity"]
    arms = [a for a in ("synthetic", "baseline", "reference") if a in f]
    names = {"synthetic": "synthetic", "baseline": "independent columns", "reference": "real held-out"}
    lines = ["fidelity vs training rows: " + "; ".join(
        f"{names[a]}: column distance {_fmt(f[a]['mean_column_distance'])}, corr diff {_fmt(f[a]['correlation'].get('mean_abs'))}, "
        f"two-sample AUC {_fmt(f[a]['two_sample_auc'])}" for a in arms)]
    p = report.get("privacy", {})
    if "synthetic" in p:
        s = p["synthetic"]
        lines.append(f"privacy: {s['share_closer_to_train']:.2f} (sd {s['share_spread']:.2f}) of synthetic rows closer to a training row "
                     f"than to a held-out one (0.5 expected without copying), {s['copies']} exact copies, median distance to closest record "
                     f"{s['dcr_median']:.3f} (held-out rows: {s['holdout_dcr_median']:.3f}), membership-inference AUC "
                     f"{_fmt(s.get('membership_auc'))} (0.5: membership not given away)")
    u = report.get("utility", {})
    if "synthetic" in u:
        key = "accuracy" if u["task"] == "classification" else "r2"
        lines.append(f"utility ({u['target']}, test on {u['test_rows']} real rows): trained on synthetic {key} "
                     f"{_fmt(u['synthetic'].get(key), 4)}, on real {_fmt(u['real'].get(key), 4)}, baseline {_fmt(u['baseline'][key], 4)}")
    return lines


def _fmt(value: Any, digits: int = 3) -> str:
    """A number to `digits` places; '-' for one not measured (None, or an error entry's missing key)."""
    return "-" if value is None else f"{value:.{digits}f}"
