"""Getting one image into the demo: read an upload under caps (URLs are fetched by the route, async, with
:func:`deepsift.urlfetch.afetch_url`), sniff its type by content, decode.

Types are told by their bytes, never by a name or a Content-Type: only the formats in
:data:`FORMATS` are opened at all (an SVG, an HTML page or a PDF renamed ``.png`` is "not a
supported image"). The byte cap holds while reading; the pixel cap is checked from the header
before any pixel is decoded (decompression bombs cost nothing), and a file of far more chunks, blocks
or markers than an image of its size holds is refused before any parser walks them
(:mod:`deepsift.demo.containers`). Every refusal is an
:class:`~deepsift.exceptions.ImageError` with one clear line.

The detector's input is made here, on the demo's pool, exactly as ``deepsift detect`` makes
it from the same bytes (:func:`deepsift.model.decoding.window_pixels`: a large plain JPEG's region, a
PNG's top rows; else the whole-image decode and crop); the forward thread then only runs the network.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..exceptions import DeepsiftError, ImageDecodeError, ImageTooLargeError
from ..images import MAX_PIXELS, crop_uint8, decode_image
from ..model.decoding import Preprocessing, error_text, window_pixels
from .containers import check_segments
from .reduced import PREVIEW_PIXELS, reduced_image, shrink

FORMATS: dict[str, str] = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                           "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff"}
"""Pillow formats the demo opens, and their media types (everything else is refused unread)."""
if "AVIF" in Image.registered_extensions().values():  # Pillow built with AVIF (Pillow >= 11.2 wheels)
    FORMATS["AVIF"] = "image/avif"


@dataclass
class Decoded:
    """One input ready for the detector: its name, raw bytes, sniffed type, size and the network's input.

    ``pixels`` is the 224x224x3 uint8 crop ``deepsift detect`` makes from the same bytes (a large
    JPEG by exact region decoding, a PNG down to the window's last row); the whole decoded
    ``image`` is made only when something asks for it, once (:func:`prepare` makes heatmaps and
    previews from a reduced image instead).
    """

    source: str
    data: bytes = field(repr=False)
    format: str
    media_type: str
    size: tuple[int, int]
    pixels: np.ndarray = field(repr=False)
    max_pixels: int = MAX_PIXELS
    _image: Image.Image | None = field(default=None, repr=False)
    grid: tuple[np.ndarray, int, int, list[list[int]], float] | None = field(default=None, repr=False)
    preview: str | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image:
        """The whole image, 8-bit RGB (decoded on first use)."""
        if self._image is None:
            self._image = _decode_whole(self.data, self.source, self.max_pixels)
        return self._image

    @classmethod
    def from_image(cls, source: str, image: Image.Image, mode: Preprocessing = "official") -> "Decoded":
        """An already decoded image (the quiz's samples)."""
        rgb = decode_image(image)
        return cls(source, b"", "PNG", "image/png", rgb.size, _crop(rgb, mode), _image=rgb)


def read_capped(stream: BinaryIO, name: str, max_bytes: int) -> bytes:
    """Read an uploaded file, refusing it (ImageTooLargeError) once it passes ``max_bytes``."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{name}: file larger than the {max_bytes / (1 << 20):g} MiB limit")
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    return data


def sniff(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> tuple[str, tuple[int, int]]:
    """The Pillow format and size of ``data`` from its header; ImageDecodeError for anything not in
    :data:`FORMATS`, ImageTooLargeError over ``max_pixels`` (nothing is decoded)."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype", b"<html")):
        raise ImageDecodeError(f"{name}: an SVG/HTML/XML document, not a supported image "
                               f"({', '.join(sorted(set(FORMATS) - {'MPO'}))})")
    check_segments(data, name)  # before any parser walks a file of a million tiny chunks
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[f for f in FORMATS if f != "MPO"]) as probe:
                fmt, (w, h) = str(probe.format), probe.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageDecodeError(f"{name}: not a supported image (send JPEG, PNG, WebP, GIF, BMP or TIFF)") from None
    if w * h > max_pixels:  # the wording of decode_image's own header check
        raise ImageTooLargeError(f"{name}: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the cap of {max_pixels / 1e6:g} MP")
    return fmt, (w, h)


def decode(data: bytes, name: str, max_pixels: int, max_bytes: int, mode: Preprocessing = "official",
           allow_whole: bool = True, sniffed: tuple[str, tuple[int, int]] | None = None) -> Decoded | None:
    """Sniff ``data`` and make the detector's input from it under the demo's caps, as ``deepsift detect`` does.

    A large plain JPEG (its region) or a PNG (its rows down to the window) is decoded in part;
    every other input is decoded whole by the package's one safe decoder, which then decides every
    error (or, with ``allow_whole=False``, None is returned at once: the caller budgets the whole image first).
    ``sniffed``: what :func:`sniff` said of these very bytes (it is not asked twice).
    """
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{name}: file larger than the {max_bytes / (1 << 20):g} MiB limit")
    fmt, size = sniffed or sniff(data, name, max_pixels)
    pixels = window_pixels(data) if fmt in ("JPEG", "PNG") and mode == "official" else None
    image = None
    if pixels is None:
        if not allow_whole:
            return None
        image = _decode_whole(data, name, max_pixels)
        try:
            pixels = _crop(image, mode)
        except DeepsiftError as exc:
            raise type(exc)(error_text(name, exc)) from None
    return Decoded(name, data, fmt, FORMATS[fmt], size, pixels, max_pixels, image)


PARTIAL_PIXELS = 2_000_000
"""About what a PNG's partial decode holds besides the reduced image (its window, a strip of rows)."""


def decode_pixels(fmt: str, size: tuple[int, int], heatmap: bool, preview: bool, mode: Preprocessing = "official",
                  reduce_to: int = 4_000_000, whole: bool = False) -> int:
    """About how many pixels :func:`prepare` decodes at once (what it takes from the pixel budget).

    ``whole``: the cost of its second try, when the first (``allow_whole=False``) found that the
    input must be decoded whole.
    """
    pixels = size[0] * size[1]
    if whole or fmt not in ("JPEG", "PNG") or mode != "official":
        return pixels
    extra = min(pixels, reduce_to if heatmap else PREVIEW_PIXELS) if heatmap or preview else 0
    # a JPEG's exact region decode reads every DCT coefficient of the file first (2 bytes each: about a whole
    # RGB decode's memory at 4:2:0), and is done before the reduced image is made; a PNG's strips hold little
    return pixels if fmt == "JPEG" else min(pixels, PARTIAL_PIXELS) + extra


def prepare(data: bytes, name: str, max_pixels: int, max_bytes: int, mode: Preprocessing = "official", *,
            heatmap_grid: int = 0, preview: bool = False, reduce_to: int = 4_000_000,
            allow_whole: bool = True, sniffed: tuple[str, tuple[int, int]] | None = None) -> Decoded | None:
    """:func:`decode`, plus the heatmap's crops and the preview from a reduced image, with no whole image kept.

    The detector's input is made exactly as ``deepsift detect`` makes it. The heatmap's crops and
    the preview come from the image reduced to at most ``reduce_to`` pixels (a preview alone:
    :data:`~deepsift.demo.reduced.PREVIEW_PIXELS`), decoded in part where the format allows
    (:mod:`deepsift.demo.reduced`); a whole image, where one was decoded for the verdict, is
    dropped before this returns. ``allow_whole=False``: None when a whole decode is needed.
    """
    d = decode(data, name, max_pixels, max_bytes, mode, allow_whole, sniffed)
    if d is None or not (heatmap_grid > 0 or preview):
        if d is not None:
            d._image = None
        return d
    bound = reduce_to if heatmap_grid > 0 else PREVIEW_PIXELS
    try:
        small = shrink(d._image, bound) if d._image is not None else \
            reduced_image(data, d.format, d.size, bound, name, max_pixels)
        d._image = None
        if small is None:  # small enough to be its own reduced image
            small = d.image
        if heatmap_grid > 0:
            from .heatmap import crops

            d.grid = crops(small, heatmap_grid, d.size)
        if preview:
            d.preview = preview_url(small)
    finally:
        d._image = None
    return d


def _decode_whole(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        return decode_image(data, max_pixels=max_pixels, max_bytes=max(len(data), 1))
    except (ImageDecodeError, ImageTooLargeError) as exc:
        text = str(exc)
        raise type(exc)(name + text[len("<bytes>"):] if text.startswith("<bytes>") else f"{name}: {text}") from None


def _crop(image: Image.Image, mode: Preprocessing) -> np.ndarray:
    return mode(image) if callable(mode) else crop_uint8(image, mode)


def preview_url(image: Image.Image, max_side: int = 640) -> str:
    """A small JPEG of ``image`` as a ``data:`` URL (the page shows it: no third-party or blob: source)."""
    import base64

    w, h = image.size
    scale = min(1.0, max_side / max(w, h))  # resized straight from the image: no full-size copy first
    im = image if scale == 1.0 else image.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                 Image.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
