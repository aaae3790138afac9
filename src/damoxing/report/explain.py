"""explain.html: one self-contained page of attributions.

Tables: permutation importance with intervals (bars with error bars), mean |attribution| per
column, and the first rows with each column's value and attribution. Images and sequences: a grid
of inputs beside their heat maps. Texts: every token highlighted by its attribution (green pushed
the explained output up, red down). Always: the convergence delta and the sanity check.
"""

from __future__ import annotations

import html
import time
from typing import Optional

import numpy as np

from damoxing.report.html import STYLE, _esc, _num, _plot, _section, _table
from damoxing.report.plots import _figure, _png

SHOWN_ROWS = 20
SHOWN_COLUMNS = 12
MAX_GRID = 32


# --------------------------------------------------------------------------- plots


def importance_bars(importance: dict) -> Optional[str]:
    """Permutation importance per column (largest first) with its bootstrap interval as an error bar."""
    columns = importance["columns"][:25][::-1]
    if not columns:
        return None
    fig, (ax,) = _figure(7.0, 0.9 + 0.28 * len(columns))
    fig.subplots_adjust(left=0.33)
    values = np.array([c["importance"] for c in columns])
    low = np.array([max(0.0, c["importance"] - c["ci_low"]) for c in columns])
    high = np.array([max(0.0, c["ci_high"] - c["importance"]) for c in columns])
    ax.barh(np.arange(len(columns)), values, xerr=[low, high], capsize=3, color="#4c72b0")
    ax.set_yticks(np.arange(len(columns)))
    ax.set_yticklabels([str(c["column"])[:30] for c in columns], fontsize=8)
    ax.axvline(0.0, color="#57606a", linewidth=0.8)
    ax.set_xlabel(f"{importance['score']} increase when the column is shuffled")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def heatmap_grid(inputs: np.ndarray, values: np.ndarray, classes: list[str]) -> Optional[str]:
    """Pairs of panels per row: the input (averaged over channels) and its attribution map (red +, blue -)."""
    n = min(len(inputs), MAX_GRID)
    if n == 0:
        return None
    per_row = 4  # input/attribution pairs per grid row
    rows = (n + per_row - 1) // per_row
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0 * per_row * 1.2, 1.35 * rows + 0.3), dpi=96)
    axes = fig.subplots(rows, 2 * per_row, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        image = _as_2d(inputs[i])
        attr = _as_2d(values[i])
        bound = float(np.abs(attr).max()) or 1.0
        a_in, a_attr = axes[i // per_row, 2 * (i % per_row)], axes[i // per_row, 2 * (i % per_row) + 1]
        a_in.imshow(image, cmap="gray", interpolation="nearest")
        a_in.set_title(f"#{i} {classes[i]}"[:14], fontsize=7)
        a_attr.imshow(attr, cmap="bwr", vmin=-bound, vmax=bound, interpolation="nearest")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.08, hspace=0.35)
    return _png(fig)


def _as_2d(array: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) mean over channels; (T, F) stays; (T,) -> (1, T)."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 3:
        return array.mean(0)
    return array if array.ndim == 2 else array.reshape(1, -1)


# --------------------------------------------------------------------------- sections


def delta_section(summary: dict) -> str:
    d = summary.get("convergence_delta")
    if not d:
        return (f'<p class="note">{_esc(summary["method"])} has no convergence delta (it is not a path integral with a '
                "completeness property); its values are not meant to add up to the output.</p>")
    rows = [["rows converged", f"#{d['rows_converged']} / {d['rows']}"], ["max |delta|", "#" + _num(d["max_abs"])],
            ["median |delta|", "#" + _num(d["median_abs"])], ["median relative |delta|", "#" + _num(d["median_relative"])],
            ["95th percentile relative |delta|", "#" + _num(d["p95_relative"])],
            ["integration steps used", _esc(", ".join(map(str, d["steps_used"] or [])))], ["converged means", _esc(d["tolerance"])]]
    return (_table(["", ""], rows) + '<p class="note">Completeness: a row\'s attributions add up to f(input) - f(baseline); '
            "delta is what is missing, the error of the numerical path integral. Rows whose delta was not small were integrated again "
            "with more steps.</p>")


def sanity_section(summary: dict) -> str:
    s = summary.get("sanity")
    if not s:
        return ""
    verdict = "passed" if s["passed"] else ("NOT passed" if s["passed"] is not None else "not measurable")
    rows = [["rank correlation with randomized models (global)", "#" + _num(s["global_spearman"])],
            ["median per-row rank correlation", "#" + _num(s["row_spearman_median"])],
            ["randomized copies", f"#{s['draws']}"], ["rows", f"#{s['rows']}"], ["verdict (global < 0.5)", _esc(verdict)]]
    return (_table(["", ""], rows) + f'<p class="note">The same attributions computed for copies of the model whose weights were '
            f"drawn afresh (Adebayo et al. 2018). {_esc(s['reading'])}. Methods that multiply by the input (integrated gradients, "
            "ablation) keep some per-row correlation with any model, because the input itself sets part of the ranking.</p>")


def table_rows(result, display, classes: list[str]) -> str:
    """The first rows: each shown column's raw value with its attribution, shaded by sign and size."""
    names = result.feature_names
    order = np.argsort(-np.abs(result.values).mean(0))[:SHOWN_COLUMNS]
    bound = float(np.abs(result.values[:SHOWN_ROWS][:, order]).max(initial=0.0)) or 1.0
    header = ["row", "explained"] + [str(names[j]) for j in order] + ["sum", "f(x) - f(baseline)"]
    out = []
    for i in range(min(SHOWN_ROWS, len(result.values))):
        cells = [f"#{i}", _esc(classes[i])]
        for j in order:
            value = display.iloc[i][names[j]] if display is not None and names[j] in display.columns else ""
            cells.append(_shade(result.values[i, j], bound, f"{_esc(_short(value))}<br><b>{result.values[i, j]:+.3g}</b>"))
        cells += ["#" + _num(float(result.values[i].sum())), "#" + _num(float(result.output[i] - result.baseline_output[i]))]
        out.append(cells)
    return _table(header, out)


def _short(value) -> str:
    text = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
    return text if len(text) <= 18 else text[:17] + "…"


def _shade(value: float, bound: float, content: str) -> str:
    alpha = min(1.0, abs(value) / bound) * 0.6
    color = f"rgba(26,127,55,{alpha:.2f})" if value > 0 else f"rgba(207,34,46,{alpha:.2f})"
    return f'<span style="display:block;background:{color};padding:2px 4px">{content}</span>'


def highlighted_texts(result, tokens: list[list[str]], classes: list[str]) -> str:
    """Each text, tokens highlighted green (pushed the output up) or red (down), scaled per text."""
    parts = []
    for i, pieces in enumerate(tokens[:SHOWN_ROWS * 2]):
        values = result.values[i][result.mask[i]]
        bound = float(np.abs(values).max(initial=0.0)) or 1.0
        spans = "".join(f'<span title="{v:+.4f}" style="background:{_token_color(v, bound)};border-radius:2px">{html.escape(p)}</span>'
                        for p, v in zip(pieces, values))
        delta = "" if result.delta is None else f" · delta {result.delta[i]:+.2e}"
        parts.append(f'<p style="line-height:1.9;white-space:pre-wrap"><b>#{i} {_esc(classes[i])}</b> '
                     f'<span class="note">(sum {values.sum():+.3f}{delta})</span><br>{spans}</p>')
    return "".join(parts) + '<p class="note">Padding is masked: it gets no attribution and is not shown. Hover a token for its value.</p>'


def _token_color(value: float, bound: float) -> str:
    alpha = min(1.0, abs(value) / bound) * 0.75
    return f"rgba(26,127,55,{alpha:.2f})" if value > 0 else f"rgba(207,34,46,{alpha:.2f})"


def importance_section(importance: Optional[dict]) -> str:
    if not importance:
        return ""
    rows = [[_esc(c["column"]), "#" + _num(c["importance"]), f"{_num(c['ci_low'])} – {_num(c['ci_high'])}", "#" + _num(c["std"])]
            for c in importance["columns"]]
    return (f"<p>Permutation importance on the run's test split ({importance['rows']} rows, {importance['repeats']} shuffles per "
            f"column): how much the mean {_esc(importance['score'])} (unshuffled: {_num(importance['baseline_loss'])}) grows when "
            f"the column's values are shuffled among the rows. Interval: {int(importance['confidence'] * 100)}% bootstrap over rows "
            f"({importance['resamples']} resamples); std: over the shuffles.</p>"
            + _plot("permutation importance", importance_bars, importance)
            + _table(["column", "importance", "95% CI", "std over shuffles"], rows))


# --------------------------------------------------------------------------- the page


def build_explain_page(summary: dict, result, classes: list[str], display=None, tokens=None, grid: Optional[str] = None) -> str:
    """The HTML text of explain.html."""
    intro = (f"<p><b>{_esc(summary['method'])}</b>: {_esc(summary['method_description'])}.<br>Explained: "
             f"{_esc(summary['explained_output'])}, for {summary['rows']} rows of {_esc(summary['input'])} "
             f"({summary['seconds']:.2f} s).</p>")
    body = [_section("What was explained", intro), _section("Convergence delta", delta_section(summary)),
            _section("Sanity check: a randomized model", sanity_section(summary))]
    if result.kind == "table":
        body.append(_section("Global importance", importance_section(summary.get("importance"))))
        mean = summary.get("mean_abs_attribution") or []
        body.append(_section("Mean |attribution| per column (the rows explained)",
                             _table(["column", "mean |attribution|"], [[_esc(m["column"]), "#" + _num(m["value"])] for m in mean])))
        body.append(_section("Rows", '<p class="note">Each cell: the raw value, then its attribution (green: pushed the explained '
                                     "output up; red: down). A one-hot or imputed column counts once: its inputs' attributions are summed.</p>"
                             + table_rows(result, display, classes)))
    elif result.kind == "text" and tokens is not None:
        body.append(_section("Tokens", highlighted_texts(result, tokens, classes)))
    elif grid:
        body.append(_section("Heat maps", '<p class="note">Each input (channels averaged) beside its attribution map: red pushed the '
                                          'explained output up, blue down, scaled per image.</p>'
                             f'<img alt="attribution heat maps" src="data:image/png;base64,{grid}">'))
    files = ", ".join(f"<code>{_esc(f)}</code>" for f in summary.get("files", []))
    body.append(_section("Files", f"<p>{files}: attributions as Parquet / NPZ (np.load(..., allow_pickle=False)); the numbers of "
                                  "this page in explain.json.</p>"))
    title = f"explain {summary['run']}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_esc(title)} · damoxing</title>"
            f"<style>{STYLE}</style></head><body><header><h1>Explanations</h1><p>{_esc(title)} · {_esc(summary['model'])} · "
            f"{_esc(summary['task'])}</p></header><main>" + "".join(body)
            + f'<p class="note">Written by damoxing on {time.strftime("%Y-%m-%d %H:%M")}; self-contained, works offline.</p>'
            "</main></body></html>\n")
