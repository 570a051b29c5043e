"""Previews and heatmaps from a reduced image: a large image is never decoded whole for them.

The verdict reads the detector's own input (:func:`deepsift.model.decoding.window_pixels`, exactly
as ``deepsift detect``); the heatmap and the preview are explanations and come from the image
shrunk by a whole factor to at most a pixel bound (``heatmap_megapixels``), made without the whole
image in memory where the format allows:

* a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling (Pillow's draft mode), then
  shrunk further by box averaging if that is still over the bound;
* an 8-bit, non-interlaced PNG (grey, RGB, with or without alpha) is inflated a strip of rows at a
  time (:func:`deepsift.pngcrop.png_strips`) and each strip box-averaged into the result;
* anything else (and a JPEG or PNG the partial paths do not take) is decoded whole anyway for the
  verdict; the reduced image is box-averaged from that whole image, which is then dropped.
"""
from __future__ import annotations

import io
import math
import warnings

from PIL import Image

from ..exceptions import ImageDecodeError
from ..images import decode_image
from ..pngcrop import png_layout, png_strips

PREVIEW_PIXELS = 1_600_000
"""A preview (at most 640 px a side) alone is made from the image reduced to at most this."""


def factor(size: tuple[int, int], max_pixels: int) -> int:
    """The smallest whole factor that brings ``size`` to at most ``max_pixels`` (1: already small enough)."""
    w, h = size
    f = max(1, math.floor(math.sqrt(w * h / max(1, max_pixels))))
    while math.ceil(w / f) * math.ceil(h / f) > max_pixels and f < max(w, h):
        f += 1
    return f


def shrink(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` box-averaged by :func:`factor` (the same image when it is small enough)."""
    f = factor(image.size, max_pixels)
    return image if f == 1 else image.reduce(f)


def reduced_image(data: bytes, fmt: str, size: tuple[int, int], max_out: int, name: str,
                  max_pixels: int) -> Image.Image | None:
    """``data`` as an 8-bit RGB image of at most ``max_out`` pixels, decoded in part (JPEG scale, PNG strips);
    None when its format has no such path (decode it whole, then :func:`shrink`)."""
    if factor(size, max_out) == 1:
        return None  # small enough: the whole decode is the reduced image
    if fmt == "JPEG":
        return _jpeg(data, size, max_out, name, max_pixels)
    if fmt == "PNG":
        layout = png_layout(data)
        if layout is not None and (layout[0], layout[1]) == tuple(size):
            return _png(layout, max_out, name)
    return None


def _jpeg(data: bytes, size: tuple[int, int], max_out: int, name: str, max_pixels: int) -> Image.Image:
    w, h = size
    scale = next((s for s in (1, 2, 4, 8) if math.ceil(w / s) * math.ceil(h / s) <= max_out), 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=["JPEG"])
            im.draft("RGB", (max(1, w // scale), max(1, h // scale)))
            return shrink(decode_image(im, max_pixels=max_pixels), max_out)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageDecodeError(f"{name}: corrupt or truncated image ({exc})") from None


def _png(layout: tuple, max_out: int, name: str) -> Image.Image:
    width, height, mode, idat = layout
    f = factor((width, height), max_out)
    out = Image.new("RGB", (math.ceil(width / f), math.ceil(height / f)))
    try:
        for y, strip in png_strips(width, mode, idat, height, height, multiple=f):
            out.paste((strip if mode == "RGB" else strip.convert("RGB")).reduce(f), (0, y // f))
    except (ValueError, MemoryError) as exc:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({exc})") from None
    return out
