"""The report's plots, each returned as a base64 PNG to embed in the page (no external files).

Matplotlib's object API (`Figure`, no pyplot): nothing global is switched, so a report can be
written from a notebook or a server thread without touching the caller's backend. Each function
takes plain lists/arrays from the run folder and returns None when it has nothing to draw.
"""

from __future__ import annotations

import base64
import io
from typing import Optional, Sequence

import numpy as np

DPI = 96
MAX_CLASS_CURVES = 10  # more classes than this: ROC/PR show the micro-average only
MAX_SCATTER_POINTS = 5000


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    # Fixed margins in inches (room for tick labels and titles): an automatic layout engine
    # would measure every text and cost about half of the report's time.
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - 0.35 / height,
                        wspace=0.9 * panels / width)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def learning_curves(history: Sequence[dict]) -> Optional[str]:
    """Losses, other per-epoch metrics and the learning rate against the epoch, one panel each."""
    if not history:
        return None
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    keys = [k for k in history[0] if k not in ("epoch", "seconds") and isinstance(history[0][k], (int, float))]
    groups = [("loss", [k for k in keys if k.endswith("loss")]),
              ("metrics", [k for k in keys if not k.endswith("loss") and k != "lr"]),
              ("learning rate", [k for k in keys if k == "lr"])]
    groups = [(title, names) for title, names in groups if names]
    if not groups:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(4.0 * len(groups), 3.0, len(groups))
    for ax, (title, names) in zip(axes, groups):
        for name in names:
            values = [row.get(name) for row in history]
            ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title != "learning rate":
            ax.legend(fontsize=8)
    return _png(fig)


def confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> Optional[str]:
    """Counts (rows = true class, columns = predicted), shaded by each row's share."""
    cm = np.asarray(matrix, dtype=float)
    if cm.ndim != 2 or cm.size == 0:
        return None
    k = cm.shape[0]
    size = min(9.0, 2.5 + 0.45 * k)
    fig, (ax,) = _figure(size, size * 0.85)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of true class", shrink=0.8)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    ticks = range(k)
    labels = [str(c) for c in class_names] if len(class_names) == k else [str(i) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=45 if k > 6 else 0, fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (test)")
    return _png(fig)


def ranking_curves(positive: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray | float]:
    """ROC and precision-recall points of `score` (N,) for boolean `positive` (N,), one point per
    distinct score (ties together), with ROC AUC (trapezoid) and average precision
    (sum of precision x recall step), as scikit-learn defines them. Done in numpy here because
    importing sklearn.metrics would take longer than drawing the whole report."""
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order].astype(float)
    last_of_tie = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tp = np.cumsum(positive)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    fpr = np.r_[0.0, fp / max(fp[-1], 1)]
    tpr = np.r_[0.0, tp / max(tp[-1], 1)]
    precision = tp / (tp + fp)
    recall = tp / max(tp[-1], 1)
    average_precision = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return {"fpr": fpr, "tpr": tpr, "auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
            "precision": np.r_[1.0, precision], "recall": np.r_[0.0, recall], "average_precision": average_precision}


def roc_and_pr(y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str]) -> Optional[str]:
    """ROC and precision-recall curves: the positive class (binary), one-vs-rest per class, or the
    micro-average when there are many classes."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] < 2 or len(np.unique(y_true)) < 2:
        return None
    k = proba.shape[1]
    names = [str(c) for c in class_names] if len(class_names) == k else [str(i) for i in range(k)]
    onehot = np.eye(k, dtype=bool)[y_true]
    if k == 2:
        curves = [(names[1], onehot[:, 1], proba[:, 1])]
    elif k <= MAX_CLASS_CURVES:
        curves = [(names[c], onehot[:, c], proba[:, c]) for c in range(k) if onehot[:, c].any()]
    else:
        curves = [("micro-average", onehot.ravel(), proba.ravel())]
    fig, (roc_ax, pr_ax) = _figure(9.0, 3.8, 2)
    for name, positive, score in curves:
        c = ranking_curves(positive, score)
        roc_ax.plot(c["fpr"], c["tpr"], label=f"{name} (AUC {c['auc']:.3f})", linewidth=1.2)
        pr_ax.step(c["recall"], c["precision"], where="post", label=f"{name} (AP {c['average_precision']:.3f})", linewidth=1.2)
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)", xlim=(0, 1), ylim=(0, 1.02))
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (test)", xlim=(0, 1), ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
    return _png(fig)


def reliability_diagram(calibration: dict) -> Optional[str]:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), and the bins' counts."""
    bins = calibration.get("bins") or []
    if not bins:
        return None
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    accuracy = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    confidence = [b["confidence"] if b["confidence"] is not None else np.nan for b in bins]
    fig, (ax, count_ax) = _figure(8.0, 3.4, 2)
    ax.bar(centres, accuracy, width=width * 0.9, color="#4c72b0", alpha=0.8, label="accuracy in bin")
    ax.plot(centres, confidence, "o", color="#dd8452", markersize=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
           title=f"reliability (test), ECE {calibration.get('ece', float('nan')):.3f}")
    ax.legend(fontsize=7, loc="upper left")
    count_ax.bar(centres, [b["count"] for b in bins], width=width * 0.9, color="#55a868")
    count_ax.set(xlabel="confidence", ylabel="test samples", title="samples per bin", xlim=(0, 1))
    for a in (ax, count_ax):
        a.grid(alpha=0.3)
    return _png(fig)


def regression_plots(y_true: np.ndarray, y_pred: np.ndarray) -> Optional[str]:
    """Predicted against true (the diagonal is perfect) and residuals against predicted."""
    y_true, y_pred = np.asarray(y_true, dtype=float).ravel(), np.asarray(y_pred, dtype=float).ravel()
    if y_true.size == 0 or y_true.shape != y_pred.shape:
        return None
    if y_true.size > MAX_SCATTER_POINTS:  # a fixed-seed subsample keeps the PNG small and quick
        keep = np.random.default_rng(0).choice(y_true.size, MAX_SCATTER_POINTS, replace=False)
        y_true, y_pred = y_true[keep], y_pred[keep]
    fig, (ax, res_ax) = _figure(9.0, 3.8, 2)
    ax.scatter(y_true, y_pred, s=8, alpha=0.6)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="true", ylabel="predicted", title="predicted vs true (test)")
    residual = y_true - y_pred
    res_ax.scatter(y_pred, residual, s=8, alpha=0.6, color="#dd8452")
    res_ax.axhline(0, linestyle="--", color="grey", linewidth=0.8)
    res_ax.set(xlabel="predicted", ylabel="true - predicted", title="residuals (test)")
    for a in (ax, res_ax):
        a.grid(alpha=0.3)
    return _png(fig)


def class_balance(counts: dict) -> Optional[str]:
    """Training rows per class."""
    if not counts or len(counts) > 50:
        return None
    fig, (ax,) = _figure(min(9.0, 2.5 + 0.35 * len(counts)), 2.6)
    ax.bar(list(map(str, counts)), list(counts.values()), color="#8172b2")
    ax.set(ylabel="training rows", title="class balance (train)")
    ax.tick_params(axis="x", labelsize=8, rotation=45 if len(counts) > 8 else 0)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
