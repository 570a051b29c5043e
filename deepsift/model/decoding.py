"""One input's way to pixels: fetch (URLs), decode safely, crop; its :class:`Item` and its error wording.

Shared by the engine's threads (:mod:`deepsift.model.engine`) and its worker processes
(:mod:`deepsift.model.decodepool`), so both give the same pixels and the same per-input errors.
"""
from __future__ import annotations

import os
import pathlib
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
    if mode == "official":  # a JPEG or PNG: decode only what the window needs, byte-identical (None: not here)
        pixels = window_pixels(data)
        if pixels is not None:
            return pixels
    image = decode_image(data)
    return mode(image) if callable(mode) else crop_uint8(image, mode)


PARTIAL_MAGIC = (b"\xff\xd8", b"\x89PNG\r\n\x1a\n")
"""How the files that can be decoded in part (JPEG, PNG) start."""


def read_image_bytes(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> bytes | None:
    """The bytes of ``path`` when it is a regular file that starts like a JPEG or PNG (else None: decode it the usual way)."""
    from ..images import _open_file

    try:
        with _open_file(pathlib.Path(path), max_bytes) as fh:
            head = fh.read(8)
            if not head.startswith(PARTIAL_MAGIC):
                return None
            return head + fh.read()
    except Exception:  # the whole-file path reports what is wrong with it, in its words
        return None


def window_pixels(data: object) -> np.ndarray | None:
    """The official crop of a path or bytes by exact partial decoding, or None (decode it whole).

    A large plain JPEG: only the window's region (:mod:`deepsift.jpegcrop`), else libjpeg-turbo straight
    to numpy (:mod:`deepsift.fastdecode`); a PNG: only the rows down to the window's bottom
    (:mod:`deepsift.pngcrop`, inflated by ISA-L when installed). All give the whole-file path's pixels.
    """
    from .. import fastdecode, jpegcrop, pngcrop

    if isinstance(data, (str, os.PathLike)):
        data = read_image_bytes(data)
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > MAX_BYTES:
        return None
    data = bytes(data)
    if data[:2] == b"\xff\xd8":
        pixels = jpegcrop.centre_crop_jpeg(data)
        return pixels if pixels is not None else fastdecode.centre_crop_jpeg_fast(data)
    if data[:8] != pngcrop.SIGNATURE:
        return None
    return pngcrop.centre_crop_png(data)


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
