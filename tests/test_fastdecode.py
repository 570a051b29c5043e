"""Faster exact decoders (libjpeg-turbo / libspng into numpy): byte-identical to Pillow per image kind; fallbacks."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from data_factory import detailed_picture
from deepsift.exceptions import ImageDecodeError
from deepsift.fastdecode import centre_crop_jpeg_fast, fast_decoder
from deepsift.images import crop_origin, crop_uint8, decode_image, normalize_batch
from deepsift.model.decoding import load_pixels
from deepsift.pngcrop import Inflater, centre_crop_png, png_chunks

needs_jpeg = pytest.mark.skipif(fast_decoder("simplejpeg") is None, reason="simplejpeg is not installed")
needs_png = pytest.mark.skipif(fast_decoder("isal.isal_zlib") is None, reason="isal is not installed")


def picture(seed: int, w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour + noise + sharp lines (every PNG filter, every JPEG block and chroma sample differs)."""
    return detailed_picture(np.random.default_rng(seed), w, h, mode)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def reference(data: bytes) -> np.ndarray:
    """Today's Pillow path: decode the whole file, crop."""
    return crop_uint8(decode_image(data))


def assert_same_tensor(data: bytes, got: np.ndarray) -> None:
    """The detector's input tensor from ``got`` is byte-identical to the Pillow path's."""
    ref = reference(data)
    assert got.dtype == np.uint8 and got.shape == (224, 224, 3) and got.flags.c_contiguous
    assert np.array_equal(got, ref)
    assert torch.equal(normalize_batch(got[None]), normalize_batch(ref[None]))
    assert np.array_equal(load_pixels(data), ref)  # and the engine's path, whichever decoder it takes


SIZES = [(512, 512), (333, 517), (1001, 97), (17, 13), (225, 224), (224, 640), (900, 700)]
JPEG_KINDS = {
    "4:4:4": ("RGB", {"subsampling": 0, "quality": 95}),
    "4:2:2": ("RGB", {"subsampling": 1}),
    "4:2:0": ("RGB", {"subsampling": 2, "quality": 60}),
    "progressive": ("RGB", {"progressive": True}),
    "optimised": ("RGB", {"optimize": True, "quality": 100}),
    "restarts": ("RGB", {"restart_marker_blocks": 3}),
    "grey": ("L", {"quality": 90}),
}


@needs_jpeg
@pytest.mark.parametrize("kind", list(JPEG_KINDS))
def test_jpeg_fast_path_equals_pillow_byte_for_byte(kind):
    mode, kw = JPEG_KINDS[kind]
    for k, (w, h) in enumerate(SIZES):  # odd offsets, padded short sides, partial MCUs at the edges
        data = encode(picture(k, w, h, mode), "JPEG", **kw)
        got = centre_crop_jpeg_fast(data)
        assert got is not None, (kind, w, h)
        assert_same_tensor(data, got)


@needs_jpeg
def test_exif_rotated_jpeg_is_decoded_as_stored_like_pillow():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: ignored by default, as in the published path
    data = encode(picture(3, 640, 400), "JPEG", exif=exif.tobytes())
    got = centre_crop_jpeg_fast(data)
    assert got is not None
    assert_same_tensor(data, got)


@needs_jpeg
@pytest.mark.parametrize("size", [(1280, 960), (2049, 513)])
def test_large_jpeg_region_decoded_by_libjpeg_turbo_is_byte_identical(size):
    from deepsift.jpegcrop import centre_crop_jpeg, turbojpeg

    if turbojpeg() is None:
        pytest.skip("libturbojpeg is not installed")
    data = encode(picture(9, *size), "JPEG", quality=85)
    got = centre_crop_jpeg(data)
    assert got is not None
    assert_same_tensor(data, got)


@needs_jpeg
def test_cmyk_jpeg_falls_back_to_pillow_decided_from_the_header():
    data = encode(picture(4, 400, 300, "CMYK"), "JPEG")
    assert centre_crop_jpeg_fast(data) is None  # libjpeg-turbo's CMYK differs from Pillow's conversion
    assert np.array_equal(load_pixels(data), reference(data))


PNG_KINDS = {
    "RGB": ("RGB", {}),
    "RGB level 1": ("RGB", {"compress_level": 1}),
    "RGB optimised": ("RGB", {"optimize": True}),
    "RGBA": ("RGBA", {}),
    "RGB + tRNS": ("RGB", {"transparency": (1, 2, 3)}),
}
PNG_SIZES = [(512, 512), (333, 517), (224, 224), (225, 240), (640, 241), (1001, 777), (700, 1283)]


@needs_png
@pytest.mark.parametrize("kind", list(PNG_KINDS))
def test_png_rows_inflated_by_isal_equal_pillow_byte_for_byte(kind, monkeypatch):
    mode, kw = PNG_KINDS[kind]
    monkeypatch.setattr(ImageFile, "MAXBLOCK", 8192)  # rows spread over many IDAT chunks
    for k, (w, h) in enumerate(PNG_SIZES):  # rows saved from none to most; odd window offsets
        data = encode(picture(k, w, h, mode), "PNG", **kw)
        ihdr, idat = png_chunks(data)
        bottom = crop_origin(h) + 224
        size = bottom * (w * len(mode) + 1)
        inflater = Inflater(idat)
        assert inflater.fast  # the ISA-L path is taken, and its rows are zlib's
        assert inflater.read(size) == zlib.decompressobj().decompress(b"".join(idat), size)
        got = centre_crop_png(data)
        assert got is not None, (kind, w, h)
        assert_same_tensor(data, got)


@needs_png
@pytest.mark.parametrize("kind", ["grey", "palette", "grey + alpha", "16-bit grey", "16-bit RGB", "1-bit", "interlaced",
                                  "small"])
def test_png_kinds_outside_the_window_path_are_decoded_by_pillow_as_before(kind):
    im = picture(5, 300, 260)
    if kind == "grey":
        data = encode(im.convert("L"), "PNG")
    elif kind == "palette":
        data = encode(im.quantize(200), "PNG", transparency=3)
    elif kind == "16-bit grey":
        data = encode(Image.fromarray((np.asarray(im.convert("L"), np.uint16) * 257 + 3).astype(np.uint16)), "PNG")
    elif kind == "16-bit RGB":
        raw = (np.asarray(im, np.uint16) * 257).astype(">u2").tobytes()
        rows = b"".join(b"\x00" + raw[r * 300 * 6:(r + 1) * 300 * 6] for r in range(260))
        ihdr = (300).to_bytes(4, "big") + (260).to_bytes(4, "big") + bytes([16, 2, 0, 0, 0])
        data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    elif kind == "grey + alpha":
        data = encode(im.convert("LA"), "PNG")
    elif kind == "1-bit":
        data = encode(im.convert("1"), "PNG")
    elif kind == "small":
        data = encode(picture(5, 200, 260), "PNG")
    else:  # Pillow writes no Adam7: flag the header (the rows then decode as Adam7 passes, by Pillow alone)
        plain = encode(im, "PNG")
        data = plain[:8] + chunk(b"IHDR", plain[16:28] + b"\x01") + plain[33:]
    assert centre_crop_png(data) is None
    assert outcome(load_pixels, data) == outcome(reference, data)


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def outcome(decode, data: bytes) -> tuple[str, bytes]:
    """``("pixels", bytes)`` or ``("error", message)``: what a decoding path gives for ``data``."""
    try:
        return "pixels", decode(data).tobytes()
    except ImageDecodeError as exc:
        return "error", str(exc).encode()


def truncated_and_corrupt() -> dict[str, bytes]:
    jpg = encode(picture(6, 512, 512), "JPEG", quality=90)
    png = encode(picture(6, 512, 512), "PNG")
    idat = png_chunks(png)[1][0]
    start = png.index(bytes(idat[:64]))
    junk = bytes(len(idat))  # an intact chunk (CRC valid) holding no zlib stream
    crc = zlib.crc32(b"IDAT" + junk).to_bytes(4, "big")
    bad_png = png[:start] + junk + crc + png[start + len(idat) + 4:]
    bad_jpg = bytearray(jpg)
    bad_jpg[len(jpg) // 3: len(jpg) // 3 + 400] = b"\xff\x00" * 200
    return {"truncated JPEG": jpg[: len(jpg) // 2], "corrupt JPEG": bytes(bad_jpg), "truncated PNG": png[: len(png) // 2],
            "PNG with broken rows": bad_png}


@pytest.mark.parametrize("kind", list(truncated_and_corrupt()))
def test_bad_input_through_the_fast_path_gives_todays_error(kind, monkeypatch):
    data = truncated_and_corrupt()[kind]
    assert centre_crop_jpeg_fast(data) is None and centre_crop_png(data) is None  # refused: Pillow decides
    if kind == "PNG with broken rows":
        with pytest.raises(ValueError):  # ISA-L refuses the rows
            Inflater(png_chunks(data)[1]).read(368 * (512 * 3 + 1))
    fast = outcome(load_pixels, data)
    monkeypatch.setenv("DEEPSIFT_NO_FAST_DECODE", "1")  # today's path: Pillow alone
    fast_decoder.cache_clear()
    try:
        today = outcome(load_pixels, data)
    finally:
        fast_decoder.cache_clear()
    assert fast == today
    if kind != "corrupt JPEG":  # Pillow decodes corrupt entropy-coded data to grey blocks, as it always did
        assert today[0] == "error" and b"corrupt or truncated" in today[1], today


MISSING = r"""
import json, sys
sys.modules["simplejpeg"] = None  # the import itself fails, as when the package is not installed
sys.modules["isal"] = None
import numpy as np
from deepsift.fastdecode import centre_crop_jpeg_fast, fast_decoders
from deepsift.pngcrop import Inflater, png_chunks
from deepsift.images import crop_uint8, decode_image
from deepsift.model.decoding import load_pixels
out = {"decoders": fast_decoders()}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    fast_png = Inflater(png_chunks(data)[1]).fast if path.endswith(".png") else False
    out[path] = {"fast": [centre_crop_jpeg_fast(data) is None, not fast_png],
                 "same": bool(np.array_equal(load_pixels(path), crop_uint8(decode_image(path))))}
print(json.dumps(out))
"""


def test_without_the_libraries_every_image_is_decoded_by_pillow_unchanged(tmp_path):
    paths = []
    for name, data in {"a.jpg": encode(picture(7, 512, 512), "JPEG"), "b.png": encode(picture(7, 512, 512), "PNG"),
                       "c.jpg": encode(picture(8, 1400, 1000), "JPEG")}.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    proc = subprocess.run([sys.executable, "-c", MISSING, *paths], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    assert out["decoders"] == {"simplejpeg": False, "isal.isal_zlib": False}
    for path in paths:
        assert out[path] == {"fast": [True, True], "same": True}, path
