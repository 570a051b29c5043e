"""Report plots as PNG bytes (matplotlib, Agg backend, no display needed).

Rules every plot keeps: legends sit outside the data (right of the axes), never over curves or
titles; up to ~25 classes get distinct colours (:func:`colours`), more classes get small
multiples; counts (n) are part of the labels; bar charts of AUROC draw the chance line (0.5).
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import pr_curve, roc_curve  # noqa: E402

DPI = 90
SMALL_MULTIPLES_ABOVE = 8  # more groups than this: one small panel per group instead of overlaid colours


def colours(n: int) -> list[Any]:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then tab20 + tab20b (40 distinct)."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    cols = [plt.get_cmap("tab20")(i) for i in range(20)] + [plt.get_cmap("tab20b")(i) for i in range(20)]
    return [cols[i % len(cols)] for i in range(n)]


def short_label(text: str, width: int = 24) -> str:
    """A label that fits a small panel: wrapped onto at most two lines, the middle elided beyond that."""
    import textwrap

    lines = textwrap.wrap(str(text), width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(lines) <= 2:
        return "\n".join(lines)
    flat = str(text)
    return "\n".join(textwrap.wrap(flat[: width - 1] + "…" + flat[-(width - 2):], width, break_long_words=True))


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _legend_outside(ax: Any, **kw: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False,
                  ncol=1 if len(handles) <= 18 else 2, **kw)


def roc_pr_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """ROC and precision-recall curves, one line per detector (n in the legend), legend outside."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    cols = colours(len(curves))
    for c, (name, (y, s)) in zip(cols, curves.items()):
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, s)
        rec, prec = pr_curve(y, s)
        label = f"{name} (n={int((y == 0).sum())} real, {int((y == 1).sum())} fake)"
        ax1.plot(fpr, tpr, color=c, label=label)
        ax2.plot(np.concatenate([[0.0], rec]), np.concatenate([[prec[0]], prec]), color=c, label=label)
    ax1.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax1.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    ax2.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision-recall", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    _legend_outside(ax2)
    return _png(fig)


def histogram_plot(name: str, scores: np.ndarray, groups: np.ndarray, threshold: float) -> bytes:
    """Score histograms of one detector per generator (``real`` included); small multiples for many generators."""
    lo, hi = float(np.min(scores)), float(np.max(scores))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
    names = list(dict.fromkeys(groups))
    counts = {g: int((groups == g).sum()) for g in names}
    fakes = [g for g in names if g != "real"]
    if len(fakes) > SMALL_MULTIPLES_ABOVE:
        cols = 5
        rows = int(np.ceil(len(fakes) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 1.9 * rows + 0.6), sharex=True, squeeze=False)
        real = scores[groups == "real"] if "real" in counts else None
        for ax, g in zip(axes.ravel(), fakes):
            if real is not None:
                ax.hist(real, bins=bins, color="0.6", alpha=0.6, density=True)
            ax.hist(scores[groups == g], bins=bins, color="tab:red", alpha=0.6, density=True)
            ax.axvline(threshold, color="k", ls="--", lw=0.8)
            ax.set_title(short_label(f"{g} (n={counts[g]})"), fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
        for ax in axes.ravel()[len(fakes):]:
            ax.axis("off")
        fig.suptitle(f"Score distribution: {name}; grey: real (n={counts.get('real', 0)}), red: the generator; "
                     f"dashed: threshold {threshold:g}", fontsize=9)
        fig.tight_layout()
        return _png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for c, g in zip(colours(len(names)), names):
        ax.hist(scores[groups == g], bins=bins, alpha=0.5, label=f"{g} (n={counts[g]})", density=True, color=c)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="score", ylabel="density", title=f"Score distribution: {name}")
    _legend_outside(ax)
    return _png(fig)


def robustness_plot(sweep: dict[str, Any]) -> bytes:
    """One panel per transform family: the metric against strength, one line per detector."""
    fams = list(sweep["curves"])
    cols = min(4, len(fams))
    rows = int(np.ceil(len(fams) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    dets = list(sweep["clean"])
    palette = dict(zip(dets, colours(len(dets))))
    for ax, fam in zip(axes.ravel(), fams):
        pts = sweep["curves"][fam]["points"]
        for det, clean in sweep["clean"].items():
            xs = [p["strength"] for p in pts]
            ys = [np.nan if p["values"].get(det) is None else p["values"][det] for p in pts]
            ax.plot(xs, ys, "o-", label=det, color=palette[det])
            if clean is not None:
                ax.axhline(clean, color=palette[det], ls=":", lw=1)
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel(sweep["curves"][fam]["axis"], fontsize=8)
        ax.set_ylabel(sweep["metric"], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(fams):]:
        ax.axis("off")
    n = int(sweep.get("timing", {}).get("n_images", 0))
    fig.legend(*axes.ravel()[0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.0, 1.0),
               fontsize=8, frameon=False, title=f"n={n}" if n else None)
    fig.tight_layout()
    return _png(fig)


def embedding_map(emb: np.ndarray, groups: Sequence[str], method: str = "pca", seed: int = 0) -> bytes:
    """2-D map of embeddings (PCA, or t-SNE via scikit-learn) coloured by generator, n in the legend."""
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
    fig, ax = plt.subplots(figsize=(7, 5))
    names = list(dict.fromkeys(g))
    for c, name in zip(colours(len(names)), names):
        m = g == name
        ax.scatter(xy[m, 0], xy[m, 1], s=10, alpha=0.7, label=f"{name} (n={int(m.sum())})", color=c)
    ax.set(title=f"Embedding map ({method.upper()})", xticks=[], yticks=[])
    _legend_outside(ax, markerscale=2)
    return _png(fig)


def bar_plot(title: str, values: dict[str, dict[str, float | None]], ylabel: str,
             counts: dict[str, int] | None = None, chance: float | None = 0.5) -> bytes:
    """Grouped bars ``values[group][series]`` (e.g. unseen-generator AUROC per generator and head), chance line."""
    groups = list(values)
    series = list(dict.fromkeys(k for v in values.values() for k in v))
    fig, ax = plt.subplots(figsize=(min(14, max(5, 0.55 * len(groups) * max(1, len(series)) + 2)), 3.8))
    width = 0.8 / max(1, len(series))
    for c, (j, s) in zip(colours(len(series)), enumerate(series)):
        ys = [np.nan if values[g].get(s) is None else values[g][s] for g in groups]
        ax.bar(np.arange(len(groups)) + j * width, ys, width, label=s, color=c)
    if chance is not None:
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance ({chance:g})")
    labels = [f"{g}\n(n={counts[g]})" if counts and g in counts else g for g in groups]
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, labels, rotation=45 if len(groups) > 6 else 0,
                  ha="right" if len(groups) > 6 else "center", fontsize=7)
    ax.set(title=title, ylabel=ylabel, ylim=(0, 1.02))
    ax.grid(alpha=0.3, axis="y")
    _legend_outside(ax)
    return _png(fig)


def heatmap_plot(title: str, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str]) -> bytes:
    """A rows x cols heatmap of a metric in [0, 1] (red: chance or worse, green: 1), values written in."""
    m = np.asarray(matrix, np.float64)
    fig, ax = plt.subplots(figsize=(min(12, 1.6 + 1.15 * len(cols)), 0.9 + 0.32 * len(rows)))
    im = ax.imshow(np.ma.masked_invalid(m), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    return _png(fig)
