"""report.html: one self-contained page about one run, a model card that works offline.

Everything comes from the run folder (config.yaml, metrics.json, history.jsonl, manifest.json,
preprocessing.json, predictions_test.npz); plots are embedded as base64 PNG, styles are inline,
there is no script and no external asset. Sections it cannot fill for a run (a task it does not
know, a file that is missing) are left out; whatever metrics, history and manifest hold is still
shown, as tables and JSON.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.evaluation.metrics import ci_label
from damoxing.report import plots

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
header{background:#24292f;color:#fff;padding:20px 24px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;color:#d0d7de}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:18px;margin:0 0 12px}h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;font-size:14px;margin:4px 0 8px}
th,td{border-bottom:1px solid #d8dee4;padding:4px 12px 4px 0;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{color:#57606a;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:150px;background:#fff}
.card .label{color:#57606a;font-size:12px}.card .value{font-size:22px;font-weight:600}
.card .sub{color:#57606a;font-size:12px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
pre{background:#f6f8fa;border:1px solid #d8dee4;border-radius:6px;padding:10px;overflow:auto;font-size:12px}
.note{color:#57606a;font-size:13px}details summary{cursor:pointer;color:#0969da}
"""


# --------------------------------------------------------------------------- reading the run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_history(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if isinstance(r, dict)]


def _read_predictions(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return _esc(value)


def _si(value: Optional[float], unit: str) -> str:
    if value is None:
        return "not measured"
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _bytes(value: Optional[float]) -> str:
    if value is None:
        return "not measured"
    for factor, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{int(value)} B"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """rows hold HTML already escaped; a cell starting with '#' is right-aligned (a number)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c[1:]}</td>' if c.startswith("#") else f"<td>{c}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(alt: str, draw, *args) -> str:
    """An <img> of `draw(*args)` (a base64 PNG, or None: nothing to draw); a plot that cannot be
    drawn leaves a one-line note instead, never a broken report."""
    try:
        png = draw(*args)
    except ImportError as e:
        return f'<p class="note">{_esc(alt)}: not drawn, plots need matplotlib ({_esc(e)}; pip install "damoxing[report]").</p>'
    except Exception as e:  # noqa: BLE001 - data this version of the report does not expect
        return f'<p class="note">{_esc(alt)}: could not be drawn ({_esc(type(e).__name__)}: {_esc(e)}).</p>'
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{png}">' if png else ""


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_esc(title)}</h2>{body}</section>" if body.strip() else ""


def _card(label: str, value: str, sub: str = "") -> str:
    return f'<div class="card"><div class="label">{_esc(label)}</div><div class="value">{value}</div><div class="sub">{sub}</div></div>'


def _scalars(d: Any) -> dict[str, Any]:
    return {k: v for k, v in (d or {}).items() if isinstance(v, (int, float)) or v is None} if isinstance(d, dict) else {}


# --------------------------------------------------------------------------- sections


def _headline(task: str, metrics: dict) -> tuple[Optional[str], Optional[str]]:
    """(metric name, split) to lead with: the task's headline metric, else the first scalar one."""
    from damoxing.tasks import headline_metric

    preferred = headline_metric(task)
    for split in ("test", "val"):
        values = _scalars(metrics.get(split))
        if preferred in values and values[preferred] is not None:
            return preferred, split
    for split in ("test", "val"):
        for name, value in _scalars(metrics.get(split)).items():
            if value is not None:
                return name, split
    return None, None


def _summary(task: str, metrics: dict, manifest: dict, config: dict) -> str:
    cards = []
    name, split = _headline(task, metrics)
    if name is not None:
        value = metrics[split][name]
        ci = (metrics.get(f"{split}_ci") or {}).get(name)
        base = ((metrics.get("baseline") or {}).get(split) or {}).get(name)
        sub = f"{ci_label(metrics.get(f'{split}_ci_level'))} {_num(ci[0])} – {_num(ci[1])}" if ci else "no interval"
        if base is not None:
            sub += f"<br>baseline {_num(base)}"
        cards.append(_card(f"{split} {name}", _num(value), sub))
    model = manifest.get("model") or {}
    cost = manifest.get("cost") or {}
    params = cost.get("params", model.get("params"))
    if params is not None:
        cards.append(_card("parameters", _num(int(params)), _esc(model.get("type", ""))))
    if cost.get("flops_per_sample") is not None:
        cards.append(_card("FLOPs per sample", _si(cost["flops_per_sample"], "FLOP"), "forward"))
    seconds = cost.get("train_seconds", (manifest.get("timings") or {}).get("train_seconds"))
    if seconds is not None:
        cards.append(_card("training time", f"{seconds:.2f} s", _esc(manifest.get("device", ""))))
    if cost.get("energy_kwh") is not None:
        label = "estimate" if cost.get("energy_is_estimate") else "measured"
        cards.append(_card("energy", _si(cost["energy_kwh"] * 3.6e6, "J"), f"{_num(cost['energy_kwh'])} kWh ({label})"))
    if cost.get("co2_kg") is not None:
        cards.append(_card("CO2", f"{cost['co2_kg'] * 1000:.3g} g", f"grid {cost.get('grid_g_per_kwh', 0):g} g/kWh"))
    data = manifest.get("data") or {}
    facts = [
        ("task", task), ("data", data.get("source", (config.get("data") or {}).get("source", ""))),
        ("model", (config.get("model") or {}).get("type", model.get("type", ""))),
        ("device", manifest.get("device_name") or manifest.get("device", "")),
        ("created", manifest.get("created", "")), ("damoxing", manifest.get("damoxing", "")),
    ]
    rows = [[_esc(k), _esc(v)] for k, v in facts if v not in ("", None)]
    return f'<div class="cards">{"".join(cards)}</div>' + _table(["", ""], rows)


def _metrics_section(metrics: dict) -> str:
    parts = []
    baseline = metrics.get("baseline") or {}
    for split in [s for s in ("test", "val") if isinstance(metrics.get(s), dict)] + \
            [s for s in metrics if s not in ("test", "val", "baseline") and isinstance(metrics[s], dict)
             and not s.endswith(("_ci", "_calibration")) and _scalars(metrics[s])]:
        values = _scalars(metrics[split])
        if not values:
            continue
        ci = metrics.get(f"{split}_ci") or {}
        base = baseline.get(split) or {}
        rows = []
        for name, value in values.items():
            interval = ci.get(name)
            rows.append([_esc(name), "#" + _num(value), f"{_num(interval[0])} – {_num(interval[1])}" if interval else "",
                         "#" + _num(base.get(name)) if name in base else ""])
        label = ci_label(metrics.get(f"{split}_ci_level")) if ci else "CI"
        parts.append(f"<h3>{_esc(split)}</h3>" + _table(["metric", "model", label, "baseline"], rows))
    if "baseline" in metrics:
        parts.append('<p class="note">Baseline: doing nothing useful (the training majority class with the training class '
                     "frequencies as probabilities, or the training mean). Intervals: percentile bootstrap over test rows.</p>")
    return "".join(parts)


def _per_class(test: dict) -> str:
    per_class = test.get("per_class")
    if not isinstance(per_class, dict) or not per_class:
        return ""
    rows = [[_esc(name), "#" + _num(v.get("precision")), "#" + _num(v.get("recall")), "#" + _num(v.get("f1")),
             "#" + _num(v.get("support"))] for name, v in per_class.items() if isinstance(v, dict)]
    return "<h3>per class (test)</h3>" + _table(["class", "precision", "recall", "f1", "support"], rows)


COST_ROWS = [
    ("params", "parameters", lambda v: _num(int(v))), ("trainable_params", "trainable parameters", lambda v: _num(int(v))),
    ("flops_per_sample", "forward FLOPs per sample", lambda v: _si(v, "FLOP")),
    ("train_flops", "training FLOPs (≈3 × forward × samples seen)", lambda v: _si(v, "FLOP")),
    ("train_seconds", "training time", lambda v: f"{v:.3f} s"), ("eval_seconds", "evaluation time", lambda v: f"{v:.3f} s"),
    ("samples_seen", "samples seen in training", lambda v: _num(int(v))),
    ("samples_per_second", "training throughput", lambda v: f"{v:,.1f} samples/s"),
    ("tokens_per_second", "training throughput (tokens)", lambda v: f"{v:,.1f} tokens/s"),
    ("peak_memory_bytes", "peak memory", _bytes), ("mfu", "model FLOPs utilization (MFU)", lambda v: f"{100 * v:.1f}%"),
    ("energy_kwh", "energy", lambda v: f"{_num(float(v))} kWh ({_si(v * 3.6e6, 'J')})"),
    ("co2_kg", "CO2", lambda v: f"{_num(float(v))} kg ({v * 1000:.3g} g)"),
    ("grid_g_per_kwh", "grid carbon intensity", lambda v: f"{v:g} g CO2/kWh"),
    ("measured_seconds", "span the energy covers (training + evaluation)", lambda v: f"{v:.3f} s"),
    ("accounting_seconds", "time spent on this accounting", lambda v: f"{v:.3f} s"),
]
COST_NOTES = [("flops_method", "FLOPs"), ("peak_memory_kind", "memory"), ("mfu_basis", "MFU"),
              ("energy_method", "energy"), ("grid_source", "grid intensity")]


def _cost_section(cost: dict) -> str:
    if not isinstance(cost, dict) or not cost:
        return ""
    rows = []
    for key, label, fmt in COST_ROWS:
        if key in cost:
            value = cost[key]
            rows.append([_esc(label), "#" + (fmt(value) if value is not None else "not measured")])
    known = {k for k, _, _ in COST_ROWS} | {k for k, _ in COST_NOTES} | {"energy_details", "energy_is_estimate"}
    for key, value in cost.items():  # anything a newer version added
        if key not in known and (isinstance(value, (int, float, str)) or value is None):
            rows.append([_esc(key), "#" + _num(value)])
    notes = "".join(f"<li><b>{_esc(label)}</b>: {_esc(cost[key])}</li>" for key, label in COST_NOTES if cost.get(key))
    details = cost.get("energy_details")
    extra = f"<details><summary>energy details</summary><pre>{_esc(json.dumps(details, indent=2))}</pre></details>" if details else ""
    return _table(["", "value"], rows) + (f'<ul class="note">{notes}</ul>' if notes else "") + extra


def _data_section(manifest: dict) -> str:
    data = manifest.get("data") or {}
    if not data:
        return ""
    rows = [[_esc(k), "#" + _num(v)] for k, v in data.items() if isinstance(v, (int, float, str)) and k not in ("source",)]
    parts = [_table(["", ""], [[_esc("source"), _esc(data.get("source", ""))]] + rows)]
    split_rows = data.get("split_rows") or {}
    if split_rows:
        total = max(1, sum(split_rows.values()))
        parts.append("<h3>rows per split</h3>" + _table(
            ["split", "rows", "share"], [[_esc(k), "#" + _num(int(v)), "#" + f"{100 * v / total:.1f}%"] for k, v in split_rows.items()]))
    counts = data.get("train_class_counts") or {}
    if counts:
        total = max(1, sum(counts.values()))
        parts.append("<h3>class balance (train)</h3>" + _table(
            ["class", "rows", "share"], [[_esc(k), "#" + _num(int(v)), "#" + f"{100 * v / total:.1f}%"] for k, v in counts.items()]))
        parts.append(_plot("class balance", plots.class_balance, counts))
    if "missing_values" in data:
        missing = data["missing_values"] or {}
        parts.append("<h3>missing values (imputed from the training split)</h3>" + (
            _table(["column", "missing"], [[_esc(k), "#" + _num(int(v))] for k, v in missing.items()])
            if missing else '<p class="note">none</p>'))
    columns = data.get("column_summary") or []
    if columns:
        parts.append("<h3>columns (what each feature column was read as)</h3>" + _table(
            ["column", "kind", "missing", "distinct", "action"],
            [[_esc(c.get("column")), _esc(c.get("kind")), "#" + _num(c.get("missing")), "#" + _num(c.get("distinct")),
              _esc(c.get("action"))] for c in columns]))
    for key, value in data.items():
        if isinstance(value, (dict, list)) and key not in ("split_rows", "train_class_counts", "missing_values", "column_summary"):
            parts.append(f"<h3>{_esc(key)}</h3><pre>{_esc(json.dumps(value, indent=2))}</pre>")
    return "".join(parts)


def _training_section(manifest: dict, history: list[dict]) -> str:
    training = manifest.get("training") or {}
    rows = [[_esc(k), "#" + _num(v)] for k, v in training.items() if (isinstance(v, (int, float, str)) or v is None) and v != ""]
    parts = [_table(["", ""], rows)] if rows else []
    parts.append(_plot("learning curves", plots.learning_curves, history))
    if history:
        keys = list(dict.fromkeys(k for row in history for k in row))
        body = [["#" + _num(row.get(k)) for k in keys] for row in history]
        parts.append(f"<details><summary>history.jsonl ({len(history)} epochs)</summary>{_table(keys, body)}</details>")
    return "".join(parts)


def _privacy_section(privacy: dict) -> str:
    """train.privacy (DP-SGD): the epsilon spent against its target, delta, noise, sampling, replaced layers."""
    if not privacy:
        return ""
    keys = ("epsilon", "target_epsilon", "delta", "noise_multiplier", "sample_rate", "max_grad_norm", "accountant", "physical_batch_size", "steps")
    rows = [[_esc(k), "#" + _num(privacy[k])] for k in keys if k in privacy]
    replaced = privacy.get("replaced_layers") or []
    text = "; ".join(f"{r['layer']}: {r['from']} &rarr; {r['to']}" for r in replaced) or "none"
    rows.append(["replaced layers", _esc(text).replace("&amp;rarr;", "&rarr;")])
    return _table(["", ""], rows) + '<p class="note">(epsilon, delta)-differential privacy of the training rows, DP-SGD with opacus; epsilon per epoch is in the history.</p>'


def _evaluation_plots(task: str, metrics: dict, predictions: dict, class_names: list[str]) -> str:
    test = metrics.get("test") or {}
    parts = []
    if isinstance(test.get("confusion_matrix"), list):
        parts.append(_plot("confusion matrix", plots.confusion_matrix, test["confusion_matrix"], class_names))
    if "proba" in predictions and "y_true" in predictions:
        parts.append(_plot("ROC and precision-recall curves", plots.roc_and_pr, predictions["y_true"], predictions["proba"], class_names))
    if isinstance(metrics.get("test_calibration"), dict):
        parts.append(_plot("reliability diagram", plots.reliability_diagram, metrics["test_calibration"]))
    if "y_pred" in predictions and "y_true" in predictions and task != "classification":
        parts.append(_plot("predicted vs true and residuals", plots.regression_plots, predictions["y_true"], predictions["y_pred"]))
    parts.append(_per_class(test))
    return "".join(parts)


def _compression_section(run: Path) -> str:
    from damoxing.report.compression_section import compression_section

    return compression_section(run)


def _trust_section(run: Path) -> str:
    from damoxing.report.trust_section import trust_section

    return trust_section(run)


# --------------------------------------------------------------------------- the page


def build_report(run: str | Path, run_name: Optional[str] = None) -> str:
    """The HTML text of the report for run folder `run`."""
    import yaml

    run = Path(run)
    config_text = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        config = {}
    metrics = _read_json(run / "metrics.json") or {}
    manifest = _read_json(run / "manifest.json") or {}
    preprocessing = _read_json(run / "preprocessing.json") or {}
    history = _read_history(run / "history.jsonl")
    predictions = _read_predictions(run / "predictions_test.npz")
    task = str(manifest.get("task") or config.get("task") or "")
    class_names = list(((preprocessing.get("schema") or {}).get("class_names")) or [])
    name = run_name or run.name

    body = [
        _section("Summary", _summary(task, metrics, manifest, config)),
        _section("Metrics", _metrics_section(metrics)),
        _section("Evaluation (test split)", _evaluation_plots(task, metrics, predictions, class_names)),
        _section("Training", _training_section(manifest, history)),
        _section("Cost", _cost_section(manifest.get("cost") or {})),
        _section("Privacy", _privacy_section(manifest.get("privacy") or {})),
        _section("Data", _data_section(manifest)),
        _section("Compression", _compression_section(run)),
        _section("Explanations and fairness", _trust_section(run)),
        _section("Config (resolved)", f"<pre>{_esc(config_text)}</pre>" if config_text else ""),
        _section("Manifest", f"<details><summary>manifest.json</summary><pre>{_esc(json.dumps(manifest, indent=2))}</pre></details>"
                 if manifest else ""),
    ]
    other = {k: v for k, v in metrics.items() if k not in ("val", "test", "baseline", "test_ci", "val_ci", "test_calibration",
                                                          "test_ci_level", "val_ci_level")
             and not (isinstance(v, dict) and _scalars(v))}
    if other:  # metrics a newer task writes that this page has no view for
        body.append(_section("Other results", f"<pre>{_esc(json.dumps(other, indent=2))}</pre>"))
    subtitle = " · ".join(_esc(x) for x in (task, (config.get("model") or {}).get("type"), manifest.get("created")) if x)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_esc(name)} · damoxing report</title>"
        f"<style>{STYLE}</style></head><body><header><h1>{_esc(name)}</h1><p>{subtitle}</p></header><main>"
        + "".join(body)
        + f'<p class="note">Written by damoxing {_esc(manifest.get("damoxing", ""))} on {time.strftime("%Y-%m-%d %H:%M")} '
        "from the run folder; self-contained, works offline.</p></main></body></html>\n"
    )


def write_report(run: str | Path, out: str | Path | None = None, run_name: Optional[str] = None) -> Path:
    """Write the report of run folder `run` to `out` (default <run>/report.html); returns the path."""
    out = Path(out) if out is not None else Path(run) / "report.html"
    text = build_report(run, run_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
