"""Safe image decoding and CoDE preprocessing: the one decoder for the whole package.

Decoding policy (documented, tested in ``tests/test_images.py``):

* Inputs: a path, raw bytes, a binary file object, a ``PIL.Image`` or an HxWx3 uint8 array.
* Pixel cap: images with more than ``MAX_PIXELS`` (80 MP by default) are refused *before*
  their pixels are decoded (:class:`ImageTooLargeError`), so decompression bombs cost nothing.
* Empty, truncated or non-image data raise :class:`ImageDecodeError` with the reason.
* Animated GIF/WebP/PNG: the first frame.
* EXIF orientation is **ignored** by default: the detector sees the pixels as stored, which is
  what the published CoDE inference path does (``Image.open(p).convert("RGB")``). Pass
  ``exif_transpose=True`` to rotate first.
* Colour: everything becomes 8-bit RGB. 16-bit greyscale is scaled (``v / 257``), not clipped;
  CMYK uses Pillow's conversion; alpha (RGBA, LA, palette transparency) is dropped, as in the
  published path.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Literal, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .exceptions import ImageDecodeError, ImageTooLargeError

MAX_PIXELS = 80_000_000
"""Default pixel cap (width x height) for any decoded image: 80 MP."""

MAX_BYTES = 64 * 1024 * 1024
"""Default byte cap for one encoded image read from a file, a URL or an upload: 64 MiB."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SIZE = 224
TRAIN_RESIZE = 248

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]
PreprocessMode = Literal["official", "resize"]
PREPROCESS_MODES: tuple[str, ...] = ("official", "resize")


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    exif_transpose: bool = False,
) -> Image.Image:
    """Decode one image safely into an 8-bit RGB ``PIL.Image`` (see the module policy)."""
    if isinstance(source, Image.Image):
        return _to_rgb(_first_frame(source))
    if isinstance(source, np.ndarray):
        return _from_array(source)
    fp, name = _open_source(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(fp)
            except Image.DecompressionBombError as exc:
                raise ImageTooLargeError(f"{name}: {exc}") from None
            except UnidentifiedImageError:
                raise ImageDecodeError(f"{name}: not an image (format not recognised)") from None
            except (OSError, ValueError, SyntaxError) as exc:
                raise ImageDecodeError(f"{name}: cannot read image header ({exc})") from None
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageDecodeError(f"{name}: image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the cap of {max_pixels / 1e6:g} MP"
                )
            try:
                im = _first_frame(im)
                im.load()
                if exif_transpose:
                    im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
            except Image.DecompressionBombError as exc:
                raise ImageTooLargeError(f"{name}: {exc}") from None
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise ImageDecodeError(f"{name}: corrupt or truncated image ({exc})") from None
    finally:
        if isinstance(source, (str, os.PathLike)):
            fp.close()


def _open_source(source: ImageSource, max_bytes: int) -> tuple[BinaryIO, str]:
    """Return a readable binary file object and a display name, checking size limits."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageDecodeError(f"{name}: no such file") from None
        except OSError as exc:
            raise ImageDecodeError(f"{name}: cannot access ({exc.strerror or exc})") from None
        if path.is_dir():
            raise ImageDecodeError(f"{name}: is a directory, not an image")
        if size == 0:
            raise ImageDecodeError(f"{name}: empty file (0 bytes)")
        if size > max_bytes:
            raise ImageTooLargeError(f"{name}: {size} bytes exceeds the cap of {max_bytes} bytes")
        try:
            return open(path, "rb"), name
        except OSError as exc:
            raise ImageDecodeError(f"{name}: cannot open ({exc.strerror or exc})") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError("<bytes>: empty data (0 bytes)")
        if len(source) > max_bytes:
            raise ImageTooLargeError(f"<bytes>: {len(source)} bytes exceeds the cap of {max_bytes} bytes")
        return io.BytesIO(bytes(source)), "<bytes>"
    if hasattr(source, "read"):
        return source, getattr(source, "name", "<stream>")  # type: ignore[return-value]
    raise TypeError(f"cannot decode an image from {type(source).__name__}")


def _first_frame(im: Image.Image) -> Image.Image:
    """Select frame 0 of an animated image (a no-op for still images)."""
    if getattr(im, "is_animated", False):
        im.seek(0)
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB following the module policy."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im).astype(np.float32)
        return Image.fromarray(np.round(arr / 257.0).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        hi = 255.0 if arr.max(initial=0) <= 255 else 65535.0
        arr = np.round(arr * (255.0 / hi)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _from_array(arr: np.ndarray) -> Image.Image:
    """Wrap an HxW or HxWx{1,3,4} uint8 array as an RGB image."""
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"<array>: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        if arr.shape[2] == 1:
            return Image.fromarray(arr[:, :, 0], "L").convert("RGB")
        return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]), "RGB")
    raise ImageDecodeError(f"<array>: expected HxW or HxWxC pixels, got shape {arr.shape}")


def center_crop_array(arr: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Centre-crop an HxWxC array to ``size``, zero-padding short sides (torchvision geometry).

    A side shorter than ``size`` is padded with ``floor(d/2)`` zeros before and ``ceil(d/2)``
    after; the crop offset is ``int(round((S - size) / 2))`` with Python's half-to-even rounding.
    """
    h, w = arr.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        pad = [(ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2)] + [(0, 0)] * (arr.ndim - 2)
        arr = np.pad(arr, pad, mode="constant", constant_values=0)
        h, w = arr.shape[:2]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return arr[top : top + size, left : left + size]


def resize_shorter(im: Image.Image, size: int = TRAIN_RESIZE) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear), the longer side as torchvision's Resize."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return im
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return im.resize((new_w, new_h), Image.BILINEAR)


def crop_uint8(im: Image.Image, mode: PreprocessMode = "official") -> np.ndarray:
    """Geometric preprocessing only: a 224x224x3 uint8 array ready for :func:`normalize_batch`."""
    if mode == "resize":
        im = resize_shorter(im, TRAIN_RESIZE)
    elif mode != "official":
        raise ValueError(f"preprocessing mode must be one of {PREPROCESS_MODES}, got {mode!r}")
    w, h = im.size
    if w >= CROP_SIZE and h >= CROP_SIZE:  # same box as center_crop_array, without copying the full frame
        top, left = int(round((h - CROP_SIZE) / 2.0)), int(round((w - CROP_SIZE) / 2.0))
        return np.ascontiguousarray(np.asarray(im.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))))
    return np.ascontiguousarray(center_crop_array(np.asarray(im), CROP_SIZE))


def normalize_batch(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Turn an NxHxWx3 uint8 batch into a normalised float32 NCHW tensor (ToTensor + Normalize)."""
    if isinstance(batch, np.ndarray) and batch.dtype == np.uint8 and batch.ndim in (3, 4) and batch.shape[-1] == 3:
        return _normalize_lut(batch if batch.ndim == 4 else batch[None])
    t = torch.as_tensor(batch)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    t = t.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return t.sub(mean).div(std)


def preprocess(source: ImageSource, mode: PreprocessMode = "official") -> torch.Tensor:
    """Decode and preprocess one image into a 1x3x224x224 float32 tensor."""
    return normalize_batch(crop_uint8(decode_image(source), mode))


_NORMALIZE_LUT: np.ndarray | None = None


def _normalize_lut(batch: np.ndarray) -> torch.Tensor:
    """:func:`normalize_batch` for uint8 arrays by table look-up: one pass, bit-identical results.

    The 3x256 table is computed by the float32 arithmetic below (ToTensor + Normalize), so
    every output value is exactly what that arithmetic gives for its input byte.
    """
    global _NORMALIZE_LUT
    if _NORMALIZE_LUT is None:
        ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None, None], (1, 256, 1, 3))
        t = torch.from_numpy(np.ascontiguousarray(ramp)).permute(0, 3, 1, 2).to(torch.float32).div(255)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        _NORMALIZE_LUT = np.ascontiguousarray(t.sub(mean).div(std).numpy().reshape(3, 256))
    n, h, w, _ = batch.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for c in range(3):
        np.take(_NORMALIZE_LUT[c], batch[..., c], out=out[:, c])
    return torch.from_numpy(out)
