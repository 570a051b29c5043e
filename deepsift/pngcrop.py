"""Exact PNG window decoding: decode the rows down to the centre 224 x 224 window's bottom edge only.

A PNG's rows are compressed as one stream and each row's filter reads only the row above it, so
the rows above the window's bottom edge decode exactly as they do in the whole image, and the rows
below it (about a quarter of a 512 px image, close to half of a large one) need not be inflated at
all. The rows are decoded by Pillow's own PNG row decoder (the ``zip`` decoder the whole-file path
feeds), from the file's ``IDAT`` data, so the window's pixels are exactly those of decoding the
whole file and cropping (checked byte for byte in ``tests/test_pngcrop.py``). With ``isal``
installed the rows are inflated by ISA-L first, about twice as fast as zlib, and handed to that
row decoder in stored blocks (:func:`deepsift.fastdecode.png_rows_stream`); then every PNG of these
kinds takes this path, however few rows it saves.

:func:`centre_crop_png` returns None, and the caller decodes the whole file, whenever this path
does not apply or is not sure: not a PNG, a chunk cut short or failing its CRC, no ``IEND`` (a
truncated file), not 8-bit RGB or RGBA, interlaced, animated (APNG), an image smaller than the
window, or (without ``isal``) fewer than :data:`MIN_ROWS_SAVED` rows to save. The whole-file path
then decides every error, with one difference: a file whose chunks are intact (CRCs and ``IEND`` present) but whose
compressed rows *below* the window are broken is scored on its intact window instead of refused.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from .fastdecode import fast_decoder, png_rows_stream
from .images import CROP_SIZE, MAX_PIXELS, crop_origin

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_ROWS_SAVED = 32
"""Below this many rows under the window, the whole-file path is as fast (the chunk walk costs a little)."""

_MODES = {2: "RGB", 6: "RGBA"}  # PNG colour type -> Pillow mode (= raw mode at 8 bits)
_ANIMATION = (b"acTL", b"fcTL", b"fdAT")


def png_chunks(data: bytes) -> tuple[bytes, list[memoryview]] | None:
    """``(IHDR body, IDAT bodies)`` of an intact still PNG (every CRC valid, ``IEND`` reached), else None."""
    view, pos, n = memoryview(data), len(SIGNATURE), len(data)
    ihdr, idat = b"", []
    while pos + 12 <= n:
        length = int.from_bytes(view[pos:pos + 4], "big")
        end = pos + 12 + length
        if end > n:
            return None  # cut short
        kind = bytes(view[pos + 4:pos + 8])
        if zlib.crc32(view[pos + 4:pos + 8 + length]) != int.from_bytes(view[pos + 8 + length:end], "big"):
            return None
        if kind == b"IEND":
            return (ihdr, idat) if ihdr and idat else None
        if kind in _ANIMATION:
            return None  # the whole-file path picks the frame
        if kind == b"IHDR":
            ihdr = bytes(view[pos + 8:pos + 8 + length])
        elif kind == b"IDAT":
            idat.append(view[pos + 8:pos + 8 + length])
        pos = end
    return None  # no IEND: truncated


def centre_crop_png(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The 224x224x3 uint8 centre crop of PNG ``data``, decoding only the rows it needs; or None to decode it whole."""
    from PIL import Image

    if not data.startswith(SIGNATURE):
        return None
    chunks = png_chunks(data)
    if chunks is None or len(chunks[0]) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0])
    if depth != 8 or colour not in _MODES or compression or filtering or interlace:
        return None
    if width < CROP_SIZE or height < CROP_SIZE or width * height > max_pixels:
        return None
    top, left = crop_origin(height), crop_origin(width)
    bottom = top + CROP_SIZE
    if height - bottom < MIN_ROWS_SAVED and fast_decoder("isal.isal_zlib") is None:
        return None
    mode = _MODES[colour]
    stream = png_rows_stream(chunks[1], bottom * (width * len(mode) + 1))  # ISA-L's inflate, when installed
    try:
        rows = Image.frombytes(mode, (width, bottom), stream or b"".join(chunks[1]), "zip", mode)
    except (ValueError, OSError, MemoryError):
        return None  # broken rows above the window's bottom: the whole-file path says what is wrong
    window = rows.crop((left, top, left + CROP_SIZE, bottom))
    return np.ascontiguousarray(np.asarray(window if mode == "RGB" else window.convert("RGB")))
