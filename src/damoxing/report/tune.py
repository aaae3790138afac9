"""tune.html: a study's optimization history, parameter importances and trials table (self-contained)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

from damoxing.report.plots import _figure, _png


def history_plot(rows: list[dict], metric: str, direction: str) -> Optional[str]:
    """Each trial's value (complete trials as dots, pruned at their last report) and the best so far."""
    points = [(r["number"], r["values"][0]) for r in rows if r["values"]]
    if not points:
        return None
    fig, (ax,) = _figure(7, 3.4)
    xs, ys = zip(*points)
    ax.scatter(xs, ys, s=14, label="complete trials")
    best, running = [], None
    for y in ys:
        running = y if running is None else (max(running, y) if direction == "maximize" else min(running, y))
        best.append(running)
    ax.plot(xs, best, color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("optimization history")
    ax.legend(fontsize=8)
    return _png(fig)


def importances(study) -> dict[str, float]:
    """optuna's parameter importances (fANOVA), when enough trials completed; else {}."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3 or len(study.directions) > 1:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError):  # e.g. every trial the same value
        return {}


def write_tune_html(path: Path, study, result, metrics: list[str]) -> None:
    plot = history_plot(result.trials, metrics[0], result.directions[0])
    weights = importances(study)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("trial", "state", " / ".join(metrics), "epochs", "seconds", "params", "reason"))
    body = []
    for r in result.trials:
        values = "" if not r["values"] else " / ".join(f"{v:.4f}" for v in r["values"])
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        seconds = f"{r['seconds']:.1f}" if r["seconds"] is not None else ""
        cells = (r["number"], r["state"], values, r["epochs"] or "", seconds, params, r["reason"] or "")
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    importance = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in weights.items())
    best = ", ".join(str(b["number"]) for b in result.best)
    test = result.test or {}
    test_text = ", ".join(f"{k} {v:.4f}" for k, v in test.get("metrics", {}).items() if isinstance(v, float))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tune: {html.escape(result.study)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}</style>
</head><body><h1>Study {html.escape(result.study)}</h1>
<p>{len(result.trials)} trials; best by {html.escape(", ".join(metrics))} on the validation split: trial {best}.
The test split was evaluated once, for the best trial only: {html.escape(test_text)}.</p>
{f'<img alt="optimization history" src="data:image/png;base64,{plot}">' if plot else ''}
{'<h2>Parameter importances (fANOVA)</h2><table>' + importance + '</table>' if importance else ''}
<h2>Trials</h2><table><tr>{head}</tr>{''.join(body)}</table>
<p>Open the study in optuna-dashboard: <code>optuna-dashboard {html.escape(_storage_hint(result.folder))}</code></p>
</body></html>
"""
    path.write_text(page)


def _storage_hint(folder: Path) -> str:
    journal = Path(folder) / "journal.log"
    return str(journal) if journal.exists() else "STORAGE_URL"
