"""The batch engine: decode in worker threads while the network runs, in input order, streaming.

Decoding (Pillow releases the GIL) overlaps the forward pass. At most ``max_in_flight``
decoded images wait at any time, so memory stays flat however long the input stream is.
Errors travel with their item; one bad input never stops a batch, and every per-input error
names its input (``"<path or URL>: <what went wrong>"``), for the detector and the baselines alike.

``mode`` is a CoDE preprocessing mode (``"official"``, ``"resize"``) or any *preprocessor*: a
picklable callable taking the decoded RGB ``PIL.Image`` to a fixed-shape array (a module-level
function, a ``functools.partial`` of one, or a small object with ``__call__``). The baselines
pass theirs, so every model decodes, fetches URLs and batches through this one engine.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Union

import numpy as np
from PIL import Image

from ..exceptions import DeepsiftError
from ..images import ImageSource, PreprocessMode, crop_uint8, decode_image
from ..sources import URL_TIMEOUT_S, SourceError, fetch_url, is_url
from ..urlfetch import STRICT_POLICY, FetchPolicy

Preprocessor = Callable[[Image.Image], np.ndarray]
"""A decoded RGB image -> a fixed-shape array (picklable: it may run in another process)."""
Preprocessing = Union[PreprocessMode, Preprocessor]


@dataclass
class Item:
    """One input on its way through the engine."""

    index: int
    source: str
    pixels: np.ndarray | None = None  # 224x224x3 uint8 after geometric preprocessing
    error: str | None = None
    row: int | None = None  # position of this item's output in its batch, once run


def source_name(source: object, index: int) -> str:
    """A printable name for an input: its path or URL, else a positional placeholder."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, SourceError):
        return source.source
    if isinstance(source, Image.Image):
        return f"<image {index}>"
    if isinstance(source, np.ndarray):
        return f"<array {index}>"
    return f"<bytes {index}>" if isinstance(source, (bytes, bytearray, memoryview)) else f"<input {index}>"


def load_pixels(source: ImageSource | SourceError, mode: Preprocessing = "official",
                url_timeout: float = URL_TIMEOUT_S, url_policy: FetchPolicy = STRICT_POLICY) -> np.ndarray:
    """Fetch (URLs, within ``url_timeout`` in all, under ``url_policy``) and decode one input, then crop it
    to 224x224x3 uint8 (or apply the ``mode`` preprocessor)."""
    if isinstance(source, SourceError):
        raise DeepsiftError(source.error)
    data = fetch_url(source, deadline=url_timeout, policy=url_policy) if is_url(source) else source
    image = decode_image(data)
    return mode(image) if callable(mode) else crop_uint8(image, mode)


def error_text(name: str, exc: BaseException) -> str:
    """The per-input error wording: ``"<input>: <problem>"`` (deepsift errors as they are, others with their type)."""
    text = str(exc) if isinstance(exc, DeepsiftError) else f"{type(exc).__name__}: {exc}"
    return text if text.startswith(name) else f"{name}: {text}"


def _prepare(index: int, source: object, mode: Preprocessing, url_timeout: float, url_policy: FetchPolicy) -> Item:
    item = Item(index, source_name(source, index))
    try:
        item.pixels = load_pixels(source, mode, url_timeout, url_policy)  # type: ignore[arg-type]
    except Exception as exc:  # a decoder bug must not take the batch down either; reported per file
        item.error = error_text(item.source, exc)
    return item


def prepared_items(sources: Iterable[object], mode: Preprocessing = "official", workers: int | None = None,
                   max_in_flight: int = 64, url_timeout: float = URL_TIMEOUT_S,
                   url_policy: FetchPolicy = STRICT_POLICY) -> Iterator[Item]:
    """Decode ``sources`` in a thread pool and yield :class:`Item` in input order (bounded look-ahead)."""
    workers = workers or min(4, (os.cpu_count() or 2))
    pending: deque[Future[Item]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepsift-decode") as pool:
        for index, source in enumerate(sources):
            pending.append(pool.submit(_prepare, index, source, mode, url_timeout, url_policy))
            if len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def batched(items: Iterable[Item], batch_size: int) -> Iterator[list[Item]]:
    """Group items into runs holding ``batch_size`` decodable images (error items ride along in order)."""
    run: list[Item] = []
    good = 0
    for item in items:
        run.append(item)
        good += item.pixels is not None
        if good >= batch_size:
            yield run
            run, good = [], 0
    if run:
        yield run


def run_batches(sources: Iterable[object], forward: Callable[[np.ndarray], np.ndarray], batch_size: int = 32,
                mode: Preprocessing = "official", workers: int | None = None,
                url_timeout: float = URL_TIMEOUT_S,
                url_policy: FetchPolicy = STRICT_POLICY) -> Iterator[tuple[list[Item], np.ndarray]]:
    """Yield ``(items, outputs)`` per batch in input order; ``item.row`` indexes ``outputs`` (None on error).

    ``forward`` maps an NxHxWx3 uint8 batch to N output rows.
    """
    look_ahead = max(2 * batch_size, 16)
    for run in batched(prepared_items(sources, mode, workers, look_ahead, url_timeout, url_policy), batch_size):
        good = [it for it in run if it.pixels is not None]
        outputs = forward(np.stack([it.pixels for it in good])) if good else np.empty((0, 0), np.float32)
        for k, it in enumerate(good):
            it.row, it.pixels = k, None  # release pixels as soon as the batch is done
        yield run, outputs
