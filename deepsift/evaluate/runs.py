"""One function per ``deepsift eval`` command: run a protocol, fill a :class:`Report`, summarise.

Each ``run_*`` returns ``(report, summary lines)``; the CLI prints the summary and writes the
report when ``--report DIR`` is given. The functions take plain objects, so other code (the
baselines, notebooks, the challenge server) can call them directly.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..decision import DEFAULT_THRESHOLD, rule_text
from .audit import audit, audit_block, read_headers
from .explain import explain_block
from .calibration import Calibrator, threshold_for_fpr, unsure_report
from .datasets import EvalSet, real_only
from .metrics import compute_metrics, format_value
from .plots import bar_plot, embedding_map, histogram_plot, roc_pr_plot
from .protocols import ALL, fpr_on_real, leave_one_out, per_generator, split_reals
from .report import SMALL_NOTE, Report, metrics_rows
from .sections import control_block, glance_block, strata, strata_block
from .scoring import ScoreTable, embed_samples, is_code_detector, score_samples
from .seen import seen_block, seen_vs_unseen, seen_words


def _dataset_block(report: Report, data: EvalSet) -> None:
    counts = data.counts()
    report.results["dataset"] = {"root": data.root, "layout": data.layout, "counts": counts}
    gens = {g: n for g, n in counts.items() if g != "real"}
    if len(gens) <= 6:
        what = ", ".join(f"{g} {n}" for g, n in counts.items())
    else:
        what = (f"real {counts.get('real', 0)}, {sum(gens.values())} generated from {len(gens)} generators "
                f"({min(gens.values())} to {max(gens.values())} each)")
    report.text(f"Dataset {data.root} (layout {data.layout}): {what}.")


def groups_line(rows: dict[str, Any], bootstrap: int) -> list[str]:
    """One warning line when the bootstrap resampled groups and some class has fewer than MIN_GROUPS of them."""
    from .metrics import MIN_GROUPS

    few = {k: m for k, m in rows.items() if m.n_real_groups is not None and m.few_groups}
    if not few or not bootstrap:
        return []
    k, m = next(iter(few.items()))
    return [f"images come in groups: the bootstrap resamples groups ({m.n_real_groups} real, {m.n_fake_groups} "
            f"generated for {k}); fewer than {MIN_GROUPS} groups of a class, so its figures are unreliable (⚠)"]


def _rule_block(report: Report, rules: dict[str, str]) -> None:
    """Name the decision rule behind every hard label of the report (accuracy, F1, FPR, TPR)."""
    report.results["decision_rule"] = rules
    distinct = list(dict.fromkeys(rules.values()))
    if len(distinct) == 1:
        report.text(f"Decision rule: {distinct[0]} (accuracies, F1 and false-positive rates count these labels).")
    else:
        report.text("Decision rules: " + "; ".join(f"{n}: {r}" for n, r in rules.items()) + ".")


def _errors_block(report: Report, tables: dict[str, ScoreTable]) -> None:
    errs = {n: t.errors for n, t in tables.items() if t.errors}
    report.results["errors"] = {n: [{"id": i, "error": e} for i, e in v] for n, v in errs.items()}
    for name, items in errs.items():
        report.text(f"{name}: {len(items)} image(s) could not be read and were left out, e.g. "
                    + "; ".join(f"{i}: {e}" for i, e in items[:3]))


def operating_point(tables_val: dict[str, ScoreTable], *, calibration: str | None,
                    target_fpr: float | None) -> tuple[dict[str, Calibrator], dict[str, float]]:
    """Fit a calibrator and/or the target-FPR threshold per detector on validation scores."""
    cals: dict[str, Calibrator] = {}
    thresholds: dict[str, float] = {}
    for name, t in tables_val.items():
        ok = t.ok
        y, raw = t.labels[ok], t.raw_scores[ok]
        scores = t.scores[ok]
        if calibration:
            cals[name] = Calibrator(calibration).fit(y, raw)
            scores = cals[name].transform(raw)
        if target_fpr is not None:
            thresholds[name] = threshold_for_fpr(y, scores, target_fpr)
    return cals, thresholds


def apply_operating_point(tables: dict[str, ScoreTable], cals: dict[str, Calibrator],
                          thresholds: dict[str, float]) -> None:
    """Apply validation-fitted calibrators / thresholds to test score tables (in place)."""
    for name, t in tables.items():
        if name in cals:
            t.scores = np.where(np.isfinite(t.raw_scores), cals[name].transform(np.nan_to_num(t.raw_scores)), np.nan)
            t.threshold = DEFAULT_THRESHOLD
        if name in thresholds:
            t.threshold = thresholds[name]


def _control_section(report: Report, detectors: dict[str, Any], data: EvalSet, tables: dict[str, ScoreTable],
                     control: Any, calibrator: Calibrator | None, cals: dict[str, Calibrator], thr: dict[str, float],
                     bootstrap: int, seed: int) -> tuple[list[str], list[str], list[Any]]:
    """The control of ``eval generators``: summary lines, the drop in words, and its report blocks (placed after
    the first screen's table by the caller)."""
    import tempfile

    from .refit import run_control

    if control is None:
        return [], [], []
    mark = len(report.blocks)
    with tempfile.TemporaryDirectory(prefix="deepsift-control-") as tmp:
        run = run_control(detectors, data.samples, tables, control, tmp, calibrator=calibrator, seed=seed,
                          prepare=lambda ct: apply_operating_point(ct, cals, thr))
    if not run.controlled:
        return [f"control {control.name}: no image could be re-encoded"], [], []
    res = {n: per_generator(t, bootstrap=bootstrap, seed=seed)[ALL] for n, t in run.original.items()}
    cres = {n: per_generator(t, bootstrap=bootstrap, seed=seed)[ALL] for n, t in run.controlled.items()}
    lines = control_block(report, control.name, res, cres, modes=run.mode, failed=run.failed)
    for note in run.notes:
        report.text(note)
    blocks = report.blocks[mark:]
    del report.blocks[mark:]
    return lines, report.results["control"]["summary"], blocks


def run_generators(detectors: dict[str, Any], data: EvalSet, *, bootstrap: int = 0, seed: int = 0,
                   unsure: tuple[float, float] | None = None, val: EvalSet | None = None,
                   calibration: str | None = None, target_fpr: float | None = None,
                   embedding_method: str = "pca", calibrator: Calibrator | None = None,
                   cache: dict | None = None, control: Any = None) -> tuple[Report, list[str]]:
    """Per-generator protocol (any layout); ``control`` (:class:`~.control.Control`) adds the re-encoding control."""
    report = Report("deepsift evaluation: per generator")
    _dataset_block(report, data)
    infos = read_headers(data.samples)
    aud = audit(data.samples, infos)
    tables = score_samples(detectors, data.samples, calibrator=calibrator, embeddings=cache)
    cals: dict[str, Calibrator] = {}
    thr: dict[str, float] = {}
    if val is not None and (calibration or target_fpr is not None):
        # the validation scores go through the same saved calibrator as the test scores
        cals, thr = operating_point(score_samples(detectors, val.samples, calibrator=calibrator),
                                    calibration=calibration, target_fpr=target_fpr)
        apply_operating_point(tables, cals, thr)
        report.results["operating_point"] = {"validation": val.root, "calibration": {n: c.to_dict() for n, c in cals.items()},
                                             "thresholds": thr, "target_fpr": target_fpr}
        report.text(f"Operating point fitted on {val.root}: "
                    + ", ".join(f"{n} threshold {t.threshold:.4g}" for n, t in tables.items()))
    results = {n: per_generator(t, bootstrap=bootstrap, seed=seed) for n, t in tables.items()}
    report.results["per_generator"] = results
    report.results["detectors"] = list(detectors)
    splits = list(next(iter(results.values())))
    by_split: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        for det, per_split in results.items():
            for gen, m in per_split.get(split, {}).items():
                by_split.setdefault(split, {}).setdefault(gen, {})[det] = m
    control_lines, lead, blocks = _control_section(report, detectors, data, tables, control, calibrator, cals, thr,
                                                   bootstrap, seed)
    glance_block(report, by_split[ALL], aud.warnings, lead=lead)
    report.blocks += blocks
    _rule_block(report, {n: t.rule for n, t in tables.items()})
    report.heading("Curves")
    curves = {n: (t.labels[t.ok], t.scores[t.ok]) for n, t in tables.items()}
    if all(np.unique(y).size == 2 for y, _ in curves.values()):
        report.image("roc_pr", roc_pr_plot(curves), "ROC and precision-recall, all generators pooled")
    for n, t in tables.items():
        report.image(f"hist_{n}", histogram_plot(n, t.scores[t.ok], t.generators[t.ok], t.threshold),
                     f"Score histogram per generator: {n}")
    report.heading("Per-generator metrics")
    report.text("Each row: real images versus one generator ('all': every generator pooled). "
                + (f"Brackets: bootstrap 95% intervals ({bootstrap} resamples). " if bootstrap else "") + SMALL_NOTE)
    for split in splits:
        if len(splits) > 1:
            report.heading(f"Split: {split}", 3)
        report.table(*metrics_rows(by_split[split]))
    infos_arr = np.array(infos, dtype=object)
    strata_block(report, {n: strata(t.labels[t.ok], t.scores[t.ok], list(infos_arr[t.ok]), t.threshold,
                                    bootstrap=0, seed=seed) for n, t in tables.items()})
    if unsure:
        report.heading("Unsure band")
        ur = {n: unsure_report(t.labels[t.ok], t.scores[t.ok], unsure, t.threshold) for n, t in tables.items()}
        report.results["unsure"] = ur
        keys = ["n_unsure", "unsure_fraction", "unsure_real", "unsure_fake", "decided_accuracy", "decided_fpr",
                "decided_tpr"]
        report.table(["detector", *keys], [[n, *(r[k] for k in keys)] for n, r in ur.items()])
    emb_table = next((t for t in tables.values() if t.embeddings is not None), None)
    if emb_table is not None and emb_table.ok.sum() >= 3:
        ok = emb_table.ok
        report.heading("Embedding map")
        report.image("embedding_map", embedding_map(emb_table.embeddings[ok], emb_table.generators[ok],
                                                    embedding_method, seed), "CoDE embeddings coloured by generator")
    audit_block(report, aud)
    explained = explain_block(report, tables, aud)
    _errors_block(report, tables)
    summary = [f"{n}: " + ", ".join(f"{k} {format_value(r[ALL][ALL].values[k])}"
                                    for k in ("auroc", "ap", "balanced_accuracy", "f1"))
               + f" on {len(t.samples)} images ({len(t.errors)} unreadable)" for (n, r), t in zip(results.items(), tables.values())]
    for n, r in results.items():
        shaky = [f"{g} ({why})" for g, m in r[ALL].items() if (why := m.unreliable("auroc"))]
        if shaky:
            summary.append(f"{n}: unreliable AUROC (⚠): " + "; ".join(shaky))
    for line in groups_line(next(iter(results.values()))[ALL], bootstrap):
        summary.append(line)
        report.text("⚠ " + line)
    return report, summary + [f"WARNING: {w}" for w in aud.warnings] + explained + control_lines


def run_logo(detector: Any, data: EvalSet, *, kinds: Sequence[str], bootstrap: int = 0, seed: int = 0,
             real_train_fraction: float = 0.5, name: str | None = None,
             control: Any = None) -> tuple[Report, list[str]]:
    """Leave-one-generator-out protocol (``name``: display name of a non-CoDE detector)."""
    import tempfile

    report = Report("deepsift evaluation: leave one generator out")
    _dataset_block(report, data)
    aud = audit(data.samples)
    samples, cres, failed = data.samples, None, []
    kw = dict(kinds=kinds, bootstrap=bootstrap, seed=seed, real_train_fraction=real_train_fraction, name=name)
    if control is not None:  # every fold refitted on controlled images; the same images on both sides
        from .control import controlled_samples

        with tempfile.TemporaryDirectory(prefix="deepsift-control-") as tmp:
            csamples, failed = controlled_samples(data.samples, control, tmp)
            bad = {i for i, _ in failed}
            samples = [s for s in data.samples if s.id not in bad]
            cres = leave_one_out(detector, csamples, **kw) if csamples else None
    emb = None
    if is_code_detector(detector):  # embedded once for both protocols
        emb, _ = embed_samples(detector, [s.source for s in samples], desc="embedding (leave-one-out)")
    res = leave_one_out(detector, samples, embeddings=emb, **kw)
    report.results["leave_one_out"] = res
    seen = seen_vs_unseen(detector, samples, kinds=kinds, real_train_fraction=real_train_fraction, seed=seed,
                          embeddings=emb, name=name)
    report.results["seen_vs_unseen"] = seen
    seen_lines = [w for k, r in seen.items() if (w := seen_words(k, r))]
    rows: dict[str, dict[str, Any]] = {}
    for kind, per_g in res.items():
        for g, m in per_g.items():
            rows.setdefault(g, {})[kind] = m
    control_lines: list[str] = []
    mark = len(report.blocks)
    if cres is not None:
        control_lines = control_block(report, control.name, res, cres, modes={k: "refitted per fold" for k in res},
                                      failed=failed)
    blocks = report.blocks[mark:]
    del report.blocks[mark:]
    glance_block(report, rows, aud.warnings, what="unseen generator (left out of training)",
                 lead=[*seen_lines, *(report.results.get("control") or {}).get("summary", [])])
    report.blocks += blocks
    _rule_block(report, {k: rule_text(DEFAULT_THRESHOLD) for k in res})
    report.heading("Leave-one-generator-out")
    train, test = split_reals(data.samples, real_train_fraction, seed)
    n_groups = len({s.group for s in data.samples if s.label == 0 and s.group})
    report.results["real_split"] = {"train": int(train.size), "test": int(test.size), "groups": n_groups}
    achieved = train.size / max(1, train.size + test.size)
    report.results["real_split"]["achieved_train_fraction"] = achieved
    report.text(f"Heads fitted on real images ({train.size} train, {test.size} test: {achieved:.0%} train, "
                f"{real_train_fraction:.0%} asked"
                + (f"; split by source, {n_groups} group(s), none on both sides" if n_groups else "; split per image")
                + ") and every generator but G; tested on the held-out real images and G. " + SMALL_NOTE)
    counts = {g: max(m.n_fake for m in v.values()) for g, v in rows.items()}
    report.image("logo_auroc", bar_plot("Unseen-generator AUROC (dashed: chance)",
                                        {g: {k: m["auroc"] for k, m in v.items()} for g, v in rows.items()},
                                        "AUROC", counts=counts, chance=0.5))
    report.table(*metrics_rows(rows))
    seen_block(report, seen)
    audit_block(report, aud)
    summary = [f"{kind}: unseen-generator AUROC " + ", ".join(
        f"{g} {format_value(m.values['auroc'], mark=m.unreliable('auroc') is not None)} (n={m.n_fake})"
        for g, m in per_g.items()) for kind, per_g in res.items()]
    return report, summary + seen_lines + [f"WARNING: {w}" for w in aud.warnings] + control_lines


def run_fpr(detectors: dict[str, Any], folder: str, *, bootstrap: int = 0, seed: int = 0,
            follow_links: bool = False) -> tuple[Report, list[str]]:
    """False-positive rate on a folder of real photos."""
    data = real_only(folder, follow_links=follow_links)
    report = Report("deepsift evaluation: false positives on real photos")
    _dataset_block(report, data)
    tables = score_samples(detectors, data.samples)
    res = {n: fpr_on_real(t, bootstrap=bootstrap, seed=seed) for n, t in tables.items()}
    report.results["fpr"] = res
    _rule_block(report, {n: t.rule for n, t in tables.items()})
    report.heading("False-positive rate")
    report.table(["detector", "images", "unreadable", "threshold", "FPR", "95% CI"],
                 [[n, r["n"], r["errors"], r["threshold"], r["fpr"],
                   "-" if r["fpr_ci95"] is None else f"[{r['fpr_ci95'][0]:.3f}, {r['fpr_ci95'][1]:.3f}]"]
                  for n, r in res.items()])
    for n, t in tables.items():
        report.image(f"hist_{n}", histogram_plot(n, t.scores[t.ok], t.generators[t.ok], t.threshold),
                     f"Scores of real photos: {n}")
        report.table(["most 'fake' real photos", "score"], [[m["id"], m["score"]] for m in res[n]["most_fake"]])
    _errors_block(report, tables)
    summary = [f"{n}: FPR {r['fpr']:.3f} on {r['n']} real photos at threshold {r['threshold']:.3g}"
               + (f" ({r['errors']} unreadable)" if r["errors"] else "") for n, r in res.items()]
    return report, summary


def run_scores(labels: Any, runs: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], *, threshold: float,
               bootstrap: int = 0, seed: int = 0, unsure: tuple[float, float] | None = None) -> tuple[Report, list[str]]:
    """Metrics of prediction files against a label file, per generator, side by side."""
    report = Report("deepsift evaluation: score files")
    rows: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    curves = {}
    for name, (y, s, gens) in runs.items():
        g = np.asarray(gens, dtype=object)
        res = {ALL: compute_metrics(y, s, threshold=threshold, bootstrap=bootstrap, seed=seed)}
        fakes = [x for x in dict.fromkeys(g[y == 1])]
        if len(fakes) > 1:
            for gen in fakes:
                m = (y == 0) | (g == gen)
                res[gen] = compute_metrics(y[m], s[m], threshold=threshold, bootstrap=bootstrap, seed=seed)
        if unsure:
            res["unsure"] = unsure_report(y, s, unsure, threshold)  # type: ignore[assignment]
        results[name] = res
        for k, m in res.items():
            if k != "unsure":
                rows.setdefault(k, {})[name] = m
        curves[name] = (y, s)
    report.results["scores"] = results
    if len(rows) > 1:  # per-generator rows: the same first screen as the other protocols
        glance_block(report, rows)
    _rule_block(report, {n: rule_text(threshold) for n in runs})
    report.heading("Metrics")
    report.text(SMALL_NOTE)
    report.table(*metrics_rows(rows))
    if all(np.unique(y).size == 2 for y, _ in curves.values()):
        report.image("roc_pr", roc_pr_plot(curves), "ROC and precision-recall")
    summary = [f"{n}: " + ", ".join(f"{k} {format_value(r[ALL].values[k])}" for k in ("auroc", "ap", "accuracy", "f1"))
               for n, r in results.items()]
    return report, summary
