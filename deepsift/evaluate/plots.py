"""Report plots as PNG bytes (matplotlib, Agg backend, no display needed)."""
from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import pr_curve, roc_curve  # noqa: E402

DPI = 90


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def roc_pr_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """ROC (log-FPR inset-free) and precision-recall curves, one line per detector."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, (y, s) in curves.items():
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, s)
        rec, prec = pr_curve(y, s)
        ax1.plot(fpr, tpr, label=name)
        ax2.plot(np.concatenate([[0.0], rec]), np.concatenate([[prec[0]], prec]), label=name)
    ax1.plot([0, 1], [0, 1], ":", color="grey")
    ax1.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    ax2.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision-recall", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is ax1 else "lower left")
    return _png(fig)


def histogram_plot(name: str, scores: np.ndarray, groups: np.ndarray, threshold: float) -> bytes:
    """Score histograms of one detector, one colour per generator (``real`` included)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    lo, hi = float(np.min(scores)), float(np.max(scores))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
    for g in dict.fromkeys(groups):
        ax.hist(scores[groups == g], bins=bins, alpha=0.5, label=str(g), density=True)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="score", ylabel="density", title=f"Score distribution: {name}")
    ax.legend(fontsize=8)
    return _png(fig)


def robustness_plot(sweep: dict[str, Any]) -> bytes:
    """One panel per transform family: the metric against strength, one line per detector."""
    fams = list(sweep["curves"])
    cols = min(4, len(fams))
    rows = int(np.ceil(len(fams) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    for ax, fam in zip(axes.ravel(), fams):
        pts = sweep["curves"][fam]["points"]
        for det, clean in sweep["clean"].items():
            xs = [p["strength"] for p in pts]
            ys = [np.nan if p["values"].get(det) is None else p["values"][det] for p in pts]
            line = ax.plot(xs, ys, "o-", label=det)[0]
            if clean is not None:
                ax.axhline(clean, color=line.get_color(), ls=":", lw=1)
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel(sweep["curves"][fam]["axis"], fontsize=8)
        ax.set_ylabel(sweep["metric"], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(fams):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return _png(fig)


def embedding_map(emb: np.ndarray, groups: Sequence[str], method: str = "pca", seed: int = 0) -> bytes:
    """2-D map of embeddings (PCA, or t-SNE via scikit-learn) coloured by generator."""
    X = np.asarray(emb, np.float64)
    g = np.asarray(groups, dtype=object)
    if method == "tsne" and len(X) > 5:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=min(30.0, (len(X) - 1) / 3), random_state=seed,
                  init="pca").fit_transform(X)
    else:
        Xc = X - X.mean(axis=0)
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        xy = Xc @ vt[:2].T if vt.shape[0] >= 2 else np.column_stack([Xc @ vt[0], np.zeros(len(X))])
        method = "pca"
    fig, ax = plt.subplots(figsize=(6, 5))
    for name in dict.fromkeys(g):
        m = g == name
        ax.scatter(xy[m, 0], xy[m, 1], s=10, alpha=0.7, label=str(name))
    ax.set(title=f"Embedding map ({method.upper()})", xticks=[], yticks=[])
    ax.legend(fontsize=8, markerscale=2)
    return _png(fig)


def bar_plot(title: str, values: dict[str, dict[str, float | None]], ylabel: str) -> bytes:
    """Grouped bars: ``values[group][series]`` (e.g. leave-one-out AUROC per generator and head)."""
    groups = list(values)
    series = list(dict.fromkeys(k for v in values.values() for k in v))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups)), 3.6))
    width = 0.8 / max(1, len(series))
    for j, s in enumerate(series):
        ys = [np.nan if values[g].get(s) is None else values[g][s] for g in groups]
        ax.bar(np.arange(len(groups)) + j * width, ys, width, label=s)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20, fontsize=8)
    ax.set(title=title, ylabel=ylabel, ylim=(0, 1.02))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
