"""Robustness transforms and training augmentation A: determinism, geometry, every family."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deepsift.data.augment import (
    ROBUSTNESS_FAMILIES,
    TRAIN_FAMILIES,
    TRAIN_INTENSITIES,
    Perturbation,
    TrainAugment,
    apply_family,
    finish_view,
    random_resized_crop,
    robustness_perturbations,
)


def _img(w: int = 96, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def test_sweep_lists_the_issue_transforms() -> None:
    perts = robustness_perturbations()
    names = {p.name for p in perts}
    assert {"jpeg@95", "jpeg@75", "jpeg@50", "jpeg@30", "resize@0.5", "resize@0.75", "resize@1.5",
            "blur@1", "blur@2"} <= names
    assert {p.family for p in perts} == set(ROBUSTNESS_FAMILIES)
    with pytest.raises(ValueError, match="unknown robustness transform"):
        robustness_perturbations(["jpeg", "vhs"])


@pytest.mark.parametrize("pert", robustness_perturbations(), ids=lambda p: p.name)
def test_each_robustness_transform(pert: Perturbation) -> None:
    im = _img()
    a = pert(im, np.random.default_rng(5))
    b = pert(im, np.random.default_rng(5))
    assert a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))  # deterministic for a seed
    w, h = im.size
    if pert.family in ("resize",):
        assert a.size == (round(w * pert.strength), round(h * pert.strength))
    elif pert.family in ("center_crop", "random_crop"):
        assert a.size == (round(w * pert.strength), round(h * pert.strength))
    elif pert.family == "social":
        assert a.size[0] < w
    else:
        assert a.size == im.size
    if pert.family != "jpeg" or pert.strength < 95:
        assert not np.array_equal(np.asarray(a), np.asarray(im))


def test_strength_orders_damage() -> None:
    im = _img(128, 128)
    ref = np.asarray(im, np.float64)

    def err(p: Perturbation) -> float:
        return float(np.mean((np.asarray(p(im), np.float64) - ref) ** 2))

    assert err(Perturbation("jpeg", 95)) < err(Perturbation("jpeg", 50)) < err(Perturbation("jpeg", 30))
    assert err(Perturbation("blur", 1)) < err(Perturbation("blur", 2))
    assert err(Perturbation("noise", 2)) < err(Perturbation("noise", 10))


def test_jpeg_roundtrip_is_really_jpeg_quality() -> None:
    im = _img()
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=50)
    direct = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert np.array_equal(np.asarray(Perturbation("jpeg", 50)(im)), direct)


def test_random_crop_depends_on_seed_centre_crop_does_not() -> None:
    im = _img(200, 200)
    c1 = Perturbation("random_crop", 0.5)(im, np.random.default_rng(1))
    c2 = Perturbation("random_crop", 0.5)(im, np.random.default_rng(2))
    assert not np.array_equal(np.asarray(c1), np.asarray(c2))
    cc = Perturbation("center_crop", 0.5)(im)
    assert np.array_equal(np.asarray(cc), np.asarray(im)[50:150, 50:150])


def test_nineteen_families_five_intensities() -> None:
    assert len(TRAIN_FAMILIES) == 19
    assert all(len(v) == 5 for v in TRAIN_INTENSITIES.values())


@pytest.mark.parametrize("family", TRAIN_FAMILIES)
def test_each_family_every_level(family: str) -> None:
    im = _img(80, 60)
    for level in range(5):
        a = apply_family(im, family, level, np.random.default_rng(level))
        b = apply_family(im, family, level, np.random.default_rng(level))
        assert a.mode == "RGB" and min(a.size) >= 1
        assert np.array_equal(np.asarray(a), np.asarray(b))
        changed = a.size != im.size or not np.array_equal(np.asarray(a), np.asarray(im))
        # JPEG at quality 100, a sigma-0.1 blur and opacity 1.0 (the recipe's top level) may leave pixels unchanged,
        # and the two-sided families' middle level is the identity (factor 1, shear 0), as in the reference
        identity = {("contrast", 2), ("saturation", 2), ("scale", 2), ("skew", 2)}
        may_keep = {("jpeg", 4), ("blur", 0), ("opacity", 4)}
        assert changed == ((family, level) not in identity) or (family, level) in may_keep, (family, level)


def test_bad_family_and_level() -> None:
    with pytest.raises(ValueError, match="unknown augmentation family"):
        apply_family(_img(), "sepia", 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="0..4"):
        apply_family(_img(), "blur", 5, np.random.default_rng(0))


def test_train_augment_draws_zero_to_two_and_is_seeded() -> None:
    aug = TrainAugment()
    counts = [len(aug.sample(np.random.default_rng(i))) for i in range(300)]
    assert set(counts) == {0, 1, 2}
    ops = aug.sample(np.random.default_rng(3))
    assert len({f for f, _ in ops}) == len(ops)  # distinct families
    im = _img()
    outs = [np.asarray(finish_view(aug(im, np.random.default_rng(s)))) for s in (11, 11, 12)]
    assert outs[0].shape == (224, 224, 3) and np.array_equal(outs[0], outs[1])


def test_random_resized_crops() -> None:
    im = _img(300, 200)
    g = random_resized_crop(im, np.random.default_rng(0), (0.4, 1.0))
    loc = random_resized_crop(im, np.random.default_rng(0), (0.05, 0.4))
    assert g.size == loc.size == (224, 224)
    assert not np.array_equal(np.asarray(g), np.asarray(loc))


def test_five_even_levels_as_the_reference_draws_them() -> None:
    """linspace(min, max, 5) of the reference's arguments (code-d3-elsa.md section 2)."""
    for family, (lo, hi) in {"contrast": (0.5, 1.5), "saturation": (0.5, 1.5), "scale": (0.5, 1.5), "skew": (-1, 1),
                             "jpeg": (40, 100), "opacity": (0.2, 1.0), "overlay_stripes": (0.05, 0.35),
                             "pad": (0.01, 0.25), "resize": (64, 512), "random_crop": (64, 512),
                             "sharpen": (1.2, 2.0), "pixel_shuffle": (0.0, 0.35)}.items():
        assert np.allclose(TRAIN_INTENSITIES[family], np.linspace(lo, hi, 5)), family


def test_two_sided_levels_are_the_factor_itself_whatever_the_seed() -> None:
    from PIL import ImageEnhance

    im = _img(80, 60)
    for level, factor in enumerate((0.5, 0.75, 1.0, 1.25, 1.5)):
        for seed in range(4):  # no hidden random side
            rng = np.random.default_rng(seed)
            assert np.array_equal(np.asarray(apply_family(im, "contrast", level, rng)),
                                  np.asarray(ImageEnhance.Contrast(im).enhance(factor)))
            assert np.array_equal(np.asarray(apply_family(im, "saturation", level, rng)),
                                  np.asarray(ImageEnhance.Color(im).enhance(factor)))
            assert apply_family(im, "scale", level, rng).size == (int(80 * factor), int(60 * factor))


def test_skew_shears_about_the_middle_row_and_keeps_the_size() -> None:
    im = Image.new("RGB", (64, 64), (0, 0, 0))
    im.paste((255, 255, 255), (30, 0, 34, 64))  # a vertical white bar in the middle
    for level, k in enumerate((-1.0, -0.5, 0.0, 0.5, 1.0)):
        out = np.asarray(apply_family(im, "skew", level, np.random.default_rng(level)))
        assert out.shape == (64, 64, 3)
        cols = [float(np.mean(np.flatnonzero(out[y, :, 0] > 127))) for y in (8, 32, 56)]
        # output (x, y) samples input x + k (y - h/2): the bar leans by -k pixels per row, the middle row stays
        assert abs(cols[1] - 31.5) <= 1.0, (k, cols)
        assert abs((cols[2] - cols[0]) - (-k * 48)) <= 2.0, (k, cols)


def test_random_crop_pads_a_small_image_with_black_like_torchvision() -> None:
    im = Image.new("RGB", (100, 80), (200, 200, 200))
    for seed in range(40):
        out = np.asarray(apply_family(im, "random_crop", 1, np.random.default_rng(seed)))  # 176 px > both sides
        assert out.shape == (176, 176, 3)
        black = np.all(out == 0, axis=2)
        assert black.any() and ((out == 200).all(axis=2) | black).all()
        assert int((~black).sum()) == 100 * 80  # every pixel of the image is kept (the crop covers it)
    small = np.asarray(apply_family(im, "random_crop", 0, np.random.default_rng(0)))
    assert small.shape == (64, 64, 3) and (small == 200).all()  # no padding when the image is larger


def test_final_resize_is_bicubic() -> None:
    im = _img(96, 64, seed=4)
    got = finish_view(im)
    ref = np.asarray(im.resize((372, 248), Image.BICUBIC))[12:236, 74:298]
    assert np.array_equal(got, ref)
    assert not np.array_equal(got, np.asarray(im.resize((372, 248), Image.BILINEAR))[12:236, 74:298])
