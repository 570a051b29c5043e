"""Synthetic real/fake image folders with a generator-like artefact, for tests and benchmarks.

"Real" images are smooth natural-ish textures (1/f noise, a colour gradient, faint sensor
noise) rendered at full resolution. "Fake" images come from the same process with one of
two traces that real generators leave:

* ``upsample``: rendered at half size, then up-sampled 2x with nearest neighbour (the
  up-sampling layers of GAN/diffusion decoders);
* ``checkerboard``: a faint period-2 checkerboard added (transposed-convolution artefacts).

Sizes vary within each class so neither the size nor the file format tells the classes apart.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ARTEFACTS = ("upsample", "checkerboard")


def natural_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth HxWx3 uint8 image: 1/f noise + a colour gradient + faint per-pixel noise."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(height, width)) ** 1.5
    channels = []
    base = rng.standard_normal((height, width)) + 1j * rng.standard_normal((height, width))
    for _ in range(3):  # correlated channels, as in photos
        own = rng.standard_normal((height, width)) + 1j * rng.standard_normal((height, width))
        channels.append(np.real(np.fft.ifft2((0.8 * base + 0.4 * own) * amplitude)))
    img = np.stack(channels, axis=-1)
    img = (img - img.mean()) / (img.std() + 1e-9) * 40.0
    ramp = np.linspace(-1.0, 1.0, width)[None, :, None] * rng.uniform(-40, 40, size=(1, 1, 3))
    img = img + ramp + rng.uniform(90, 160, size=(1, 1, 3)) + rng.normal(0.0, 2.0, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def synthetic_image(rng: np.random.Generator, size: int, fake: bool, artefact: str = "upsample") -> np.ndarray:
    """One real or fake ``size`` x ``size`` image (``size`` even)."""
    if artefact not in ARTEFACTS:
        raise ValueError(f"artefact must be one of {ARTEFACTS}, got {artefact!r}")
    if not fake:
        return natural_texture(rng, size, size)
    if artefact == "upsample":
        small = natural_texture(rng, size // 2, size // 2)
        return small.repeat(2, axis=0).repeat(2, axis=1)
    img = natural_texture(rng, size, size).astype(np.int16)
    yy, xx = np.mgrid[:size, :size]
    return np.clip(img + np.where((yy + xx) % 2 == 0, 3, -3)[..., None], 0, 255).astype(np.uint8)


def write_synthetic_folders(root: str | Path, n_real: int, n_fake: int, sizes: tuple[int, ...] = (64, 72, 80),
                            artefact: str = "upsample", seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/real/*.png`` and ``root/fake/*.png``; returns the two folders."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    dirs = (root / "real", root / "fake")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for d, n, fake in ((dirs[0], n_real, False), (dirs[1], n_fake, True)):
        for i in range(n):
            size = int(sizes[rng.integers(len(sizes))])
            Image.fromarray(synthetic_image(rng, size, fake, artefact)).save(d / f"{i:05d}.png")
    return dirs
