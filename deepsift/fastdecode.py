"""Faster exact decoding for the official centre crop: libjpeg-turbo straight to numpy, ISA-L's inflate for PNG.

Pillow stays the reference and the fallback; these paths only remove work around the same codecs
(measured in ``benchmarks/bench_detect.py --part decode``, figures in ``benchmarks/README.md``):

* JPEG: ``simplejpeg`` runs libjpeg-turbo (the library Pillow's wheels bundle, with the same
  accurate integer IDCT and fancy upsampling) into a numpy array, without Pillow's image object,
  its crop copy and its array copy. Only YCbCr and greyscale files take it (decided from the
  header); CMYK, YCCK and RGB-coded JPEGs go to Pillow, whose conversions differ. Recoverable
  libjpeg errors (a truncated file, corrupt data) are errors here (``strict``): such a file is then
  decoded by Pillow, which reports or tolerates it exactly as before.
* PNG: inflating the rows is most of a PNG's cost. ``isal`` (Intel's ISA-L) inflates them about
  twice as fast as zlib; :class:`deepsift.pngcrop.Inflater` uses it and hands the inflated rows
  to Pillow's own row decoder in stored blocks, so the unfiltering and the pixels are Pillow's. (libspng via ``pyspng`` was measured too: a little faster on one core, but it holds
  the GIL while it decodes, which serialises the decoding threads used on one- or two-CPU
  machines; both libraries here release it.)

Each returns None, and the caller takes the next path (:mod:`deepsift.jpegcrop` /
:mod:`deepsift.pngcrop` with zlib, then Pillow on the whole file), whenever its library is missing
(or ``DEEPSIFT_NO_FAST_DECODE`` is set), the input is of a kind it does not handle, or the library
refuses the data: the pixel cap, the byte cap and every error message stay those of Pillow's path.
Byte identity with Pillow is checked per kind in ``tests/test_fastdecode.py``.
"""
from __future__ import annotations

import importlib
import os
from functools import lru_cache
from types import ModuleType

import numpy as np

from .images import MAX_PIXELS, center_crop_array

FAST_DECODERS = ("simplejpeg", "isal.isal_zlib")
"""The optional modules: libjpeg-turbo for JPEG, ISA-L's inflate for PNG."""

_JPEG_SPACES = ("YCbCr", "Gray")  # colour spaces libjpeg-turbo converts to RGB exactly as Pillow does


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
