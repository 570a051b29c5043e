"""Image perturbations shared by the trainer (augmentation A) and the robustness sweep.

Two families of functions, PIL + numpy only, every random choice drawn from a caller-given
``numpy.random.Generator`` so results are reproducible bit for bit:

* **Robustness transforms** (:data:`ROBUSTNESS_FAMILIES`): JPEG 95/75/50/30, WebP, resize
  x0.5/x0.75/x1.5, Gaussian blur sigma 1/2, centre and random crop, Gaussian noise and a
  "social media" chain (downscale + JPEG). :func:`robustness_perturbations` lists them as
  :class:`Perturbation` objects whose ``strength`` is the x axis of a robustness curve.
* **Training augmentation A** (:class:`TrainAugment`): 0 to 2 transforms drawn from the 19
  families of the CoDE recipe (:data:`TRAIN_FAMILIES`), applied in the fixed family order; the
  five continuous families take a uniform value in their range (:data:`CONTINUOUS_RANGES`), the
  others one of 5 levels (:data:`TRAIN_INTENSITIES`; ranges as in the reference, section 2), plus
  the global/local random-resized crops and the final resize-248 / centre-crop-224 of every view.

Encoded round trips (JPEG, WebP) decode through :func:`deepsift.images.decode_image`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from ..images import CROP_SIZE, TRAIN_RESIZE, center_crop_array, decode_image, resize_shorter

Transform = Callable[[Image.Image, float, np.random.Generator], Image.Image]


# --------------------------------------------------------------------------- primitives
def encode_roundtrip(im: Image.Image, fmt: str, quality: int) -> Image.Image:
    """Encode ``im`` as JPEG or WebP at ``quality`` and decode it again."""
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format=fmt, quality=int(quality))
    return decode_image(buf.getvalue())


def rescale(im: Image.Image, factor: float, resample: int = Image.BICUBIC) -> Image.Image:
    """Resize both sides by ``factor`` (at least 1 pixel each)."""
    w, h = im.size
    return im.resize((max(1, round(w * factor)), max(1, round(h * factor))), resample)


def gaussian_blur(im: Image.Image, sigma: float) -> Image.Image:
    """Exact separable Gaussian blur, standard deviation ``sigma`` px, kernel radius ceil(3 sigma), reflect edges."""
    r = max(1, int(np.ceil(3.0 * float(sigma))))
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / float(sigma)) ** 2)
    k /= k.sum()
    arr = np.asarray(im, dtype=np.float32)
    for axis in (0, 1):
        n = arr.shape[axis]
        pad = [(0, 0)] * 3
        pad[axis] = (min(r, n - 1), min(r, n - 1))
        padded = np.pad(arr, pad, mode="reflect") if n > 1 else arr
        if n == 1:
            continue
        rr = pad[axis][0]
        out = np.zeros_like(arr)
        for i, w in enumerate(k[r - rr : r + rr + 1]):
            out += w * np.take(padded, np.arange(i, i + n), axis=axis)
        arr = out / k[r - rr : r + rr + 1].sum()
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def add_noise(im: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    """Add i.i.d. Gaussian noise of standard deviation ``std`` (0-255 scale), clipped."""
    arr = np.asarray(im, dtype=np.float32)
    noisy = arr + rng.normal(0.0, float(std), size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


def crop_fraction(im: Image.Image, fraction: float, rng: np.random.Generator | None) -> Image.Image:
    """Keep ``fraction`` of each side: centred when ``rng`` is None, else at a random place."""
    w, h = im.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    if rng is None:
        left, top = (w - cw) // 2, (h - ch) // 2
    else:
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((left, top, left + cw, top + ch))


# --------------------------------------------------------------------------- robustness
SOCIAL_LEVELS: dict[int, tuple[float, int]] = {1: (0.75, 85), 2: (0.5, 75), 3: (0.5, 60)}
"""Social-media chain level -> (downscale factor, JPEG quality)."""


def _social(im: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    scale, quality = SOCIAL_LEVELS[int(level)]
    return encode_roundtrip(rescale(im, scale, Image.BILINEAR), "JPEG", quality)


_ROBUST_FUNCS: dict[str, Transform] = {
    "jpeg": lambda im, q, rng: encode_roundtrip(im, "JPEG", int(q)),
    "webp": lambda im, q, rng: encode_roundtrip(im, "WEBP", int(q)),
    "resize": lambda im, f, rng: rescale(im, f),
    "blur": lambda im, s, rng: gaussian_blur(im, s),
    "center_crop": lambda im, f, rng: crop_fraction(im, f, None),
    "random_crop": lambda im, f, rng: crop_fraction(im, f, rng),
    "noise": lambda im, s, rng: add_noise(im, s, rng),
    "social": _social,
}

ROBUSTNESS_FAMILIES: dict[str, tuple[str, tuple[float, ...]]] = {
    "jpeg": ("JPEG quality", (95, 75, 50, 30)),
    "webp": ("WebP quality", (90, 75, 50)),
    "resize": ("scale factor", (0.5, 0.75, 1.5)),
    "blur": ("Gaussian sigma (px)", (1.0, 2.0)),
    "center_crop": ("kept side fraction", (0.9, 0.75, 0.5)),
    "random_crop": ("kept side fraction", (0.9, 0.75, 0.5)),
    "noise": ("noise std (0-255)", (2.0, 5.0, 10.0)),
    "social": ("level (1: x0.75+q85, 2: x0.5+q75, 3: x0.5+q60)", (1, 2, 3)),
}
"""Robustness family -> (axis label, strengths). Order of strengths = order on the curve."""


@dataclass(frozen=True)
class Perturbation:
    """One robustness transform at one strength; call it on an RGB image."""

    family: str
    strength: float

    @property
    def name(self) -> str:
        """A short label such as ``jpeg@75``."""
        s = self.strength
        return f"{self.family}@{int(s) if float(s).is_integer() else s}"

    def __call__(self, im: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        """Apply the transform (``rng`` is used by random crop and noise; default seed 0)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        return _ROBUST_FUNCS[self.family](im.convert("RGB"), self.strength, rng).convert("RGB")


def robustness_perturbations(families: Sequence[str] | None = None) -> list[Perturbation]:
    """List the sweep's perturbations (all families by default, in a fixed order)."""
    names = list(ROBUSTNESS_FAMILIES) if families is None else list(families)
    unknown = [n for n in names if n not in ROBUSTNESS_FAMILIES]
    if unknown:
        raise ValueError(f"unknown robustness transform(s) {unknown}; known: {sorted(ROBUSTNESS_FAMILIES)}")
    return [Perturbation(n, float(s)) for n in names for s in ROBUSTNESS_FAMILIES[n][1]]


# --------------------------------------------------------------------------- augmentation A
TRAIN_INTENSITIES: dict[str, tuple[float, ...]] = {
    "blur": tuple(np.linspace(0.1, 2.0, 5)),  # sigma (continuous: uniform in 0.1-2)
    "brightness": tuple(np.linspace(0.5, 2.0, 5)),  # factor (continuous: uniform in 0.5-2)
    "aspect_ratio": tuple(np.linspace(0.75, 2.0, 5)),  # new width / height, area kept (continuous: 0.75-2)
    "pixelization": (0.86, 0.72, 0.58, 0.44, 0.3),  # downscale ratio before nearest upscale (continuous: 0.3-1)
    "rotation": (90.0, 135.0, 180.0, 225.0, 270.0),  # degrees, canvas expanded (continuous: 90-270)
    "contrast": (0.5, 0.75, 1.0, 1.25, 1.5),  # PIL contrast factor (1.0: unchanged, as in the reference)
    "saturation": (0.5, 0.75, 1.0, 1.25, 1.5),  # PIL colour factor
    "jpeg": (40.0, 55.0, 70.0, 85.0, 100.0),  # quality
    "grayscale": (1.0,) * 5,  # no parameter: the luminosity image
    "hflip": (1.0,) * 5,  # no parameter: a flip is a flip
    "opacity": (0.2, 0.4, 0.6, 0.8, 1.0),  # alpha over a random flat background
    "overlay_stripes": tuple(np.linspace(0.05, 0.35, 5)),  # stripe width / period
    "pad": tuple(np.linspace(0.01, 0.25, 5)),  # border as a fraction of each side
    "resize": (64.0, 176.0, 288.0, 400.0, 512.0),  # square side in px
    "random_crop": (64.0, 176.0, 288.0, 400.0, 512.0),  # square side in px (a smaller image is padded with black)
    "scale": (0.5, 0.75, 1.0, 1.25, 1.5),  # both sides times the factor
    "sharpen": tuple(np.linspace(1.2, 2.0, 5)),  # PIL sharpness factor
    "pixel_shuffle": tuple(np.linspace(0.0, 0.35, 5)),  # fraction of pixels permuted
    "skew": (-1.0, -0.5, 0.0, 0.5, 1.0),  # horizontal shear about the centre, size kept
}
"""Training family -> its 5 parameter values: the reference's ``linspace(min, max, 5)`` (section 2), so the
two-sided families (contrast, saturation, scale, skew) include the identity at their middle level."""

TRAIN_FAMILIES: tuple[str, ...] = tuple(TRAIN_INTENSITIES)

CONTINUOUS_RANGES: dict[str, tuple[float, float]] = {
    "blur": (0.1, 2.0), "brightness": (0.5, 2.0), "aspect_ratio": (0.75, 2.0), "pixelization": (0.3, 1.0),
    "rotation": (90.0, 270.0),
}
"""The five continuous families of the recipe: :class:`TrainAugment` draws their value uniformly in range
(the level tables above serve :func:`apply_family` and the tests)."""


def _aspect(im: Image.Image, r: float) -> Image.Image:
    w, h = im.size
    area = w * h
    nw = max(1, round((area * r) ** 0.5))
    return im.resize((nw, max(1, round(area / nw))), Image.BICUBIC)


def _pixelize(im: Image.Image, r: float) -> Image.Image:
    small = rescale(im, r, Image.BILINEAR)
    return small.resize(im.size, Image.NEAREST)


def _opacity(im: Image.Image, a: float, rng: np.random.Generator) -> Image.Image:
    bg = Image.new("RGB", im.size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    return Image.blend(bg, im, float(a))


def _stripes(im: Image.Image, width: float, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    period = max(2, min(w, h) // 8)
    line = max(1, round(period * width))
    overlay = im.copy()
    draw = ImageDraw.Draw(overlay)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    for y in range(int(rng.integers(0, period)), h, period):
        draw.rectangle((0, y, w, y + line - 1), fill=colour)
    return Image.blend(im, overlay, 0.5)


def _pad(im: Image.Image, f: float, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return ImageOps.expand(im, border=(round(w * f), round(h * f)), fill=colour)


def _random_square_crop(im: Image.Image, side: float, rng: np.random.Generator) -> Image.Image:
    """torchvision's RandomCrop(side, pad_if_needed=True): a short side is first padded with black on both ends."""
    w, h = im.size
    s = int(side)
    pw, ph = max(0, s - w), max(0, s - h)
    if pw or ph:
        im = ImageOps.expand(im, border=(pw, ph), fill=(0, 0, 0))
        w, h = im.size
    left, top = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
    return im.crop((left, top, left + s, top + s))


def _scale(im: Image.Image, factor: float) -> Image.Image:
    """Both sides times ``factor`` (truncated), Lanczos when shrinking, bilinear otherwise (AugLy's Scale)."""
    w, h = im.size
    size = (max(1, int(w * factor)), max(1, int(h * factor)))
    return im if size == im.size else im.resize(size, Image.LANCZOS if factor < 1 else Image.BILINEAR)


def _shuffle_pixels(im: Image.Image, frac: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(im).reshape(-1, 3).copy()
    n = arr.shape[0]
    k = max(2, int(round(n * frac)))
    idx = rng.choice(n, size=min(k, n), replace=False)
    arr[idx] = arr[rng.permutation(idx)]
    return Image.fromarray(arr.reshape(im.size[1], im.size[0], 3), "RGB")


def _skew(im: Image.Image, k: float) -> Image.Image:
    """Horizontal shear by ``k`` about the image's middle row, same size, bilinear (AugLy's Skew on the x axis)."""
    w, h = im.size
    return im.transform((w, h), Image.AFFINE, (1, float(k), -float(k) * h / 2, 0, 1, 0), resample=Image.BILINEAR)


_TRAIN_FUNCS: dict[str, Transform] = {
    "blur": lambda im, v, rng: gaussian_blur(im, v),
    "brightness": lambda im, v, rng: ImageEnhance.Brightness(im).enhance(v),
    "aspect_ratio": lambda im, v, rng: _aspect(im, v),
    "pixelization": lambda im, v, rng: _pixelize(im, v),
    "rotation": lambda im, v, rng: im.rotate(v, resample=Image.BICUBIC, expand=True),
    "contrast": lambda im, v, rng: ImageEnhance.Contrast(im).enhance(v),
    "saturation": lambda im, v, rng: ImageEnhance.Color(im).enhance(v),
    "jpeg": lambda im, v, rng: encode_roundtrip(im, "JPEG", int(v)),
    "grayscale": lambda im, v, rng: Image.blend(im, ImageOps.grayscale(im).convert("RGB"), v),
    "hflip": lambda im, v, rng: ImageOps.mirror(im),
    "opacity": _opacity,
    "overlay_stripes": _stripes,
    "pad": _pad,
    "resize": lambda im, v, rng: im.resize((int(v), int(v)), Image.BICUBIC),
    "random_crop": _random_square_crop,
    "scale": lambda im, v, rng: _scale(im, v),
    "sharpen": lambda im, v, rng: ImageEnhance.Sharpness(im).enhance(v),
    "pixel_shuffle": _shuffle_pixels,
    "skew": lambda im, v, rng: _skew(im, v),
}


def apply_family(im: Image.Image, family: str, level: int, rng: np.random.Generator) -> Image.Image:
    """Apply training family ``family`` at intensity ``level`` (0 = weakest .. 4 = strongest)."""
    if family not in _TRAIN_FUNCS:
        raise ValueError(f"unknown augmentation family {family!r}; known: {list(TRAIN_FAMILIES)}")
    if not 0 <= level < 5:
        raise ValueError(f"intensity level must be in 0..4, got {level}")
    return _TRAIN_FUNCS[family](im.convert("RGB"), TRAIN_INTENSITIES[family][level], rng).convert("RGB")


def apply_value(im: Image.Image, family: str, value: float, rng: np.random.Generator) -> Image.Image:
    """Apply training family ``family`` with parameter ``value`` (a continuous family's uniform draw)."""
    if family not in _TRAIN_FUNCS:
        raise ValueError(f"unknown augmentation family {family!r}; known: {list(TRAIN_FAMILIES)}")
    return _TRAIN_FUNCS[family](im.convert("RGB"), float(value), rng).convert("RGB")


@dataclass
class TrainAugment:
    """Augmentation A: ``0..max_ops`` distinct families applied in the fixed family order.

    The five continuous families (:data:`CONTINUOUS_RANGES`) take a value drawn uniformly in
    their range, the others one of their 5 levels (reference section 2).
    """

    max_ops: int = 2
    families: tuple[str, ...] = TRAIN_FAMILIES

    def sample(self, rng: np.random.Generator) -> list[tuple[str, int]]:
        """Draw the (family, level) operations for one image."""
        n = int(rng.integers(0, self.max_ops + 1))
        picked = sorted(rng.choice(len(self.families), size=n, replace=False).tolist()) if n else []
        return [(self.families[int(i)], int(rng.integers(0, 5))) for i in picked]

    def __call__(self, im: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Augment one RGB image (not yet resized to the network input)."""
        out = im.convert("RGB")
        for family, level in self.sample(rng):
            if family in CONTINUOUS_RANGES:
                out = apply_value(out, family, rng.uniform(*CONTINUOUS_RANGES[family]), rng)
            else:
                out = apply_family(out, family, level, rng)
        return out


def crop_box(w: int, h: int, rng: np.random.Generator, scale: tuple[float, float],
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a RandomResizedCrop on a ``w`` x ``h`` image (torchvision's draw)."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        cw, ch = int(round((target * aspect) ** 0.5)), int(round((target / aspect) ** 0.5))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return left, top, left + cw, top + ch
    s = min(w, h)  # fallback: centre square, as torchvision does
    return (w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s


def random_resized_crop(
    im: Image.Image,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    size: int = CROP_SIZE,
) -> Image.Image:
    """RandomResizedCrop (bicubic): the global (0.4-1.0) or local (0.05-0.4) view of the recipe."""
    return im.crop(crop_box(*im.size, rng, scale, ratio)).resize((size, size), Image.BICUBIC)


def finish_view(im: Image.Image) -> np.ndarray:
    """Resize the shorter side to 248 (bicubic) and centre-crop 224: the HxWx3 uint8 network input."""
    small = resize_shorter(im.convert("RGB"), TRAIN_RESIZE, resample=Image.BICUBIC)
    return np.ascontiguousarray(center_crop_array(np.asarray(small), CROP_SIZE))
