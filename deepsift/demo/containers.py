"""Count an image file's container segments before any parser walks them, and refuse a file that holds too many.

Pillow reads a PNG's chunks before its pixels, a JPEG's markers before its first scan and a GIF's
blocks one by one in Python, and the C2PA reader walks every chunk, block or segment of a file:
some microseconds each. A real image holds few (a PNG's pixels come in chunks of kilobytes, a
GIF's in sub-blocks of up to 255 bytes, a JPEG has a few dozen markers before its first scan),
but a 20 MB file of 12-byte PNG chunks, 5-byte GIF comments or 8-byte WebP chunks holds over a
million: a minute of the demo's few decoding threads for one upload. :func:`check_segments`
counts them first, stopping as soon as a file holds more than an image of its size would
(:func:`segment_limit`), so counting costs at most that many steps.
"""
from __future__ import annotations

from ..exceptions import ImageDecodeError
from ..pngcrop import SIGNATURE as PNG_SIGNATURE

BASE_SEGMENTS = 16_384
"""Segments any file may hold whatever its size (metadata chunks, the frames of a small animation, markers)."""
BYTES_PER_SEGMENT = {"PNG": 1024, "GIF": 192, "WEBP": 1024}
"""Per format, one more segment allowed for every this many bytes of file (beyond the density of real
encoders: GIF sub-blocks carry up to 255 bytes, PNG and WebP chunks kilobytes). A JPEG's markers before
its first scan do not grow with its size."""
WHAT = {"PNG": "PNG chunks", "JPEG": "JPEG markers before the first scan", "GIF": "GIF blocks",
        "WEBP": "WebP chunks"}


def container_format(data: bytes) -> str | None:
    """PNG, JPEG, GIF or WEBP by the file's first bytes; None for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def segment_limit(fmt: str, size: int) -> int:
    """The most segments a ``fmt`` file of ``size`` bytes may hold."""
    per = BYTES_PER_SEGMENT.get(fmt)
    return BASE_SEGMENTS + (size // per if per else 0)


def count_segments(data: bytes, fmt: str, stop_after: int) -> int:
    """The file's segments (chunks, blocks and sub-blocks, markers), counted up to ``stop_after + 1``."""
    walk = {"PNG": _png, "JPEG": _jpeg, "GIF": _gif, "WEBP": _webp}[fmt]
    return walk(data, stop_after + 1)


def check_segments(data: bytes, name: str) -> None:
    """ImageDecodeError when a PNG, JPEG, GIF or WebP file holds more segments than an image of its size would."""
    fmt = container_format(data)
    if fmt is None:
        return
    limit = segment_limit(fmt, len(data))
    if count_segments(data, fmt, limit) > limit:
        raise ImageDecodeError(f"{name}: not a supported image: more than {limit:,} {WHAT[fmt]} in "
                               f"{len(data):,} bytes (far more than an image of this size holds)")


def _png(data: bytes, cap: int) -> int:
    pos, n, count = 8, len(data), 0
    while pos + 12 <= n and count < cap:
        length = int.from_bytes(data[pos:pos + 4], "big")
        count += 1
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + length
    return count


def _jpeg(data: bytes, cap: int) -> int:
    pos, n, count = 2, len(data), 0
    while pos + 2 <= n and count < cap:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        count += 1
        if marker == 0xFF:  # a fill byte: Pillow reads each one
            pos += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        elif marker in (0xDA, 0xD9):  # the first scan (or the end): Pillow stops reading markers here
            break
        else:
            if pos + 4 > n:
                break
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return count


def _gif_sub_blocks(data: bytes, pos: int, count: int, cap: int) -> tuple[int, int]:
    n = len(data)
    while pos < n and count < cap:
        size = data[pos]
        pos += 1 + size
        count += 1
        if size == 0:
            break
    return pos, count


def _gif(data: bytes, cap: int) -> int:
    n, count = len(data), 0
    pos = 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)
    while pos < n and count < cap:
        kind = data[pos]
        count += 1
        if kind == 0x21:  # an extension: its label, then sub-blocks
            pos, count = _gif_sub_blocks(data, pos + 2, count, cap)
        elif kind == 0x2C:  # an image: its descriptor, local colour table, LZW code size, then sub-blocks
            if pos + 10 > n:
                break
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            pos, count = _gif_sub_blocks(data, pos, count, cap)
        else:  # the trailer, or something no reader goes past
            break
    return count


def _webp(data: bytes, cap: int) -> int:
    pos, n, count = 12, len(data), 0
    while pos + 8 <= n and count < cap:
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        count += 1
        pos += 8 + size + (size & 1)
    return count
