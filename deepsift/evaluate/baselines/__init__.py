"""Baselines in the evaluation harness, behind the same detector-like interface as CoDE.

Each baseline has ``fit(real_sources, fake_sources)`` and ``predict(sources) ->
list[Prediction]``, saves to a folder (``baseline.json`` + ``weights.safetensors``) and loads
back with :func:`load_baseline`::

    from deepsift.evaluate.baselines import get_baseline, load_baseline
    det = get_baseline("frequency").fit(real_paths, fake_paths)
    det.save("runs/freq")
    preds = load_baseline("runs/freq").predict(["a.png", "b.jpg"])

``frequency``  FFT/DCT statistics + logistic regression (ELSA 2023 winner's spirit)
``npr``        small CNN on neighbouring-pixel relationships, trained from scratch
``univfd``     logistic probe on frozen CLIP ViT image embeddings
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import importlib
from typing import TYPE_CHECKING

from ...exceptions import ModelError, ModelNotFoundError, UsageError
from .files import CONFIG_FILE, FORMAT, FORMAT_VERSION, RUNTIME_OPTIONS, WEIGHTS_FILE

if TYPE_CHECKING:  # the classes load torch/scipy: imported on first use, so the CLI starts fast
    from .base import Baseline
    from .frequency import FrequencyBaseline
    from .npr import NPRBaseline
    from .univfd import UnivFDBaseline

BASELINE_CLASSES: dict[str, tuple[str, str]] = {
    "frequency": ("frequency", "FrequencyBaseline"),
    "npr": ("npr", "NPRBaseline"),
    "univfd": ("univfd", "UnivFDBaseline"),
}
"""Baseline name -> (module, class) in this package."""

BASELINE_NAMES: tuple[str, ...] = tuple(BASELINE_CLASSES)

__all__ = ["BASELINES", "BASELINE_NAMES", "Baseline", "FrequencyBaseline", "NPRBaseline", "UnivFDBaseline",
           "baseline_class", "get_baseline", "load_baseline"]


def baseline_class(name: str) -> type["Baseline"]:
    """The class of baseline ``name`` (a UsageError naming the known ones otherwise)."""
    if name not in BASELINE_CLASSES:
        raise UsageError(f"unknown baseline {name!r}; choose from {', '.join(sorted(BASELINE_CLASSES))}")
    module, cls = BASELINE_CLASSES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def __getattr__(name: str) -> Any:
    if name == "BASELINES":
        return {n: baseline_class(n) for n in BASELINE_CLASSES}
    if name == "Baseline":
        from .base import Baseline

        return Baseline
    for key, (_, cls) in BASELINE_CLASSES.items():
        if name == cls:
            return baseline_class(key)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_baseline(name: str, **params: Any) -> "Baseline":
    """A new, unfitted baseline ``name`` built with ``params`` (``None`` values keep the defaults)."""
    cls = baseline_class(name)
    try:
        return cls(**{k: v for k, v in params.items() if v is not None})
    except TypeError as exc:
        raise UsageError(f"baseline {name!r}: {exc}") from None


def load_baseline(folder: str | os.PathLike, **runtime: Any) -> "Baseline":
    """Load a fitted baseline saved by :meth:`Baseline.save`; ``runtime`` sets e.g. ``batch_size``, ``device``."""
    folder = Path(folder)
    cfg_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file():
        raise ModelNotFoundError(f"{folder}: not a saved baseline (no {CONFIG_FILE})")
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{cfg_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{cfg_path}: not a deepsift baseline file (format must be {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{cfg_path}: format_version {meta.get('format_version')!r} is not supported "
                         f"(this deepsift reads {FORMAT_VERSION})")
    name = meta.get("baseline")
    if name not in BASELINE_CLASSES:
        raise ModelError(f"{cfg_path}: unknown baseline {name!r}; known: {', '.join(sorted(BASELINE_CLASSES))}")
    if not weights_path.is_file():
        raise ModelNotFoundError(f"{folder}: no {WEIGHTS_FILE}")
    unknown = set(runtime) - RUNTIME_OPTIONS
    if unknown:
        raise UsageError(f"load_baseline: only runtime options {sorted(RUNTIME_OPTIONS)} can be set, "
                         f"got {sorted(unknown)}")
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise ModelError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    accepted = inspect.signature(baseline_class(name).__init__).parameters
    url_timeout, url_policy = runtime.pop("url_timeout", None), runtime.pop("url_policy", None)
    runtime = {k: v for k, v in runtime.items() if k in accepted}  # e.g. no ``device`` for frequency
    det = get_baseline(name, **meta.get("params", {}), **runtime)
    if url_timeout is not None:
        det.url_timeout = float(url_timeout)
    if url_policy is not None:
        det.url_policy = url_policy
    det.threshold = float(meta.get("threshold", 0.5))
    det._restore(arrays, meta)
    det.train_info_ = meta.get("train") or {}
    return det


def _register_with_the_harness() -> None:
    """Let ``deepsift eval ... --detector KIND:DIR`` load saved baselines (KIND: a baseline name or 'baseline')."""
    from ..detectors import register_detector_loader

    def loader(folder: str, **runtime: Any) -> "Baseline":
        return load_baseline(folder, **{k: v for k, v in runtime.items() if k in RUNTIME_OPTIONS and v is not None})

    for kind in (*BASELINE_CLASSES, "baseline"):
        register_detector_loader(kind, loader)


_register_with_the_harness()
