"""The one decoder: every awkward input either decodes by the documented policy or fails clearly."""
from __future__ import annotations

import os

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


# -- hostile input, second round: few bytes, huge frames; special files --------------------------
def _png(path, w, h, value=200):
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("w, h", [(1, 1), (1, 5000), (5000, 1), (223, 3000), (3000, 223), (224, 1), (17, 17),
                                  (100, 300), (301, 150)])
def test_crop_then_pad_gives_the_pixels_of_pad_then_crop(w, h):
    """The window is cut first and padded alone: bit for bit what padding the whole frame gives."""
    arr = np.random.default_rng(w * 7 + h).integers(1, 256, (h, w, 3), dtype=np.uint8)
    ph, pw = max(224 - h, 0), max(224 - w, 0)
    padded = np.pad(arr, [(ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)])  # torchvision's way
    top, left = int(round((padded.shape[0] - 224) / 2.0)), int(round((padded.shape[1] - 224) / 2.0))
    expected = padded[top:top + 224, left:left + 224]
    np.testing.assert_array_equal(center_crop_array(arr), expected)
    np.testing.assert_array_equal(crop_uint8(Image.fromarray(arr)), expected)
    assert center_crop_array(arr[..., 0]).shape == (224, 224)  # greyscale arrays too


def test_resize_mode_refuses_extreme_aspect_ratios_with_a_clear_error(tmp_path):
    from deepsift.images import MAX_ASPECT_RATIO, preprocess

    thin = decode_image(_png(tmp_path / "thin.png", 100_000, 1))  # 373 bytes; resized: 24,800,000 x 248
    with pytest.raises(ImageTooLargeError, match=r"aspect ratio 100000:1 exceeds the cap of 32:1.*24800000x248"):
        crop_uint8(thin, "resize")
    assert crop_uint8(thin, "official").shape == (224, 224, 3)  # the centre crop has no such cost
    ok = decode_image(_png(tmp_path / "wide.png", int(50 * MAX_ASPECT_RATIO), 50))  # exactly at the cap
    assert crop_uint8(ok, "resize").shape == (224, 224, 3)
    with pytest.raises(ImageTooLargeError, match="aspect ratio"):
        preprocess(tmp_path / "thin.png", "resize")


PEAK_SCRIPT = r"""
import json, sys
from deepsift.exceptions import ImageError
from deepsift.images import crop_uint8, decode_image

def rss(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":")) / 1024.0

out = {}
for path, mode in json.loads(sys.argv[1]):
    crop_uint8(decode_image(sys.argv[2]), "official")  # warm up: every library loaded
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak (VmHWM) to the current RSS
    start = rss("VmRSS")
    try:
        crop_uint8(decode_image(path), mode)
        error = None
    except ImageError as exc:
        error = str(exc)
    out[f"{path}:{mode}"] = [rss("VmHWM") - start, error]
print(json.dumps(out))
"""


def test_peak_memory_of_thin_images_stays_that_of_a_normal_image(tmp_path):
    """Measured in a fresh process: a 1,000,000 x 1 PNG (about 1 KB) must not cost a padded 1,000,000 x 224 frame."""
    import json
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    normal = _png(tmp_path / "normal.png", 1000, 1000)  # the same number of pixels as the thin ones
    cases = [(str(normal), "official"), (str(_png(tmp_path / "wide.png", 1_000_000, 1)), "official"),
             (str(_png(tmp_path / "tall.png", 4, 250_000)), "official"),
             (str(normal), "resize"), (str(_png(tmp_path / "thin.png", 2000, 1)), "resize")]
    assert (tmp_path / "wide.png").stat().st_size < 5000
    res = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, json.dumps(cases), str(normal)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    peaks = json.loads(res.stdout)
    base = peaks[f"{normal}:official"][0]
    for key, (peak_mb, error) in peaks.items():
        assert peak_mb <= base + 8.0, f"{key}: peak +{peak_mb:.1f} MB vs +{base:.1f} MB for a normal image"
    assert peaks[f"{tmp_path / 'thin.png'}:resize"][1] and "aspect ratio" in peaks[f"{tmp_path / 'thin.png'}:resize"][1]


@pytest.mark.parametrize("kind", ["fifo", "chardev"])
def test_a_fifo_or_device_is_not_a_regular_file(tmp_path, kind):
    """Named like an image, never opened for reading (a FIFO would block, /dev/zero would never end)."""
    import threading

    if kind == "fifo":
        path = tmp_path / "pipe.jpg"
        os.mkfifo(path)
        word = "a FIFO"
    else:
        path = tmp_path / "zero.jpg"
        os.symlink("/dev/zero", path)
        word = "a character device"
    result = {}
    t = threading.Thread(target=lambda: result.update(err=pytest.raises(ImageDecodeError, decode_image, path)),
                         daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "decoding a special file blocked"
    msg = str(result["err"].value)
    assert f"not a regular file ({word})" in msg and "empty file" not in msg and str(path) in msg


def test_decoded_bytes_are_bounded_before_decoding_and_deep_images_convert_in_blocks(tmp_path):
    """A small float TIFF / 16-bit PNG: refused when its decoded bytes pass the pixel cap x 3 (before any pixel is
    decoded), and, when accepted, converted without float64 copies of the whole image (peak RSS measured)."""
    import json
    import subprocess
    import sys

    flat = np.full((2000, 2000), 0.5, np.float32)
    tif = tmp_path / "float.tif"
    Image.fromarray(flat).save(tif, compression="tiff_adobe_deflate")
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((2000, 2000), 40000, np.uint16)).save(deep)
    assert tif.stat().st_size < 200_000 and deep.stat().st_size < 200_000
    # 4 MP is under a 4.5 MP cap, but 4 MP x 4 bytes (float) = 16 MB is over 4.5 MP x 3 bytes = 13.5 MB
    with pytest.raises(ImageTooLargeError, match=r"F pixels decode to 16 MB, over the cap of 14 MB"):
        decode_image(tif, max_pixels=4_500_000)
    assert decode_image(deep, max_pixels=4_100_000).size == (2000, 2000)  # 16-bit: 8 MB <= 12.3 MB
    assert np.asarray(decode_image(tif))[0, 0, 0] == 0  # 0.5 of 255: rounds to 0 (0..255 scale)
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    for mode in ("F", "I;16"):
        res = subprocess.run([sys.executable, "-c", CONVERT_PEAK_SCRIPT, mode], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        peak_mb = float(res.stdout)
        # 4 MP: a uint8 grey copy (4 MB), the RGB output (12 MB), the array view of the source (16 / 8 MB) and
        # one block of rows (8 MB); whole-image float64 temporaries (32 MB each) would pass 80 MB
        assert peak_mb <= 48.0, f"{mode}: converting 4 MP to RGB peaked at +{peak_mb:.1f} MB"


CONVERT_PEAK_SCRIPT = r"""
import sys, numpy as np
from PIL import Image
from deepsift.images import decode_image

def rss(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":")) / 1024.0

rng = np.random.default_rng(0)
arr = (rng.random((2000, 2000), dtype=np.float32) * 300) if sys.argv[1] == "F" else \
    rng.integers(0, 65535, (2000, 2000), dtype=np.uint16)
im = Image.fromarray(arr)
im.load()
decode_image(Image.fromarray(arr[:10, :10].copy()))  # warm up
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
start = rss("VmRSS")
decode_image(im)
print(rss("VmHWM") - start)
"""
