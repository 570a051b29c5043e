"""The :class:`Detector`: CoDE embeddings + a classifier head, over any number of images.

>>> det = Detector.load("aimagelab/CoDE")                      # doctest: +SKIP
>>> [p.label for p in det.predict(["photo.jpg", "render.png"])]  # doctest: +SKIP
[0, 1]
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from transformers import ViTModel

from ..choices import BACKENDS, PRECISIONS
from ..decision import DEFAULT_THRESHOLD, check_threshold, decide
from ..exceptions import DeepsiftWarning, ModelError, ModelNotFoundError, UsageError
from ..images import PREPROCESS_MODES, normalize_batch
from ..urlfetch import STRICT_POLICY, FetchPolicy
from .autobackend import Choice, backend_kwargs, bf16_warning, labelling_heads
from .backbone import DEFAULT_MODEL, load_backbone, resolve_model_dir, weights_fingerprint
from .onnx import OnnxRunner, onnx_for  # noqa: F401 - onnx_for: its home before it moved beside the exporter
from .devices import MultiRunner, Runner, resolve_device
from .engine import run_batches
from .headset import check_heads_backbone, find_heads_dir, load_headset
from .heads import HEAD_KINDS, Head



@dataclass
class Prediction:
    """The verdict on one input; ``error`` is set (and the rest None) when it could not be read."""

    source: str
    label: int | None = None  # 1 = fake, 0 = real
    score: float | None = None  # continuous fake-score (higher = more fake)
    probability: float | None = None  # calibrated P(fake)
    head: str | None = None  # the head that decided, e.g. "linear"
    generator: str | None = None  # most likely generator, when per-generator heads exist
    error: str | None = None

    @property
    def verdict(self) -> str:
        """'fake', 'real' or 'error' (the label comes from :mod:`deepsift.decision`)."""
        return "error" if self.label is None else ("fake" if self.label == 1 else "real")

    def to_dict(self) -> dict:
        """A JSON-ready dict (adds ``verdict``), keys in the documented column order."""
        from ..output import PREDICTION_COLUMNS

        row = {**asdict(self), "verdict": self.verdict}
        return {k: row[k] for k in PREDICTION_COLUMNS}


def _first_device(device: str, kwargs: dict) -> torch.device:
    """The device the network loads on: the first of ``devices`` when several are given (all checked first)."""
    devices = kwargs.get("devices") or None
    if devices:
        return [resolve_device(d) for d in devices][0]
    return resolve_device(device)


class Detector:
    """CoDE backbone plus classifier heads; streams any number of images in input order."""

    def __init__(self, backbone: ViTModel, heads: dict[str, Head] | None = None, classifier: str = "linear",
                 *, precision: str = "fp32", batch_size: int = 32, preprocessing: str = "official",
                 threshold: float | None = None, workers: int | str | None = None, onnx_path: str | None = None,
                 url_timeout: float = 20.0, url_policy: FetchPolicy = STRICT_POLICY,
                 devices: list[str] | None = None, choice: Choice | None = None) -> None:
        if precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if preprocessing not in PREPROCESS_MODES:
            raise UsageError(f"preprocessing must be one of {PREPROCESS_MODES}, got {preprocessing!r}")
        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        if threshold is not None:
            try:
                check_threshold(threshold)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        self.backbone = backbone.eval()
        self.fingerprint: str | None = None  # weights_fingerprint of the fp32 weights (set by load)
        if precision == "bf16":
            self.backbone = self.backbone.to(torch.bfloat16)
        self.heads = dict(heads or {})
        self.classifier = classifier
        self.precision, self.batch_size, self.preprocessing = precision, batch_size, preprocessing
        self.threshold, self.workers, self.url_timeout = threshold, workers, url_timeout
        self.url_policy = url_policy  # where image URLs may lead: strict unless the caller says otherwise
        self.device = next(self.backbone.parameters()).device
        self.runner: Runner | MultiRunner = Runner(self.backbone, self.device, precision)  # pinned + async on CUDA
        if devices and len(devices) > 1:  # several devices share every batch, rows back in input order
            self.runner = MultiRunner(self.backbone, [resolve_device(d) for d in devices], precision)
        self.choice = choice  # what backend="auto" chose and why (None: the backend was named)
        if precision == "bf16" and (said := bf16_warning(labelling_heads(self.heads, classifier))):
            warnings.warn(said, DeepsiftWarning, stacklevel=3)
        self.onnx = None
        if onnx_path is not None:
            if precision != "fp32":
                raise UsageError("the onnx backend runs in fp32 only")
            from .onnx import OnnxEmbedder

            self.onnx = OnnxEmbedder(onnx_path)
        width = int(backbone.config.hidden_size)
        wrong = {n: h.n_features for n, h in self.heads.items() if h.n_features != width}
        if wrong:
            raise ModelError(f"heads {', '.join(wrong)} expect {set(wrong.values()).pop()}-d embeddings but the "
                             f"model gives {width}-d: these heads were fitted for another model")
        if self.heads and classifier not in self.heads:
            raise UsageError(f"classifier {classifier!r} is not among the loaded heads: {', '.join(self.heads)}")

    @classmethod
    def load(cls, model: str | os.PathLike = DEFAULT_MODEL, heads: str | os.PathLike | None = None,
             classifier: str = "linear", device: str = "auto", backend: str = "torch",
             **kwargs: object) -> "Detector":
        """Load the backbone (hub id or folder) and its heads (explicit, beside the model, or cached).

        ``backend``: ``torch``, ``onnx``, or ``auto`` (the fastest exact one here, measured once and
        cached: :mod:`deepsift.model.autobackend`).
        """
        if classifier not in HEAD_KINDS:
            raise UsageError(f"classifier must be one of {HEAD_KINDS}, got {classifier!r}")
        if backend not in BACKENDS:
            raise UsageError(f"backend must be one of {BACKENDS}, got {backend!r}")
        force_heads = bool(kwargs.pop("force_heads", False))
        backbone = load_backbone(model, _first_device(device, kwargs))
        fingerprint = weights_fingerprint(backbone)
        heads_dir = Path(heads) if heads is not None else find_heads_dir(model, resolve_model_dir(model))
        if heads_dir is None:
            raise ModelNotFoundError(
                f"no classifier heads found for model {str(model)!r}. Convert the published ones once "
                f"(command: deepsift weights import-official {model} --trust-pickles), fit your own "
                f"(command: deepsift heads fit), or name a heads folder"
            )
        loaded, meta = load_headset(heads_dir)
        check_heads_backbone(meta, fingerprint, heads_dir, force_heads)
        kwargs = backend_kwargs(backend, backbone, model, fingerprint, kwargs, labelling_heads(loaded, classifier))
        det = cls(backbone, loaded, classifier, **kwargs)  # type: ignore[arg-type]
        det.fingerprint = fingerprint
        return det

    @classmethod
    def load_backbone_only(cls, model: str | os.PathLike = DEFAULT_MODEL, device: str = "auto",
                           backend: str = "torch", **kwargs: object) -> "Detector":
        """A detector without heads: for :meth:`embed` (and for fitting heads)."""
        kwargs.pop("force_heads", None)
        backbone = load_backbone(model, _first_device(device, kwargs))
        if backend not in BACKENDS:
            raise UsageError(f"backend must be one of {BACKENDS}, got {backend!r}")
        fingerprint = weights_fingerprint(backbone)
        kwargs = backend_kwargs(backend, backbone, model, fingerprint, kwargs)
        det = cls(backbone, None, **kwargs)  # type: ignore[arg-type]
        det.fingerprint = fingerprint
        return det

    # -- embeddings -----------------------------------------------------------------------
    def embed_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Embed an NxHxWx3 uint8 batch of cropped images: (N, 192) float32."""
        if self.onnx is not None:
            return self.onnx(normalize_batch(batch))
        return self.runner(batch)

    def embed_batches(self, sources: Iterable[object]) -> Iterator[tuple[list, np.ndarray]]:
        """Stream ``(items, embeddings)`` per batch, in input order (see :func:`run_batches`)."""
        forward = OnnxRunner(self.onnx) if self.onnx is not None else self.runner
        return run_batches(sources, forward, self.batch_size, self.preprocessing,  # type: ignore[arg-type]
                           self.workers, self.url_timeout, self.url_policy)

    def embed_iter(self, sources: Iterable[object]) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
        """Stream ``(source, embedding or None, error or None)`` per input, in order."""
        for items, emb in self.embed_batches(sources):
            for it in items:
                yield it.source, (emb[it.row] if it.row is not None else None), it.error

    def embed(self, sources: Iterable[object]) -> np.ndarray:
        """Embed all inputs: (N, 192) float32; rows of unreadable inputs are NaN."""
        rows = [e for _, e, _ in self.embed_iter(sources)]
        dim = int(self.backbone.config.hidden_size)
        return np.stack([r if r is not None else np.full(dim, np.nan, np.float32) for r in rows]) if rows \
            else np.empty((0, dim), np.float32)

    # -- predictions ----------------------------------------------------------------------
    @property
    def decision_threshold(self) -> float:
        """The P(fake) at or above which this detector calls an image fake (:data:`DEFAULT_THRESHOLD` unless set)."""
        return DEFAULT_THRESHOLD if self.threshold is None else float(self.threshold)

    def classify(self, embeddings: np.ndarray) -> list[dict]:
        """Score embeddings with the selected head (and per-generator heads) and label them by the one rule.

        The label is :func:`deepsift.decision.decide` on the calibrated P(fake), for every head: the
        head's own native rule (logit sign, nearest neighbour, SVM inlier test) never labels.
        """
        if not self.heads:
            raise ModelNotFoundError("this detector has no classifier heads (give it a heads folder)")
        head = self.heads[self.classifier]
        scores = head.decision_function(embeddings)
        probs = head.probability(scores)
        labels = decide(probs, self.decision_threshold)
        gen_names = [n for n in self.heads if n.startswith(self.classifier + ":")]
        generator: list[str | None] = [None] * len(scores)
        if gen_names:
            gen_probs = np.stack([self.heads[n].probability(self.heads[n].decision_function(embeddings))
                                  for n in gen_names], axis=1)
            best = gen_probs.argmax(axis=1)
            generator = [gen_names[b].split(":", 1)[1] if lab == 1 else None for b, lab in zip(best, labels)]
        return [dict(label=int(lab), score=float(s), probability=float(p), head=self.classifier, generator=g)
                for lab, s, p, g in zip(labels, scores, probs, generator)]

    def predict_iter(self, sources: Iterable[object]) -> Iterator[Prediction]:
        """Stream one :class:`Prediction` per input, in input order, in constant memory."""
        if not self.heads:
            raise ModelNotFoundError("this detector has no classifier heads (give it a heads folder)")
        for items, emb in self.embed_batches(sources):
            verdicts = self.classify(emb) if len(emb) else []
            for it in items:
                if it.row is None:
                    yield Prediction(it.source, error=it.error)
                else:
                    yield Prediction(it.source, **verdicts[it.row])

    def predict(self, sources: Iterable[object]) -> list[Prediction]:
        """Predict every input; results are in input order."""
        return list(self.predict_iter(sources))
