"""What a file says about an image besides its content: format, JPEG quality, subsampling, size, metadata.

Read from the headers only (Pillow's ``Image.open`` parses the markers and chunks before the
pixel data; nothing is decoded), so a confound audit of 100k images takes seconds.

The JPEG quality is estimated from the luminance quantisation table against the IJG standard
table: libjpeg scales the table by ``S = 5000 / Q`` (Q < 50) or ``200 - 2 Q``, so
``S ~ 100 * sum(table) / sum(standard)`` (order-free) and Q follows. Tables not made by that rule
(camera firmware, Photoshop) get the nearest IJG quality, which is what a confound check needs.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

CROP = 224  # the CoDE crop: a shorter side below it is zero-padded
_IJG_LUMA_SUM = 3_688  # sum of the 64 entries of the IJG standard luminance table (JPEG Annex K)
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
_NOT_TEXT = {"dpi", "gamma", "transparency", "srgb", "icc_profile", "exif", "chromaticity", "aspect", "xmp",
             "jfif", "jfif_version", "jfif_unit", "jfif_density", "progressive", "progression", "adobe",
             "adobe_transform", "duration", "loop", "background", "compression", "resolution", "version",
             "interlace", "bbox", "default_image", "disposal", "blend", "timestamp", "mp", "photoshop",
             "dng_version", "loop_count", "mode", "transparency_index"}


@dataclass(frozen=True)
class HeaderInfo:
    """Header facts about one image file (``None``: not known for this format or file)."""

    format: str  # JPEG, PNG, WEBP, TIFF, ... ("unreadable" when the header cannot be parsed)
    width: int | None = None
    height: int | None = None
    file_bytes: int | None = None
    jpeg_quality: float | None = None
    subsampling: str | None = None  # JPEG chroma subsampling; "none" for other formats
    exif: bool = False
    text: bool = False  # PNG text chunks, JPEG comments, XMP
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def jpeg_quality(tables: dict[int, Any]) -> float | None:
    """The IJG quality (1-100) whose scaled standard luminance table is closest to table 0, or None."""
    luma = tables.get(0) if tables else None
    if luma is None or len(luma) != 64:
        return None
    if max(luma) <= 1:
        return 100.0
    scale = 100.0 * float(sum(luma)) / _IJG_LUMA_SUM
    q = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(min(100.0, max(1.0, round(q))))


def read_header(source: str | bytes | os.PathLike) -> HeaderInfo:
    """The :class:`HeaderInfo` of an image file or its bytes, from its headers only (never decodes pixels)."""
    from PIL import Image, JpegImagePlugin

    from ..images import open_source

    try:
        fp, _ = open_source(source)  # the one safe opener: a FIFO or a device is refused unread, never blocks
        size = len(source) if isinstance(source, bytes) else os.fstat(fp.fileno()).st_size
        with fp, Image.open(fp) as im:
            fmt = (im.format or "unknown").upper()
            w, h = im.size
            info = im.info
            quality = sub = None
            if fmt in ("JPEG", "MPO"):
                quality = jpeg_quality(getattr(im, "quantization", None) or {})
                sub = _SUBSAMPLING.get(JpegImagePlugin.get_sampling(im), "other")
            exif = bool(info.get("exif")) or (fmt == "TIFF" and bool(im.getexif()))
            text = bool(info.get("xmp") or info.get("comment")) or any(
                isinstance(k, str) and k not in _NOT_TEXT and isinstance(v, (str, bytes)) for k, v in info.items())
            return HeaderInfo(fmt, int(w), int(h), int(size), quality, sub or "none", exif, text)
    except Exception as exc:  # noqa: BLE001 - any unreadable header is a row of its own, never a crash
        return HeaderInfo("unreadable", error=f"{type(exc).__name__}: {exc}"[:200])
