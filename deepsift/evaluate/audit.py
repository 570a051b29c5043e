"""Confound audit: how well can the label be told from things that are not the image content?

For each header feature (:mod:`deepsift.evaluate.headers`: file format, JPEG quality,
chroma subsampling, size, aspect ratio, padding below the 224-px crop, metadata, bytes per
pixel) the audit gives the AUROC of that feature *alone* (either direction: a numeric feature
is scored as is or reversed, whichever separates more; a categorical one by each value's share
of fakes), the distributions per class and per generator, and a plain warning when a feature
separates real from fake (or real from one generator) with AUROC above ``warn_above`` (0.7).
A detector that scores well on such a set may be reading the file, not the picture.

Each AUROC carries the report's ⚠ mark when it is unreliable by the shared rule of
:mod:`.reliability` (its Hanley-McNeil interval on the images, or groups, it rests on is wider than
0.2, or a class has fewer than 20 groups); a figure above ``warn_above`` is marked ▲ in the tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..output import progress
from .datasets import Sample
from .confounds import auroc, contrast
from .headers import CROP, HeaderInfo, read_header
from .reliability import RULE_SHORT, unreliable_reason

WARN_ABOVE = 0.7
ABOVE = " ▲"  # after a feature's AUROC above warn_above in the tables (the ⚠ mark is the reliability rule's)
FEATURES: dict[str, tuple[str, str]] = {
    "format": ("category", "file format"),
    "jpeg_quality": ("number", "JPEG quality estimate (JPEG files only)"),
    "subsampling": ("category", "chroma subsampling"),
    "min_side": ("number", "shorter side (px)"),
    "aspect": ("number", "aspect ratio (long / short side)"),
    "padded": ("category", f"smaller than the {CROP}-px crop (zero-padded)"),
    "metadata": ("category", "metadata present (EXIF, PNG text, XMP, comments)"),
    "bytes_per_pixel": ("number", "file size per pixel (bytes)"),
}


def read_headers(samples: Sequence[Sample], desc: str = "audit (headers)") -> list[HeaderInfo]:
    """The header facts of every sample, in order (a progress bar on a terminal)."""
    return [read_header(s.source) for s in progress(samples, desc, unit="img", leave=False)]


def feature_value(info: HeaderInfo, name: str) -> Any:
    """The value of one feature for one image (None: not defined for it)."""
    if info.error:
        return None
    w, h = info.width or 0, info.height or 0
    if name == "format":
        return info.format
    if name == "jpeg_quality":
        return info.jpeg_quality
    if name == "subsampling":
        return info.subsampling
    if name == "min_side":
        return float(min(w, h))
    if name == "aspect":
        return max(w, h) / min(w, h) if min(w, h) else None
    if name == "padded":
        return f"< {CROP} px" if min(w, h) < CROP else f">= {CROP} px"
    if name == "metadata":
        return "+".join(k for k, v in (("EXIF", info.exif), ("text", info.text)) if v) or "none"
    if name == "bytes_per_pixel":
        return info.file_bytes / (w * h) if info.file_bytes and w * h else None
    raise KeyError(name)


def separability(labels: np.ndarray, values: np.ndarray, kind: str) -> tuple[float | None, str]:
    """AUROC of a feature alone, >= 0.5 by orientation, and in which direction it points to fake."""
    if kind == "number":
        a = auroc(labels, np.asarray(values, np.float64))
        if a is None:
            return None, ""
        if abs(a - 0.5) < 1e-12:
            return 0.5, "none"
        return (a, "higher: fake") if a > 0.5 else (1 - a, "lower: fake")
    cats, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    rate = np.bincount(codes, weights=labels, minlength=cats.size) / np.maximum(np.bincount(codes, minlength=cats.size), 1)
    a = auroc(labels, rate[codes])
    if a is None:
        return None, ""
    if abs(a - 0.5) < 1e-12:
        return 0.5, "none"
    n1 = max(int(labels.sum()), 1)
    n0 = max(labels.size - int(labels.sum()), 1)
    share_f = np.bincount(codes, weights=labels, minlength=cats.size) / n1
    share_r = np.bincount(codes, weights=1 - labels, minlength=cats.size) / n0
    k = int(np.argmax(np.abs(share_f - share_r)))  # the value whose share differs most between the classes
    return a, f"{cats[k]}: {'fake' if share_f[k] > share_r[k] else 'real'}"


def _distribution(values: np.ndarray, kind: str) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0}
    if kind == "number":
        q = np.quantile(np.asarray(values, np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
        return {"n": int(values.size), "min": float(q[0]), "q25": float(q[1]), "median": float(q[2]),
                "q75": float(q[3]), "max": float(q[4])}
    cats, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {"n": int(values.size), "counts": {str(cats[i]): int(counts[i]) for i in order}}


def describe(dist: dict[str, Any]) -> str:
    """A distribution in a few words: ``JPEG 80%, PNG 20%`` or ``median 512 [256-1024]``."""
    n = dist.get("n", 0)
    if not n:
        return "-"
    if "counts" in dist:
        return ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in list(dist["counts"].items())[:3])
    fmt = (lambda v: f"{v:.3g}")
    return f"median {fmt(dist['median'])} [{fmt(dist['min'])}-{fmt(dist['max'])}]"


@dataclass
class AuditResult:
    """Per feature: AUROC alone (pooled and per generator) and distributions; plus the warnings."""

    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # ranked: strongest and widest first
    n: int = 0
    unreadable: int = 0
    warn_above: float = WARN_ABOVE
    findings: list[dict[str, Any]] = field(default_factory=list)  # the warnings' facts, in the same order
    values: dict[str, list[Any]] = field(default_factory=dict, repr=False)  # per sample, for strata
    labels: np.ndarray | None = field(default=None, repr=False)

    @property
    def headline(self) -> str:
        """The top finding in words (empty without a warning)."""
        if not self.findings:
            return ""
        f = self.findings[0]
        return f"{f['contrast'] or f['label']} ({f['label']}, AUROC {auroc_text(f['auroc'], f.get('unreliable'))})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"n": self.n, "unreadable": self.unreadable, "warn_above": self.warn_above, "headline": self.headline,
                "features": self.features, "warnings": self.warnings, "findings": self.findings}


def unreliable_auroc(auroc: float | None, labels: np.ndarray, groups: np.ndarray | None) -> str | None:
    """Why a feature's AUROC over ``labels`` is unreliable by the shared rule (:mod:`.reliability`), else None."""
    n_fake = int(np.sum(labels == 1))
    n_groups: list[int | None] = [None, None]
    if groups is not None:  # one key per sample; None: the sample alone
        keys = [f"g:{k}" if k is not None else f"i:{i}" for i, k in enumerate(groups)]
        n_groups = [len({k for k, y in zip(keys, labels) if y == c}) for c in (0, 1)]
    return unreliable_reason("auroc", auroc, None, None, int(labels.size) - n_fake, n_fake, *n_groups)


def auroc_text(auroc: float, reason: str | None) -> str:
    """An AUROC as the audit prints it, with the shared ⚠ mark when it is unreliable."""
    return f"{auroc:.2f}" + (" ⚠" if reason else "")


def audit(samples: Sequence[Sample], infos: Sequence[HeaderInfo] | None = None, *,
          warn_above: float = WARN_ABOVE) -> AuditResult:
    """Audit the header features of ``samples`` (headers read here unless ``infos`` are given)."""
    infos = list(infos) if infos is not None else read_headers(samples)
    labels_all = np.array([s.label for s in samples], np.int64)
    gens_all = np.array([s.generator for s in samples], dtype=object)
    groups_all = np.array([s.group for s in samples], dtype=object) if any(s.group for s in samples) else None
    generators = list(dict.fromkeys(g for g, y in zip(gens_all, labels_all) if y == 1))
    res = AuditResult(n=len(samples), unreadable=sum(1 for i in infos if i.error), warn_above=warn_above)
    for name, (kind, label) in FEATURES.items():
        raw = [feature_value(i, name) for i in infos]
        ok = np.fromiter((v is not None for v in raw), bool, len(raw))
        if kind == "number":
            x = np.fromiter((np.nan if v is None else v for v in raw), np.float64, len(raw))[ok]
        else:
            x = np.array([str(v) for v in raw if v is not None], dtype=str)
        y, g = labels_all[ok], gens_all[ok]
        grp = groups_all[ok] if groups_all is not None else None
        a, direction = separability(y, x, kind)
        per_gen: dict[str, dict[str, Any]] = {}
        for gen in generators:
            is_gen = g == gen
            m = is_gen | (y == 0)
            ag, dg = separability(y[m], x[m], kind)
            per_gen[gen] = {"auroc": ag, "direction": dg, "n": int(is_gen.sum()),
                            "unreliable": unreliable_auroc(ag, y[m], grp[m] if grp is not None else None)}
        groups = ["real", *generators]
        res.features[name] = {
            "description": label, "kind": kind, "auroc": a, "direction": direction, "n": int(ok.sum()),
            "unreliable": unreliable_auroc(a, y, grp),
            "real": _distribution(x[y == 0], kind), "fake": _distribution(x[y == 1], kind),
            "per_generator": per_gen,
            "by_group": {gr: _distribution(x[g == gr], kind) for gr in groups},
        }
        res.values[name] = raw
        f = res.features[name]
        pooled_warns = a is not None and a > warn_above
        floor = max(warn_above, a + 0.05) if pooled_warns else warn_above
        hits = sorted(((pg["auroc"], gen, pg) for gen, pg in per_gen.items()
                       if len(generators) > 1 and pg["auroc"] is not None and pg["auroc"] > floor),
                      key=lambda t: -t[0])
        by_gen = ", ".join(f"{gen} {auroc_text(ag, pg['unreliable'])} (n={pg['n']})" for ag, gen, pg in hits[:4])
        if len(hits) > 4:
            by_gen += f" and {len(hits) - 4} more"
        n_real = int((y == 0).sum())
        if pooled_warns:
            f["contrast"] = contrast(f)
            res.findings.append({
                "feature": name, "label": label, "auroc": a, "generator": None, "n": int(ok.sum()),
                "unreliable": f["unreliable"], "contrast": f["contrast"], "direction": direction, "same_cue": [],
                "text": f"{label} alone tells real from fake: AUROC {auroc_text(a, f['unreliable'])} ({direction}; "
                        f"{f['contrast']}; real: {describe(f['real'])}; fake: {describe(f['fake'])}; n={int(ok.sum())})"
                        + (f"; higher still for {by_gen}" if hits else "")})
        elif hits:  # one generator's own confound, hidden in the pooled figure
            ag, gen, pg = hits[0]
            res.findings.append({
                "feature": name, "label": label, "auroc": ag, "generator": gen, "n": pg["n"] + n_real,
                "unreliable": pg["unreliable"],
                "contrast": f"{gen}: {describe(f['by_group'][gen])}; real: {describe(f['real'])}",
                "direction": pg["direction"], "same_cue": [],
                "text": f"{label} alone tells real from {gen}: AUROC {auroc_text(ag, pg['unreliable'])} "
                        f"({pg['direction']}; {gen}: {describe(f['by_group'][gen])}; real: {describe(f['real'])}; "
                        f"n={pg['n']})"
                        + (f"; also {', '.join(by_gen.split(', ')[1:])}" if len(hits) > 1 else "")})
    res.labels = labels_all
    _rank_and_merge(res)
    return res


def finding_weight(f: dict[str, Any], n_total: int) -> float:
    """Strength above chance times the share of the images a finding covers."""
    return 2 * (f["auroc"] - 0.5) * f["n"] / max(n_total, 1)


def _rank_and_merge(res: AuditResult) -> None:
    """Order the findings by weight; fold a pooled finding explained by a higher-ranked one into it.

    When two features explain each other (format and file size per pixel often do), the category
    (the file's kind) hosts the number, in the higher rank's place.
    """
    ranked = sorted(res.findings, key=lambda f: -finding_weight(f, res.n))
    kept: list[dict[str, Any]] = []
    for f in ranked:
        host = next((k for k in kept if f["generator"] is None and k["generator"] is None
                     and _vanishes_within(res, f, k)), None)
        if host is None:
            kept.append(f)
        elif FEATURES[host["feature"]][0] == "number" and FEATURES[f["feature"]][0] == "category" \
                and _vanishes_within(res, host, f):
            f["same_cue"] += [host["label"], *host["same_cue"]]
            kept[kept.index(host)] = f
        else:
            host["same_cue"].append(f["label"])
    for k in kept:
        if k["same_cue"]:
            k["text"] += (f"; the same cue as {', '.join(k['same_cue'])} (they separate nothing within each "
                          f"{k['label']} {'band' if FEATURES[k['feature']][0] == 'number' else 'value'})")
    res.findings = kept
    res.warnings = [k["text"] for k in kept]


def _vanishes_within(res: AuditResult, f: dict[str, Any], host: dict[str, Any]) -> bool:
    """True when feature ``f`` separates nothing (AUROC <= warn_above) within the strata of ``host``'s feature."""
    from .confounds import fake_score, oriented, strata_of, within_strata_auroc

    y = res.labels if res.labels is not None else np.zeros(0, np.int64)
    score = fake_score(res.values[f["feature"]], FEATURES[f["feature"]][0], y)
    ok = np.isfinite(score)
    strata = strata_of(res.values[host["feature"]], FEATURES[host["feature"]][0])
    within = oriented(within_strata_auroc(y[ok], score[ok], strata[ok]))
    return within is None or within <= res.warn_above


def audit_block(report: Any, result: AuditResult, *, heading: bool = True) -> None:
    """Add the audit to a report: warnings in words, the per-feature table and the per-generator table."""
    report.results["audit"] = result.to_dict()
    if heading:
        report.heading("Confound audit")
    report.text("How well each property of the file, not of the picture, tells real from fake on its own "
                f"(AUROC of the feature alone, either direction; warning above {result.warn_above:g}, marked"
                f"{ABOVE} in the tables). {RULE_SHORT} "
                f"{result.n} images" + (f", {result.unreadable} with unreadable headers." if result.unreadable else "."))
    if result.headline:
        report.text(f"Main finding: {result.headline}. Warnings are ranked by strength times the share of images "
                    "they cover; features that say the same thing (separate nothing within the strata of a "
                    "higher-ranked one) are merged into it.")
    for w in result.warnings:
        report.text("⚠ " + w)
    if not result.warnings:
        report.text(f"No feature separates real from fake above AUROC {result.warn_above:g}.")
    rows = []
    for name, f in result.features.items():
        a = f["auroc"]
        flag = ABOVE if a is not None and a > result.warn_above else ""
        figure = "n/a" if a is None else auroc_text(a, f["unreliable"]) + flag
        rows.append([f["description"], figure, f["direction"] or "-",
                     describe(f["real"]), describe(f["fake"]), str(f["n"])])
    report.table(["feature", "AUROC alone", "direction", "real", "fake", "n"], rows)
    gens = list(next(iter(result.features.values()))["per_generator"]) if result.features else []
    if len(gens) > 1:
        head = ["generator (n)", *result.features]
        body = []
        for gen in gens:
            n = next(iter(result.features.values()))["per_generator"][gen]["n"]
            cells = []
            for f in result.features.values():
                pg = f["per_generator"][gen]
                a = pg["auroc"]
                cells.append("n/a" if a is None
                             else auroc_text(a, pg["unreliable"]) + (ABOVE if a > result.warn_above else ""))
            body.append([f"{gen} (n={n})", *cells])
        report.text("Per generator: AUROC of each feature alone, real versus that generator.")
        report.table(head, body)
