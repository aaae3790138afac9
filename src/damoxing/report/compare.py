"""compare.html and the terminal tables of `damoxing compare`: one Comparison, two views.

The page is self-contained like report.html (inline styles, plots embedded as PNG, no script, no
external asset): the verdicts in plain words, the table of runs (metric with its interval and
the baseline, beside params, FLOPs, seconds and energy), the paired tests, the frontier with its
prices, the learning curves overlaid, and compare.json itself.
"""

from __future__ import annotations

import json
import time
from typing import Optional

from damoxing.report import compare_plots
from damoxing.report.html import STYLE, _esc, _num, _plot, _section, _si, _table

PAIRED_NOTE = ("Paired tests use the identical test rows of every run. McNemar counts the rows one run gets right and the "
               "other wrong (exact binomial, and the mid-p variant); the paired bootstrap resamples rows once for both runs, "
               "so row difficulty cancels out of the difference. p-values are Holm-corrected over all pairs tested; "
               "a difference is called real when the deciding p (McNemar for accuracy, else the bootstrap) is at most alpha.")


def _p(value: Optional[float]) -> str:
    if value is None:
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3g}"


def _interval(ci: Optional[list[float]]) -> str:
    return f"{_num(ci[0])} – {_num(ci[1])}" if ci else ""


def _spread(spread: Optional[dict]) -> str:
    if not spread:
        return ""
    return f"± {spread['std']:.4f} (sd of {len(spread['values'])} seeds; {_num(spread['min'])} – {_num(spread['max'])})"


def _runs_table(result) -> str:
    seeds = any(e.seed_spread for e in result.runs)
    header = ["run", "family", "params", "FLOPs / sample", "train s", "energy", f"test {result.metric}", "95% CI",
              *(["between seeds"] if seeds else []), "baseline", "frontier"]
    rows = []
    for e in result.runs:
        name = f"<b>{_esc(e.name)}</b>" if e.name == result.best else _esc(e.name)
        rows.append([name, _esc(e.family + (" (reference)" if e.reference else "")),
                     "#" + ("" if e.params is None else _num(int(e.params))),
                     "#" + ("" if e.flops_per_sample is None else _si(e.flops_per_sample, "FLOP")),
                     "#" + ("" if e.train_seconds is None else f"{e.train_seconds:.2f}"),
                     "#" + ("" if e.energy_kwh is None else _si(e.energy_kwh * 3.6e6, "J")),
                     "#" + _num(e.value), _interval(e.ci), *([_spread(e.seed_spread)] if seeds else []),
                     "#" + _num(e.baseline), "✓" if e.on_frontier else ""])
    return _table(header, rows)


def _tests_table(result) -> str:
    if not result.tests:
        return ""
    header = ["a", "b", "why", f"a − b ({result.metric})", "95% CI", "McNemar b / c", "p exact", "p mid",
              "bootstrap p", "decides", "real?"]
    rows = []
    for t in result.tests:
        mc = t.mcnemar or {}
        rows.append([_esc(t.a), _esc(t.b), _esc(", ".join(t.why)), "#" + f"{t.difference:+.4f}", _interval(t.ci),
                     "#" + (f"{mc['b']} / {mc['c']}" if mc else ""),
                     "#" + (f"{_p(mc['p_exact'])} ({_p(mc.get('p_exact_holm'))})" if mc else ""),
                     "#" + (f"{_p(mc['p_mid'])} ({_p(mc.get('p_mid_holm'))})" if mc else ""),
                     "#" + f"{_p(t.bootstrap_p)} ({_p(t.bootstrap_p_holm)})", _esc(t.decided_by),
                     "<b>yes</b>" if t.real else "no"])
    return (_table(header, rows) + '<p class="note">p-values: raw (Holm-adjusted). ' + _esc(PAIRED_NOTE)
            + f" alpha = {result.alpha:g}; {result.n_resamples} bootstrap resamples; {result.n_test} test rows.</p>")


def _prices_table(result) -> str:
    if not result.prices:
        return ""
    rows = [[_esc(s["from"]), _esc(s["to"]), "#" + ("" if s["cost_ratio"] is None else f"{s['cost_ratio']:,.3g}x"),
             "#" + f"{s['gain']:+.4f}", "#" + ("" if s["gain_per"] is None else f"{s['gain_per']:+.4f}"), _esc(s["skipped"] or "")]
             for s in result.prices]
    return "<h3>price of each step up the frontier</h3>" + _table(
        ["from", "to", f"{result.cost_label} ratio", f"gain in {result.metric}", "gain per 10x", ""], rows)


def _verdicts(result) -> str:
    best = result.entry(result.best) if result.best else None
    lines = []
    if best is not None:
        lines.append(f"Best test {_esc(result.metric)}: <b>{_esc(best.name)}</b> ({_esc(best.family)}), {_num(best.value)}"
                     + (f" (95% CI {_interval(best.ci)})" if best.ci else "") + ".")
    real = [t for t in result.tests if t.real]
    if result.tests:
        lines.append(f"{len(real)} of {len(result.tests)} tested differences are real after Holm correction:")
    items = "".join(f"<li>{_esc(t.verdict)}</li>" for t in result.tests)
    frontier = " → ".join(_esc(name) for name in result.frontier)
    text = "".join(f"<p>{line}</p>" for line in lines) + (f"<ul>{items}</ul>" if items else "")
    text += f"<p>Pareto frontier by {_esc(result.cost_label)}: {frontier or 'none'}.</p>"
    notes = "".join(f"<li>{_esc(n)}</li>" for n in result.notes)
    return text + (f'<ul class="note">{notes}</ul>' if notes else "")


def _extra(result) -> str:
    failed = result.extra.get("failed") or []
    parts = []
    if failed:
        rows = [[_esc(f["rung"]), "#" + _esc(f.get("seed", "")), _esc(f["error"])] for f in failed]
        parts.append("<h3>rungs that failed</h3>" + _table(["rung", "seed", "error"], rows))
    rest = {k: v for k, v in result.extra.items() if k not in ("failed", "privacy_sweep", "federated_sweep")}
    if rest:
        parts.append(f"<pre>{_esc(json.dumps(rest, indent=2))}</pre>")
    return "".join(parts)


def build_page(result, histories: dict[str, list[dict]]) -> str:
    """The HTML text of compare.html for a Comparison and the runs' histories (name -> rows)."""
    title = f"{len(result.runs)} runs compared"
    subtitle = " · ".join(_esc(x) for x in (result.task, f"test {result.metric}", f"cost: {result.cost_label}"))
    body = [
        _section("Verdict", _verdicts(result)),
        _section("Runs", _runs_table(result) + '<p class="note">Intervals: each run\'s own percentile bootstrap over '
                 "its test rows. Baseline: the trivial model of the task. Bold: the best run.</p>"),
        _section("Paired tests", _tests_table(result) + _plot("paired differences", compare_plots.differences, result)),
        _section("Pareto frontier", _plot("Pareto frontier", compare_plots.frontier, result) + _prices_table(result)),
        _section("Learning curves", _plot("learning curves", compare_plots.learning_curves, histories, result.metric)),
        _section("Price of privacy", _plot("utility against epsilon", compare_plots.privacy_curve, result.extra.get("privacy_sweep"))),
        _section("Federated settings", _plot("utility against a federated setting", compare_plots.federated_curve,
                                             result.extra.get("federated_sweep"))),
        _section("Ladder", _extra(result)),
        _section("compare.json", f"<details><summary>compare.json</summary><pre>{_esc(json.dumps(result.to_dict(), indent=2))}</pre></details>"),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_esc(title)} · damoxing compare</title>"
        f"<style>{STYLE}</style></head><body><header><h1>{_esc(title)}</h1><p>{subtitle}</p></header><main>"
        + "".join(body)
        + f'<p class="note">Written by damoxing compare on {time.strftime("%Y-%m-%d %H:%M")} from the run folders; '
        "self-contained, works offline.</p></main></body></html>\n"
    )


# --------------------------------------------------------------------------- terminal


def terminal_tables(result) -> list:
    """The same content for a terminal: rich tables of the runs and the tests, then the frontier and notes."""
    from rich.table import Table
    from rich.text import Text

    seeds = any(e.seed_spread for e in result.runs)
    runs = Table("run", "family", "params", "FLOPs/sample", "train s", "energy", f"test {result.metric}", "95% CI",
                 *(["between seeds (sd)"] if seeds else []), "baseline", "frontier", title=f"{len(result.runs)} runs, {result.task}")
    for e in result.runs:
        runs.add_row(Text(e.name, style="bold" if e.name == result.best else ""), e.family + (" (ref)" if e.reference else ""),
                     "" if e.params is None else f"{int(e.params):,}",
                     "" if e.flops_per_sample is None else _si(e.flops_per_sample, "FLOP"),
                     "" if e.train_seconds is None else f"{e.train_seconds:.2f}",
                     "" if e.energy_kwh is None else _si(e.energy_kwh * 3.6e6, "J"), f"{e.value:.4f}",
                     f"{e.ci[0]:.4f} - {e.ci[1]:.4f}" if e.ci else "",
                     *([f"{e.seed_spread['std']:.4f}" if e.seed_spread else ""] if seeds else []),
                     "" if e.baseline is None else f"{e.baseline:.4f}", "*" if e.on_frontier else "")
    out: list = [runs]
    if result.tests:
        tests = Table("a", "b", "why", "a - b", "95% CI", "McNemar p (Holm)", "mid-p (Holm)", "bootstrap p (Holm)", "real?",
                      title=f"paired tests on {result.n_test} identical test rows (alpha {result.alpha:g})")
        for t in result.tests:
            mc = t.mcnemar or {}
            tests.add_row(t.a, t.b, ", ".join(t.why), f"{t.difference:+.4f}", f"{t.ci[0]:+.4f} .. {t.ci[1]:+.4f}" if t.ci else "",
                          f"{_p(mc.get('p_exact'))} ({_p(mc.get('p_exact_holm'))})" if mc else "",
                          f"{_p(mc.get('p_mid'))} ({_p(mc.get('p_mid_holm'))})" if mc else "",
                          f"{_p(t.bootstrap_p)} ({_p(t.bootstrap_p_holm)})", "yes" if t.real else "no")
        out.append(tests)
    lines = [f"frontier ({result.cost_label}): " + (" -> ".join(result.frontier) or "none")]
    lines += [f"  {s['from']} -> {s['to']}: {s['gain_per']:+.4f} {result.metric} per 10x" for s in result.prices if s["gain_per"] is not None]
    lines += [t.verdict for t in result.tests if t.real] or ([("no tested difference is real after Holm correction")] if result.tests else [])
    lines += [f"note: {n}" for n in result.notes]
    lines += [f"failed rung {f['rung']} (seed {f.get('seed')}): {f['error']}" for f in result.extra.get("failed") or []]
    out.append(Text("\n".join(lines)))
    return out
