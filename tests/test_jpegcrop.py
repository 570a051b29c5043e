"""Exact JPEG region decoding: byte-identical to decoding the whole file with Pillow and cropping; fallbacks."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deepsift.images import crop_uint8, decode_image
from deepsift.jpegcrop import centre_crop_jpeg, region_bounds, turbojpeg
from deepsift.model.decoding import load_pixels

pytestmark = pytest.mark.skipif(turbojpeg() is None, reason="libturbojpeg is not installed (scripts/test.sh installs it)")


def picture(rng: np.random.Generator, w: int, h: int, grey: bool = False) -> Image.Image:
    """Smooth colour + noise + sharp edges: every block and chroma sample differs."""
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.int16)
    a = a + rng.integers(-25, 25, (h, w, 3))
    a[::37, :, 0] = 255
    a[:, ::29, 2] = 0
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return im.convert("L") if grey else im


def jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


SIZES = [(640, 640), (641, 643), (1001, 777), (777, 1001), (1280, 720), (723, 1283), (999, 1000), (2049, 513)]


@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["4:4:4", "4:2:2", "4:2:0"])
def test_region_decoding_equals_the_whole_decode_byte_for_byte(subsampling):
    rng = np.random.default_rng(subsampling)
    for w, h in SIZES:  # odd and even sizes: odd window offsets, partial MCUs at the right and bottom edges
        for quality in (60, 95):
            data = jpeg(picture(rng, w, h), quality=quality, subsampling=subsampling)
            got = centre_crop_jpeg(data)
            assert got is not None, (w, h)
            assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
            assert np.array_equal(got, crop_uint8(decode_image(data))), (w, h, quality)


def test_greyscale_and_optimised_and_restart_free_files_too():
    rng = np.random.default_rng(7)
    for data in (jpeg(picture(rng, 901, 655, grey=True), quality=85),
                 jpeg(picture(rng, 655, 901), quality=85, optimize=True)):
        got = centre_crop_jpeg(data)
        assert got is not None and np.array_equal(got, crop_uint8(decode_image(data)))


def test_the_window_lies_inside_the_cut_with_a_whole_mcu_around_it():
    for length in range(224, 3000, 7):
        for mcu in (8, 16):
            start, end = region_bounds(length, mcu)
            origin = round((length - 224) / 2)
            assert start % mcu == 0 and start <= origin and origin + 224 <= end <= length
            assert start == 0 or origin - start >= mcu
            assert end == length or end - (origin + 224) >= mcu


def test_fallbacks_decode_the_whole_file():
    rng = np.random.default_rng(3)
    im = picture(rng, 800, 800)
    assert centre_crop_jpeg(jpeg(im, quality=90, progressive=True)) is None  # progressive
    assert centre_crop_jpeg(jpeg(im.convert("CMYK"), quality=90)) is None  # CMYK
    assert centre_crop_jpeg(jpeg(picture(rng, 300, 300), quality=90)) is None  # too small to gain
    assert centre_crop_jpeg(jpeg(picture(rng, 200, 900), quality=90)) is None  # a side shorter than the window
    data = jpeg(im, quality=90)
    assert centre_crop_jpeg(data[: len(data) // 2]) is None  # truncated: the whole-file path reports it
    assert centre_crop_jpeg(b"\x89PNG\r\n\x1a\n") is None


def test_the_engine_uses_it_and_keeps_its_errors(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    good = tmp_path / "big.jpg"
    good.write_bytes(jpeg(picture(rng, 1001, 999), quality=90))
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:5000])
    assert np.array_equal(load_pixels(str(good)), crop_uint8(decode_image(str(good))))
    assert np.array_equal(load_pixels(good.read_bytes()), crop_uint8(decode_image(str(good))))
    with pytest.raises(Exception, match="cut.jpg: corrupt or truncated"):
        load_pixels(str(truncated))
    calls = []
    import deepsift.jpegcrop as jc

    real = jc.centre_crop_jpeg
    monkeypatch.setattr(jc, "centre_crop_jpeg", lambda d, **k: calls.append(len(d)) or real(d, **k))
    load_pixels(str(good))
    load_pixels(str(good), "resize")  # the resize mode needs the whole image
    assert len(calls) == 1
