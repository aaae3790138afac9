"""audit.html: one self-contained page of a fairness audit (the numbers of audit.json, with plots).

Per-group rates with their intervals as a table and as bars with error bars, the gaps between
groups, and for a mitigation the same before and after, its accuracy cost and McNemar's test.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from damoxing.report.html import STYLE, _esc, _num, _plot, _section, _table
from damoxing.report.plots import _figure, _png

LABELS = {"accuracy": "accuracy", "selection_rate": "selection rate", "true_positive_rate": "true positive rate",
          "false_positive_rate": "false positive rate", "base_rate": "base rate (true positives)", "mae": "MAE", "rmse": "RMSE",
          "bias": "bias (mean prediction - target)", "mean_prediction": "mean prediction", "mean_target": "mean target"}
GAPS = {"demographic_parity_difference": "demographic parity difference (largest - smallest selection rate)",
        "demographic_parity_ratio": "demographic parity ratio (smallest / largest selection rate)",
        "equalized_odds_difference": "equalized odds difference (larger of the TPR and FPR gaps)",
        "accuracy_difference": "accuracy difference (largest - smallest)", "mae_difference": "MAE difference",
        "rmse_difference": "RMSE difference", "bias_difference": "bias difference"}


def _interval(ci: Optional[list]) -> str:
    return f"{_num(ci[0])} – {_num(ci[1])}" if ci else ""


def _metrics_of(report: dict) -> list[str]:
    if report["task"] == "classification":
        return ["accuracy", "selection_rate", "true_positive_rate", "false_positive_rate"]
    return ["mae", "rmse", "bias"]


def group_table(report: dict) -> str:
    """One row per group: size, then every metric with its interval."""
    metrics = _metrics_of(report) + (["base_rate"] if report["task"] == "classification" else ["mean_prediction", "mean_target"])
    header = ["group", "rows"] + [h for m in metrics for h in (LABELS[m], "95% CI")]
    rows = []
    for g in report["groups"]:
        name = _esc(g["group"]) + (' <span class="note">(small)</span>' if g.get("small") else "")
        cells = [name, "#" + _num(g["count"])]
        for m in metrics:
            cells += ["#" + (_num(g[m]) if g[m] is not None else "undefined"), _interval(g.get(f"{m}_ci"))]
        rows.append(cells)
    return _table(header, rows)


def gaps_table(report: dict, after: Optional[dict] = None) -> str:
    header = ["between groups", "value", "95% CI"] + (["after mitigation", "95% CI"] if after else [])
    rows = []
    for name, v in report["between_groups"].items():
        row = [_esc(GAPS.get(name, name)), "#" + _num(v["value"]), _interval(v["ci"])]
        if after:
            a = after["between_groups"][name]
            row += ["#" + _num(a["value"]), _interval(a["ci"])]
        rows.append(row)
    return _table(header, rows)


def group_bars(report: dict, after: Optional[dict] = None) -> Optional[str]:
    """One panel per metric: a bar per group (and its 'after mitigation' twin) with the bootstrap interval as an error bar."""
    metrics = _metrics_of(report)
    groups = [g for g in report["groups"] if g["group"] != "overall"]
    fig, axes = _figure(3.2 * len(metrics), 3.0, len(metrics))
    x = np.arange(len(groups))
    series = [("before" if after else "model", report, "#4c72b0")] + ([("after", after, "#dd8452")] if after else [])
    width = 0.8 / len(series)
    for ax, metric in zip(axes, metrics):
        for k, (label, source, color) in enumerate(series):
            rows = {g["group"]: g for g in source["groups"]}
            values = np.array([np.nan if rows[g["group"]][metric] is None else rows[g["group"]][metric] for g in groups])
            cis = [rows[g["group"]].get(f"{metric}_ci") for g in groups]
            low = np.array([v - c[0] if c and not np.isnan(v) else 0.0 for v, c in zip(values, cis)])
            high = np.array([c[1] - v if c and not np.isnan(v) else 0.0 for v, c in zip(values, cis)])
            ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, yerr=[np.maximum(low, 0), np.maximum(high, 0)],
                   capsize=3, color=color, label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([str(g["group"])[:14] for g in groups], rotation=30 if len(groups) > 3 else 0, fontsize=8)
        ax.set_title(LABELS[metric], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if after:
            ax.legend(fontsize=7)
    return _png(fig)


def mitigation_section(m: dict, report: dict) -> str:
    paired, test = m["paired"], m["paired"]["mcnemar"]
    change = paired["accuracy_change"]
    facts = [["constraint", _esc(m["constraints"])], ["objective", _esc(m["objective"])], ["fitted on", _esc(m["fitted_on"])],
             ["accuracy before", "#" + _num(paired["accuracy_before"])], ["accuracy after", "#" + _num(paired["accuracy_after"])],
             ["accuracy change (the price)", "#" + f"{change:+.4f}"],
             ["McNemar (exact, paired)", f"b = {test['b']} rows right only before, c = {test['c']} right only after; p = {_num(test['p_value'])}"],
             ["new run (applies the thresholds)", f"<code>{_esc(m['run'])}</code>"]]
    if m.get("constant_groups"):
        facts.append(["constant decision for", _esc(", ".join(m["constant_groups"]))])
    rules = [[_esc(g), _esc(r["operator0"]), "#" + _num(r["threshold0"]) if not isinstance(r["threshold0"], str) else _esc(r["threshold0"]),
              "#" + _num(r["p0"]), _esc(r["operator1"]),
              "#" + _num(r["threshold1"]) if not isinstance(r["threshold1"], str) else _esc(r["threshold1"]), "#" + _num(r["p1"]),
              "#" + _num(r.get("p_ignore")) if "p_ignore" in r else ""]
             for g, r in m["rule"]["groups"].items()]
    return (_table(["", ""], facts)
            + "<h3>fairness before and after (same rows)</h3>" + gaps_table(report, m["after"])
            + _plot("per-group rates before and after", group_bars, report, m["after"])
            + "<h3>after mitigation, per group</h3>" + group_table(m["after"])
            + "<h3>the fitted rule (postprocess.json)</h3>" + _table(["group", "op", "threshold 0", "p0", "op", "threshold 1", "p1", "p_ignore"], rules)
            + '<p class="note">A row of a group is decided positive with probability p0 [s op t0] + p1 [s op t1] (s: the model\'s '
              "probability of the positive class; equalized odds mixes in a constant with weight p_ignore), using a fixed random seed, "
              "so the same input gets the same decisions. `damoxing predict` and `damoxing evaluate` on the new run apply it; "
              "the input rows must carry the sensitive column.</p>")


def build_audit_page(report: dict) -> str:
    """The HTML text of audit.html for the numbers in `report` (audit.json)."""
    title = f"audit of {report['run']} by {report['sensitive']}"
    intro = (f"<p>Rows: {_esc(report['data'])}. Intervals: {int(report['confidence'] * 100)}% percentile bootstrap, "
             f"{report['resamples']} resamples, stratified by group (each group's rows resampled within the group).")
    if report["task"] == "classification":
        intro += f" Positive class (selection rate, TPR, FPR): <b>{_esc(report['positive_class'])}</b>."
        if report.get("thresholded"):
            intro += " This run applies group thresholds: these are the rates of its thresholded decisions."
    intro += "</p>"
    small = [g["group"] for g in report["groups"] if g.get("small")]
    if small:
        intro += f'<p class="note">Groups under 20 rows ({_esc(", ".join(small))}): their rates are noisy.</p>'
    if report.get("one_outcome_groups"):
        intro += (f'<p class="note">Groups whose rows all have one outcome ({_esc(", ".join(report["one_outcome_groups"]))}): a true or '
                  "false positive rate is undefined there and left out of the gaps (fairlearn would count it as 0).</p>")
    if report.get("not_applicable"):
        intro += (f'<p class="note">Not computed for a regression run: {_esc(", ".join(report["not_applicable"]))}, because '
                  f"{_esc(report['why_not'])}.</p>")
    body = [
        _section("Groups", intro + group_table(report) + _plot("per-group rates", group_bars, report)),
        _section("Between groups", gaps_table(report)),
    ]
    if report.get("mitigation"):
        body.append(_section("Mitigation", mitigation_section(report["mitigation"], report)))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_esc(title)} · damoxing</title>"
            f"<style>{STYLE}</style></head><body><header><h1>Fairness audit</h1><p>{_esc(title)}</p></header><main>"
            + "".join(body)
            + f'<p class="note">Written by damoxing on {time.strftime("%Y-%m-%d %H:%M")}; the numbers are in audit.json.</p>'
            "</main></body></html>\n")
