"""`damoxing audit RUN --sensitive COLUMN [--data FILE] [--mitigate demographic_parity|equalized_odds]`.

    run -> its test rows (read again from the source by splits.npz, or --data) -> the model's
        decisions -> group metrics with intervals (trust/audit.py) -> audit folder (audit.json, audit.html)
    --mitigate: validation rows -> ThresholdOptimizer -> postprocess.json -> a NEW run folder,
        and before/after fairness and accuracy on the same test rows with McNemar's test

The sensitive column need not be a model input (data.exclude): it is read from the rows.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from damoxing.core.console import note, warn
from damoxing.core.errors import (
    ConfigError,
    DataError,
    UserError,
    choices_text,
    did_you_mean,
)

# files a mitigated run gets fresh rather than copied
REWRITTEN = ("report.html", "metrics.json", "manifest.json", "predictions_test.npz", "postprocess.json")


@dataclass
class AuditResult:
    """What `audit` returns: the audit folder, everything in its audit.json, and the mitigated run (if any)."""

    path: Path
    report: dict
    mitigated_run: Optional[Path] = None


def audit(run: str | Path, sensitive: str, *, data: str | Path | None = None, mitigate: Optional[str] = None,
          objective: str = "accuracy", positive: Optional[str] = None, out: str | Path | None = None,
          mitigated_out: str | Path | None = None, n_resamples: int = 1000, seed: int = 0) -> AuditResult:
    """Audit a run's decisions across the groups of `sensitive`; optionally mitigate with group thresholds.

    Args:
        run: a run folder (a classifier or regressor on a table or a table of texts).
        sensitive: the column whose groups are compared; it may be left out of the model's inputs.
        data: a labelled CSV/Parquet holding the model's inputs, the target and `sensitive`
            (default: the run's own test split, read again from its source).
        mitigate: demographic_parity | equalized_odds: fit fairlearn's ThresholdOptimizer on the run's
            validation split and write a new run applying its thresholds (binary classifiers).
        objective: what the thresholds maximize under the constraint: accuracy | balanced_accuracy.
        positive: the class whose selection rate and TPR/FPR are measured (default: the second
            class of a binary classifier, as sorted; required for more than two classes).
        out, mitigated_out: the audit folder and the mitigated run (default beside the run).
    """
    from damoxing.inference.predictor import load
    from damoxing.trust.audit import CONSTRAINTS, OBJECTIVES
    from damoxing.verbs.outputs import result_folder

    predictor = load(run)
    _check_request(predictor, mitigate, objective, CONSTRAINTS, OBJECTIVES)
    folder = result_folder(predictor.path, out, "audit")
    rows, where = _rows(predictor, data)
    keys = _sensitive_keys(rows, sensitive, where)
    report = _audit_rows(predictor, rows, keys, sensitive, where, positive, n_resamples, seed)
    report.update(run=str(predictor.path), sensitive=sensitive, data=str(data) if data else "the run's test split", created=_now())
    mitigated = None
    if mitigate:
        mitigated = result_folder(predictor.path, mitigated_out, "mitigated", "--mitigated-out")
        report["mitigation"] = _mitigate(predictor, rows, keys, report, mitigate, objective, seed, n_resamples, mitigated)
    _write_folder(folder, report)
    return AuditResult(path=folder, report=report, mitigated_run=mitigated)


def _check_request(predictor, mitigate, objective, constraints, objectives) -> None:
    if predictor.task_name not in ("classification", "regression"):
        raise UserError(f"audit compares a classifier's or regressor's errors across groups; '{predictor.path}' is a "
                        f"{predictor.task_name} run.")
    if predictor.schema.kind not in ("table", "text"):
        raise UserError(f"audit reads the sensitive column from table rows; '{predictor.path}' was trained on {predictor.schema.kind} "
                        "data, which has no columns. Audit a model trained on a CSV/Parquet table.")
    if mitigate is None:
        return
    if mitigate not in constraints:
        raise ConfigError(f"--mitigate '{mitigate}' is not a constraint.{did_you_mean(mitigate, constraints)} Valid: {choices_text(constraints)}.")
    if objective not in objectives:
        raise ConfigError(f"--objective '{objective}' is not valid.{did_you_mean(objective, objectives)} Valid: {choices_text(objectives)}.")
    if predictor.task_name != "classification":
        raise UserError("--mitigate picks a decision threshold per group, and a regression model makes numbers, not decisions; "
                        "audit a regression run without --mitigate (its per-group errors are still reported).")
    if len(predictor.classes_) != 2:
        raise UserError(f"--mitigate (fairlearn's ThresholdOptimizer) works on yes/no decisions; this classifier has {len(predictor.classes_)} "
                        f"classes ({choices_text(map(str, predictor.classes_))}). Audit it without --mitigate.")
    if predictor.postprocess is not None:
        raise UserError(f"'{predictor.path}' already applies group thresholds (postprocess.json). Mitigate the original run"
                        + (f" ({predictor.postprocess.derived_from})." if predictor.postprocess.derived_from else "."))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------- rows


def _rows(predictor, data: str | Path | None):
    """(raw labelled rows as a DataFrame, a phrase naming them)."""
    from damoxing.inference.predictor import read_table_or_arrays
    from damoxing.runs.rows import split_rows

    target = predictor.preprocessing.target
    if data is None:
        rows = split_rows(predictor.config, predictor.path, "test")
        if len(rows) == 0:
            raise DataError(f"'{predictor.path}' has no test split (data.split.test is 0); pass --data FILE with labelled rows.")
        return rows, "the test split"
    frame, targets = read_table_or_arrays(data, predictor.schema.kind, target, predictor.preprocessing)
    if targets is None:
        raise DataError(f"'{data}' has no '{target}' column; an audit compares decisions with the truth, so it needs labelled rows.")
    missing = frame[target].isna().to_numpy()
    if missing.any():
        warn(f"dropped {int(missing.sum())} row(s) of '{data}' whose target '{target}' is missing.")
        frame = frame.loc[~missing].reset_index(drop=True)
    return frame, f"'{data}'"


def _sensitive_keys(rows, sensitive: str, where: str) -> np.ndarray:
    from damoxing.inference.postprocess import MISSING_GROUP, group_keys

    if sensitive not in rows.columns:
        columns = [str(c) for c in rows.columns]
        raise DataError(f"The sensitive column '{sensitive}' is not in {where}.{did_you_mean(sensitive, columns)} Its columns: {choices_text(columns)}.")
    keys = group_keys(rows[sensitive])
    n_missing = int((keys == MISSING_GROUP).sum())
    if n_missing:
        note(f"{n_missing} row(s) have no '{sensitive}' value; they form the group '{MISSING_GROUP}'.")
    return keys


def _targets(predictor, rows) -> np.ndarray:
    values = rows[predictor.preprocessing.target].to_numpy()
    if predictor.task_name == "classification":
        return predictor.preprocessing.labels.transform(values)
    return np.asarray(values, dtype=np.float64)


def _positive_index(predictor, positive: Optional[str]) -> int:
    classes = [str(c) for c in predictor.classes_]
    if positive is None:
        if len(classes) > 2:
            raise UserError(f"This classifier has {len(classes)} classes; name the one whose selection rate and true/false positive "
                            f"rates are compared with --positive CLASS (one of {choices_text(classes)}).")
        return 1
    if positive not in classes:
        raise UserError(f"--positive '{positive}' is not a class of this run.{did_you_mean(positive, classes)} Its classes: {choices_text(classes)}.")
    return classes.index(positive)


# --------------------------------------------------------------------------- the audit


def _audit_rows(predictor, rows, keys, sensitive, where, positive, n_resamples, seed) -> dict:
    from damoxing.trust.audit import (
        audit_classification,
        audit_regression,
        check_groups,
    )

    check_groups(keys, sensitive, where)
    y = _targets(predictor, rows)
    outputs = predictor.outputs(rows)
    if predictor.task_name == "regression":
        return audit_regression(y, predictor.preprocessing.decode_regression(outputs), keys, n_resamples, seed)
    index = _positive_index(predictor, positive)
    report = audit_classification(y, predictor.decisions(outputs, rows), keys, index, n_resamples, seed)
    report["positive_class"] = str(predictor.classes_[index])
    report["thresholded"] = predictor.postprocess is not None
    return report


# --------------------------------------------------------------------------- mitigation


def _mitigate(predictor, rows, keys, before: dict, constraints: str, objective: str, seed: int, n_resamples: int,
              path: Path) -> dict:
    """Fit group thresholds on the validation split, compare on the audited rows, write the new run."""
    from damoxing.runs.rows import split_rows
    from damoxing.trust.audit import (
        audit_classification,
        constant_groups,
        expected_selection,
        fit_group_thresholds,
        paired_accuracy,
    )

    sensitive, index = before["sensitive"], [str(c) for c in predictor.classes_].index(before["positive_class"])
    val = split_rows(predictor.config, predictor.path, "val")
    if len(val) == 0:
        raise DataError(f"'{predictor.path}' has no validation split (data.split.val is 0), and the thresholds are fitted on it "
                        "(fitting them on the test rows would grade them on what they were fitted to). Train with a validation split.")
    val_keys = _sensitive_keys(val, sensitive, "the validation split")
    unseen = sorted(set(keys.tolist()) - set(val_keys.tolist()))
    if unseen:
        raise DataError(f"Group(s) {choices_text(unseen)} of '{sensitive}' are in the audited rows but not in the validation split, so no "
                        "threshold can be fitted for them. Use more validation data (data.split.val) or merge small groups.")
    val_proba = predictor.outputs(val)
    rule = fit_group_thresholds(val_proba, _targets(predictor, val), val_keys, constraints, objective, index, before["positive_class"],
                                sensitive, seed, derived_from=str(predictor.path))
    selection = expected_selection(rule, val_proba, val_keys)
    constant = constant_groups(selection)
    if constant:
        warn(f"the fitted thresholds decide (nearly) the same for every validation row of {choices_text(constant)} (positive for "
             f"{', '.join(f'{selection[g]:.1%}' for g in constant)}): under this constraint the best rule there is a constant decision. "
             "Compare with the base rates before using it.")
    y = _targets(predictor, rows)
    proba = predictor.outputs(rows)
    decisions_before, decisions_after = proba.argmax(axis=1), rule.decide(proba, rows[sensitive])
    after = audit_classification(y, decisions_after, keys, index, n_resamples, seed)
    result = {"constraints": constraints, "objective": rule.objective, "fitted_on": f"the validation split ({len(val)} rows)",
              "seed": seed, "rule": rule.to_dict(), "validation_selection_rate": selection, "constant_groups": constant, "after": after,
              "paired": paired_accuracy(y, decisions_before, decisions_after), "run": str(path)}
    _write_mitigated_run(predictor, rule, path, result)
    return result


def _write_mitigated_run(predictor, rule, path: Path, mitigation: dict) -> None:
    """A new run folder: the original's files, postprocess.json, and the metrics, predictions, manifest and
    report of its thresholded decisions, scored exactly as `damoxing evaluate` scores the new run."""
    from damoxing.inference.postprocess import FILE
    from damoxing.models.runtime import autocast_context
    from damoxing.runs.folder import RunWriter, read_json
    from damoxing.tasks import EvaluationSettings
    from damoxing.verbs.evaluate import run_data, split_decider

    original = predictor.path
    writer = RunWriter(path)
    for item in sorted(original.iterdir()):
        if item.name in REWRITTEN or item.name.startswith("."):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, writer.file(item.name))
    writer.write_json(FILE, rule.to_dict())
    predictor.postprocess = rule  # this Predictor now decides as the new run will
    predictions: dict = {}
    metrics = predictor.task.evaluate(predictor.model, run_data(predictor), EvaluationSettings.from_config(predictor.config),
                                      autocast_context(predictor.config.train, predictor.device), predictions=predictions,
                                      **split_decider(predictor))
    metrics["mitigation"] = {k: mitigation[k] for k in ("constraints", "objective", "fitted_on", "seed", "constant_groups")}
    writer.write_json("metrics.json", metrics)
    for split, arrays in predictions.items():
        np.savez(writer.file(f"predictions_{split}.npz"), **arrays)
    manifest = read_json(original / "manifest.json")
    manifest.update(created=_now(), command=sys.argv, derived_from={
        "run": str(original), "by": "damoxing audit --mitigate", "sensitive": rule.sensitive, "constraints": rule.constraints,
        "objective": rule.objective, "file": FILE, "note": "same model and weights as the run it derives from; decisions pass "
                                                           "through the group thresholds in postprocess.json"})
    writer.write_manifest(manifest)
    if predictor.config.tracking.report:
        from damoxing.report.html import write_report

        write_report(writer.tmp, writer.tmp / "report.html", run_name=path.name)
    writer.commit()


# --------------------------------------------------------------------------- the audit folder


def _write_folder(folder: Path, report: dict) -> None:
    from damoxing.report.audit import build_audit_page
    from damoxing.runs.folder import RunWriter
    from damoxing.verbs.outputs import json_safe

    writer = RunWriter(folder)
    writer.write_text("audit.json", json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    writer.write_text("audit.html", build_audit_page(report))
    writer.commit()


def summary_lines(result: AuditResult) -> list[str]:
    """What `damoxing audit` prints under its table: the gaps, and a mitigation's effect and price."""
    report = result.report
    lines = []
    for name, v in report["between_groups"].items():
        ci = f" (95% CI {v['ci'][0]:.3f}-{v['ci'][1]:.3f})" if v["ci"] else ""
        lines.append(f"{name}: {v['value']:.3f}{ci}" if v["value"] is not None else f"{name}: undefined")
    if report.get("not_applicable"):
        lines.append(f"not computed for a regression run: {', '.join(report['not_applicable'])} ({report['why_not']})")
    m = report.get("mitigation")
    if m:
        gaps_before, gaps_after = report["between_groups"], m["after"]["between_groups"]
        p = m["paired"]
        for name in ("equalized_odds_difference", "demographic_parity_difference"):
            lines.append(f"{name}: {gaps_before[name]['value']:.3f} -> {gaps_after[name]['value']:.3f} after {m['constraints']} thresholds")
        lines.append(f"accuracy: {p['accuracy_before']:.4f} -> {p['accuracy_after']:.4f} ({p['accuracy_change']:+.4f}); "
                     f"McNemar p = {p['mcnemar']['p_value']:.3g} ({p['mcnemar']['b']} rows right only before, {p['mcnemar']['c']} only after)")
        lines.append(f"mitigated run (predict/evaluate apply its thresholds): {m['run']}")
    lines.append(f"audit page: {result.path / 'audit.html'}")
    return lines
