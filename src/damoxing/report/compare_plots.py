"""The comparison's plots, as base64 PNGs for compare.html: the accuracy-versus-cost frontier, the
paired differences with their intervals, and the runs' learning curves overlaid.

Same conventions as plots.py: matplotlib's object API (no pyplot state), plain inputs, None when
there is nothing to draw.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from damoxing.report.plots import _figure, _png

FRONTIER_COLOUR, OTHER_COLOUR, REFERENCE_COLOUR = "#d1242f", "#57606a", "#0969da"


def frontier(result) -> Optional[str]:
    """Metric against cost on a log axis: every run (squares: scikit-learn references) with its
    interval, the frontier points filled and joined, each step labelled with its price per 10x."""
    placed = [e for e in result.runs if e.cost is not None and e.cost > 0]
    if not placed:
        return None
    fig, (ax,) = _figure(9.0, 5.0)
    for e in placed:
        colour = FRONTIER_COLOUR if e.on_frontier else (REFERENCE_COLOUR if e.reference else OTHER_COLOUR)
        if e.ci:
            ax.errorbar([e.cost], [e.value], yerr=[[e.value - e.ci[0]], [e.ci[1] - e.value]], fmt="none", ecolor=colour,
                        alpha=0.5, capsize=3, linewidth=1)
        ax.scatter([e.cost], [e.value], marker="s" if e.reference else "o", s=70 if e.on_frontier else 40,
                   facecolors=colour if e.on_frontier else "white", edgecolors=colour, linewidths=1.5, zorder=3)
        ax.annotate(e.name, (e.cost, e.value), textcoords="offset points", xytext=(6, 6), fontsize=7)
    line = [result.entry(name) for name in result.frontier]
    ax.plot([e.cost for e in line], [e.value for e in line], color=FRONTIER_COLOUR, linewidth=1.2, zorder=2, label="Pareto frontier")
    for step in result.prices:
        if step["gain_per"] is not None:
            x = float(np.sqrt(step["cost_from"] * step["cost_to"]))
            y = (step["value_from"] + step["value_to"]) / 2
            ax.annotate(f"{step['gain_per']:+.3g} per 10x", (x, y), textcoords="offset points", xytext=(0, -14),
                        fontsize=7, color=FRONTIER_COLOUR, ha="center")
    baselines = {e.baseline for e in result.runs if e.baseline is not None}
    if len(baselines) == 1:
        ax.axhline(baselines.pop(), linestyle="--", color="grey", linewidth=0.8, label="trivial baseline")
    ax.set_xscale("log")
    ax.set(xlabel=f"{result.cost_label} (log scale)", ylabel=f"test {result.metric}" + ("" if result.greater_is_better else " (lower is better)"),
           title=f"test {result.metric} against {result.cost_label}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def differences(result) -> Optional[str]:
    """Each tested pair's difference (a - b) with its paired-bootstrap interval; real ones in colour."""
    tests = [t for t in result.tests if t.ci]
    if not tests:
        return None
    fig, (ax,) = _figure(9.0, 1.2 + 0.35 * len(tests))
    fig.subplots_adjust(left=0.38)
    rows = np.arange(len(tests))[::-1]
    for row, t in zip(rows, tests):
        colour = FRONTIER_COLOUR if t.real else OTHER_COLOUR
        ax.plot(t.ci, [row, row], color=colour, linewidth=2)
        ax.plot([t.difference], [row], "o", color=colour)
    ax.axvline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yticks(rows, [f"{t.a} − {t.b}" for t in tests], fontsize=7)
    ax.set(xlabel=f"difference in test {result.metric} (paired bootstrap {100 * (1 - result.alpha):g}% interval)",
           title="paired differences (coloured: real after Holm)")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def learning_curves(histories: dict[str, list[dict]], metric: str) -> Optional[str]:
    """Validation loss and the validation metric per epoch, one line per run."""
    panels = [key for key in ("val_loss", f"val_{metric}") if any(key in row for rows in histories.values() for row in rows)]
    if not panels:
        return None
    fig, axes = _figure(5.0 * len(panels), 3.6, len(panels))
    for ax, key in zip(axes, panels):
        for name, rows in histories.items():
            points = [(row.get("epoch", i + 1), row[key]) for i, row in enumerate(rows) if isinstance(row.get(key), (int, float))]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o", markersize=3, linewidth=1.2, label=name)
        ax.set(xlabel="epoch", title=key)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    return _png(fig)


def privacy_curve(sweep: Optional[dict]) -> Optional[str]:
    """The price of privacy: the test metric against the target epsilon (log axis) of runs that
    differ only in train.privacy.epsilon; the non-private run, if any, as a dashed line."""
    if not sweep:
        return None
    private = [p for p in sweep["points"] if p["epsilon"] is not None and p["value"] is not None]
    if not private:
        return None
    fig, (ax,) = _figure(8.0, 4.5)
    ax.plot([p["epsilon"] for p in private], [p["value"] for p in private], marker="o", color=FRONTIER_COLOUR, label="DP-SGD")
    for p in private:
        spent = f" (spent {p['spent']:.2f})" if p.get("spent") is not None else ""
        ax.annotate(f"{p['value']:.3f}{spent}", (p["epsilon"], p["value"]), textcoords="offset points", xytext=(5, -12), fontsize=7)
    for p in sweep["points"]:
        if p["epsilon"] is None and p["value"] is not None:
            ax.axhline(p["value"], linestyle="--", color=OTHER_COLOUR, linewidth=1, label=f"no privacy ({p['value']:.3f})")
    ax.set_xscale("log")
    ax.set(xlabel="target epsilon (log scale; smaller is more private)", ylabel=f"test {sweep['metric']}",
           title=f"test {sweep['metric']} against epsilon")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def federated_curve(sweep: Optional[dict]) -> Optional[str]:
    """The test metric of runs that differ only in one train.federated setting, against that setting:
    the global model on the whole test split and on its worst client's part; a central run, if any,
    as a dashed line. Numbers spanning more than a factor of 10 get a log axis; other settings
    (partition, algorithm) are categories."""
    if not sweep:
        return None
    points = [p for p in sweep["points"] if p["value"] is not None]
    if not points:
        return None
    settings = [p["setting"] for p in points]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in settings)
    x = settings if numeric else list(range(len(points)))
    fig, (ax,) = _figure(8.0, 4.5)
    ax.plot(x, [p["value"] for p in points], marker="o", color=FRONTIER_COLOUR, label="global model, whole test split")
    worst = [(xi, p["worst_client"]) for xi, p in zip(x, points) if p.get("worst_client") is not None]
    if worst:
        ax.plot([w[0] for w in worst], [w[1] for w in worst], marker="v", color=OTHER_COLOUR, label="worst client")
    for xi, p in zip(x, points):
        ax.annotate(f"{p['value']:.3f}", (xi, p["value"]), textcoords="offset points", xytext=(5, 6), fontsize=7)
    if sweep.get("central") is not None:
        ax.axhline(sweep["central"], linestyle="--", color=OTHER_COLOUR, linewidth=1, label=f"central training ({sweep['central']:.3f})")
    if numeric and min(settings) > 0 and max(settings) / min(settings) > 10:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(x, [str(v) for v in settings])
    ax.set(xlabel=sweep["parameter"], ylabel=f"test {sweep['metric']}", title=f"test {sweep['metric']} against {sweep['parameter']}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)
