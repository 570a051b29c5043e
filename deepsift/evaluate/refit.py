"""The re-encoding control that answers its question: refit what can be refitted, on controlled images.

A control asks "does the detector still work once this file-history cue is gone?". Re-encoding
only the test images of a detector trained on the originals does not ask that: the detector may
have learnt the cue through something the re-encode keeps. So a detector that can be fitted (a
CoDE head on embeddings, any baseline with ``fit(real, fake)``) is refitted here, by grouped
2-fold cross-fitting on the evaluation set: once on the original files and once on the
controlled files, the same folds and the same images on both sides, so the drop compares like
with like. A detector that cannot be fitted (a published model) is scored as given on the
original and on the controlled test images, and the report says that only the test side was
controlled. An image whose re-encode fails is left out of both sides and listed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..decision import DEFAULT_THRESHOLD
from .datasets import Sample
from .scoring import ScoreTable, is_code_detector, score_samples

FOLDS = 2
REFIT = "refitted"
TEST_ONLY = "test side only"
REFIT_FOLDS = "refitted per fold"
MODE_TEXT = {
    REFIT_FOLDS: "every leave-one-out fold was refitted on the controlled images (the same images on both sides)",
    REFIT: "refitted on controlled training images (grouped 2-fold cross-fit on this set; the original figure is "
           "the same cross-fit on the original files, same folds, same images)",
    TEST_ONLY: "only the test images were controlled (this detector cannot be refitted here): a drop shows that its "
               "scores follow the files' history; no drop does NOT show that it would work when trained without "
               "that cue",
}


@dataclass
class ControlRun:
    """The same images scored on both sides of the control, per detector, and how."""

    original: dict[str, ScoreTable] = field(default_factory=dict)
    controlled: dict[str, ScoreTable] = field(default_factory=dict)
    mode: dict[str, str] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def can_refit(det: Any) -> bool:
    """True when the detector can be fitted again here (CoDE heads, objects with ``fit(real, fake)``)."""
    return is_code_detector(det) or callable(getattr(det, "fit", None))


def crossfit_folds(samples: Sequence[Sample], k: int = FOLDS, seed: int = 0) -> np.ndarray | None:
    """Fold index per sample: whole groups per fold, each class spread over the folds (None: too few units)."""
    from ..data.groups import group_key

    folds = np.full(len(samples), -1, np.int64)
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        units: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            if s.label == label:
                units.setdefault(group_key(s), []).append(i)
        if len(units) < k:
            return None
        for j, u in enumerate(rng.permutation(len(units))):
            folds[list(units.values())[u]] = j % k
    return folds


def _crossfit_code(det: Any, emb: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    from ..model.heads import make_head

    out = np.full(len(labels), np.nan)
    ok = np.isfinite(emb).all(axis=1)
    for f in range(FOLDS):
        train, test = ok & (folds != f), ok & (folds == f)
        if not test.any():
            continue
        head = make_head(det.classifier).fit(emb[train], labels[train])
        out[test] = head.probability(head.decision_function(emb[test]))
    return out


def _crossfit_other(det: Any, samples: Sequence[Sample], folds: np.ndarray) -> np.ndarray:
    out = np.full(len(samples), np.nan)
    for f in range(FOLDS):
        train = [s for s, g in zip(samples, folds) if g != f]
        test = np.flatnonzero(folds == f)
        fitted = copy.deepcopy(det).fit([s.source for s in train if s.label == 0],
                                        [s.source for s in train if s.label == 1])
        preds = fitted.predict([samples[i].source for i in test])
        out[test] = [np.nan if getattr(p, "error", None) else
                     (p.probability if getattr(p, "probability", None) is not None else p.score) for p in preds]
    return out


def _table(name: str, samples: list[Sample], scores: np.ndarray) -> ScoreTable:
    return ScoreTable(name, samples, scores, scores.copy(), DEFAULT_THRESHOLD)


def run_control(detectors: dict[str, Any], samples: list[Sample], tables: dict[str, ScoreTable], control: Any,
                folder: str, *, calibrator: Any = None, seed: int = 0, prepare: Any = None) -> ControlRun:
    """Score the same images before and after ``control``; fittable detectors are refitted on each side.

    ``prepare(tables)`` applies to the controlled scores what was applied to ``tables`` (an operating point).
    """
    from .control import controlled_samples

    run = ControlRun()
    csamples, run.failed = controlled_samples(samples, control, folder)
    if not csamples:
        return run
    bad = {i for i, _ in run.failed}
    keep = np.array([s.id not in bad for s in samples])
    originals = [s for s, k in zip(samples, keep) if k]
    folds = crossfit_folds(originals, seed=seed)
    if folds is None and any(can_refit(d) for d in detectors.values()):
        run.notes.append(f"fewer than {FOLDS} real or fake groups: no detector could be refitted, so only the test "
                         "side was controlled")
    ctables = score_samples(detectors, csamples, calibrator=calibrator)
    if prepare is not None:
        prepare(ctables)
    labels = np.array([s.label for s in originals], np.int64)
    for name, det in detectors.items():
        given, ctable = tables[name].subset(keep), ctables[name]
        if folds is None or not can_refit(det):
            run.mode[name] = TEST_ONLY
            before, after = given, ctable
        else:
            run.mode[name] = REFIT
            if is_code_detector(det):
                b = _crossfit_code(det, given.embeddings, labels, folds)
                a = _crossfit_code(det, ctable.embeddings, labels, folds)
            else:
                b, a = _crossfit_other(det, originals, folds), _crossfit_other(det, csamples, folds)
            before, after = _table(name, originals, b), _table(name, csamples, a)
        both = before.ok & after.ok  # the same images on both sides
        before.scores, after.scores = np.where(both, before.scores, np.nan), np.where(both, after.scores, np.nan)
        run.original[name], run.controlled[name] = before, after
    return run


def drop_words(before: float, after: float) -> str:
    """The change of a figure under the control, in words."""
    d = before - after
    if abs(d) < 0.02:
        return "barely moves"
    if d > 0:
        return f"falls by {d:.3f}" + (": much of the original figure read the files' history" if d >= 0.1 else "")
    return f"rises by {-d:.3f}"
