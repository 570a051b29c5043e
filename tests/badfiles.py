"""Makers of awkward and broken image files, shared by the image and detector tests."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(seed: int, w: int = 300, h: int = 260) -> np.ndarray:
    """A deterministic RGB test picture with some structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 20 + 1, w // 20 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def make_all(d: Path) -> dict[str, Path]:
    """Write one file per awkward case into ``d``; returns name -> path."""
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    def save(name: str, im: Image.Image, **kw) -> None:
        out[name.split(".")[0]] = d / name
        im.save(d / name, **kw)
    base = Image.fromarray(rgb(1))
    save("good.jpg", base, quality=92)
    (d / "zero.jpg").write_bytes(b""); out["zero"] = d / "zero.jpg"
    buf = io.BytesIO(); base.save(buf, "JPEG", quality=92)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]); out["truncated"] = d / "truncated.jpg"
    (d / "notimage.png").write_text("<html><body>hello, I am not a picture</body></html>"); out["notimage"] = d / "notimage.png"
    (d / "bomb.png").write_bytes(png_with_size(12000, 9000)); out["bomb"] = d / "bomb.png"
    g16 = (np.linspace(0, 65535, 300 * 260).reshape(260, 300)).astype(np.uint16)
    save("gray16.png", Image.fromarray(g16))  # uint16 -> mode I;16
    save("cmyk.jpg", base.convert("CMYK"), quality=92)
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    save("palette.png", pal, transparency=0)
    save("grey.jpg", base.convert("L"), quality=92)
    frames = [Image.fromarray(rgb(10 + i)) for i in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["anim"] = d / "anim.gif"
    frames[0].save(d / "anim.webp", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    out["animwebp"] = d / "anim.webp"
    exif = Image.Exif(); exif[0x0112] = 6  # orientation: rotate 90 CW to display
    save("exif.jpg", Image.fromarray(rgb(3, 320, 240)), quality=92, exif=exif.tobytes())
    save("plain.webp", base, quality=90)
    base.save(d / "plain.tiff"); out["tiff"] = d / "plain.tiff"
    save("small.png", Image.fromarray(rgb(4, 150, 400)))
    return out
