"""Run detectors over evaluation samples and collect their scores (and embeddings).

A *detector-like* object is anything with ``predict(sources) -> list[Prediction]``: the CoDE
:class:`~deepsift.model.detector.Detector`, a baseline, a wrapper around an external tool.
CoDE detectors that share a backbone (the same model with different heads) are embedded once
and each head classifies the shared embeddings, so comparing heads costs one forward pass.

Metric scores are the calibrated probability of fake when the detector gives one, otherwise
its raw score; errors (unreadable images) are listed and left out of the metrics.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from ..decision import DEFAULT_THRESHOLD, rule_text
from ..exceptions import EvaluationError
from ..output import progress
from .calibration import Calibrator
from .datasets import Sample


class DetectorLike(Protocol):
    """The one thing the harness needs from a detector."""

    def predict(self, sources: Iterable[Any]) -> list[Any]: ...


def is_code_detector(det: Any) -> bool:
    """True for a CoDE :class:`Detector` (embeddings + heads), which the harness can share."""
    return all(hasattr(det, a) for a in ("embed_iter", "classify", "heads", "backbone"))


def head_views(det: Any, classifiers: Sequence[str]) -> dict[str, Any]:
    """One detector per classifier head, all sharing ``det``'s backbone and head objects."""
    views = {}
    for kind in classifiers:
        if kind not in det.heads:
            raise EvaluationError(f"classifier {kind!r} is not among the loaded heads: {', '.join(det.heads)}")
        view = copy.copy(det)
        view.classifier = kind
        views[kind] = view
    return views


@dataclass
class ScoreTable:
    """One detector's verdicts on a list of samples, aligned with them."""

    name: str
    samples: list[Sample]
    scores: np.ndarray  # metric score (probability when available), NaN on error
    raw_scores: np.ndarray
    threshold: float
    errors: list[tuple[str, str]] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    calibrated: bool = True  # scores are calibrated P(fake); False: raw scores of a detector without one

    @property
    def rule(self) -> str:
        """The decision rule these scores are labelled with, in words (for reports)."""
        if self.calibrated:
            return rule_text(self.threshold)
        return f"fake when the raw score >= {self.threshold:g} (this detector gives no calibrated probability)"

    @property
    def ok(self) -> np.ndarray:
        """Mask of samples that were scored."""
        return np.isfinite(self.scores)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], np.int8)

    @property
    def generators(self) -> np.ndarray:
        return np.array([s.generator for s in self.samples], dtype=object)

    def subset(self, mask: np.ndarray) -> "ScoreTable":
        """The rows where ``mask`` is true (errors kept as they were)."""
        idx = np.flatnonzero(mask)
        emb = self.embeddings[idx] if self.embeddings is not None else None
        return ScoreTable(self.name, [self.samples[i] for i in idx], self.scores[idx], self.raw_scores[idx],
                          self.threshold, self.errors, emb, self.calibrated)


def _progress(total: int, desc: str) -> Any:
    return progress(desc=desc, unit="img", total=total, leave=False)


def embed_samples(det: Any, sources: Sequence[Any], desc: str = "embedding") -> tuple[np.ndarray, list[str | None]]:
    """Embed sources with a CoDE detector: ``(N, D)`` float32 (NaN rows on error) and errors."""
    dim = int(det.backbone.config.hidden_size)
    out = np.full((len(sources), dim), np.nan, np.float32)
    errors: list[str | None] = [None] * len(sources)
    with _progress(len(sources), desc) as bar:
        for i, (_, emb, err) in enumerate(det.embed_iter(sources)):
            if emb is not None:
                out[i] = emb
            errors[i] = err
            bar.update(1)
    return out, errors


def _from_embeddings(name: str, det: Any, samples: list[Sample], emb: np.ndarray, errors: list[str | None],
                     calibrator: Calibrator | None) -> ScoreTable:
    ok = np.isfinite(emb).all(axis=1)
    raw = np.full(len(samples), np.nan)
    prob = np.full(len(samples), np.nan)
    if ok.any():
        verdicts = det.classify(emb[ok])
        raw[ok] = [v["score"] for v in verdicts]
        prob[ok] = [v["probability"] for v in verdicts]
    return _table(name, samples, raw, prob, errors, calibrator, _threshold_of(det), emb)


def _table(name: str, samples: list[Sample], raw: np.ndarray, prob: np.ndarray, errors: list[str | None],
           calibrator: Calibrator | None, det_threshold: float | None, emb: np.ndarray | None) -> ScoreTable:
    have_prob = np.isfinite(prob[np.isfinite(raw)]).all() and np.isfinite(raw).any()
    calibrated = True
    if calibrator is not None:
        scores = np.where(np.isfinite(raw), calibrator.transform(np.nan_to_num(raw)), np.nan)
        threshold = float(calibrator.params.get("threshold", DEFAULT_THRESHOLD))
    elif have_prob:
        scores, threshold = prob, (det_threshold if det_threshold is not None else DEFAULT_THRESHOLD)
    else:
        scores, threshold, calibrated = raw, DEFAULT_THRESHOLD, False
    errs = [(s.id, e) for s, e in zip(samples, errors) if e]
    return ScoreTable(name, samples, scores, raw, float(threshold), errs, emb, calibrated)


def _threshold_of(det: Any) -> float | None:
    """The decision threshold a detector labels with (``decision_threshold``, else ``threshold``), if any."""
    value = getattr(det, "decision_threshold", None)
    return value if value is not None else getattr(det, "threshold", None)


def score_samples(detectors: dict[str, Any], samples: list[Sample], *, calibrator: Calibrator | None = None,
                  embeddings: dict[int, tuple[np.ndarray, list[str | None]]] | None = None) -> dict[str, ScoreTable]:
    """Score ``samples`` with every detector; CoDE views sharing a backbone are embedded once.

    ``embeddings`` is an optional cache ``{id(backbone): (emb, errors)}`` filled and reused.
    """
    if not samples:
        raise EvaluationError("no samples to evaluate")
    cache = embeddings if embeddings is not None else {}
    sources = [s.source for s in samples]
    out: dict[str, ScoreTable] = {}
    for name, det in detectors.items():
        if is_code_detector(det):
            key = id(det.backbone)
            if key not in cache:
                cache[key] = embed_samples(det, sources, desc=f"embedding ({name})")
            emb, errors = cache[key]
            out[name] = _from_embeddings(name, det, samples, emb, errors, calibrator)
            continue
        preds = list(det.predict(sources))
        if len(preds) != len(samples):
            raise EvaluationError(f"detector {name!r} returned {len(preds)} predictions for {len(samples)} images")
        raw = np.array([np.nan if p.score is None else p.score for p in preds], np.float64)
        prob = np.array([np.nan if getattr(p, "probability", None) is None else p.probability for p in preds])
        errors = [getattr(p, "error", None) for p in preds]
        out[name] = _table(name, samples, raw, prob, errors, calibrator, _threshold_of(det), None)
    return out
