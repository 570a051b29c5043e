"""Speed of the confound audit (``deepsift eval audit``): headers only, no pixel decode.

    python benchmarks/bench_audit.py            # 100,000 images (target: < 60 s)
    python benchmarks/bench_audit.py --quick    # 10,000 images
    python benchmarks/bench_audit.py --workdir /tmp/audit100k   # keep the files between runs

Writes a ``real/<source>/...`` + ``fake/<generator>/...`` dataset of small JPEG (three
qualities, two subsamplings, some with EXIF), PNG (some with text chunks) and WebP files of
five sizes, then times, in this process: the walk (``data.layout.read_dataset``), the header
pass and the audit, and prints seconds and images/s. Side by side, the baseline it replaces:
a full decode (``images.decode_image``) of a 2,000-image sample, extrapolated to the same count,
and the ratio.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _variants() -> list[tuple[str, bytes]]:
    """Pre-encoded files: (extension, bytes) in many formats, qualities and sizes."""
    rng = np.random.default_rng(0)
    out = []
    for side in (96, 200, 256, 384, 640):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((side, int(side * 0.75)), Image.BICUBIC)
        for q in (75, 90, 95):
            for sub in (0, 2):
                exif = Image.Exif()
                if q == 90:
                    exif[0x0110] = "Camera"
                b = io.BytesIO()
                im.save(b, "JPEG", quality=q, subsampling=sub, exif=exif)
                out.append((".jpg", b.getvalue()))
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", "a prompt")
        for pnginfo in (None, info):
            b = io.BytesIO()
            im.save(b, "PNG", pnginfo=pnginfo)
            out.append((".png", b.getvalue()))
        b = io.BytesIO()
        im.save(b, "WEBP", quality=80)
        out.append((".webp", b.getvalue()))
    return out


def build(root: Path, n: int) -> None:
    """``n`` files: half real in 50 sources, half fake in 20 generators (skipped when already there)."""
    marker = root / f".built-{n}"
    if marker.exists():
        return
    variants = _variants()
    t = time.perf_counter()
    for i in range(n):
        real = i % 2 == 0
        folder = root / ("real" if real else "fake") / (f"source_{i % 50:02d}" if real else f"gen_{i % 40 // 2:02d}")
        if i < 100:
            folder.mkdir(parents=True, exist_ok=True)
        ext, data = variants[(i * 7 + (3 if real else 0)) % len(variants)]
        with open(folder / f"{i:07d}{ext}", "wb") as fh:
            fh.write(data)
    marker.touch()
    print(f"wrote {n:,} files in {time.perf_counter() - t:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 images instead of 100,000")
    ap.add_argument("--n", type=int, default=None, help="number of images")
    ap.add_argument("--workdir", default=None, help="keep the dataset here between runs")
    args = ap.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    from deepsift.data.layout import read_dataset
    from deepsift.evaluate.audit import audit, read_headers
    from deepsift.images import decode_image

    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        root = Path(args.workdir or tmp)
        build(root, n)
        os.sync() if hasattr(os, "sync") else None
        t0 = time.perf_counter()
        data = read_dataset(root)
        t1 = time.perf_counter()
        infos = read_headers(data.samples)
        t2 = time.perf_counter()
        res = audit(data.samples, infos)
        t3 = time.perf_counter()
        total = t3 - t0
        k = min(2000, len(data.samples))
        pick = np.random.default_rng(0).choice(len(data.samples), k, replace=False)
        t = time.perf_counter()
        for i in pick:
            decode_image(data.samples[i].source).load()
        decode = (time.perf_counter() - t) / k * len(data.samples)
        print(f"audit of {len(data.samples):,} images: {total:.1f} s, {len(data.samples) / total:,.0f} images/s "
              f"(target < 60 s); walk {t1 - t0:.1f} s, headers {t2 - t1:.1f} s, features+AUROC {t3 - t2:.1f} s")
        print(f"baseline, full decode of every image (from {k:,} decoded): {decode:.1f} s; "
              f"ratio decode/audit {decode / total:.1f}x")
        print(f"warnings: {len(res.warnings)}; format AUROC alone {res.features['format']['auroc']:.2f}")


if __name__ == "__main__":
    main()
