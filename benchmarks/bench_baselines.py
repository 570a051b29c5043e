"""Throughput of the baselines' ``predict`` against decoding alone, on the same images, same process.

    python benchmarks/bench_baselines.py [--quick] [--n 200] [--size 256]

Builds synthetic PNGs (see deepsift.evaluate.baselines.synthetic), fits each baseline on them
(NPR: 1 epoch, width 16; UnivFD: a random CLIP ViT-B/16-sized vision tower built from a config)
and prints images/s for decode-only and for predict, with the ratio side by side.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from deepsift.evaluate.baselines import get_baseline
from deepsift.evaluate.baselines.synthetic import write_synthetic_folders
from deepsift.images import decode_image


def _tiny_clip(folder: Path, quick: bool) -> Path:
    """A randomly initialised CLIP (ViT-B/16-like unless quick) saved in the hub layout."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vision = dict(image_size=224, patch_size=16, hidden_size=192 if quick else 768,
                  intermediate_size=768 if quick else 3072, num_hidden_layers=4 if quick else 12,
                  num_attention_heads=3 if quick else 12)
    cfg = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                      num_attention_heads=4, vocab_size=100, max_position_embeddings=16,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1),
                     vision_config=vision, projection_dim=512)
    CLIPModel(cfg).save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True}))
    return folder


def main() -> None:
    """Run the benchmark and print one line per baseline."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer, smaller images and a smaller CLIP")
    ap.add_argument("--n", type=int, default=None, help="images per class")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    n = args.n or (40 if args.quick else 200)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        real, fake = write_synthetic_folders(root / "data", n, n, sizes=(args.size,), seed=0)
        real_files, fake_files = sorted(map(str, real.glob("*.png"))), sorted(map(str, fake.glob("*.png")))
        files = real_files + fake_files
        start = time.perf_counter()
        for f in files:
            decode_image(f)
        decode_rate = len(files) / (time.perf_counter() - start)
        print(f"decode only: {decode_rate:8.1f} img/s ({len(files)} PNGs, {args.size}x{args.size})")
        configs = {
            "frequency": dict(),
            "npr": dict(epochs=1, width=16),
            "univfd": dict(model=str(_tiny_clip(root / "clip", args.quick))),
        }
        for name, params in configs.items():
            det = get_baseline(name, progress=False, **params)
            start = time.perf_counter()
            det.fit(real_files, fake_files)
            fit_s = time.perf_counter() - start
            det.predict(files[:8])  # warm-up
            start = time.perf_counter()
            det.predict(files)
            rate = len(files) / (time.perf_counter() - start)
            print(f"{name:9s} predict: {rate:8.1f} img/s  vs decode only {decode_rate:8.1f} img/s  "
                  f"ratio {rate / decode_rate:5.2f}x  (fit {fit_s:.1f} s)")


if __name__ == "__main__":
    main()
