"""Report sections shared by the eval protocols: the at-a-glance summary, strata by size and format,
and the re-encoding control side by side with the original figures.

The at-a-glance section comes first in every report: a generator x detector table (and heatmap)
of the ranking metric (AUROC) with n beside every figure, hardest generator first, and the
confound audit's warnings; curves and full tables follow.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .headers import CROP, HeaderInfo
from .metrics import Metrics, compute_metrics
from .plots import heatmap_plot
from .reliability import RULE_SHORT
from .report import Report

SIZE_BANDS = (f"padded < {CROP}", f"{CROP}-512", "> 512")


def _n(n: int) -> str:
    return f"n={n}"


def _mark(m: Metrics | None, metric: str) -> str:
    """`` ⚠`` after a figure that is unreliable (see :mod:`.reliability`), else nothing."""
    return " ⚠" if m is not None and m.unreliable(metric) else ""


def size_band(info: HeaderInfo) -> str | None:
    """The size band of an image by its shorter side (None when the header is unreadable)."""
    if info.error or not info.width or not info.height:
        return None
    short = min(info.width, info.height)
    return SIZE_BANDS[0] if short < CROP else SIZE_BANDS[1] if short <= 512 else SIZE_BANDS[2]


TOP_WARNINGS = 3


def glance_block(report: Report, rows: dict[str, dict[str, Metrics]], warnings: Sequence[str] | None = None,
                 metric: str = "auroc", what: str = "real vs each generator", lead: Sequence[str] = ()) -> None:
    """First screen: the control's drop in words (``lead``), the top audit warnings, then the generator x
    detector table of ``metric`` with n, hardest first; the other warnings; heatmap.

    ``warnings`` None: no audit was run (score files carry no images), so none is claimed.
    """
    gens = [g for g in rows if g != "all"]
    dets = list(dict.fromkeys(d for v in rows.values() for d in v))
    mat = np.array([[np.nan if (m := rows[g].get(d)) is None or m[metric] is None else m[metric] for d in dets]
                    for g in gens], np.float64).reshape(len(gens), len(dets))
    with np.errstate(all="ignore"):
        order = np.argsort(np.nan_to_num(np.nanmean(mat, axis=1) if mat.size else np.zeros(0), nan=-1.0), kind="stable")
        col_order = np.argsort(-np.nan_to_num(np.nanmean(mat, axis=0) if mat.size else np.zeros(0), nan=-1.0),
                               kind="stable")
    gens = [gens[i] for i in order]
    dets = [dets[j] for j in col_order]
    mat = mat[order][:, col_order] if mat.size else mat
    report.heading("At a glance")
    report.results.setdefault("glance", {})[what] = {"metric": metric, "generators": gens, "detectors": dets}
    for line in lead:
        report.text(line)
    warnings_list = list(warnings or ())
    for w in warnings_list[:TOP_WARNINGS]:
        report.text("⚠ confound: " + w)
    n_fake = {g: max((m.n_fake for m in rows[g].values()), default=0) for g in gens}
    n_real = max((m.n_real for v in rows.values() for m in v.values()), default=0)
    body = []
    for i, g in enumerate(gens):
        cells = []
        for j, d in enumerate(dets):
            m = rows[g].get(d)
            v = mat[i, j]
            cells.append("n/a" if not np.isfinite(v) else f"{v:.3f}" + _mark(m, metric))
        body.append([f"{g} ({_n(n_fake[g])})", *cells])
    if "all" in rows:
        body.append([f"all generators ({_n(max((m.n_fake for m in rows['all'].values()), default=0))})",
                     *[("n/a" if (m := rows["all"].get(d)) is None or m[metric] is None
                        else f"{m[metric]:.3f}" + _mark(m, metric)) for d in dets]])
    report.text(f"{metric.upper()}, {what}; {n_real} real images in each comparison; hardest generator first. "
                + RULE_SHORT)
    report.table(["generator (n fake)", *dets], body)
    for w in warnings_list[TOP_WARNINGS:]:
        report.text("⚠ confound: " + w)
    if warnings is not None and not warnings:
        report.text("Confound audit: no file property (format, JPEG quality, size, metadata) alone separates real "
                    "from fake (see the audit section).")
    if gens and dets:
        report.image(f"glance_{metric}", heatmap_plot(f"{metric.upper()}: {what} (n real = {n_real})", mat,
                                                      [f"{g} (n={n_fake[g]})" for g in gens], dets),
                     f"{metric.upper()} per generator and detector, hardest first")


def strata(labels: np.ndarray, scores: np.ndarray, infos: Sequence[HeaderInfo], threshold: float, *,
           bootstrap: int = 0, seed: int = 0) -> dict[str, dict[str, Metrics | dict[str, Any]]]:
    """Metrics by size band (shorter side) and by original format: ``{"size": {band: M}, "format": {fmt: M}}``."""
    out: dict[str, dict[str, Any]] = {"size": {}, "format": {}}
    bands = np.array([size_band(i) or "unreadable" for i in infos], dtype=object)
    fmts = np.array([i.format for i in infos], dtype=object)
    for key, keys, names in (("size", bands, [*SIZE_BANDS, "unreadable"]), ("format", fmts, sorted(set(fmts)))):
        for name in names:
            m = keys == name
            if m.any():
                out[key][name] = compute_metrics(labels[m], scores[m], threshold=threshold, bootstrap=bootstrap,
                                                 seed=seed)
    return out


def strata_block(report: Report, by_det: dict[str, dict[str, dict[str, Metrics]]]) -> None:
    """Tables of AUROC and balanced accuracy per size band and per original format, n beside each."""
    report.results["strata"] = by_det
    report.heading("By size and original format")
    report.text(f"All generators pooled, split by the shorter side (below {CROP} px the crop is zero-padded) and by "
                "the file format the image came in. A stratum with one class only has no AUROC (n/a).")
    for key, title in (("size", "size band"), ("format", "original format")):
        rows = []
        for det, st in by_det.items():
            for name, m in st[key].items():
                rows.append([name, det, str(m.n_real), str(m.n_fake), _fmt(m["auroc"]) + _mark(m, "auroc"),
                             _fmt(m["balanced_accuracy"]) + _mark(m, "balanced_accuracy")])
        report.table([title, "detector", "n real", "n fake", "auroc", "balanced_accuracy"], rows)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def control_block(report: Report, control: str, original: dict[str, dict[str, Metrics]],
                  controlled: dict[str, dict[str, Metrics]], key: str = "generator",
                  modes: dict[str, str] | None = None, failed: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Original and controlled AUROC side by side with the drop and how each side was made; one line per detector.

    ``modes``: per detector, ``refitted`` (fitted again on the controlled images) or ``test side only``.
    """
    from .refit import MODE_TEXT, drop_words

    modes = modes or {}
    report.heading(f"Re-encoding control: {control}")
    report.text(f"Every image, real and fake, passed through {control} before scoring. A large drop means the "
                "original figure read the files' history (format, compression, size), not the pictures.")
    for mode in dict.fromkeys(modes.values()):
        report.text(f"{', '.join(d for d, m in modes.items() if m == mode)}: {MODE_TEXT.get(mode, mode)}.")
    if failed:
        report.text(f"{len(failed)} image(s) could not be re-encoded and were left out of both sides, e.g. "
                    + "; ".join(f"{i}: {e}" for i, e in failed[:5]))
    rows, lines, words = [], [], []
    for det, per in original.items():
        for k, m in per.items():
            c = controlled.get(det, {}).get(k)
            a, b = m["auroc"], (c["auroc"] if c is not None else None)
            drop = None if a is None or b is None else a - b
            rows.append([k, det, _n(m.n_fake), _fmt(a) + _mark(m, "auroc"), _fmt(b) + _mark(c, "auroc"),
                         "n/a" if drop is None else f"{drop:+.3f}",
                         modes.get(det, "")])
        pairs = [(m["auroc"], controlled.get(det, {}).get(k)) for k, m in per.items()
                 if "all" not in per or k == "all"]  # pooled when there is a pooled row, else the mean over rows
        pairs = [(a, c["auroc"]) for a, c in pairs if a is not None and c is not None and c["auroc"] is not None]
        if pairs:
            a, b = float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs]))
            what = "AUROC" if "all" in per else "mean AUROC"
            how = f", {modes[det]}" if det in modes else ""
            lines.append(f"{det}: {what} {a:.3f} original, {b:.3f} with {control} (drop {a - b:+.3f}{how})")
            words.append(f"Control {control}: {det} {what} {a:.3f} -> {b:.3f}, {drop_words(a, b)}"
                         + (f" ({modes[det]})" if det in modes else "") + ".")
    report.results["control"] = {"transform": control, "original": original, "controlled": controlled,
                                 "mode": modes, "failed": [{"id": i, "error": e} for i, e in failed],
                                 "summary": words}
    report.table([key, "detector", "n fake", "AUROC original", f"AUROC {control}", "drop", "how"], rows)
    return lines
