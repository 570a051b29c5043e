"""``deepsift eval robustness``: the perturbation sweep, and its re-encoding control (test side only)."""
from __future__ import annotations

from typing import Any, Sequence

from ..decision import DEFAULT_THRESHOLD, rule_text
from .audit import audit, audit_block
from .datasets import EvalSet
from .plots import robustness_plot
from .reliability import RULE_TEXT
from .report import Report
from .robustness import robustness_sweep
from .runs import _dataset_block, _rule_block


def run_robustness(detectors: dict[str, Any], data: EvalSet, *, families: Sequence[str] | None, metric: str,
                   seed: int = 0, cache: dict | None = None, bootstrap: int = 0,
                   control: Any = None) -> tuple[Report, list[str]]:
    """Robustness sweep protocol; ``control`` runs the sweep again on the controlled images, side by side.

    The control is on the test side only (the detectors are swept as given, never refitted) and the
    report says so; an image whose re-encode fails leaves both sweeps and is listed.
    """
    import tempfile

    from .control import controlled_samples
    from .refit import MODE_TEXT, TEST_ONLY

    report = Report("deepsift evaluation: robustness")
    _dataset_block(report, data)
    aud = audit(data.samples)
    with tempfile.TemporaryDirectory(prefix="deepsift-control-") as tmp:
        samples, csamples, failed = data.samples, [], []
        if control is not None:
            csamples, failed = controlled_samples(data.samples, control, tmp)
            bad = {i for i, _ in failed}
            samples = [s for s in data.samples if s.id not in bad]
        sweep = robustness_sweep(detectors, samples, families=families, metric=metric, seed=seed,
                                 clean_cache=cache if not failed else None, bootstrap=bootstrap)
        csweep = robustness_sweep(detectors, csamples, families=families, metric=metric, seed=seed,
                                  bootstrap=bootstrap) if csamples else None
    d = sweep.to_dict()
    report.results["robustness"] = d
    dets = list(sweep.clean)
    worst = {n: min(((p["values"][n], p["name"]) for c in sweep.curves.values() for p in c["points"]
                     if p["values"][n] is not None), default=(None, "-")) for n in dets}
    report.heading("At a glance")
    for w in aud.warnings:
        report.text("⚠ confound: " + w)
    report.text(f"{metric} on {int(sweep.timing['n_images'])} images. " + RULE_TEXT)
    glance = [[n, _r(sweep.clean[n]) + (" ⚠" if sweep.clean_unreliable.get(n) else ""), _r(worst[n][0]), worst[n][1]]
              for n in dets]
    head = ["detector", f"clean {metric}", f"worst {metric}", "worst transform"]
    control_lines: list[str] = []
    if control is not None and csweep is None:
        control_lines.append(f"control {control.name}: no image could be re-encoded")
    if csweep is not None:
        report.results["control"] = {"transform": control.name, "robustness": csweep.to_dict(),
                                     "mode": {n: TEST_ONLY for n in dets},
                                     "failed": [{"id": i, "error": e} for i, e in failed]}
        report.text(f"Control {control.name}, test side only: {MODE_TEXT[TEST_ONLY]}. The sweep ran as given on the "
                    f"original and on the {control.name} images (the detectors were not refitted); for a control that "
                    "refits, see eval generators and eval logo.")
        if failed:
            report.text(f"{len(failed)} image(s) could not be re-encoded and were left out of both sides, e.g. "
                        + "; ".join(f"{i}: {e}" for i, e in failed[:5]))
        cworst = {n: min((p["values"][n] for c in csweep.curves.values() for p in c["points"]
                          if p["values"][n] is not None), default=None) for n in dets}
        head += [f"clean {metric} {control.name}", "drop", f"worst {metric} {control.name}", "how"]
        for row, n in zip(glance, dets):
            a, b = sweep.clean[n], csweep.clean[n]
            row += [_r(b) + (" ⚠" if csweep.clean_unreliable.get(n) else ""),
                    "n/a" if a is None or b is None else f"{a - b:+.3f}", _r(cworst[n]), TEST_ONLY]
            if a is not None and b is not None:
                control_lines.append(f"{n}: clean {metric} {a:.3f} original, {b:.3f} with {control.name} "
                                     f"(drop {a - b:+.3f}, {TEST_ONLY}: not refitted)")
    report.table(head, glance)
    _rule_block(report, {n: rule_text(getattr(det, "decision_threshold", None) or DEFAULT_THRESHOLD)
                         for n, det in detectors.items()})
    report.heading(f"Robustness ({metric} against perturbation strength)")
    report.image("robustness", robustness_plot(d), f"{metric} per transform; dotted: clean images")
    rows = [["clean", "", *(sweep.clean[n] for n in dets)]]
    for fam, c in sweep.curves.items():
        rows += [[fam, p["strength"], *(p["values"][n] for n in dets)] for p in c["points"]]
    report.table(["transform", "strength", *dets], rows)
    t = sweep.timing
    report.text(f"{int(t['n_images'])} images x {int(t['n_transforms'])} transforms: perturbation {t['perturb_s']:.1f} s, "
                f"forward {t['forward_s']:.1f} s, sweep {t['sweep_s']:.1f} s (overhead ratio {sweep.overhead_ratio:.2f}).")
    audit_block(report, aud)
    summary = [f"{n}: clean {metric} {sweep.clean[n] if sweep.clean[n] is None else round(sweep.clean[n], 3)}, "
               f"worst {worst[n][1]} ({worst[n][0] if worst[n][0] is None else round(worst[n][0], 3)})" for n in dets]
    summary.append(f"sweep overhead ratio {sweep.overhead_ratio:.2f} (sweep / (perturbation + forward))")
    return report, summary + [f"WARNING: {w}" for w in aud.warnings] + control_lines


def _r(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
