"""Getting one image into the demo: read an upload or fetch a URL under caps, sniff its type by content, decode.

Types are told by their bytes, never by a name or a Content-Type: only the formats in
:data:`FORMATS` are opened at all (an SVG, an HTML page or a PDF renamed ``.png`` is "not a
supported image"). The byte cap holds while reading; the pixel cap is checked from the header
before any pixel is decoded (decompression bombs cost nothing). Every refusal is an
:class:`~deepsift.exceptions.ImageError` with one clear line.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from ..exceptions import ImageDecodeError, ImageTooLargeError
from ..images import decode_image
from ..urlfetch import FetchPolicy, fetch_url

FORMATS: dict[str, str] = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                           "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff"}
"""Pillow formats the demo opens, and their media types (everything else is refused unread)."""


@dataclass
class Decoded:
    """One input ready for the detector: its name, raw bytes, sniffed type and decoded RGB image."""

    source: str
    data: bytes = field(repr=False)
    format: str
    media_type: str
    image: Image.Image = field(repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def read_capped(stream: BinaryIO, name: str, max_bytes: int) -> bytes:
    """Read an uploaded file, refusing it (ImageTooLargeError) once it passes ``max_bytes``."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{name}: file larger than the {max_bytes / (1 << 20):g} MiB limit")
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    return data


def fetch(url: str, policy: FetchPolicy, deadline: float, max_bytes: int) -> bytes:
    """Download an image URL under the server's policy (no private targets, also after redirects and DNS)."""
    return fetch_url(url, policy=policy, deadline=deadline, max_bytes=max_bytes)


def sniff(data: bytes, name: str) -> str:
    """The Pillow format of ``data`` from its content; ImageDecodeError for anything not in :data:`FORMATS`."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype", b"<html")):
        raise ImageDecodeError(f"{name}: an SVG/HTML/XML document, not a supported image "
                               f"({', '.join(sorted(set(FORMATS) - {'MPO'}))})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[f for f in FORMATS if f != "MPO"]) as probe:
                return str(probe.format)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageDecodeError(f"{name}: not a supported image (send JPEG, PNG, WebP, GIF, BMP or TIFF)") from None


def decode(data: bytes, name: str, max_pixels: int, max_bytes: int) -> Decoded:
    """Sniff and decode ``data`` with the package's one safe decoder, under the demo's caps."""
    fmt = sniff(data, name)
    try:
        image = decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    except (ImageDecodeError, ImageTooLargeError) as exc:
        text = str(exc)
        raise type(exc)(name + text[len("<bytes>"):] if text.startswith("<bytes>") else f"{name}: {text}") from None
    return Decoded(name, data, fmt, FORMATS[fmt], image)


def preview_url(image: Image.Image, max_side: int = 640) -> str:
    """A small JPEG of ``image`` as a ``data:`` URL (the page shows it: no third-party or blob: source)."""
    import base64

    im = image.copy()
    im.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
