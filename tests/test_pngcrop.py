"""Exact PNG window decoding: byte-identical to decoding the whole file with Pillow and cropping; fallbacks."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from data_factory import detailed_picture
from deepsift.fastdecode import fast_decoder
from deepsift.images import crop_uint8, decode_image
from deepsift.model.decoding import load_pixels, window_pixels
from deepsift.pngcrop import SIGNATURE, centre_crop_png, png_chunks


def picture(rng: np.random.Generator, w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour + noise + sharp lines: every PNG filter type gets used somewhere."""
    return detailed_picture(rng, w, h, mode)


def png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def whole(data: bytes) -> np.ndarray:
    return crop_uint8(decode_image(data))


SIZES = [(512, 512), (224, 300), (641, 643), (1001, 777), (777, 1001), (1280, 720), (300, 1283), (2049, 513)]


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_window_decoding_equals_the_whole_decode_byte_for_byte(mode, monkeypatch):
    rng = np.random.default_rng(len(mode))
    checked = 0
    for w, h in SIZES:  # odd and even sizes: odd window offsets
        for kw in ({}, {"compress_level": 1}, {"optimize": True}):
            data = png(picture(rng, w, h, mode), **kw)
            got = centre_crop_png(data)
            assert got is not None, (w, h, kw)
            assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
            assert np.array_equal(got, whole(data)), (w, h, kw)
            checked += 1
    monkeypatch.setattr(ImageFile, "MAXBLOCK", 4096)  # rows spread over many small IDAT chunks
    data = png(picture(rng, 700, 900, mode))
    assert len(png_chunks(data)[1]) > 50
    assert np.array_equal(centre_crop_png(data), whole(data))
    assert checked == 3 * len(SIZES)


def with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with one more chunk right after IHDR."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return data[:33] + chunk + data[33:]


def test_files_it_is_not_sure_about_are_left_to_the_whole_decode():
    rng = np.random.default_rng(7)
    im = picture(rng, 600, 600)
    data = png(im)
    interlaced = bytearray(data)  # the IHDR says Adam7 (the header alone decides)
    interlaced[28] = 1
    interlaced[29:33] = struct.pack(">I", zlib.crc32(bytes(interlaced[12:29])))
    apng = io.BytesIO()
    im.save(apng, "PNG", save_all=True, append_images=[picture(rng, 600, 600)])
    bad_crc = bytearray(data)
    bad_crc[len(data) // 2] ^= 0xFF
    for case in (bytes(interlaced), apng.getvalue(), bytes(bad_crc), data[: len(data) * 3 // 4],  # truncated
                 data[:-12],  # no IEND
                 png(im.convert("L")), png(im.convert("P")), png(im.convert("I;16")), png(im.convert("LA")),
                 png(picture(rng, 200, 600)),  # narrower than the window
                 b"\xff\xd8\xff", SIGNATURE, b""):
        assert centre_crop_png(case) is None
    assert centre_crop_png(data, max_pixels=599 * 600) is None  # over the pixel cap: the whole decode refuses it
    few = png(picture(rng, 600, 240))  # 8 rows under the window: nothing to save with zlib, ISA-L's inflate still gains
    if fast_decoder("isal.isal_zlib") is None:
        assert centre_crop_png(few) is None
    else:
        assert np.array_equal(centre_crop_png(few), whole(few))
    # chunks that change nothing for RGB pixels are fine (text, gamma, a transparency colour)
    extra = with_chunk(with_chunk(data, b"tEXt", b"parameters\x00steps: 20"), b"tRNS", b"\x00\x01\x00\x02\x00\x03")
    assert np.array_equal(centre_crop_png(extra), whole(extra))


def test_detect_s_pixels_and_errors_are_those_of_the_whole_decode(tmp_path):
    rng = np.random.default_rng(11)
    good = tmp_path / "big.png"
    good.write_bytes(png(picture(rng, 801, 799)))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:6000])
    ref = whole(good.read_bytes())
    assert np.array_equal(window_pixels(str(good)), ref)
    assert np.array_equal(load_pixels(str(good)), ref)
    assert np.array_equal(load_pixels(good.read_bytes()), ref)
    assert window_pixels(str(cut)) is None
    with pytest.raises(Exception, match="cut.png: corrupt or truncated"):
        load_pixels(str(cut))


def test_broken_rows_below_the_window_with_intact_chunks_are_scored_on_the_window():
    # the documented difference: chunks intact (CRCs, IEND) but the compressed rows under the window broken
    rng = np.random.default_rng(13)
    im = picture(rng, 512, 512)
    raw = b"".join(b"\x00" + row.tobytes() for row in np.asarray(im))  # filter 0 rows
    stream = zlib.compress(raw, 9)
    z = zlib.compressobj(9)
    rows_above = z.compress(raw[: (1 + 512 * 3) * 400]) + z.flush(zlib.Z_FULL_FLUSH)  # 32 rows past the window
    broken = rows_above + b"\xde\xad\xbe\xef" * 64  # then garbage instead of the rest
    ihdr = struct.pack(">IIBBBBB", 512, 512, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    intact = SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    crafted = SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", broken) + chunk(b"IEND", b"")
    assert np.array_equal(centre_crop_png(crafted), whole(intact))
    with pytest.raises(Exception, match="corrupt or truncated"):
        whole(crafted)


@pytest.mark.parametrize("strip_bytes", [1, 3001, 65536])
def test_strip_by_strip_decoding_equals_the_whole_decode_byte_for_byte(strip_bytes):
    """Each strip starts behind a stored copy of the row above it: filters across strip edges read the right bytes."""
    from deepsift.pngcrop import png_layout, png_strips

    rng = np.random.default_rng(strip_bytes)
    for mode in ("RGB", "RGBA"):
        for w, h in ((641, 643), (300, 1283)):
            data = png(picture(rng, w, h, mode))
            assert np.array_equal(centre_crop_png(data, strip_bytes=strip_bytes), whole(data)), (mode, w, h)
    for mode in ("L", "LA", "RGB", "RGBA"):
        im = picture(rng, 333, 517, mode)
        width, height, got_mode, idat = png_layout(png(im))
        strips = list(png_strips(width, got_mode, idat, height, height, strip_bytes, multiple=3))
        assert got_mode == mode and all(s.height % 3 == 0 for _, s in strips[:-1])
        assert [y for y, _ in strips] == sorted({y for y, _ in strips}) and strips[0][0] == 0
        assert np.array_equal(np.concatenate([np.asarray(s) for _, s in strips]), np.asarray(im)), mode


def test_strips_of_a_png_cut_short_are_refused():
    from deepsift.pngcrop import png_layout, png_strips

    data = png(picture(np.random.default_rng(9), 400, 300))
    width, height, mode, idat = png_layout(data)
    short = [idat[0][: len(idat[0]) // 2]]
    with pytest.raises(ValueError):
        list(png_strips(width, mode, short, height, height, 4096))
