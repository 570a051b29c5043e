"""The view builder over many draws: crop scales of the global and local views, augmentation after cropping."""
from __future__ import annotations

import numpy as np
from PIL import Image

from deepsift.data.augment import TrainAugment, crop_box, finish_view
from deepsift.train.loader import GLOBAL_SCALE, LOCAL_SCALE, four_views

SIDE = 256


def _coordinates() -> Image.Image:
    """Red = column, green = row: a view's value ranges tell which part of the image it shows."""
    x, y = np.meshgrid(np.arange(SIDE), np.arange(SIDE))
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=2).astype(np.uint8))


def _area_fraction(view: np.ndarray) -> float:
    """The share of the source image a finished view came from (the centre crop shows 224/248 of each side)."""
    w = (int(view[..., 0].max()) - int(view[..., 0].min()) + 1) * 248 / 224
    h = (int(view[..., 1].max()) - int(view[..., 1].min()) + 1) * 248 / 224
    return w * h / SIDE**2


def test_global_and_local_views_span_the_reference_crop_scales():
    im, plain = _coordinates(), TrainAugment(max_ops=0)
    rng = np.random.default_rng(123)
    g, loc = [], []
    for _ in range(300):
        views = four_views(im, rng, plain)
        g.append(_area_fraction(views[2]))
        loc.append(_area_fraction(views[3]))
    g, loc = np.array(g), np.array(loc)
    assert GLOBAL_SCALE == (0.4, 1.0) and LOCAL_SCALE == (0.05, 0.4)
    # inside the ranges (10 % for pixel rounding), and reaching both ends of each
    assert g.min() > 0.36 and g.max() < 1.05, (g.min(), g.max())
    assert loc.min() > 0.045 and loc.max() < 0.44, (loc.min(), loc.max())
    assert g.min() < 0.47 and np.quantile(g, 0.9) > 0.8, (g.min(), np.quantile(g, 0.9))
    assert loc.min() < 0.07 and loc.max() > 0.33, (loc.min(), loc.max())
    # the untouched view is the whole image (resize 248, centre crop 224)
    assert abs(_area_fraction(four_views(im, rng, plain)[0]) - 1.0) < 0.03


def test_crop_box_scale_and_aspect_statistics():
    rng = np.random.default_rng(7)
    for scale in (GLOBAL_SCALE, LOCAL_SCALE):
        boxes = np.array([crop_box(400, 300, rng, scale) for _ in range(2000)])
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        frac, aspect = w * h / (400 * 300), w / h
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 400).all() and (boxes[:, 3] <= 300).all()
        assert frac.min() > scale[0] * 0.97 and frac.max() < scale[1] * 1.03, (scale, frac.min(), frac.max())
        assert aspect.min() > 0.74 and aspect.max() < 1.35
        lo, hi = scale
        if scale == LOCAL_SCALE:  # never rejected here: uniform in the range
            assert abs(frac.mean() - (lo + hi) / 2) < 0.01, frac.mean()
        # crops land everywhere: left edges cover the free room
        assert boxes[:, 0].min() <= 2 and (400 - boxes[:, 2]).min() <= 2


class _Recording:
    """Augmentation A, recording the size of every image it is given."""

    def __init__(self) -> None:
        self.aug, self.sizes, self.outputs = TrainAugment(max_ops=2), [], []

    def __call__(self, im: Image.Image, rng: np.random.Generator) -> Image.Image:
        self.sizes.append(im.size)
        out = self.aug(im, rng)
        self.outputs.append(out)
        return out


def test_global_and_local_views_are_augmented_after_cropping():
    rng = np.random.default_rng(5)
    im = _coordinates().resize((300, 200))
    for _ in range(20):
        rec = _Recording()
        views = four_views(im, rng, rec)
        assert rec.sizes == [(300, 200), (224, 224), (224, 224)]  # A(im), A(G(im)), A(L(im))
        for view, out in zip(views[1:], rec.outputs):
            assert np.array_equal(view, finish_view(out))
        assert np.array_equal(views[0], finish_view(im))
