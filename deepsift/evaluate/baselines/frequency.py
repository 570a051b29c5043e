"""Frequency-domain baseline: FFT/DCT statistics of the grey image + logistic regression.

In the spirit of the 2023 ELSA challenge winner: generators leave traces in the spectrum
(up-sampling peaks, missing high frequencies, periodic checkerboards). Features, from the
centre square of side ``min(crop_size, H, W)`` of the luma image:

* the azimuthally averaged log power spectrum (Hann window, ``n_bins`` rings over the
  normalised radius, so any crop size gives the same length);
* the mean and standard deviation of ``log(1 + |c|)`` for each of the 64 coefficients of the
  8x8 block DCT (JPEG-style grid).

A z-scored, class-balanced logistic regression on these gives the fake logit.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

from ...exceptions import ImageDecodeError
from ...model.engine import Preprocessor
from .base import Baseline
from .probe import LogisticProbe

DCT_BLOCK = 8


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an HxWx3 uint8 array, as float64 in [0, 255]."""
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def centre_square(arr: np.ndarray, size: int) -> np.ndarray:
    """The centred square of side ``min(size, H, W)`` (floor offsets)."""
    h, w = arr.shape[:2]
    side = min(size, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return arr[top : top + side, left : left + side]


def radial_log_spectrum(grey: np.ndarray, n_bins: int = 64) -> np.ndarray:
    """Azimuthal average of the log power spectrum over ``n_bins`` rings (DC to the corner)."""
    h, w = grey.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((grey - grey.mean()) * window)) ** 2
    log_power = np.log(power + 1e-8)
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    radius = np.sqrt(fy**2 + fx**2) / np.sqrt(0.5)  # 0 at DC, 1 at the (1/2, 1/2) corner
    rings = np.minimum((radius * n_bins).astype(np.int64), n_bins - 1).ravel()
    sums = np.bincount(rings, weights=log_power.ravel(), minlength=n_bins)
    counts = np.bincount(rings, minlength=n_bins)
    profile = sums / np.maximum(counts, 1)
    empty = counts == 0  # tiny crops leave inner rings empty: carry the neighbour's value
    if empty.any():
        profile[empty] = np.interp(np.flatnonzero(empty), np.flatnonzero(~empty), profile[~empty])
    return profile


def dct_block_statistics(grey: np.ndarray) -> np.ndarray:
    """Mean and std of ``log(1 + |c|)`` per 8x8 block-DCT coefficient: 128 values."""
    h, w = (grey.shape[0] // DCT_BLOCK) * DCT_BLOCK, (grey.shape[1] // DCT_BLOCK) * DCT_BLOCK
    if h == 0 or w == 0:
        raise ValueError(f"image smaller than one {DCT_BLOCK}x{DCT_BLOCK} block")
    blocks = grey[:h, :w].reshape(h // DCT_BLOCK, DCT_BLOCK, w // DCT_BLOCK, DCT_BLOCK).transpose(0, 2, 1, 3)
    coeffs = np.log1p(np.abs(dctn(blocks - 128.0, axes=(2, 3), norm="ortho"))).reshape(-1, DCT_BLOCK**2)
    return np.concatenate([coeffs.mean(axis=0), coeffs.std(axis=0)])


def frequency_features(rgb: np.ndarray, crop_size: int = 224, n_bins: int = 64) -> np.ndarray:
    """The full feature vector (``n_bins + 128`` float32 values) of one HxWx3 uint8 image."""
    grey = luma(centre_square(rgb, crop_size))
    return np.concatenate([radial_log_spectrum(grey, n_bins), dct_block_statistics(grey)]).astype(np.float32)


def image_features(image: Image.Image, crop_size: int = 224, n_bins: int = 64) -> np.ndarray:
    """:func:`frequency_features` of a decoded RGB image (a per-file error when it is smaller than one DCT block)."""
    w, h = image.size
    if min(w, h) < DCT_BLOCK:
        raise ImageDecodeError(f"image is {w}x{h}; the frequency baseline needs at least {DCT_BLOCK}x{DCT_BLOCK}")
    return frequency_features(np.asarray(image), crop_size, n_bins)


class FrequencyBaseline(Baseline):
    """Radial FFT spectrum + block-DCT statistics, then logistic regression (see the module docstring)."""

    name = "frequency"

    def __init__(self, crop_size: int = 224, n_bins: int = 64, C: float = 1.0, *, batch_size: int = 256,
                 workers: int | None = None, progress: bool | None = None, threshold: float = 0.5) -> None:
        super().__init__(batch_size=batch_size, workers=workers, progress=progress, threshold=threshold)
        self.crop_size = crop_size
        self.n_bins = n_bins
        self.C = C

    def preprocessor(self) -> Preprocessor:
        return functools.partial(image_features, crop_size=self.crop_size, n_bins=self.n_bins)

    def _fit_prepared(self, data: np.ndarray, y: np.ndarray) -> None:
        self.probe_ = LogisticProbe(C=self.C).fit(data, y)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        return self.probe_.decision_function(batch)

    def _state(self) -> dict[str, np.ndarray]:
        return self.probe_.state()

    def _restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.probe_ = LogisticProbe.from_state(arrays, C=self.C)
