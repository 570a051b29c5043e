"""Heatmaps and previews come from a reduced image: a large PNG or JPEG is never decoded whole for them."""
from __future__ import annotations

import gc
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepsift.demo.bounds import malloc_trim
from deepsift.demo.inputs import prepare
from deepsift.demo.reduced import factor, reduced_image
from deepsift.model.decoding import window_pixels
from demokit import jpeg_bytes

W, H = 6000, 4000  # 24 MP: decoded whole, 96 MB in Pillow's 4-byte RGB pixels
MB = 1 << 20


def big_png(w: int = W, h: int = H) -> bytes:
    """A large PNG whose file is small: a few flat bands and a gradient (any decoder must inflate every row)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, :, 0] = (np.arange(w) * 255 // w).astype(np.uint8)[None, :]
    a[h // 3:, :, 1] = 200
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def peak_growth(fn) -> tuple[object, int]:  # type: ignore[no-untyped-def]
    """``fn()`` and how far the process's peak RSS rose above its RSS before the call (Linux)."""
    gc.collect()
    malloc_trim()  # freed heap goes back first: what the call needs must come from the system
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    out = fn()
    return out, _status("VmHWM") - before


needs_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak RSS")


def _prepare(data: bytes, name: str, extras: bool):  # type: ignore[no-untyped-def]
    return prepare(data, name, 40_000_000, 64 * MB, heatmap_grid=4 if extras else 0, preview=extras,
                   reduce_to=4_000_000)


@needs_proc
@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_heatmap_and_preview_of_a_large_image_stay_far_below_its_whole_decode(kind):
    """24 MP: heatmap + preview (what the page asks for) hold a small fraction of the whole image's pixels."""
    data = big_png() if kind == "png" else jpeg_bytes(3, W, H, quality=90)
    name, whole_bytes = f"big.{kind}", W * H * 4
    _prepare((big_png(700, 700) if kind == "png" else jpeg_bytes(1, 700, 700)), "warm", True)  # imports
    plain, verdict_only = peak_growth(lambda: _prepare(data, name, False))
    d, grew = peak_growth(lambda: _prepare(data, name, True))
    assert d.grid is not None and d.preview.startswith("data:image/jpeg;base64,")
    assert np.array_equal(d.pixels, plain.pixels) and np.array_equal(d.pixels, window_pixels(data))  # the CLI's input
    figures = f"peak RSS rose {grew / MB:.0f} MiB, {verdict_only / MB:.0f} MiB for the verdict alone " \
              f"(a whole decode: {whole_bytes / MB:.0f} MiB)"
    if kind == "png":  # strips: nothing near the whole image at any moment. A whole decode holds >= whole_bytes;
        # strips ~21 MiB alone, 34 MiB seen inside the full suite (other tests' threads fault pages in meanwhile)
        assert grew < whole_bytes // 2, figures
    else:  # a JPEG's exact region decode (the verdict, as `deepsift detect`) reads every DCT coefficient; the
        # heatmap and preview add next to nothing to that (a PNG's strips are bounded as a whole, above)
        assert grew - verdict_only < whole_bytes // 8, figures
    batch, rows, cols, boxes, scale = d.grid
    assert (rows, cols) == (4, 4) and batch.shape == (16, 224, 224, 3)
    assert scale > 1.0 and boxes[-1][0] + boxes[-1][2] == pytest.approx(W, abs=scale + 1)  # in original pixels
    assert boxes[-1][1] + boxes[-1][3] == pytest.approx(H, abs=scale + 1)
    assert boxes[0][2] == pytest.approx(224 * scale, abs=scale + 1)


def test_the_reduced_image_is_within_its_bound_and_looks_like_the_image():
    data = big_png(3001, 2003)
    im = reduced_image(data, "PNG", (3001, 2003), 1_000_000, "a.png", 40_000_000)
    assert im.width * im.height <= 1_000_000 and im.size == (1001, 668)  # factor 3, rounded up
    whole = Image.open(io.BytesIO(data)).convert("RGB").reduce(3)
    assert np.array_equal(np.asarray(im), np.asarray(whole))  # strip by strip = the whole image box-averaged
    jim = reduced_image(jpeg_bytes(1, 3001, 2003), "JPEG", (3001, 2003), 1_000_000, "a.jpg", 40_000_000)
    assert jim.width * jim.height <= 1_000_000 and jim.mode == "RGB"
    assert reduced_image(data, "PNG", (3001, 2003), 10_000_000, "a.png", 40_000_000) is None  # small enough
    for size, bound in [((6000, 4000), 4_000_000), ((7, 5), 1), ((1, 100_000), 1000), ((4000, 3000), 12_000_000)]:
        f = factor(size, bound)
        assert -(-size[0] // f) * -(-size[1] // f) <= bound
        assert f == 1 or -(-size[0] // (f - 1)) * -(-size[1] // (f - 1)) > bound  # the smallest such factor


def with_chunks_after_the_pixels(data: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """``data`` with these chunks inserted just before IEND (where Pillow finds them only by decoding everything)."""
    import zlib

    made = b"".join(len(b).to_bytes(4, "big") + k + b + zlib.crc32(k + b).to_bytes(4, "big") for k, b in chunks)
    return data[:-12] + made + data[-12:]


@needs_proc
def test_metadata_of_a_large_png_reads_its_chunks_without_decoding_its_pixels():
    from deepsift.demo.metadata import metadata_signals

    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Canon", 6
    data = with_chunks_after_the_pixels(big_png(), [(b"tEXt", b"parameters\x00a lighthouse, Steps: 30, Sampler: Euler"),
                                                    (b"eXIf", exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif")
                                                     else exif.tobytes())])
    metadata_signals(big_png(700, 700), "image/png")  # imports
    got, grew = peak_growth(lambda: metadata_signals(data, "image/png"))
    assert grew < W * H * 4 // 8, f"peak RSS rose {grew / MB:.0f} MiB"
    assert got["generation"] == [{"key": "parameters", "tool": "AUTOMATIC1111 / Forge (parameters)",
                                  "value": "a lighthouse, Steps: 30, Sampler: Euler"}]
    assert got["exif"].get("Make") == "Canon" and got["orientation"] == 6
    with Image.open(io.BytesIO(data)) as im:  # what Pillow finds by decoding the whole file: the same chunks
        assert im.text["parameters"].startswith("a lighthouse") and im.getexif()[0x010F] == "Canon"
