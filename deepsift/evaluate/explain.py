"""Tie the confound audit's findings to detectors: each detector's AUROC within the strata of a flagged feature.

A detector whose figure falls to about chance when each real image is compared only with fakes
that share its value of the feature (its file format; its quartile of a number) is reading that
feature: "this detector's result is explained by X".
"""
from __future__ import annotations

from typing import Any

from .audit import FEATURES
from .confounds import auroc, explained, strata_of, verdict, within_strata_auroc


def explain_rows(tables: dict[str, Any], result: Any, top: int = 3) -> list[dict[str, Any]]:
    """Per detector and top pooled finding: overall AUROC, AUROC within the feature's strata, and the verdict."""
    rows = []
    findings = [f for f in result.findings if f["generator"] is None][:top]
    for name, t in tables.items():
        ok = t.ok
        y, s = t.labels[ok], t.scores[ok]
        overall = auroc(y, s) if y.size else None
        for f in findings:
            vals = [v for v, k in zip(result.values[f["feature"]], ok) if k]
            within = within_strata_auroc(y, s, strata_of(vals, FEATURES[f["feature"]][0]))
            rows.append({"detector": name, "feature": f["feature"], "label": f["label"], "auroc": overall,
                         "within": within, "explained": explained(overall, within),
                         "verdict": verdict(f["label"], overall, within)})
    return rows


def explain_block(report: Any, tables: dict[str, Any], result: Any) -> list[str]:
    """A table tying each detector to the flagged features; returns one line per explained detector."""
    rows = explain_rows(tables, result)
    report.results.setdefault("audit_explain", rows)
    if not rows:
        return []
    report.heading("Does each detector follow the flagged features?", 3)
    report.text("AUROC within the strata of a flagged feature compares each real image only with fakes that share "
                "its value (its format; its quartile of a number). A detector whose figure falls to about chance "
                "there is reading that feature, not the pictures.")
    report.table(["detector", "feature", "AUROC", "AUROC within its strata", "verdict"],
                 [[r["detector"], r["label"], _f(r["auroc"]), _f(r["within"]), r["verdict"]] for r in rows])
    return [f"{r['detector']}: AUROC {_f(r['auroc'])} overall, {_f(r['within'])} within {r['label']} strata: "
            f"{r['verdict']}" for r in rows if r["explained"]]


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
