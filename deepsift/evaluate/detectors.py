"""Which detectors an evaluation compares: CoDE heads plus any registered detector kind.

CoDE: one model (``--model``) with one or more heads (``--classifier linear --classifier knn``);
the heads share one backbone, so the images are embedded once.

Other detectors (baselines, external tools) register a loader::

    register_detector_loader("freq", lambda arg, **runtime: FrequencyBaseline.load(arg))

and are named on the command line as ``--detector [NAME=]KIND:ARG`` (e.g.
``--detector freq:runs/freq``). A loader receives ARG and the runtime options of the run
(``device``, ``batch_size``, ``workers``, ``precision``, ``url_timeout``, ``url_policy``) as keywords, and uses
those that apply to it. Anything a loader returns only needs ``predict(sources) -> list[Prediction]``.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Sequence

from ..choices import URL_TIMEOUT_S
from ..exceptions import UsageError

DETECTOR_LOADERS: dict[str, Callable[[str], Any]] = {}
PLUGIN_MODULES = ("deepsift.evaluate.baselines",)  # imported on demand; they may register loaders


def register_detector_loader(kind: str, loader: Callable[..., Any]) -> None:
    """Make ``--detector KIND:ARG`` call ``loader(ARG, **runtime options)``."""
    DETECTOR_LOADERS[kind] = loader


def _import_plugins() -> None:
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _call_loader(loader: Callable[..., Any], arg: str, runtime: dict[str, Any]) -> Any:
    """``loader(arg, **runtime)``, passing only the runtime keywords the loader takes."""
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # a builtin without a signature: the argument only
        return loader(arg)
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        runtime = {k: v for k, v in runtime.items() if k in params}
    return loader(arg, **runtime)


def parse_spec(spec: str) -> tuple[str, str, str]:
    """Split ``[NAME=]KIND:ARG`` into ``(name, kind, arg)``."""
    name, _, rest = spec.rpartition("=") if "=" in spec.split(":", 1)[0] else ("", "", spec)
    kind, sep, arg = rest.partition(":")
    if not sep or not kind:
        raise UsageError(f"a detector spec is [NAME=]KIND:ARG (e.g. freq:runs/freq), got {spec!r}")
    return name or kind, kind, arg


def load_detectors(*, model: str | None, heads: str | None, classifiers: Sequence[str], specs: Sequence[str] = (),
                   batch_size: int = 32, preprocessing: str = "official", threshold: float | None = None,
                   device: str = "cpu", precision: str = "fp32", backend: str = "torch", workers: int | None = None,
                   url_timeout: float = URL_TIMEOUT_S, url_policy: Any = None,
                   backbone_only: bool = False) -> dict[str, Any]:
    """Build ``{display name: detector}``: CoDE heads of ``model`` and every ``specs`` detector, on ``device``.

    ``backbone_only``: the CoDE model without heads (``{"CoDE": detector}``), for protocols that fit their own.
    ``url_policy`` (a :class:`deepsift.urlfetch.FetchPolicy`) says where image URLs may lead; None keeps
    each detector's default, the strict policy.
    """
    from ..model.detector import Detector
    from ..model.devices import resolve_device
    from .scoring import head_views

    device = str(resolve_device(device))  # "auto" becomes the device every detector here runs on
    out: dict[str, Any] = {}
    if model is not None:
        kinds = list(dict.fromkeys(classifiers or ["linear"]))
        runtime_kw = dict(batch_size=batch_size, preprocessing=preprocessing, device=device, precision=precision,
                          backend=backend, workers=workers, url_timeout=url_timeout,
                          **({} if url_policy is None else {"url_policy": url_policy}))
        if backbone_only:
            out["CoDE"] = Detector.load_backbone_only(model, **runtime_kw)
            model = None
    if model is not None:
        det = Detector.load(model, heads=heads, classifier=kinds[0], threshold=threshold, **runtime_kw)
        for kind, view in head_views(det, kinds).items():
            out[f"CoDE/{kind}"] = view
    for spec in specs:
        name, kind, arg = parse_spec(spec)
        if kind not in DETECTOR_LOADERS:
            _import_plugins()
        if kind not in DETECTOR_LOADERS:
            known = ", ".join(sorted(DETECTOR_LOADERS)) or "none registered"
            raise UsageError(f"unknown detector kind {kind!r} in the detector spec {spec!r} (known: {known})")
        if name in out:
            raise UsageError(f"two detectors are named {name!r}; name them with NAME=KIND:ARG")
        runtime = dict(device=device, batch_size=batch_size, workers=workers, precision=precision,
                       url_timeout=url_timeout, url_policy=url_policy)
        out[name] = _call_loader(DETECTOR_LOADERS[kind], arg, runtime)
    if not out:
        raise UsageError("nothing to evaluate: give a CoDE model and/or detector specs (the model and detector options)")
    return out
