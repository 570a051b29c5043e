"""Exact PNG window decoding: decode the rows down to the centre 224 x 224 window's bottom edge only.

A PNG's rows are compressed as one stream and each row's filter reads only the row above it, so
the rows above the window's bottom edge decode exactly as they do in the whole image, and the rows
below it (about a quarter of a 512 px image, close to half of a large one) need not be inflated at
all. The rows are decoded by Pillow's own PNG row decoder (the ``zip`` decoder the whole-file path
feeds), from the file's ``IDAT`` data, so the window's pixels are exactly those of decoding the
whole file and cropping (checked byte for byte in ``tests/test_pngcrop.py``). With ``isal``
installed the rows are inflated by ISA-L, about twice as fast as zlib (the strips reach Pillow's row
decoder as stored blocks either way); then every PNG of these kinds takes this path, however few rows
it saves.

Rows are decoded a strip at a time (:func:`png_strips`, about :data:`STRIP_BYTES` each): the
compressed stream is inflated only as far as the strip needs, and each strip is handed to Pillow's
row decoder behind a copy of the row above it (stored with filter type 0, "none"), so its filters
read exactly the bytes they read in the whole file. Memory is one strip, whatever the image's
height; the demo's previews and heatmaps reduce a large PNG strip by strip the same way.

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
from typing import Iterator, Sequence

import numpy as np

from .fastdecode import fast_decoder
from .images import CROP_SIZE, MAX_PIXELS, crop_origin

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_ROWS_SAVED = 32
"""Below this many rows under the window, the whole-file path is as fast (the chunk walk costs a little)."""

STRIP_BYTES = 1 << 20
"""About how many decoded bytes one strip of rows holds (at least one row)."""

_MODES = {2: "RGB", 6: "RGBA"}  # PNG colour type -> Pillow mode (= raw mode at 8 bits) of the exact window path
_STRIP_MODES = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}  # ... of strip decoding (8-bit, no palette)
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
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


def png_layout(data: bytes) -> tuple[int, int, str, list[memoryview]] | None:
    """``(width, height, mode, IDAT bodies)`` of an intact, still, non-interlaced 8-bit L, LA, RGB or
    RGBA PNG (the ones :func:`png_strips` decodes), else None."""
    if not data.startswith(SIGNATURE):
        return None
    chunks = png_chunks(data)
    if chunks is None or len(chunks[0]) != 13:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0])
    if depth != 8 or colour not in _STRIP_MODES or compression or filtering or interlace or not width or not height:
        return None
    return width, height, _STRIP_MODES[colour], chunks[1]


class Inflater:
    """The IDAT stream inflated on demand, never more than asked for at once (by ISA-L when installed)."""

    def __init__(self, parts: Sequence[memoryview]) -> None:
        isal = fast_decoder("isal.isal_zlib")  # ISA-L's inflate, when installed: the same bytes, faster
        self.fast = isal is not None
        self._z = (isal or zlib).decompressobj()
        self._errors: tuple[type[BaseException], ...] = (zlib.error,) + ((isal.error,) if isal else ())
        self._parts = iter(parts)
        self._tail: bytes | memoryview = b""

    def read(self, n: int) -> bytes:
        """Up to ``n`` more inflated bytes (fewer at the stream's end); ValueError on broken data."""
        out = bytearray()
        while len(out) < n and not self._z.eof:
            if not self._tail:
                part = next(self._parts, None)
                if part is None:  # output zlib still holds, then nothing
                    got = self._z.decompress(b"", n - len(out))
                    if not got:
                        break
                    out += got
                    continue
                self._tail = part
            try:
                out += self._z.decompress(self._tail, n - len(out))
            except self._errors as exc:
                raise ValueError(f"broken image data ({exc})") from None
            self._tail = self._z.unconsumed_tail
        return bytes(out)


def png_strips(width: int, mode: str, idat: Sequence[memoryview], rows: int, stop: int,
               strip_bytes: int | None = None, multiple: int = 1) -> Iterator[tuple[int, "Image.Image"]]:
    """``(first row, strip)`` for the rows ``0 .. stop`` of a :func:`png_layout` PNG, in ``mode``, a strip at a time.

    Each strip has about ``strip_bytes`` (default :data:`STRIP_BYTES`) of pixels (a multiple of ``multiple`` rows, the last may be
    shorter); ``rows`` is the image's height. ValueError when the rows are broken or cut short.
    """
    from PIL import Image

    stride = width * _CHANNELS[mode]
    step = max(1, (strip_bytes or STRIP_BYTES) // (stride + 1) // multiple) * multiple
    stop = min(stop, rows)
    inflater, above, y = Inflater(idat), b"", 0
    while y < stop:
        n = min(step, stop - y)
        filtered = inflater.read(n * (stride + 1))
        if len(filtered) != n * (stride + 1):
            raise ValueError("the image data ends before its last row")
        extra = 1 if above else 0
        stream = zlib.compress((b"\x00" + above if above else b"") + filtered, 0)  # stored: only a copy
        try:
            strip = Image.frombytes(mode, (width, n + extra), stream, "zip", mode)
        except (OSError, MemoryError) as exc:
            raise ValueError(f"broken image rows ({exc})") from None
        if extra:
            strip = strip.crop((0, 1, width, n + 1))
        above = strip.crop((0, n - 1, width, n)).tobytes()
        yield y, strip
        y += n


def centre_crop_png(data: bytes, max_pixels: int = MAX_PIXELS, strip_bytes: int | None = None) -> np.ndarray | None:
    """The 224x224x3 uint8 centre crop of PNG ``data``, decoding only the rows it needs, a strip at a time;
    or None to decode it whole."""
    layout = png_layout(data)
    if layout is None or layout[2] not in _MODES.values():
        return None
    width, height, mode, idat = layout
    if width < CROP_SIZE or height < CROP_SIZE or width * height > max_pixels:
        return None
    top, left = crop_origin(height), crop_origin(width)
    bottom = top + CROP_SIZE
    if height - bottom < MIN_ROWS_SAVED and fast_decoder("isal.isal_zlib") is None:
        return None
    out = np.empty((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    try:
        for y, strip in png_strips(width, mode, idat, height, bottom, strip_bytes):
            y0, y1 = max(y, top), min(y + strip.height, bottom)
            if y0 >= y1:
                continue
            part = strip.crop((left, y0 - y, left + CROP_SIZE, y1 - y))
            out[y0 - top:y1 - top] = np.asarray(part if mode == "RGB" else part.convert("RGB"))
    except (ValueError, MemoryError):
        return None  # broken rows above the window's bottom: the whole-file path says what is wrong
    return out
