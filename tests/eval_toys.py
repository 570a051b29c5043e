"""Detector-like objects for evaluation tests: a detector that reads the file, not the picture."""
from __future__ import annotations

import zlib

from deepsift.evaluate.headers import read_header
from deepsift.model.detector import Prediction


class FormatReader:
    """Calls PNG files fake: a perfect score on a format-confounded set, chance once every file is re-encoded."""

    def predict(self, sources):
        out = []
        for s in sources:
            h = read_header(s)
            if h.error:
                out.append(Prediction(str(s), error=h.error))
                continue
            p = 0.9 if h.format == "PNG" else 0.1
            out.append(Prediction(str(s), label=int(p >= 0.5), score=p, probability=p))
        return out

    def fit(self, real, fake):  # leave-one-generator-out refits; nothing to learn
        return self


class SeededScorer:
    """Deterministic pseudo-scores from the file name, shifted for fakes by ``strength`` (many detectors for a report)."""

    def __init__(self, strength: float):
        self.strength = strength

    def predict(self, sources):
        out = []
        for s in sources:
            u = (zlib.crc32(str(s).encode()) % 10_000) / 10_000
            fake = "/real/" not in str(s)
            p = min(1.0, max(0.0, 0.5 * u + (self.strength * 0.5 if fake else 0.25)))
            out.append(Prediction(str(s), label=int(p >= 0.5), score=p, probability=p))
        return out


class CueLearner:
    """A fittable detector that learns whichever file format only the fakes of its training set have.

    Fitted on format-confounded files it scores 1.0; refitted on files that all share one format it
    has nothing to learn (AUROC 0.5). Every ``fit`` call is recorded (what the control fed it).
    """

    calls: list[tuple[list, list]] = []

    def __init__(self, fake_format: str | None = "PNG"):
        self.fake_format = fake_format

    def fit(self, real, fake):
        type(self).calls.append((list(real), list(fake)))
        fmt = {read_header(s).format for s in fake} - {read_header(s).format for s in real}
        self.fake_format = sorted(fmt)[0] if fmt else None
        return self

    def predict(self, sources):
        out = []
        for s in sources:
            p = 0.5 if self.fake_format is None else (0.9 if read_header(s).format == self.fake_format else 0.1)
            out.append(Prediction(str(s), label=int(p >= 0.5), score=p, probability=p))
        return out


class Published:
    """A detector that cannot be refitted (no ``fit``): reads the format, as a published model might."""

    def predict(self, sources):
        return FormatReader().predict(sources)
