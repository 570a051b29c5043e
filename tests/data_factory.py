"""Small D3 records and shards made by tests (no download): used by ``tests/test_data_*.py``."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from deepsift.data.schema import D3Record, Generation
from deepsift.data.writer import write_shard

MODELS = ("stable-diffusion-1-4", "stable-diffusion-2-1", "stable-diffusion-xl", "deepfloyd-if")


def encoded_image(seed: int, size: tuple[int, int] = (24, 16), fmt: str = "JPEG") -> bytes:
    """A small random image, encoded."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def make_record(i: int, n_gen: int = 4, fmt: str = "JPEG", url: str | None = None) -> D3Record:
    """Record ``i`` with ``n_gen`` generations of distinct models, sizes and seeds."""
    gens = [
        Generation(model=MODELS[k % len(MODELS)], width=24 + k, height=16, steps=20 + k,
                   filepath=f"gen{k}/{i}.jpg", image=encoded_image(1000 * k + i, (24 + k, 16), fmt), seed=7 * i + k)
        for k in range(n_gen)
    ]
    return D3Record(id=str(100000 + i), original_prompt=f"a photo number {i}", positive_prompt=f"a photo number {i}, detailed",
                    negative_prompt="blurry" if i % 2 else None, url=url or f"http://example.invalid/{i}.jpg",
                    generations=gens)


def make_shards(folder: Path, n_records: int, per_shard: int, n_gen: int = 4) -> list[D3Record]:
    """Write ``n_records`` records as ``d3-0000k.parquet`` shards; return the records."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [make_record(i, n_gen) for i in range(n_records)]
    for s in range(0, n_records, per_shard):
        write_shard(records[s:s + per_shard], folder / f"d3-{s // per_shard:05d}.parquet", n_generators=n_gen)
    return records


def detailed_picture(rng: np.random.Generator, w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour + noise + sharp lines: every PNG filter type, JPEG block and chroma sample differs somewhere."""
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 4), dtype=np.uint8)
    a = np.asarray(Image.fromarray(small, "RGBA").resize((w, h), Image.BICUBIC)).astype(np.int16)
    a = a + rng.integers(-25, 25, (h, w, 4))
    a[::37, :, 0] = 255
    a[:, ::29, 2] = 0
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGBA").convert(mode)
