"""FILE.quality.html: one self-contained page on a synthetic table, beside FILE.quality.json.

Verdict cards (two-sample AUC, correlation difference, share closer to training, train-synthetic-
test-real), the three blocks as tables with the synthetic rows beside their yardsticks (independent
columns, real held-out rows), each column's distribution real against synthetic (histograms for
numbers and dates, bars for categories), and the correlation matrices of the numeric columns side by
side with their difference.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.report.html import STYLE, _card, _esc, _num, _plot, _section, _table
from damoxing.report.plots import _figure, _png

ARMS = (("synthetic", "synthetic"), ("baseline", "independent columns"), ("reference", "real held-out rows"))
MAX_COLUMNS = 24  # distribution panels drawn (the first columns; the tables list every one)
REAL, SYNTHETIC = "#57606a", "#cf222e"


def _numbers(values: pd.Series, kind: str) -> np.ndarray:
    from damoxing.evaluation.synthetic import _as_numbers

    x = _as_numbers(values, kind)
    return x[np.isfinite(x)]


def distributions(train: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> Optional[str]:
    """One small panel per column: real (grey) and synthetic (red) distributions, normalised."""
    names = [c for c in kinds if c in train.columns and c in synthetic.columns][:MAX_COLUMNS]
    if not names:
        return None
    from matplotlib.figure import Figure

    per_row = 4
    rows = (len(names) + per_row - 1) // per_row
    fig = Figure(figsize=(11.0, 2.2 * rows + 0.4), dpi=96)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.08 / rows, top=1 - 0.25 / rows, hspace=0.75, wspace=0.3)
    axes = fig.subplots(rows, per_row, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes, names):
        kind = kinds[name]
        if kind in ("numeric", "date"):
            a, b = _numbers(train[name], kind), _numbers(synthetic[name], kind)
            both = np.concatenate([a, b])
            bins = np.histogram_bin_edges(both, bins=30) if len(both) else None
            if len(a):  # a side with no values (all missing) is left out: a density of nothing is undefined
                ax.hist(a, bins=bins, density=True, alpha=0.55, color=REAL, label="real")
            if len(b):
                ax.hist(b, bins=bins, density=True, histtype="step", linewidth=1.4, color=SYNTHETIC, label="synthetic")
        else:
            p = train[name].dropna().astype(str).value_counts(normalize=True)
            q = synthetic[name].dropna().astype(str).value_counts(normalize=True)
            categories = list(p.index[:12])
            x = np.arange(len(categories))
            ax.bar(x - 0.2, [p.get(c, 0) for c in categories], width=0.4, color=REAL, label="real")
            ax.bar(x + 0.2, [q.get(c, 0) for c in categories], width=0.4, color=SYNTHETIC, label="synthetic")
            ax.set_xticks(x, [c[:8] for c in categories], fontsize=6, rotation=45)
        ax.set_title(str(name)[:32], fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    axes[0].legend(fontsize=6, loc="best")
    return _png(fig)


def correlations(train: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> Optional[str]:
    """Pearson correlations of the numeric columns: real, synthetic, and their absolute difference."""
    from damoxing.evaluation.synthetic import _as_numbers

    names = [c for c, k in kinds.items() if k in ("numeric", "date")]
    if len(names) < 2:
        return None
    real = pd.DataFrame({c: _as_numbers(train[c], kinds[c]) for c in names}).corr().to_numpy()
    made = pd.DataFrame({c: _as_numbers(synthetic[c], kinds[c]) for c in names}).corr().to_numpy()
    fig, axes = _figure(11.0, 4.0, panels=3)
    fig.subplots_adjust(right=0.92)  # room for the colour bar's labels
    for ax, matrix, title, cmap, limits in ((axes[0], real, "real", "RdBu_r", (-1, 1)), (axes[1], made, "synthetic", "RdBu_r", (-1, 1)),
                                            (axes[2], np.abs(real - made), "|difference|", "Reds", (0, 1))):
        image = ax.imshow(np.nan_to_num(matrix), cmap=cmap, vmin=limits[0], vmax=limits[1])
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[2], fraction=0.046)
    return _png(fig)


def _arms(block: dict) -> list[tuple[str, dict]]:
    return [(label, block[key]) for key, label in ARMS if key in block]


def _fidelity_table(fidelity: dict) -> str:
    rows = [[_esc(label), _num(arm.get("mean_column_distance"), 3), _num(arm["correlation"].get("mean_abs"), 3),
             _num(arm["correlation"].get("max_abs"), 3) + (f" ({_esc(' / '.join(arm['correlation']['worst_pair']))})"
                                                          if arm["correlation"].get("worst_pair") else ""),
             _num(arm.get("two_sample_auc"), 3), str(arm.get("rows", ""))] for label, arm in _arms(fidelity)]
    return _table(["rows", "mean column distance", "corr diff (mean)", "corr diff (largest)", "two-sample AUC", "n"], rows)


def _columns_table(synthetic: dict) -> str:
    rows = []
    for name, row in synthetic["columns"].items():
        distance = f"KS {_num(row['ks'], 3)}, W {_num(row['wasserstein_sd'], 3)} SD" if "ks" in row else (
            f"TVD {_num(row['tvd'], 3)}" if "tvd" in row else "-")
        rows.append([_esc(name), distance, _num(row["missing_real"], 3), _num(row["missing_other"], 3)])
    return _table(["column", "distance to the training rows", "missing (real)", "missing (synthetic)"], rows)


def _privacy_table(privacy: dict) -> str:
    rows = [[_esc(label), f"{_num(arm['share_closer_to_train'], 2)} (sd {_num(arm.get('share_spread'), 2)})", str(arm["copies"]),
             _num(arm.get("membership_auc"), 3), _num(arm["dcr_median"], 3), _num(arm["dcr_5th_percentile"], 3),
             _num(arm["holdout_dcr_median"], 3)] for label, arm in _arms(privacy)]
    return _table(["rows", "closer to training (0.5 expected)", "exact copies", "membership-inference AUC (0.5: none)", "DCR median",
                   "DCR 5th percentile", "held-out rows' DCR median"], rows)


def _utility_table(utility: dict) -> str:
    key = "accuracy" if utility["task"] == "classification" else "r2"
    rows = [[_esc(label), _num(utility[arm].get(key), 4) if isinstance(utility.get(arm), dict) else "-",
             _num(utility[arm].get("roc_auc"), 4) if isinstance(utility.get(arm), dict) and "roc_auc" in utility[arm] else "-"]
            for arm, label in (("synthetic", "trained on synthetic rows"), ("real", "trained on real training rows"),
                               ("baseline", "baseline (most frequent class / mean)"))]
    return _table(["model", f"{key} on {utility['test_rows']} real test rows", "ROC AUC"], rows)


def _cards(report: dict) -> str:
    f = report["fidelity"]["synthetic"]
    cards = [_card("two-sample AUC", _num(f.get("two_sample_auc"), 3), "0.5: cannot tell synthetic from real; 1: always can"),
             _card("correlation difference", _num(f["correlation"].get("mean_abs"), 3),
                   f"independent columns: {_num(report['fidelity']['baseline']['correlation'].get('mean_abs'), 3)}")]
    p = (report.get("privacy") or {}).get("synthetic")
    if p:
        cards.append(_card("membership-inference AUC", _num(p.get("membership_auc"), 3),
                           f"0.5: membership not given away; closer to training {_num(p['share_closer_to_train'], 2)}, {p['copies']} copies"))
    u = report.get("utility") or {}
    if isinstance(u.get("synthetic"), dict):
        key = "accuracy" if u["task"] == "classification" else "r2"
        cards.append(_card(f"train synthetic, test real ({key})", _num(u["synthetic"].get(key), 4),
                           f"trained on real rows: {_num(u['real'].get(key), 4)}"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def build_page(report: dict[str, Any], train: Optional[pd.DataFrame], synthetic: pd.DataFrame, kinds: dict[str, str], title: str) -> str:
    """The HTML text of FILE.quality.html for a quality report (inference/tables.py) and the rows it compared."""
    if "fidelity" not in report:
        body = [_section("Not measured", f"<p>{_esc(report.get('skipped', 'no quality report'))}</p>")]
    else:
        privacy, utility = report.get("privacy") or {}, report.get("utility") or {}
        body = [
            _section("Verdict", _cards(report)),
            _section("Fidelity", _fidelity_table(report["fidelity"]) + '<p class="note">Distances against the training rows. '
                     "Independent columns: every column drawn on its own from the training rows. Real held-out rows: what a "
                     "perfect generator would score at this sample size.</p>"),
            _section("Columns", _columns_table(report["fidelity"]["synthetic"])
                     + (_plot("distributions", distributions, train, synthetic, kinds) if train is not None else "")),
            _section("Correlations", _plot("correlations", correlations, train, synthetic, kinds) if train is not None else ""),
            _section("Privacy", _privacy_table(privacy) if "synthetic" in privacy else f"<p>{_esc(privacy.get('skipped', ''))}</p>"),
            _section("Utility", _utility_table(utility) if "synthetic" in utility else f"<p>{_esc(utility.get('skipped', ''))}</p>"),
        ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_esc(title)} · damoxing</title>"
            f"<style>{STYLE}</style></head><body><header><h1>Synthetic table</h1><p>{_esc(title)} · {report['rows']} rows from "
            f"{_esc(report['run'])}</p></header><main>" + "".join(body)
            + f'<p class="note">Written by damoxing on {time.strftime("%Y-%m-%d %H:%M")}; self-contained, works offline.</p>'
            "</main></body></html>\n")
