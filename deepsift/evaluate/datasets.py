"""Evaluation datasets on disk: which images, which label, which generator.

The layouts and the walk are :mod:`deepsift.data.layout`'s, the one reader that ``data split``
and ``heads fit`` use too (``classes``: ``real/<source>/...`` + ``fake/<generator>/...``;
``folders``; ``d3-test``; ``parquet`` shards with a separate real folder; ``real-only``).
This module gives them the evaluation's names (:class:`EvalSet`, :func:`load_eval_set`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from ..data.layout import D3_SPLITS, LAYOUTS, REAL, Sample, detect_layout, read_dataset
from ..data.layout import real_only as _real_only
from ..sources import SourceError

__all__ = ["D3_SPLITS", "LAYOUTS", "REAL", "EvalSet", "Sample", "detect_layout", "load_eval_set", "real_only",
           "select"]


@dataclass
class EvalSet:
    """A labelled set of samples, the layout it was read from, and folders the walk could not read."""

    root: str
    layout: str
    samples: list[Sample]
    skipped: list[SourceError] = field(default_factory=list)

    @property
    def generators(self) -> list[str]:
        """Generator names (without ``real``), in first-seen order."""
        return list(dict.fromkeys(s.generator for s in self.samples if s.label == 1))

    @property
    def splits(self) -> list[str]:
        """D3 splits present (empty outside the D3 test layout)."""
        return list(dict.fromkeys(s.split for s in self.samples if s.split))

    def counts(self) -> dict[str, int]:
        """Images per generator (``real`` included)."""
        out: dict[str, int] = {}
        for s in self.samples:
            out[s.generator] = out.get(s.generator, 0) + 1
        return out


def load_eval_set(path: str | os.PathLike, layout: str = "auto", real: str | os.PathLike | None = None, *,
                  follow_links: bool = False) -> EvalSet:
    """Read a labelled dataset in one of :data:`LAYOUTS` (``auto`` detects it)."""
    d = read_dataset(path, layout, real, follow_links=follow_links)
    return EvalSet(d.root, d.layout, d.samples, d.skipped)


def real_only(path: str | os.PathLike, *, follow_links: bool = False) -> EvalSet:
    """All images below a folder of real photos (label 0)."""
    d = _real_only(path, follow_links=follow_links)
    return EvalSet(d.root, d.layout, d.samples, d.skipped)


def select(samples: Iterable[Sample], *, generators: Iterable[str] | None = None,
           split: str | None = None) -> list[Sample]:
    """Samples of the given generators (``real`` always kept) and split."""
    keep = None if generators is None else set(generators) | {REAL}
    return [s for s in samples if (keep is None or s.generator in keep) and (split is None or s.split == split)]
