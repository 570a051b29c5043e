"""Exact JPEG region decoding: decode only the centre 224 x 224 window (plus margin), byte-identical.

A 512 x 512 JPEG decoded whole and cropped to 224 x 224 spends most of its time on pixels the crop
throws away. Here the JPEG is first cut *losslessly* to the MCU-aligned rectangle around the
window plus one MCU of margin on every side (libturbojpeg's ``tjTransform`` with ``TJXOPT_CROP``:
the DCT coefficients are copied, not recomputed), and that small JPEG is decoded by libjpeg-turbo
(:mod:`deepsift.fastdecode`'s, else Pillow's: the same decoder as the whole-file path). Each 8 x 8
block's inverse DCT depends on that block alone and chroma upsampling reads one chroma sample
beyond a pixel, which the one-MCU margin holds, so the
window's pixels are exactly those of decoding the whole file and cropping (checked byte for byte
over many sizes, subsamplings and odd offsets in ``tests/test_jpegcrop.py``).

:func:`centre_crop_jpeg` returns None, and the caller decodes the whole file, whenever this path
does not apply or is not sure: libturbojpeg missing, not a JPEG, progressive or arithmetic-coded,
CMYK/YCCK or unusual colour spaces and subsamplings, an image smaller than the window or less than
about 640 x 640 (below that, cutting costs what it saves: the cut still reads every Huffman-coded
coefficient), or anything the library refuses. Nothing else (the pixel cap, the byte cap, the
error wording) changes: the whole-file path still decides every error.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
from functools import lru_cache

import numpy as np

from .images import CROP_SIZE, MAX_PIXELS, crop_origin

_MCU = {0: (8, 8), 1: (16, 8), 2: (16, 16), 3: (8, 8)}  # TJSAMP_444, 422, 420, GRAY: MCU width, height
_CS_YCBCR, _CS_GRAY = 1, 2
_TJXOPT_CROP = 4
_MIN_GAIN = 6.0  # region path only for images with >= 6x the region's pixels (measured: below, no faster)


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _Transform(ctypes.Structure):
    _fields_ = [("r", _Region), ("op", ctypes.c_int), ("options", ctypes.c_int), ("data", ctypes.c_void_p),
                ("customFilter", ctypes.c_void_p)]


@lru_cache(maxsize=1)
def turbojpeg() -> ctypes.CDLL | None:
    """libturbojpeg, or None when it is not installed (then every JPEG is decoded whole)."""
    if os.environ.get("DEEPSIFT_NO_JPEG_REGION"):
        return None
    for name in (ctypes.util.find_library("turbojpeg"), "libturbojpeg.so.0", "libturbojpeg.dylib", "turbojpeg.dll"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.tjInitTransform.restype = ctypes.c_void_p
        lib.tjDestroy.argtypes = [ctypes.c_void_p]
        lib.tjDecompressHeader3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong] + \
            [ctypes.POINTER(ctypes.c_int)] * 4
        lib.tjTransform.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_ulong),
                                    ctypes.POINTER(_Transform), ctypes.c_int]
        lib.tjFree.argtypes = [ctypes.c_void_p]
        return lib
    return None


def _plain_baseline(data: bytes) -> bool:
    """Whether the JPEG's frame is baseline or extended Huffman (SOF0/SOF1), not progressive or arithmetic."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xC0, 0xC1):
            return True
        if 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # progressive, lossless, arithmetic
            return False
        if marker == 0xDA:  # scan before any frame: not a JPEG we know
            return False
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def region_bounds(length: int, mcu: int, size: int = CROP_SIZE) -> tuple[int, int]:
    """``(start, end)`` along one side: MCU-aligned, one MCU of margin around the centred window, clipped."""
    origin = crop_origin(length, size)
    start = max(0, (origin // mcu - 1) * mcu)
    end = min(length, (-(-(origin + size) // mcu) + 1) * mcu)
    return start, end


def centre_crop_jpeg(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The 224x224x3 uint8 centre crop of JPEG ``data`` by region decoding, or None to decode it whole."""
    lib = turbojpeg()
    if lib is None or len(data) < 4 or data[:2] != b"\xff\xd8" or not _plain_baseline(data):
        return None
    handle = lib.tjInitTransform()
    if not handle:
        return None
    try:
        w, h, samp, cs = (ctypes.c_int() for _ in range(4))
        if lib.tjDecompressHeader3(handle, data, len(data), ctypes.byref(w), ctypes.byref(h), ctypes.byref(samp),
                                   ctypes.byref(cs)) != 0:
            return None
        width, height = w.value, h.value
        if samp.value not in _MCU or cs.value not in (_CS_YCBCR, _CS_GRAY) or width * height > max_pixels:
            return None
        if width < CROP_SIZE or height < CROP_SIZE or width * height < _MIN_GAIN * (CROP_SIZE + 32) ** 2:
            return None
        mcu_w, mcu_h = _MCU[samp.value]
        x0, x1 = region_bounds(width, mcu_w)
        y0, y1 = region_bounds(height, mcu_h)
        xf = _Transform(_Region(x0, y0, x1 - x0, y1 - y0), 0, _TJXOPT_CROP, None, None)
        out, size = ctypes.c_void_p(), ctypes.c_ulong(0)
        if lib.tjTransform(handle, data, len(data), 1, ctypes.byref(out), ctypes.byref(size), ctypes.byref(xf), 0):
            if out.value:
                lib.tjFree(out)
            return None
        try:
            cropped = ctypes.string_at(out.value, size.value)
        finally:
            lib.tjFree(out)
    finally:
        lib.tjDestroy(handle)
    return _decode_window(cropped, crop_origin(width) - x0, crop_origin(height) - y0, (x1 - x0, y1 - y0))


def _decode_window(cropped: bytes, left: int, top: int, size: tuple[int, int]) -> np.ndarray | None:
    """Decode the cut JPEG (libjpeg-turbo into numpy via :mod:`deepsift.fastdecode`, else Pillow); take the window."""
    from PIL import Image

    from .fastdecode import fast_decoder

    sj = fast_decoder("simplejpeg")
    if sj is not None:
        try:
            rgb = sj.decode_jpeg(cropped, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
            if rgb.shape[:2] == (size[1], size[0]):
                return np.ascontiguousarray(rgb[top : top + CROP_SIZE, left : left + CROP_SIZE])
        except (ValueError, RuntimeError, MemoryError):
            pass  # Pillow below decides
    try:
        with Image.open(io.BytesIO(cropped)) as im:
            if im.size != size or im.mode not in ("RGB", "L"):
                return None
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.ascontiguousarray(np.asarray(rgb.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))))
    except (OSError, ValueError, SyntaxError):
        return None

