"""Safe image decoding and CoDE preprocessing: the one decoder for the whole package.

Decoding policy (documented, tested in ``tests/test_images.py``):

* Inputs: a path, raw bytes, a binary file object, a ``PIL.Image`` or an HxWx3 uint8 array.
* Pixel cap: images with more than ``MAX_PIXELS`` (80 MP by default) are refused *before*
  their pixels are decoded (:class:`ImageTooLargeError`), so decompression bombs cost nothing.
  Decoded bytes are bounded too, before decoding: width x height x the bytes per pixel of the
  stored mode (4 for a float or 32-bit TIFF, 2 for a 16-bit PNG) may not exceed the pixel cap x 3
  (the bytes of the RGB output), and the conversion of 16-bit, 32-bit and float images works in
  row blocks, so a small file cannot cost gigabytes.
* Empty, truncated or non-image data raise :class:`ImageDecodeError` with the reason; so does a
  path that is not a regular file (a FIFO or a device is never opened for reading, so it cannot
  block or stream forever).
* Animated GIF/WebP/PNG: the first frame.
* EXIF orientation is **ignored** by default: the detector sees the pixels as stored, which is
  what the published CoDE inference path does (``Image.open(p).convert("RGB")``). Pass
  ``exif_transpose=True`` to rotate first.
* Colour: everything becomes 8-bit RGB. 16-bit greyscale is scaled (``v / 257``), not clipped;
  CMYK uses Pillow's conversion; alpha (RGBA, LA, palette transparency) is dropped, as in the
  published path.

Geometry (:func:`crop_uint8`, :func:`center_crop_array`): the 224 x 224 window is cut first and
only that window is zero-padded, so a few-byte 1,000,000 x 1 PNG costs what its pixels cost, not a
1,000,000 x 224 padded copy; the pixels are exactly those of torchvision's pad-then-crop. In
``resize`` mode an image whose sides differ by more than :data:`MAX_ASPECT_RATIO` is refused
(:class:`ImageTooLargeError`): resizing its short side to 248 would blow it up to gigabytes.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .choices import PREPROCESS_MODES
from .exceptions import ImageDecodeError, ImageTooLargeError

if TYPE_CHECKING:  # torch loads only where tensors are made (decoding needs numpy and Pillow alone)
    import torch

MAX_PIXELS = 80_000_000
"""Default pixel cap (width x height) for any decoded image: 80 MP."""

MAX_BYTES = 64 * 1024 * 1024
"""Default byte cap for one encoded image read from a file, a URL or an upload: 64 MiB."""

MAX_ASPECT_RATIO = 32.0
"""Longest / shortest side accepted by ``resize`` preprocessing: at most 248 x 7936 px after resizing."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SIZE = 224
TRAIN_RESIZE = 248

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]
PreprocessMode = Literal["official", "resize"]


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
            decoded = w * h * mode_bytes(im.mode)
            if decoded > max_pixels * 3:
                raise ImageTooLargeError(
                    f"{name}: {w}x{h} {im.mode} pixels decode to {decoded / 1e6:.0f} MB, over the cap of "
                    f"{max_pixels * 3 / 1e6:.0f} MB (the pixel cap as 8-bit RGB)"
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
        return _open_file(path, max_bytes), str(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError("<bytes>: empty data (0 bytes)")
        if len(source) > max_bytes:
            raise ImageTooLargeError(f"<bytes>: {len(source)} bytes exceeds the cap of {max_bytes} bytes")
        return io.BytesIO(bytes(source)), "<bytes>"
    if hasattr(source, "read"):
        return source, getattr(source, "name", "<stream>")  # type: ignore[return-value]
    raise TypeError(f"cannot decode an image from {type(source).__name__}")


def _open_file(path: Path, max_bytes: int) -> BinaryIO:
    """Open a regular file for reading; anything else (FIFO, device, folder) is refused unread.

    The file is opened non-blocking and checked on its descriptor, so a FIFO swapped in after a
    check can neither block the open nor be read.
    """
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: no such file") from None
    except OSError as exc:
        raise ImageDecodeError(f"{name}: cannot access ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageDecodeError(f"{name}: is a directory, not an image")
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError(f"{name}: not a regular file ({_file_kind(st.st_mode)}), not an image")
        if st.st_size == 0:
            raise ImageDecodeError(f"{name}: empty file (0 bytes)")
        if st.st_size > max_bytes:
            raise ImageTooLargeError(f"{name}: {st.st_size} bytes exceeds the cap of {max_bytes} bytes")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
               "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


def mode_bytes(mode: str) -> int:
    """Bytes per pixel of a Pillow mode once decoded (4 for RGBA, CMYK, I, F and anything unknown)."""
    return _MODE_BYTES.get(mode, 4)


def open_source(source: ImageSource, max_bytes: int = MAX_BYTES) -> tuple[BinaryIO, str]:
    """The one safe opener of user inputs: a readable binary file object and a display name.

    A path must be a regular file within ``max_bytes`` (a FIFO, device or folder is refused unread,
    never blocking); bytes are wrapped. Every reader of user paths (decoding, header and EXIF
    reads) goes through it. Raises :class:`ImageDecodeError` / :class:`ImageTooLargeError`.
    """
    return _open_source(source, max_bytes)


def _file_kind(mode: int) -> str:
    """A word for a non-regular file type."""
    for test, word in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "a special file"


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
        return Image.fromarray(_scaled_to_uint8(np.asarray(im), 1.0 / 257.0), "L").convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(im)
        hi = 255.0 if arr.max(initial=0) <= 255 else 65535.0
        return Image.fromarray(_scaled_to_uint8(arr, 255.0 / hi), "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _scaled_to_uint8(arr: np.ndarray, scale: float, block: int = 1 << 20) -> np.ndarray:
    """``round(arr * scale)`` clipped to 0..255 as uint8, a block of rows at a time (bounded temporaries)."""
    out = np.empty(arr.shape, np.uint8)
    rows = max(1, block // max(1, arr.shape[1] if arr.ndim > 1 else 1))
    for r in range(0, arr.shape[0], rows):
        part = np.multiply(arr[r:r + rows], scale, dtype=np.float64)
        np.round(part, out=part)
        np.clip(part, 0, 255, out=part)
        out[r:r + rows] = part
    return out


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


def crop_origin(length: int, size: int = CROP_SIZE) -> int:
    """Where a centred ``size`` window starts along a side of ``length`` (negative: zero padding first).

    torchvision geometry: a longer side is cropped at ``int(round((length - size) / 2))`` (Python's
    half-to-even rounding); a shorter side is padded with ``floor(d/2)`` zeros before and
    ``ceil(d/2)`` after, so its window starts ``floor(d/2)`` pixels before the image.
    """
    return int(round((length - size) / 2.0)) if length >= size else -((size - length) // 2)


def center_crop_array(arr: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Centre-crop an HxW[xC] array to ``size``, zero-padding short sides (torchvision geometry).

    The window is cut first and only the ``size`` x ``size`` result is padded: the same pixels as
    padding the whole frame, without its cost (see :func:`crop_origin`).
    """
    h, w = arr.shape[:2]
    top, left = crop_origin(h, size), crop_origin(w, size)
    if h >= size and w >= size:
        return arr[top : top + size, left : left + size]
    out = np.zeros((size, size) + arr.shape[2:], dtype=arr.dtype)
    r0, r1 = max(top, 0), min(top + size, h)
    c0, c1 = max(left, 0), min(left + size, w)
    out[r0 - top : r1 - top, c0 - left : c1 - left] = arr[r0:r1, c0:c1]
    return out


def resize_shorter(im: Image.Image, size: int = TRAIN_RESIZE, max_aspect: float = MAX_ASPECT_RATIO,
                   resample: int = Image.BILINEAR) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear unless ``resample``), the longer side as torchvision's Resize.

    An image whose longer side is more than ``max_aspect`` times its shorter side is refused with
    :class:`ImageTooLargeError` (a 100000 x 1 PNG would otherwise become 24,800,000 x 248 pixels).
    """
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    if long > max_aspect * short:
        new_long = int(size * long / short)
        shape = f"{new_long}x{size}" if w > h else f"{size}x{new_long}"
        raise ImageTooLargeError(
            f"{w}x{h} image: aspect ratio {long / short:.0f}:1 exceeds the cap of {max_aspect:g}:1 for resize "
            f"preprocessing (it would become {shape} pixels); use the official preprocessing (centre crop)"
        )
    if short == size:
        return im
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return im.resize((new_w, new_h), resample)


def crop_uint8(im: Image.Image, mode: PreprocessMode = "official") -> np.ndarray:
    """Geometric preprocessing only: a 224x224x3 uint8 array ready for :func:`normalize_batch`.

    Pillow cuts the 224 x 224 window straight from the decoded frame; a window reaching past a
    short side is filled with zeros there, which is torchvision's padding (see :func:`crop_origin`).
    """
    if mode == "resize":
        im = resize_shorter(im, TRAIN_RESIZE)
    elif mode != "official":
        raise ValueError(f"preprocessing mode must be one of {PREPROCESS_MODES}, got {mode!r}")
    w, h = im.size
    top, left = crop_origin(h), crop_origin(w)
    return np.ascontiguousarray(np.asarray(im.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))))


def normalize_batch(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Turn an NxHxWx3 uint8 batch into a normalised float32 NCHW tensor (ToTensor + Normalize)."""
    import torch

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
    import torch

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
