"""The view builder's survivors of a sampled mutation run (issue 20): each test pins what a trainer or a sweep relies on."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepsift.data.augment import (
    CONTINUOUS_RANGES,
    ROBUSTNESS_FAMILIES,
    SOCIAL_LEVELS,
    TRAIN_INTENSITIES,
    Perturbation,
    TrainAugment,
    apply_family,
    apply_value,
    crop_box,
    crop_fraction,
    gaussian_blur,
    random_resized_crop,
)


def _noise_img(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _coords(w: int, h: int) -> np.ndarray:
    """An image whose red channel is x + 1 and green channel y + 1 (never black), to locate a crop."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[..., 0] = np.arange(1, w + 1)[None, :]
    arr[..., 1] = np.arange(1, h + 1)[:, None]
    arr[..., 2] = 7
    return arr


def _assert_sub_block(out: np.ndarray, src: np.ndarray) -> tuple[int, int]:
    """``out`` is a contiguous block of ``src`` (no padding, no shift outside): return its (left, top)."""
    left, top = int(out[0, 0, 0]) - 1, int(out[0, 0, 1]) - 1
    h, w = out.shape[:2]
    assert left >= 0 and top >= 0 and left + w <= src.shape[1] and top + h <= src.shape[0], (left, top, w, h)
    assert np.array_equal(out, src[top : top + h, left : left + w])
    return left, top


# --------------------------------------------------------------------------- Gaussian blur
def _reference_blur(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Independent reference: per axis, the Gaussian of radius r = ceil(3 sigma), cut to n - 1 on an axis
    of n pixels and renormalised, over mirror-reflected edges (numpy 'reflect' = edge pixel not repeated)."""
    r = max(1, int(np.ceil(3 * sigma)))
    out = arr.astype(np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        if n == 1:
            continue
        rr = min(r, n - 1)
        offsets = np.arange(-rr, rr + 1)
        weights = np.exp(-(offsets.astype(np.float64) ** 2) / (2 * sigma**2))
        weights /= weights.sum()
        acc = np.zeros_like(out)
        for d, wgt in zip(offsets, weights):
            idx = np.arange(n) + d
            idx = np.where(idx < 0, -idx, idx)
            idx = np.where(idx > n - 1, 2 * (n - 1) - idx, idx)
            acc += wgt * np.take(out, idx, axis=axis)
        out = acc
    return out


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_blur_equals_an_independent_separable_reference(sigma: float) -> None:
    # kills: kernel arange(-r, r - 1); weights / pixels; normalised by one tap; pad min(r, n - 2)
    sizes = [(40, 30), (9, 7), (5, 3), (3, 2), (2, 5), (1, 6), (4, 1), (2, 2)]  # incl. n - 1 < r (kernel cut)
    for i, (w, h) in enumerate(sizes):
        im = _noise_img(w, h, seed=i)
        got = np.asarray(gaussian_blur(im, sigma)).astype(int)
        ref = np.clip(np.rint(_reference_blur(np.asarray(im), sigma)), 0, 255).astype(int)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1, (w, h, sigma)  # float32 vs float64 rounding at .5 only


def test_gaussian_blur_keeps_a_flat_image_flat() -> None:
    for w, h in [(17, 11), (3, 2), (2, 3)]:
        im = Image.new("RGB", (w, h), (90, 160, 220))
        for sigma in (0.3, 1.0, 2.0):
            assert (np.asarray(gaussian_blur(im, sigma)) == (90, 160, 220)).all(), (w, h, sigma)


# --------------------------------------------------------------------------- crops
def test_crop_box_fallback_is_the_centred_square() -> None:
    rng = np.random.default_rng(0)
    # no 3/4..4/3 box of 90-100 % of the area fits a 1000 x 10 strip: torchvision falls back to the centre
    assert crop_box(1000, 10, rng, (0.9, 1.0)) == (495, 0, 505, 10)
    assert crop_box(10, 1000, rng, (0.9, 1.0)) == (0, 495, 10, 505)
    assert crop_box(9, 400, rng, (0.9, 1.0)) == (0, 195, 9, 204)


def test_centre_crop_fraction_is_centred_to_the_pixel() -> None:
    for w in range(3, 30):
        for fraction in (0.5, 0.75, 0.9):
            src = _coords(w, w + 3)
            out = np.asarray(crop_fraction(Image.fromarray(src), fraction, None))
            cw, ch = max(1, round(w * fraction)), max(1, round((w + 3) * fraction))
            assert out.shape == (ch, cw, 3)
            assert _assert_sub_block(out, src) == ((w - cw) // 2, (w + 3 - ch) // 2), (w, fraction)


def test_random_crop_fraction_stays_inside_and_reaches_every_offset() -> None:
    src = _coords(10, 12)
    seen = set()
    for seed in range(300):
        out = np.asarray(crop_fraction(Image.fromarray(src), 0.5, np.random.default_rng(seed)))
        assert out.shape == (6, 5, 3)
        seen.add(_assert_sub_block(out, src))
    assert {x for x, _ in seen} == set(range(6)) and {y for _, y in seen} == set(range(7))


def test_train_random_crop_of_a_large_enough_image_is_never_padded() -> None:
    src = _coords(70, 64)  # level 0: a 64 px square; the height is exactly 64
    for seed in range(60):
        out = np.asarray(apply_family(Image.fromarray(src), "random_crop", 0, np.random.default_rng(seed)))
        assert out.shape == (64, 64, 3)
        assert _assert_sub_block(out, src)[1] == 0


def test_random_resized_crop_default_is_the_global_view_scale() -> None:
    im = _noise_img(120, 90, seed=3)
    for seed in range(5):
        got = random_resized_crop(im, np.random.default_rng(seed))
        ref = random_resized_crop(im, np.random.default_rng(seed), (0.4, 1.0))
        assert np.array_equal(np.asarray(got), np.asarray(ref))
    fractions = []
    for seed in range(300):  # the default draws crop areas over the whole 0.4-1.0 range
        l, t, r, b = crop_box(400, 400, np.random.default_rng(seed), (0.4, 1.0))
        fractions.append((r - l) * (b - t) / 160000)
    assert min(fractions) < 0.45 and max(fractions) > 0.95


# --------------------------------------------------------------------------- pad, stripes, opacity
def test_pad_adds_the_fraction_of_each_side_in_one_flat_colour() -> None:
    src = _coords(40, 20)
    for level, f in enumerate(TRAIN_INTENSITIES["pad"]):
        out = np.asarray(apply_family(Image.fromarray(src), "pad", level, np.random.default_rng(level)))
        bw, bh = round(40 * f), round(20 * f)
        assert out.shape == (20 + 2 * bh, 40 + 2 * bw, 3), level
        assert np.array_equal(out[bh : bh + 20, bw : bw + 40], src)
        border = np.ones(out.shape[:2], bool)
        border[bh : bh + 20, bw : bw + 40] = False
        assert len(np.unique(out[border], axis=0)) == (1 if border.any() else 0)  # level 0 on 20 px: no border


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    runs, start = [], None
    for y, v in enumerate(list(rows) + [False]):
        if v and start is None:
            start = y
        elif not v and start is not None:
            runs.append((start, y - start))
            start = None
    return runs


def test_stripes_are_line_rows_thick_once_per_period() -> None:
    h = w = 160  # period = 160 // 8 = 20
    im = Image.new("RGB", (w, h), (128, 128, 128))
    for level, width in enumerate(TRAIN_INTENSITIES["overlay_stripes"]):
        line = max(1, round(20 * width))
        for seed in range(5):
            out = np.asarray(apply_family(im, "overlay_stripes", level, np.random.default_rng(seed)))
            changed = (out != 128).any(axis=2)
            assert (changed.all(axis=1) | ~changed.any(axis=1)).all()  # whole rows
            runs = _runs(changed.all(axis=1))
            assert len(runs) >= 7, (level, seed)
            assert all(n == line for s, n in runs if s + n < h), (level, seed, runs)
            assert all(b[0] - a[0] == 20 for a, b in zip(runs, runs[1:]))


def test_opacity_background_is_uniform_over_0_to_255() -> None:
    """Every channel value 0..255 of the background is equally likely (255 no more than the others)."""
    black = Image.new("RGB", (1, 1))
    alpha = TRAIN_INTENSITIES["opacity"][0]
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))
    seen = np.asarray(Image.blend(ramp, Image.new("RGB", (256, 1)), alpha))[0, :, 0]  # background c -> pixel
    top = seen[255]
    share = int((seen == top).sum()) / 256  # the backgrounds that give this pixel (255 alone here)
    rng = np.random.default_rng(1)
    vals = np.concatenate([np.asarray(apply_family(black, "opacity", 0, rng)).ravel() for _ in range(8000)])
    expected = vals.size * share
    n_top = int((vals == top).sum())
    assert abs(n_top - expected) < 4 * expected**0.5, (n_top, expected)


# --------------------------------------------------------------------------- augmentation A draws
def test_sample_draws_distinct_families_every_count_and_every_level() -> None:
    aug = TrainAugment()
    rng = np.random.default_rng(0)
    counts, levels = set(), set()
    for _ in range(3000):
        ops = aug.sample(rng)
        fams = [f for f, _ in ops]
        assert len(set(fams)) == len(fams), ops
        counts.add(len(ops))
        levels.update(lv for _, lv in ops)
    assert counts == {0, 1, 2} and levels == {0, 1, 2, 3, 4}
    small = TrainAugment(max_ops=3, families=("hflip", "grayscale", "jpeg"))
    for _ in range(500):
        fams = [f for f, _ in small.sample(rng)]
        assert len(set(fams)) == len(fams)


def test_continuous_ranges_are_the_reference_ranges() -> None:
    """code-d3-elsa.md section 2: blur 0.1-2, brightness 0.5-2, aspect 0.75-2, pixelisation 0.3-1, rotation 90-270."""
    assert CONTINUOUS_RANGES == {"blur": (0.1, 2.0), "brightness": (0.5, 2.0), "aspect_ratio": (0.75, 2.0),
                                 "pixelization": (0.3, 1.0), "rotation": (90.0, 270.0)}
    im = Image.new("RGB", (8, 8), (100, 100, 100))
    aug = TrainAugment(max_ops=1, families=("brightness",))
    means = [float(np.asarray(aug(im, np.random.default_rng(s))).mean()) for s in range(200)]
    assert min(means) < 60 and max(means) > 190  # both darker (0.5) and brighter (2.0) images


def test_continuous_level_tables_are_five_even_steps_of_the_range() -> None:
    for family in ("blur", "brightness", "aspect_ratio", "rotation"):
        assert np.allclose(TRAIN_INTENSITIES[family], np.linspace(*CONTINUOUS_RANGES[family], 5)), family
    # pixelisation counts down from 1 (no change) to 0.3 in 5 steps of 0.14, the identity left out
    assert np.allclose(TRAIN_INTENSITIES["pixelization"], np.linspace(1.0, 0.3, 6)[1:])
    im = _noise_img(30, 20, seed=5)
    for level, deg in enumerate(TRAIN_INTENSITIES["rotation"]):
        out = apply_family(im, "rotation", level, np.random.default_rng(0))
        assert np.array_equal(np.asarray(out), np.asarray(apply_value(im, "rotation", deg, np.random.default_rng(0))))
    half = apply_family(im, "rotation", 2, np.random.default_rng(0))  # the middle level turns it upside down
    assert np.array_equal(np.asarray(half), np.asarray(im.rotate(180, expand=True)))


# --------------------------------------------------------------------------- robustness sweep
def test_robustness_strengths_are_the_published_curve_points() -> None:
    """The sweep's x values are what reports name (``noise@2``) and compare across runs; the module docstring
    lists JPEG 95/75/50/30, resize x0.5/x0.75/x1.5, blur sigma 1/2; noise std 2/5/10 is the shipped table."""
    strengths = {k: tuple(v) for k, (_, v) in ROBUSTNESS_FAMILIES.items()}
    assert strengths["jpeg"] == (95, 75, 50, 30) and strengths["resize"] == (0.5, 0.75, 1.5)
    assert strengths["blur"] == (1.0, 2.0) and strengths["noise"] == (2.0, 5.0, 10.0)
    assert strengths["social"] == tuple(SOCIAL_LEVELS) == (1, 2, 3)  # the label's levels, one point each
    for family, points in strengths.items():
        assert len(set(points)) == len(points), family
    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    for std in strengths["noise"]:  # the strength is the noise's measured standard deviation
        out = np.asarray(Perturbation("noise", std)(flat, np.random.default_rng(0))).astype(float)
        assert abs(out.std() - std) < 0.1 * std + 0.3, std


def test_perturbation_default_rng_is_seed_zero() -> None:
    im = _noise_img(32, 24, seed=2)
    for fam, s in (("noise", 5.0), ("random_crop", 0.5)):
        p = Perturbation(fam, s)
        assert np.array_equal(np.asarray(p(im)), np.asarray(p(im, np.random.default_rng(0)))), fam
