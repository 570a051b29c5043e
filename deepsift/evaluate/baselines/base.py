"""What every baseline shares: the detector's engine, the decision rule, fit/predict, safetensors + JSON.

A baseline is a *detector-like* object for the evaluation harness: ``fit(real, fake)`` learns
from two lists of image sources, ``predict(sources)`` returns one
:class:`~deepsift.model.detector.Prediction` per input, in input order. Inputs are fetched,
decoded and batched by the detector's engine (:func:`deepsift.model.engine.run_batches`), so an
unreadable input gets a Prediction with ``error`` set in the same words as ``deepsift detect``
and the rest are scored; labels follow :mod:`deepsift.decision` on P(fake) = sigmoid(logit).
A subclass supplies hooks: ``preprocessor`` (a picklable callable: decoded image -> a
fixed-shape array, run by the engine's workers), ``_reduce`` (a stacked batch -> what training
keeps in memory, e.g. CLIP embeddings; default the batch itself), ``_fit_prepared`` and
``_logits`` (a stacked batch -> fake logits).

On disk a fitted baseline is a folder: ``baseline.json`` (name, hyper-parameters, threshold,
training summary) and ``weights.safetensors`` (arrays). Nothing is pickled.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
from safetensors.numpy import save_file

from ... import __version__
from ...choices import URL_TIMEOUT_S
from ...decision import DEFAULT_THRESHOLD, decide
from ...exceptions import DataError, NotFittedError
from ...images import ImageSource
from ...model.detector import Prediction
from ...model.engine import Item, Preprocessor, run_batches
from ...model.platt import sigmoid
from ...output import note, progress
from ...urlfetch import STRICT_POLICY, FetchPolicy
from .files import CONFIG_FILE, FORMAT, FORMAT_VERSION, RUNTIME_OPTIONS, WEIGHTS_FILE  # noqa: F401  (re-exported)
MAX_LISTED_SKIPS = 20


class Baseline:
    """Base class of the baselines (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    url_policy: FetchPolicy = STRICT_POLICY
    """Where image URLs may lead (:mod:`deepsift.urlfetch`): strict unless ``load_baseline(url_policy=...)`` says
    otherwise (the command line passes the user policy; a server scoring strangers' URLs keeps the strict one)."""

    url_timeout: float = URL_TIMEOUT_S
    """Total deadline for each image URL (a runtime option, set by ``load_baseline(url_timeout=...)``)."""

    def __init__(self, *, batch_size: int = 32, workers: int | None = None, progress: bool | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress
        self.threshold = threshold
        self.train_info_: dict[str, Any] | None = None

    # -- the detector-like contract ---------------------------------------------------------
    def fit(self, real_sources: Iterable[ImageSource], fake_sources: Iterable[ImageSource]) -> "Baseline":
        """Learn from real (label 0) and fake (label 1) images; unreadable ones are skipped and listed."""
        real, fake = list(real_sources), list(fake_sources)
        if not real or not fake:
            raise DataError(f"{self.name}: need both real and fake training images "
                            f"(got {len(real)} real, {len(fake)} fake)")
        labels = np.array([0] * len(real) + [1] * len(fake), dtype=np.int64)
        self._setup()
        data, kept, skipped = self._collect(real + fake, desc=f"{self.name}: reading")
        y = labels[kept]
        if not (y == 0).any() or not (y == 1).any():
            raise DataError(f"{self.name}: after skipping {len(skipped)} unreadable images one class is empty "
                            f"(first: {skipped[:1]})")
        self._fit_prepared(data, y)
        self.train_info_ = {"n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
                            "n_skipped": len(skipped), "skipped": skipped[:MAX_LISTED_SKIPS]}
        self.train_info_.update(self._train_summary())
        return self

    def predict(self, sources: Iterable[ImageSource]) -> list[Prediction]:
        """Score every input, in input order; unreadable inputs get an error Prediction."""
        return list(self.predict_iter(sources))

    def predict_iter(self, sources: Iterable[ImageSource]) -> Iterator[Prediction]:
        """Streaming :meth:`predict` (bounded memory)."""
        self._check_fitted()
        self._setup()
        for items, logits in self._batches(sources, self._logits, desc=f"{self.name}: scoring"):
            for it in items:
                if it.row is None:
                    yield Prediction(source=it.source, error=it.error)
                    continue
                score = float(logits[it.row])
                prob = float(sigmoid(score))
                yield Prediction(source=it.source, label=int(decide(prob, self.threshold)), score=score,
                                 probability=prob, head=self.name)

    # -- persistence -------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments that define the model (runtime options excluded)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if n not in RUNTIME_OPTIONS and n != "threshold"}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``baseline.json`` and ``weights.safetensors`` into ``out_dir``; returns the folder."""
        from ...exceptions import DataError
        from ...outplaces import output_dir, umask_mode

        self._check_fitted()
        out = output_dir(out_dir)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "baseline": self.name,
                "deepsift_version": __version__, "params": self.get_params(), "threshold": self.threshold,
                "labels": {"0": "real", "1": "fake"}, "train": self.train_info_, **self._extra_meta()}
        tmp = {name: out / f".{name}.tmp-{os.getpid()}" for name in (WEIGHTS_FILE, CONFIG_FILE)}
        try:  # both files complete under temporary names first: a full disk leaves the folder as it was
            save_file(arrays, str(tmp[WEIGHTS_FILE]))
            tmp[CONFIG_FILE].write_text(json.dumps(meta, indent=2))
            for name, path in tmp.items():
                os.chmod(path, umask_mode())
                os.replace(path, out / name)
        except Exception as exc:  # noqa: BLE001 - OSError, or safetensors' own error for a full disk
            for path in tmp.values():
                path.unlink(missing_ok=True)
            why = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise DataError(f"cannot write the baseline to {out}: {why}; nothing was written") from None
        return out

    # -- shared machinery ----------------------------------------------------------------------
    def _batches(self, sources: Iterable[Any], forward: Any, desc: str) -> Iterator[tuple[list[Item], np.ndarray]]:
        """``(items, forward(stacked arrays))`` per batch, through the detector's engine, with a progress bar."""
        if not isinstance(sources, (list, tuple)):
            sources = list(sources) if hasattr(sources, "__len__") else sources
        total = len(sources) if hasattr(sources, "__len__") else None  # type: ignore[arg-type]
        with progress(desc=desc, unit="img", total=total, enabled=self.progress) as bar:
            for items, out in run_batches(sources, forward, self.batch_size, self.preprocessor(), self.workers,
                                          self.url_timeout, self.url_policy):
                bar.update(len(items))
                yield items, out

    def _collect(self, sources: list[Any], desc: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Prepare and ``_reduce`` all training inputs: rows, indices of the readable ones, errors."""
        rows, kept, skipped = [], [], []
        for items, reduced in self._batches(sources, self._reduce, desc):
            for it in items:
                if it.row is None:
                    skipped.append(str(it.error))
                else:
                    kept.append(it.index)
            if any(it.row is not None for it in items):
                rows.append(reduced)
        if skipped:
            note(f"deepsift: {self.name}: skipped {len(skipped)} unreadable training image(s), e.g. {skipped[0]}")
        data = np.concatenate(rows) if rows else np.empty((0,))
        return data, np.asarray(kept, dtype=np.int64), skipped

    def _check_fitted(self) -> None:
        if self.train_info_ is None:
            raise NotFittedError(f"this {self.name} baseline is not fitted yet; call fit(real, fake) or load one")

    # -- hooks -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        """Load what ``preprocessor`` needs before the engine's workers start (default: nothing)."""

    def preprocessor(self) -> Preprocessor:
        """The picklable callable taking one decoded RGB image to a fixed-shape array (run by the engine)."""
        raise NotImplementedError

    def _reduce(self, batch: np.ndarray) -> np.ndarray:
        """Map a stacked batch to what training keeps in memory (default: the batch itself)."""
        return batch

    def _fit_prepared(self, data: np.ndarray, y: np.ndarray) -> None:
        """Learn from the ``_reduce``d training rows and labels (0 real, 1 fake)."""
        raise NotImplementedError

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """A stacked batch of prepared arrays -> fake logits, shape (N,)."""
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to store in ``weights.safetensors``."""
        raise NotImplementedError

    def _restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Rebuild the learned state from the stored arrays and metadata."""
        raise NotImplementedError

    def _train_summary(self) -> dict[str, Any]:
        """Extra training facts for ``baseline.json`` (e.g. the loss curve)."""
        return {}

    def _extra_meta(self) -> dict[str, Any]:
        """Extra top-level entries for ``baseline.json``."""
        return {}
