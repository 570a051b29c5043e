"""Faster exact decoders for the official centre crop: libjpeg-turbo and libspng straight to numpy.

Pillow stays the reference and the fallback; these paths only remove work around the same codecs
(measured in ``benchmarks/bench_detect.py --part decode``, figures in ``benchmarks/README.md``):

* JPEG: ``simplejpeg`` runs libjpeg-turbo (the library Pillow's wheels bundle, with the same
  accurate integer IDCT and fancy upsampling) into a numpy array, without Pillow's image object,
  its crop copy and its array copy. Only YCbCr and greyscale files take it (decided from the
  header); CMYK, YCCK and RGB-coded JPEGs go to Pillow, whose conversions differ. Recoverable
  libjpeg errors (a truncated file, corrupt data) are errors here (``strict``): such a file is then
  decoded by Pillow, which reports or tolerates it exactly as before.
* PNG: ``pyspng`` (libspng) inflates and unfilters the rows down to the window's bottom edge only
  (the file's ``IHDR`` is given the window's bottom as its height, so libspng stops there; the
  rows above are exactly those of the whole image, as in :mod:`deepsift.pngcrop`). 8-bit,
  non-interlaced, still PNGs of every colour type except grey+alpha take it; 16-bit and
  low-bit-depth files go to Pillow (which truncates or scales them its own way). A PNG is
  decoded only when every chunk is intact (CRCs valid, ``IEND`` present), as on the window path.

Each returns None, and the caller takes the next path (:mod:`deepsift.jpegcrop` /
:mod:`deepsift.pngcrop`, then Pillow on the whole file), whenever its library is missing (or
``DEEPSIFT_NO_FAST_DECODE`` is set), the input is of a kind it does not handle, or the library
refuses the data: the pixel cap, the byte cap and every error message stay those of Pillow's path.
Byte identity with Pillow is checked per kind in ``tests/test_fastdecode.py``. libspng holds the
GIL while it decodes (pyspng does not release it); libjpeg-turbo here does not.
"""
from __future__ import annotations

import importlib
import os
import struct
import zlib
from functools import lru_cache
from types import ModuleType

import numpy as np

from .images import CROP_SIZE, MAX_PIXELS, center_crop_array, crop_origin
from .pngcrop import SIGNATURE, png_chunks

FAST_DECODERS = ("simplejpeg", "pyspng")
"""The optional decoder modules, JPEG and PNG."""

_JPEG_SPACES = ("YCbCr", "Gray")  # colour spaces libjpeg-turbo converts to RGB exactly as Pillow does
_PNG_FORMATS = {0: ("L", 1), 2: ("RGB", 3), 3: ("RGB", 3), 6: ("RGBA", 4)}  # colour type -> libspng format, bytes


@lru_cache(maxsize=None)
def fast_decoder(name: str) -> ModuleType | None:
    """The optional decoder module ``name`` (one of :data:`FAST_DECODERS`), or None when missing or disabled."""
    if name not in FAST_DECODERS:
        raise ValueError(f"unknown decoder {name!r}; expected one of {FAST_DECODERS}")
    if os.environ.get("DEEPSIFT_NO_FAST_DECODE"):
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # missing, or a wheel that cannot load here: Pillow decodes
        return None


def fast_decoders() -> dict[str, bool]:
    """Which optional decoders are in use here (for logs and benchmarks)."""
    return {name: fast_decoder(name) is not None for name in FAST_DECODERS}


def centre_crop_jpeg_fast(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The 224x224x3 uint8 centre crop of a YCbCr/grey JPEG by libjpeg-turbo into numpy, or None (use Pillow)."""
    sj = fast_decoder("simplejpeg")
    if sj is None or data[:2] != b"\xff\xd8":
        return None
    try:
        height, width, space, _ = sj.decode_jpeg_header(data)
        if space not in _JPEG_SPACES or width <= 0 or height <= 0 or width * height > max_pixels:
            return None
        rgb = sj.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
    except (ValueError, RuntimeError, MemoryError, OverflowError):
        return None
    return np.ascontiguousarray(center_crop_array(rgb))


def _with_height(data: bytes, rows: int) -> bytes:
    """``data`` whose IHDR (the first chunk) says ``rows`` rows, its CRC recomputed."""
    body = b"IHDR" + data[16:20] + struct.pack(">I", rows) + data[24:29]
    return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


def centre_crop_png_fast(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The 224x224x3 uint8 centre crop of an 8-bit PNG by libspng, rows down to the window only; or None."""
    spng = fast_decoder("pyspng")
    if spng is None or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    chunks = png_chunks(data)
    if chunks is None or len(chunks[0]) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0])
    if depth != 8 or colour not in _PNG_FORMATS or compression or filtering or interlace:
        return None
    fmt, nbytes = _PNG_FORMATS[colour]
    if width * height > max_pixels or width * height * nbytes > 3 * max_pixels:
        return None
    top = crop_origin(height)
    rows = min(height, top + CROP_SIZE) if top >= 0 else height
    try:
        pixels = spng.load(data if rows == height else _with_height(data, rows), fmt)
    except Exception:  # libspng's refusal (RuntimeError, ValueError): Pillow's path says what is wrong
        return None
    if pixels.shape[:2] != (rows, width) or pixels.dtype != np.uint8:
        return None
    if rows < height:
        pixels = pixels[top:]  # the window's rows: a side of exactly CROP_SIZE, cropped from 0
    window = center_crop_array(pixels)
    if window.ndim == 2:
        return np.repeat(window[:, :, None], 3, axis=2)
    return np.ascontiguousarray(window[:, :, :3])
