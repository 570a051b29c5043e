"""The one decoder: every awkward input either decodes by the documented policy or fails clearly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from badfiles import make_all, png_with_size, rgb
from deepsift.exceptions import ImageDecodeError, ImageTooLargeError
from deepsift.images import MAX_PIXELS, center_crop_array, crop_uint8, decode_image, normalize_batch


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_all(tmp_path_factory.mktemp("awkward"))


@pytest.mark.parametrize("name, error, words", [
    ("zero", ImageDecodeError, "empty file"),
    ("truncated", ImageDecodeError, "truncated"),
    ("notimage", ImageDecodeError, "not an image"),
    ("bomb", ImageTooLargeError, "exceeds the cap of 80 MP"),
])
def test_broken_files_raise_clear_errors(files, name, error, words):
    with pytest.raises(error, match=words) as info:
        decode_image(files[name])
    assert str(files[name]) in str(info.value)


def test_pixel_cap_is_checked_before_decoding():
    with pytest.raises(ImageTooLargeError):
        decode_image(png_with_size(20000, 20000))  # 400 MP header, a few bytes of data
    assert MAX_PIXELS == 80_000_000
    with pytest.raises(ImageTooLargeError, match="0.1 MP"):
        decode_image(png_with_size(400, 400), max_pixels=100_000)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        decode_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="is a directory"):
        decode_image(tmp_path)


def test_sixteen_bit_png_is_scaled_not_clipped(files):
    im = decode_image(files["gray16"])
    arr = np.asarray(im)
    assert im.mode == "RGB" and arr.shape == (260, 300, 3)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert 100 < arr[130, 150, 0] < 155  # mid-grey, not clipped to white


@pytest.mark.parametrize("name", ["cmyk", "palette", "grey", "plain", "small", "gray16", "anim"])
def test_colour_modes_become_rgb(files, name):
    assert decode_image(files[name]).mode == "RGB"


def test_cmyk_and_grey_close_to_source(files):
    src = rgb(1).astype(int)
    cmyk = np.asarray(decode_image(files["cmyk"])).astype(int)
    assert np.abs(cmyk - src).mean() < 12
    grey = np.asarray(decode_image(files["grey"]))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_webp_decodes(files):
    src = rgb(1).astype(int)
    assert np.abs(np.asarray(decode_image(files["plain"])).astype(int) - src).mean() < 8  # lossy


def test_tiff_is_lossless(tmp_path):
    arr = rgb(5)
    Image.fromarray(arr).save(tmp_path / "a.tiff")
    assert (np.asarray(decode_image(tmp_path / "a.tiff")) == arr).all()


@pytest.mark.parametrize("name, seed", [("anim", 10), ("animwebp", 10)])
def test_animated_images_give_the_first_frame(files, name, seed):
    arr = np.asarray(decode_image(files[name])).astype(int)
    first, second = rgb(seed).astype(int), rgb(seed + 1).astype(int)
    assert np.abs(arr - first).mean() < np.abs(arr - second).mean()


def test_exif_orientation_policy(files):
    stored = decode_image(files["exif"])
    assert stored.size == (320, 240)  # default: pixels as stored, like the published path
    rotated = decode_image(files["exif"], exif_transpose=True)
    assert rotated.size == (240, 320)


def test_small_image_is_zero_padded(files):
    arr = crop_uint8(decode_image(files["small"]))  # 150 x 400: pad width, crop height
    assert arr.shape == (224, 224, 3)
    assert (arr[:, :37] == 0).all() and (arr[:, 37 + 150:] == 0).all()
    assert arr[:, 37:187].any()


@pytest.mark.parametrize("size, pad_before", [(223, 0), (222, 1), (150, 37), (151, 36)])
def test_padding_geometry_matches_torchvision(size, pad_before):
    arr = np.full((size, 300, 1), 7, np.uint8)
    out = center_crop_array(arr, 224)
    rows = np.flatnonzero(out[:, 0, 0])
    assert rows[0] == pad_before and len(rows) == size


def test_odd_excess_crop_uses_round_half_even():
    # excess 1 -> round(0.5) = 0 ; excess 3 -> round(1.5) = 2 ; excess 5 -> round(2.5) = 2
    for extra, top in [(1, 0), (3, 2), (5, 2)]:
        arr = np.arange(224 + extra, dtype=np.uint16).reshape(-1, 1, 1).repeat(224, 1)
        assert center_crop_array(arr)[0, 0, 0] == top


def test_normalize_batch_matches_definition():
    x = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    t = normalize_batch(x)
    assert t.shape == (2, 3, 224, 224)
    expect = (x[1, 5, 9, 2] / 255 - 0.406) / 0.225
    assert abs(float(t[1, 2, 5, 9]) - expect) < 1e-6


def test_bytes_and_arrays(files):
    data = files["good"].read_bytes()
    assert decode_image(data).size == (300, 260)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    assert decode_image(rgb(2)).size == (300, 260)
    with pytest.raises(ImageDecodeError, match="uint8"):
        decode_image(rgb(2).astype(np.float32))


def test_fast_preprocessing_is_bit_identical_to_the_arithmetic():
    # uint8 arrays take the look-up-table path, torch tensors the float arithmetic: same bits
    import torch

    rng = np.random.default_rng(3)
    for shape in [(3, 224, 224, 3), (224, 224, 3), (2, 37, 41, 3)]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        assert torch.equal(normalize_batch(x), normalize_batch(torch.from_numpy(x)))
    x = rng.integers(0, 256, (2, 230, 224, 3), dtype=np.uint8)[:, 3:227]  # a non-contiguous view
    assert torch.equal(normalize_batch(x), normalize_batch(torch.from_numpy(np.ascontiguousarray(x))))
    # the crop of large-enough images (done in Pillow) takes the same box as center_crop_array
    for w, h in [(224, 224), (225, 301), (300, 227), (512, 512), (257, 256), (100, 300)]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        np.testing.assert_array_equal(crop_uint8(im), center_crop_array(np.asarray(im)))
