"""Robustness sweep: a metric against perturbation strength, for every transform family.

The transforms are :mod:`deepsift.data.augment`'s (the code the trainer uses). Each image is
decoded once; the clean point reuses the clean embeddings when the caller already has them
(``clean_cache``), and every perturbed point costs exactly one perturbation plus one forward
pass per backbone (CoDE heads sharing a backbone share it). Random transforms (random crop,
noise) draw from ``numpy.random.default_rng([seed, transform index, image index])``, so a
sweep is reproducible.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..data.augment import ROBUSTNESS_FAMILIES, robustness_perturbations
from ..exceptions import EvaluationError, ImageError
from ..images import decode_image
from ..output import progress
from .datasets import Sample
from .metrics import METRIC_NAMES, compute_metrics
from .scoring import score_samples


@dataclass
class SweepResult:
    """Curves of ``metric`` against strength per family and detector, with timings."""

    metric: str
    clean: dict[str, float | None]
    curves: dict[str, dict[str, Any]]
    timing: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clean_ci95: dict[str, list[float] | None] | None = None  # with ``bootstrap``; points then carry "ci95"
    clean_unreliable: dict[str, str | None] = field(default_factory=dict)  # why a clean figure is unreliable

    @property
    def overhead_ratio(self) -> float:
        """Sweep time over (perturbation + forward) time: 1.0 means no overhead."""
        work = self.timing.get("perturb_s", 0.0) + self.timing.get("forward_s", 0.0)
        return self.timing.get("sweep_s", 0.0) / work if work > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = {"metric": self.metric, "clean": self.clean, "curves": self.curves,
               "timing": {**self.timing, "overhead_ratio": self.overhead_ratio},
               "skipped": [{"id": i, "error": e} for i, e in self.skipped]}
        if self.clean_ci95 is not None:
            out["clean_ci95"] = self.clean_ci95
        out["clean_unreliable"] = self.clean_unreliable
        return out


def _value(samples: list[Sample], scores: np.ndarray, threshold: float, metric: str, bootstrap: int = 0,
           seed: int = 0) -> tuple[float | None, list[float] | None, str | None]:
    """The metric on the scored samples, its bootstrap interval (``None`` without ``bootstrap``) and why it is
    unreliable (None when it is not)."""
    ok = np.isfinite(scores)
    if not ok.any():
        return None, None, None
    labels = np.array([s.label for s in samples], np.int8)[ok]
    m = compute_metrics(labels, scores[ok], threshold=threshold, bootstrap=bootstrap, seed=seed)
    v = m.values[metric]
    return v.value, ([v.low, v.high] if v.low is not None else None), m.unreliable(metric)


def robustness_sweep(detectors: dict[str, Any], samples: list[Sample], *, families: Sequence[str] | None = None,
                     metric: str = "auroc", seed: int = 0,
                     clean_cache: dict[int, tuple[np.ndarray, list[str | None]]] | None = None,
                     bootstrap: int = 0) -> SweepResult:
    """Run every perturbation of ``families`` (default all) and measure ``metric`` per detector.

    ``bootstrap`` > 0 adds a 95 % interval per point (``ci95``) and for the clean images.
    """
    if metric not in METRIC_NAMES:
        raise EvaluationError(f"unknown metric {metric!r}; choose from {', '.join(METRIC_NAMES)}")
    perturbations = robustness_perturbations(families)
    t_start = time.perf_counter()
    images, kept, skipped = [], [], []
    for s in samples:
        try:
            images.append(decode_image(s.source))
            kept.append(s)
        except ImageError as exc:
            skipped.append((s.id, str(exc)))
    if not kept:
        raise EvaluationError("no readable image for the robustness sweep")
    decode_s = time.perf_counter() - t_start
    t0 = time.perf_counter()
    clean_samples = [Sample(s.id, s.source, s.label, s.generator, s.split) for s in kept]
    clean_tables = score_samples(detectors, clean_samples, embeddings=clean_cache)
    clean_s = time.perf_counter() - t0
    clean_v = {n: _value(kept, t.scores, t.threshold, metric, bootstrap, seed) for n, t in clean_tables.items()}
    clean = {n: v for n, (v, _, _) in clean_v.items()}
    curves: dict[str, dict[str, Any]] = {
        fam: {"axis": ROBUSTNESS_FAMILIES[fam][0], "points": []}
        for fam in dict.fromkeys(p.family for p in perturbations)
    }
    perturb_s = forward_s = 0.0
    bar = progress(perturbations, "robustness", unit="transform", leave=False)
    for j, pert in enumerate(bar):
        t0 = time.perf_counter()
        pert_samples = [
            Sample(s.id, pert(im, np.random.default_rng([seed, j, i])), s.label, s.generator, s.split)  # type: ignore[arg-type]
            for i, (s, im) in enumerate(zip(kept, images))
        ]
        t1 = time.perf_counter()
        tables = score_samples(detectors, pert_samples)
        t2 = time.perf_counter()
        perturb_s += t1 - t0
        forward_s += t2 - t1
        vals = {n: _value(kept, t.scores, t.threshold, metric, bootstrap, seed) for n, t in tables.items()}
        point = {"strength": pert.strength, "name": pert.name, "values": {n: v for n, (v, _, _) in vals.items()}}
        if bootstrap:
            point["ci95"] = {n: ci for n, (_, ci, _) in vals.items()}
        curves[pert.family]["points"].append(point)
    sweep_s = time.perf_counter() - t_start - decode_s - clean_s
    timing = {"decode_s": decode_s, "clean_s": clean_s, "perturb_s": perturb_s, "forward_s": forward_s,
              "sweep_s": sweep_s, "n_images": float(len(kept)), "n_transforms": float(len(perturbations))}
    return SweepResult(metric, clean, curves, timing, skipped,
                       {n: ci for n, (_, ci, _) in clean_v.items()} if bootstrap else None,
                       {n: why for n, (_, _, why) in clean_v.items()})
