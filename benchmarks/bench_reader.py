"""Benchmark deepsift's D3 reader against `datasets` reading the same 10k-record shard set.

Both sides yield every record with its image bytes undecoded (``datasets``: ``Image(decode=False)``).

    python benchmarks/bench_reader.py [--quick] [--records 10000]
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


def _jpegs(n: int) -> list[bytes]:
    """``n`` distinct small JPEGs (reused across records to keep set-up quick)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def build(folder: Path, n_records: int, per_shard: int = 1000) -> list[Path]:
    """Write ``n_records`` 4-generator records as D3 shards with deepsift's writer."""
    from deepsift.data.schema import D3Record, Generation
    from deepsift.data.writer import ShardWriter

    pics = _jpegs(64)
    models = ("sd-1.4", "sd-2.1", "sd-xl", "deepfloyd-if")
    with ShardWriter(folder, n_generators=4, max_records_per_shard=per_shard) as w:
        for i in range(n_records):
            gens = [Generation(models[k], 32, 32, 50, f"gen{k}/{i}.jpg", pics[(i + k) % 64], seed=i * 4 + k) for k in range(4)]
            w.write(D3Record(str(i), f"prompt {i}", f"prompt {i}, 4k", "blurry", f"http://example.invalid/{i}.jpg", gens))
    return w.paths


def timed(fn) -> tuple[float, int]:
    """(seconds, records) of one full pass."""
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print figures and ratios."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="2,000 records")
    args = ap.parse_args(argv)
    n = 2000 if args.quick else args.records

    import datasets

    from deepsift.data.reader import read_d3

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "hf-cache")
        shards = build(Path(tmp) / "d3", n)
        files = [str(p) for p in shards]
        img_cols = [f"image_gen{k}" for k in range(4)]

        def ours() -> int:
            return sum(1 for r in read_d3(Path(tmp) / "d3") if r.generations[3].image)

        def ours_slim() -> int:
            return sum(1 for _ in read_d3(Path(tmp) / "d3", images=False))

        def hf_stream() -> int:
            ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
            for c in img_cols:
                ds = ds.cast_column(c, datasets.Image(decode=False))
            return sum(1 for row in ds if row["image_gen3"]["bytes"])

        def hf_map() -> int:
            ds = datasets.load_dataset("parquet", data_files=files, split="train")
            for c in img_cols:
                ds = ds.cast_column(c, datasets.Image(decode=False))
            return sum(1 for row in ds if row["image_gen3"]["bytes"])

        results = {}
        for name, fn in (("deepsift read_d3", ours), ("datasets streaming", hf_stream),
                         ("datasets load+iterate", hf_map), ("deepsift images=False", ours_slim)):
            secs, count = timed(fn)
            assert count == n, (name, count)
            results[name] = secs
    base = results["datasets streaming"]
    print(f"reader: {n} records x 4 generations, {len(shards)} shards")
    for name, secs in results.items():
        print(f"  {name:24s}: {secs:6.2f} s = {n / secs:8.0f} records/s  ({base / secs:5.2f}x datasets streaming)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
