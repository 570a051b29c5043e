"""Detect at GPU-server scale (issue 12): model-only on the device, decoding with N processes, end-to-end, exactness.

One script, under 5 minutes on a 16-core H200 server (``--n 4096``), and runnable on any machine
with ``--device cpu`` (small counts: then the GPU figures are still to be measured). It prints:

* model-only: uint8 batches already on the device, normalised there, through a random CoDE
  ViT-Tiny, fp32 and bf16, images/s;
* decode-only: the engine's worker processes decoding + cropping the image set, for 1, 2, 4, ...
  processes up to the machine's CPUs, images/s (the all-core decode ceiling is the best);
* end-to-end: ``Detector.predict_iter`` over the folder (``--workers auto``), fp32 and bf16, and
  its ratio to min(model-only, decode ceiling) (target >= 0.8);
* exactness: the fp32 embeddings of 64 images on the device vs on the CPU, max |difference|
  (target <= 1e-5: TF32 is off in fp32), and the bf16-vs-fp32 label agreement.

    python benchmarks/bench_detect_gpu.py                      # --device auto: CUDA when present
    python benchmarks/bench_detect_gpu.py --device cpu --n 256 # anywhere (a few minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detect import build_model, natural_image  # noqa: E402
from deepsift.model.detector import Detector  # noqa: E402
from deepsift.model.devices import exact_fp32, normalize_on_device, resolve_device  # noqa: E402
from deepsift.model.engine import prepared_items, usable_cpus  # noqa: E402
from deepsift.sources import expand_inputs  # noqa: E402


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` images of ``size`` px, JPEG q90 and PNG alternating (a few distinct pictures, files all distinct)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pictures = [natural_image(rng, fake=bool(i % 2), size=size) for i in range(16)]
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
        if not p.exists():
            a = pictures[i % 16].copy()
            a[0, 0] = (i % 256, (i // 256) % 256, 7)  # every file its own bytes
            Image.fromarray(a).save(p, quality=90)
        paths.append(p)
    return paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(det: Detector, batch: np.ndarray, rounds: int, autocast: bool = False) -> list[float]:
    """Images/s of normalise + forward for a uint8 batch already on the device (after a warm-up).

    ``autocast``: fp32 weights under ``torch.autocast(bfloat16)`` (the other way to run bf16).
    """
    on_device = torch.from_numpy(batch).to(det.device)
    param = next(det.backbone.parameters())
    rates = []
    cast = torch.autocast(det.device.type, dtype=torch.bfloat16) if autocast else exact_fp32(det.device, det.precision)
    with torch.inference_mode(), cast:
        for r in range(rounds + 1):
            sync(det.device)
            t0 = time.perf_counter()
            out = det.backbone(pixel_values=normalize_on_device(on_device).to(param.dtype)).last_hidden_state[:, 0]
            out.float().sum().item()
            if r:  # round 0 is the warm-up at this shape
                rates.append(len(batch) / (time.perf_counter() - t0))
    return rates


def decode_only(paths: list[Path], processes: int) -> float:
    """Images/s of the engine's worker processes decoding and cropping every path (start-up included)."""
    t0 = time.perf_counter()
    n = sum(it.pixels is not None for it in prepared_items([str(p) for p in paths], workers=processes,
                                                           max_in_flight=256, decode_in="processes"))
    return n / (time.perf_counter() - t0)


def end_to_end(det: Detector, folder: Path) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    labels = np.array([p.label if p.error is None else -1 for p in det.predict_iter(expand_inputs([str(folder)]))])
    return len(labels) / (time.perf_counter() - t0), labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    ap.add_argument("--n", type=int, help="images (default: 4096 on CUDA, 256 on the CPU)")
    ap.add_argument("--size", type=int, default=512, help="image side in px")
    ap.add_argument("--batch-size", type=int, help="default: 1024 on CUDA, 32 on the CPU")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of the model-only forward")
    ap.add_argument("--workdir", help="keep the images here between runs")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    n = args.n or (4096 if cuda else 256)
    bs = args.batch_size or (1024 if cuda else 32)
    cpus = usable_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        root = Path(args.workdir or tmp)
        t0 = time.perf_counter()
        paths = make_images(root / "images", n, args.size)
        model_dir = build_model(root, paths[:64])
        name = torch.cuda.get_device_name(device) if cuda else "CPU"
        print(f"setup: {n} images {args.size}x{args.size} (JPEG q90 / PNG), random CoDE ViT-Tiny, batch {bs}, "
              f"device {device} ({name}), {cpus} CPUs, torch {torch.__version__}; {time.perf_counter() - t0:.0f} s")
        if not cuda:
            print("NOTE: no GPU here: the figures below are the CPU's; the GPU figures are still to be measured")

        from deepsift.images import crop_uint8, decode_image

        batch = np.stack([crop_uint8(decode_image(str(p))) for p in paths[: min(bs, n)]])
        dets = {prec: Detector.load(str(model_dir), device=str(device), precision=prec, batch_size=bs)
                for prec in ("fp32", "bf16")}
        print("\n== model-only on the device (uint8 batch on the device, normalised there; median of rounds)")
        ceiling = {}
        for prec, det in dets.items():
            rates = model_only(det, batch, args.rounds)
            ceiling[prec] = float(np.median(rates))
            print(f"{prec}: {ceiling[prec]:9.0f} img/s (spread {min(rates):.0f}-{max(rates):.0f})")
        rates = model_only(dets["fp32"], batch, args.rounds, autocast=True)
        print(f"bf16 by autocast (fp32 weights): {float(np.median(rates)):9.0f} img/s "
              f"(deepsift's bf16 uses bf16 weights: {ceiling['bf16'] / float(np.median(rates)):.2f}x this)")

        print("\n== decode + crop only, worker processes (start-up included)")
        counts = sorted({c for c in (1, 2, 4, 8, 16, 32, cpus) if c <= cpus})
        decode = {c: decode_only(paths, c) for c in counts}
        for c, r in decode.items():
            print(f"{c:>3} processes: {r:8.0f} img/s  ({r / decode[1]:.1f}x one process)")
        ceiling_decode = max(decode.values())

        print("\n== end-to-end detect (--workers auto) vs min(model-only, decode ceiling); target >= 0.80")
        labels = {}
        for prec, det in dets.items():
            end_to_end(det, root / "images") if n <= 512 else None  # warm-up on small sets (large: one pass)
            rate, labels[prec] = end_to_end(det, root / "images")
            bound = min(ceiling[prec], ceiling_decode)
            print(f"{prec}: {rate:8.0f} img/s | bound {bound:8.0f} img/s | ratio {rate / bound:.2f}")
        print(f"bf16 vs fp32: same label on {100 * float(np.mean(labels['bf16'] == labels['fp32'])):.2f} % "
              f"(target >= 99.5 %)")

        print("\n== fp32 exactness: device vs CPU embeddings of 64 images (target max |diff| <= 1e-5)")
        sample = [str(p) for p in paths[:64]]
        on_dev = dets["fp32"].embed(sample)
        on_cpu = Detector.load_backbone_only(str(model_dir), device="cpu").embed(sample)
        diff = float(np.abs(on_dev - on_cpu).max())
        print(f"max |emb({device}) - emb(cpu)| = {diff:.2e}" + ("" if cuda else "  (both on the CPU here)"))
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
