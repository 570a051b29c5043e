"""deepsift: tell real images from AI-generated ones.

The core is the CoDE detector (:class:`deepsift.Detector`), the D3 dataset tools
(:mod:`deepsift.data`, :mod:`deepsift.generate`) and the evaluation toolkit
(:mod:`deepsift.evaluate`).
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Detector", "Prediction", "__version__"]


def __getattr__(name: str):  # lazy: importing deepsift stays cheap
    if name in ("Detector", "Prediction"):
        from .model import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'deepsift' has no attribute {name!r}")
