"""``deepsift train --leave-out GEN``: after training, the per-generator evaluation on unseen and seen generators.

The evaluation set is the run's *report* records (:mod:`deepsift.train.holdout`: held out of
training, and disjoint from the records that fit the heads and those that chose the epoch):
their real images, their fakes of the seen generators, and the left-out generators' images (of
report records first, then of training records, up to the same number; never of the records the
heads were fitted on or the epoch was chosen on). It goes through the evaluation toolkit's
per-generator protocol (:func:`deepsift.evaluate.runs.run_generators`, the table and report of
``deepsift eval generators``), written to ``OUT/leave-out-report/``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .config import TrainConfig

REPORT_DIR = "leave-out-report"


def left_out_samples(data: Sequence[str], real: str | None, cfg: TrainConfig) -> list:
    """The evaluation samples (bytes, label, generator) of a leave-out run."""
    from ..evaluate.datasets import Sample
    from .data import build_index
    from .holdout import held_out
    from .loader import RefReader

    index = build_index(data, real=real, leave_out=cfg.leave_out)
    _, roles = held_out(index, cfg)
    reader = RefReader(index.files)
    samples: list[Sample] = []
    for rec in roles.report:
        samples.append(Sample(id=f"{rec.id}/real", source=reader.read(rec.real), label=0, generator="real"))
        for gen, ref in rec.fakes:
            samples.append(Sample(id=f"{rec.id}/{gen}", source=reader.read(ref), label=1, generator=gen))
    report_ids, used = {r.id for r in roles.report}, {r.id for r in roles.heads}
    unseen = sorted((r for r in index.left_out if r.id not in used), key=lambda r: (r.id not in report_ids, r.id))
    per_gen: dict[str, int] = {}
    for rec in unseen:
        for gen, ref in rec.fakes:
            if per_gen.get(gen, 0) < len(roles.report):
                samples.append(Sample(id=f"{rec.id}/{gen}", source=reader.read(ref), label=1, generator=gen))
                per_gen[gen] = per_gen.get(gen, 0) + 1
    return samples


def evaluate_left_out(out: str | os.PathLike, data: Sequence[str], real: str | None, cfg: TrainConfig) -> list[str]:
    """Evaluate the trained model folder ``out`` on seen and left-out generators; returns the summary lines."""
    from ..evaluate.datasets import EvalSet
    from ..evaluate.detectors import load_detectors
    from ..evaluate.metrics import format_value
    from ..evaluate.runs import run_generators

    out = Path(out)
    data_set = EvalSet(root=str(out), layout="folders", samples=left_out_samples(data, real, cfg))
    dets = load_detectors(model=str(out), heads=None, classifiers=["linear"], device=cfg.device)
    report, summary = run_generators(dets, data_set)
    paths = report.write(out / REPORT_DIR)
    lines = []
    for det, per_split in report.results["per_generator"].items():
        for gen, m in per_split["all"].items():
            tag = "left out" if gen in cfg.leave_out else "pooled" if gen == "all" else "seen"
            lines.append(f"{det} {gen} ({tag}): " + ", ".join(
                f"{k} {format_value(m.values[k])}" for k in ("auroc", "ap", "accuracy")))
    return lines + [f"report: {paths['html']}"]
