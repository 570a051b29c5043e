"""Which detectors an evaluation compares: CoDE heads plus any registered detector kind.

CoDE: one model (``--model``) with one or more heads (``--classifier linear --classifier knn``);
the heads share one backbone, so the images are embedded once.

Other detectors (baselines, external tools) register a loader::

    register_detector_loader("freq", lambda arg: FrequencyBaseline.load(arg))

and are named on the command line as ``--detector [NAME=]KIND:ARG`` (e.g.
``--detector freq:runs/freq``). Anything a loader returns only needs
``predict(sources) -> list[Prediction]``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

from ..exceptions import UsageError

DETECTOR_LOADERS: dict[str, Callable[[str], Any]] = {}
PLUGIN_MODULES = ("deepsift.evaluate.baselines",)  # imported on demand; they may register loaders


def register_detector_loader(kind: str, loader: Callable[[str], Any]) -> None:
    """Make ``--detector KIND:ARG`` call ``loader(ARG)``."""
    DETECTOR_LOADERS[kind] = loader


def _import_plugins() -> None:
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def parse_spec(spec: str) -> tuple[str, str, str]:
    """Split ``[NAME=]KIND:ARG`` into ``(name, kind, arg)``."""
    name, _, rest = spec.rpartition("=") if "=" in spec.split(":", 1)[0] else ("", "", spec)
    kind, sep, arg = rest.partition(":")
    if not sep or not kind:
        raise UsageError(f"--detector takes [NAME=]KIND:ARG (e.g. freq:runs/freq), got {spec!r}")
    return name or kind, kind, arg


def load_detectors(*, model: str | None, heads: str | None, classifiers: Sequence[str], specs: Sequence[str] = (),
                   batch_size: int = 32, preprocessing: str = "official", threshold: float | None = None) -> dict[str, Any]:
    """Build ``{display name: detector}`` from CLI options."""
    from ..model.detector import Detector
    from .scoring import head_views

    out: dict[str, Any] = {}
    if model is not None:
        kinds = list(dict.fromkeys(classifiers or ["linear"]))
        det = Detector.load(model, heads=heads, classifier=kinds[0], batch_size=batch_size,
                            preprocessing=preprocessing, threshold=threshold)
        for kind, view in head_views(det, kinds).items():
            out[f"CoDE/{kind}"] = view
    for spec in specs:
        name, kind, arg = parse_spec(spec)
        if kind not in DETECTOR_LOADERS:
            _import_plugins()
        if kind not in DETECTOR_LOADERS:
            known = ", ".join(sorted(DETECTOR_LOADERS)) or "none registered"
            raise UsageError(f"unknown detector kind {kind!r} in --detector {spec!r} (known: {known})")
        if name in out:
            raise UsageError(f"two detectors are named {name!r}; name them with NAME=KIND:ARG")
        out[name] = DETECTOR_LOADERS[kind](arg)
    if not out:
        raise UsageError("nothing to evaluate: pass --model (CoDE) and/or --detector KIND:ARG")
    return out
