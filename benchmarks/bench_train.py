"""Benchmark ``deepsift train``: is the data pipeline the bottleneck?

Side by side, in one process, at the same batch:
  * model: forward + backward + AdamW step of the CoDE loss on pre-made uint8 view tensors (8 views
    per record), images/s on the device;
  * train: the same steps fed by the real pipeline (DataLoader worker processes reading D3 shards,
    decoding, cropping and augmenting), images/s, and its ratio to the model figure;
  * loader: the DataLoader alone with 1..N workers, and one worker's augmentation rate, so you can
    size --workers: workers needed = model images/s / per-worker images/s.

    python benchmarks/bench_train.py [--quick] [--device cuda] [--workers 4] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_data(folder: Path, n: int, size: int) -> tuple[Path, Path]:
    """``n`` records: a real JPEG per record (in a folder) and two generated JPEGs (in D3 shards)."""
    from deepsift.data.schema import D3Record, Generation
    from deepsift.data.writer import write_shard

    rng = np.random.default_rng(0)
    reals = folder / "real"
    reals.mkdir(parents=True)
    recs = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        base.save(reals / f"r{i}.jpg", quality=90)
        gens = []
        for k in range(2):
            buf = io.BytesIO()
            base.resize((size // 2, size // 2)).resize((size, size)).save(buf, "JPEG", quality=90)
            gens.append(Generation(model=f"g{k}", width=size, height=size, steps=None, filepath=None,
                                   image=buf.getvalue()))
        recs.append(D3Record(id=f"r{i}", original_prompt="p", positive_prompt="p", negative_prompt=None, url=None,
                             generations=gens))
    write_shard(recs, folder / "shards" / "d3-00000.parquet", n_generators=2)
    return folder / "shards", reals


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print figures and ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--batch-size", type=int, default=None, help="records per step (default: 8 on CPU, 128 on CUDA)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: the config's, auto = the CPUs)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 4 on CPU, 20 on CUDA)")
    ap.add_argument("--size", type=int, default=512, help="side of the stored images (D3: 256-640)")
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    args = ap.parse_args(argv)
    import torch

    from deepsift.train.config import make_config
    from deepsift.train.data import build_index
    from deepsift.train.loader import StepBatches, make_loader
    from deepsift.train.loop import build_model, micro_loss, param_groups

    cuda = args.device.startswith("cuda")
    B = args.batch_size or (128 if cuda else 8)
    steps = args.steps or (20 if cuda else (2 if args.quick else 4))
    cfg = make_config(batch_size=B, precision=args.precision, device=args.device,
                      **({"workers": args.workers} if args.workers else {}))
    dev = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        shards, reals = make_data(Path(tmp), max(64, B * 2), args.size)
        index = build_index([str(shards)], real=str(reals))
        print(f"setup: {len(index.records)} records, batch {B}, {steps} timed steps, device {args.device}, "
              f"{cfg.loader_workers()} loader workers", flush=True)
        model = build_model(cfg).to(dev)
        opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=1e-4)

        def step(views: torch.Tensor, s: int) -> None:
            loss = micro_loss(model, views, cfg, s, 0, 0, dev).total
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        fake = torch.randint(0, 256, (B, 8, 224, 224, 3), dtype=torch.uint8)
        if cuda:
            fake = fake.pin_memory()
        step(fake, 0)  # warm-up
        sync()
        t0 = time.perf_counter()
        for s in range(steps):
            step(fake, s)
        sync()
        model_rate = steps * B * 8 / (time.perf_counter() - t0)

        ds = StepBatches(index.files, index.records, B, cfg.seed, aug_max_ops=cfg.aug_max_ops)
        t0 = time.perf_counter()
        n_one = max(1, steps // 2)
        for s in range(n_one):
            ds[s]
        per_worker = n_one * B * 8 / (time.perf_counter() - t0)

        loader = make_loader(ds, 0, steps + 1, cfg.loader_workers(), pin_memory=cuda)
        it = iter(loader)
        step(next(it)["views"], 0)  # workers started, first batch made
        sync()
        t0 = time.perf_counter()
        for batch in it:
            step(batch["views"], batch["step"])
        sync()
        train_rate = steps * B * 8 / (time.perf_counter() - t0)

        loader_rates = {}
        for w in sorted({1, max(1, cfg.loader_workers() // 2), cfg.loader_workers()}):
            it = iter(make_loader(ds, 0, steps + 1, w, pin_memory=cuda))
            next(it)
            t0 = time.perf_counter()
            for _ in it:
                pass
            loader_rates[w] = steps * B * 8 / (time.perf_counter() - t0)

    print(f"device {args.device} ({torch.cuda.get_device_name() if cuda else f'{os.cpu_count()} CPU cores'}), "
          f"{args.precision}, {B} records x 8 views per step, images {args.size}px, {steps} timed steps")
    print(f"model fwd+bwd+step on pre-made tensors: {model_rate:8.1f} img/s")
    print(f"training with {cfg.loader_workers()} loader workers:  {train_rate:8.1f} img/s   ratio {train_rate / model_rate:.2f} "
          f"(target >= 0.85)")
    for w, r in loader_rates.items():
        print(f"loader alone, {w} worker(s):          {r:8.1f} img/s")
    print(f"one worker's read+decode+augment rate: {per_worker:8.1f} img/s  ->  workers needed to feed the model: "
          f"{model_rate / per_worker:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
