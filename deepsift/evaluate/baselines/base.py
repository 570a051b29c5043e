"""What every baseline shares: streaming decode, per-file errors, fit/predict, safetensors + JSON.

A baseline is a *detector-like* object for the evaluation harness: ``fit(real, fake)`` learns
from two lists of image sources, ``predict(sources)`` returns one
:class:`~deepsift.model.detector.Prediction` per input, in input order. An input that cannot
be read gets a Prediction with ``error`` set and the rest are scored. A subclass supplies
hooks: ``_prepare`` (one decoded image -> a fixed-shape array, run in worker threads),
``_reduce`` (a stacked batch -> what training keeps in memory, e.g. CLIP embeddings; default
the batch itself), ``_fit_prepared`` and ``_logits`` (a stacked batch -> fake logits).

On disk a fitted baseline is a folder: ``baseline.json`` (name, hyper-parameters, threshold,
training summary) and ``weights.safetensors`` (arrays). Nothing is pickled.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from scipy.special import expit
from tqdm.auto import tqdm

from ... import __version__
from ...exceptions import DataError, DeepsiftError, NotFittedError
from ...images import ImageSource, decode_image
from ...model.detector import Prediction
from ...model.engine import source_name
from ...sources import SourceError, fetch_url, is_url

FORMAT = "deepsift-baseline"
FORMAT_VERSION = 1
CONFIG_FILE = "baseline.json"
WEIGHTS_FILE = "weights.safetensors"
RUNTIME_OPTIONS = frozenset({"batch_size", "device", "workers", "progress"})
"""Constructor options that change speed or output only, never the model: not saved."""
MAX_LISTED_SKIPS = 20


class Baseline:
    """Base class of the baselines (see the module docstring for the contract)."""

    name: ClassVar[str] = ""

    def __init__(self, *, batch_size: int = 32, workers: int | None = None, progress: bool | None = None,
                 threshold: float = 0.5) -> None:
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
        for batch in _batched(self._prepared(sources, desc=f"{self.name}: scoring"), self.batch_size):
            good = [(name, arr) for name, arr, _ in batch if arr is not None]
            logits = iter(self._logits(np.stack([a for _, a in good])) if good else ())
            for name, arr, error in batch:
                if arr is None:
                    yield Prediction(source=name, label=None, score=None, probability=None, head=None, error=error)
                    continue
                score = float(next(logits))
                prob = float(expit(score))
                yield Prediction(source=name, label=int(prob >= self.threshold), score=score,
                                 probability=prob, head=self.name, error=None)

    # -- persistence -------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments that define the model (runtime options excluded)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if n not in RUNTIME_OPTIONS and n != "threshold"}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``baseline.json`` and ``weights.safetensors`` into ``out_dir``; returns the folder."""
        self._check_fitted()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(arrays, str(out / WEIGHTS_FILE))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "baseline": self.name,
                "deepsift_version": __version__, "params": self.get_params(), "threshold": self.threshold,
                "labels": {"0": "real", "1": "fake"}, "train": self.train_info_, **self._extra_meta()}
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return out

    # -- shared machinery ----------------------------------------------------------------------
    def _bar(self, **kwargs: Any) -> tqdm:
        """A tqdm bar on stderr, shown on a TTY unless ``progress`` says otherwise."""
        disable = None if self.progress is None else not self.progress
        return tqdm(file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)

    def _load_one(self, index: int, source: Any) -> tuple[str, np.ndarray | None, str | None]:
        """Fetch, decode and prepare one input; errors come back as text, never raised."""
        name = source_name(source, index)
        try:
            if isinstance(source, SourceError):
                return name, None, source.error
            image = decode_image(fetch_url(source) if is_url(source) else source)
        except DeepsiftError as exc:
            return name, None, str(exc)
        except Exception as exc:  # a decoder bug must not take the batch down; report it per file
            return name, None, f"{name}: {type(exc).__name__}: {exc}"
        try:
            return name, self._prepare(image), None
        except DeepsiftError as exc:
            return name, None, f"{name}: {exc}"
        except Exception as exc:  # likewise for a preprocessing failure on one odd image
            return name, None, f"{name}: {type(exc).__name__}: {exc}"

    def _prepared(self, sources: Iterable[Any], desc: str, total: int | None = None
                  ) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
        """Prepare ``sources`` in a thread pool; yield ``(name, array | None, error)`` in input order."""
        workers = self.workers or min(4, os.cpu_count() or 2)
        look_ahead = max(2 * self.batch_size, 16)
        pending: deque[Future] = deque()
        if total is None and hasattr(sources, "__len__"):
            total = len(sources)  # type: ignore[arg-type]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepsift-baseline") as pool, \
                self._bar(desc=desc, total=total, unit="img") as bar:
            for index, source in enumerate(sources):
                pending.append(pool.submit(self._load_one, index, source))
                if len(pending) >= look_ahead:
                    bar.update()
                    yield pending.popleft().result()
            while pending:
                bar.update()
                yield pending.popleft().result()

    def _collect(self, sources: list[Any], desc: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Prepare and ``_reduce`` all training inputs: rows, indices of the readable ones, errors."""
        rows, kept, skipped = [], [], []
        index = 0
        for batch in _batched(self._prepared(sources, desc), self.batch_size):
            good = []
            for _, arr, error in batch:
                if arr is None:
                    skipped.append(str(error))
                else:
                    good.append(arr)
                    kept.append(index)
                index += 1
            if good:
                rows.append(self._reduce(np.stack(good)))
        if skipped:
            print(f"deepsift: {self.name}: skipped {len(skipped)} unreadable training image(s), "
                  f"e.g. {skipped[0]}", file=sys.stderr)
        data = np.concatenate(rows) if rows else np.empty((0,))
        return data, np.asarray(kept, dtype=np.int64), skipped

    def _check_fitted(self) -> None:
        if self.train_info_ is None:
            raise NotFittedError(f"this {self.name} baseline is not fitted yet; call fit(real, fake) or load one")

    # -- hooks -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        """Load what ``_prepare`` needs before worker threads start (default: nothing)."""

    def _prepare(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image -> a fixed-shape array (runs in worker threads)."""
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


def _batched(items: Iterable[tuple[str, np.ndarray | None, str | None]], batch_size: int
             ) -> Iterator[list[tuple[str, np.ndarray | None, str | None]]]:
    """Group prepared items into runs with ``batch_size`` readable ones (errors ride along in order)."""
    run: list = []
    good = 0
    for item in items:
        run.append(item)
        good += item[1] is not None
        if good >= batch_size:
            yield run
            run, good = [], 0
    if run:
        yield run
