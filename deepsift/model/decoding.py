"""One input's way to pixels: fetch (URLs), decode safely, crop; its :class:`Item` and its error wording.

Shared by the engine's threads (:mod:`deepsift.model.engine`) and its worker processes
(:mod:`deepsift.model.decodepool`), so both give the same pixels and the same per-input errors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
from PIL import Image

from ..exceptions import DeepsiftError
from ..images import MAX_BYTES, ImageSource, PreprocessMode, crop_uint8, decode_image
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
    if mode == "official":  # a JPEG: decode only the window, byte-identical (None: not applicable here)
        pixels = jpeg_window(data)
        if pixels is not None:
            return pixels
    image = decode_image(data)
    return mode(image) if callable(mode) else crop_uint8(image, mode)


def jpeg_window(data: object) -> np.ndarray | None:
    """The official crop of a JPEG path or bytes by exact region decoding (:mod:`deepsift.jpegcrop`), or None."""
    from ..jpegcrop import centre_crop_jpeg, read_jpeg_bytes, turbojpeg

    if turbojpeg() is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        data = read_jpeg_bytes(data)
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > MAX_BYTES:
        return None
    return centre_crop_jpeg(bytes(data))


def error_text(name: str, exc: BaseException) -> str:
    """The per-input error wording: ``"<input>: <problem>"`` (deepsift errors as they are, others with their type)."""
    text = str(exc) if isinstance(exc, DeepsiftError) else f"{type(exc).__name__}: {exc}"
    return text if text.startswith(name) else f"{name}: {text}"


def prepare_item(index: int, source: object, mode: Preprocessing, url_timeout: float,
                 url_policy: FetchPolicy, loader: Callable[..., np.ndarray] | None = None) -> Item:
    """The :class:`Item` of one input: its pixels (by ``loader``, default :func:`load_pixels`), or its error."""
    item = Item(index, source_name(source, index))
    try:
        item.pixels = (loader or load_pixels)(source, mode, url_timeout, url_policy)  # type: ignore[arg-type]
    except Exception as exc:  # a decoder bug must not take the batch down either; reported per file
        item.error = error_text(item.source, exc)
    return item
