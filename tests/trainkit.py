"""Tiny training datasets made by tests: D3 shards whose fakes differ from the reals only by low-level traces.

Each real image is a smooth random scene plus fine sensor-like noise; its fakes are the same
scene passed through an "upsampling generator" (downscaled, then upscaled with a generator-specific
filter and, for ``up-tint``, colour response), so content is shared and only the generator's trace
tells them apart.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from deepsift.data.schema import D3Record, Generation
from deepsift.data.writer import write_shard

GENERATORS = {"up-nearest": "nearest", "up-bilinear": "bilinear", "up-tint": "tint"}
"""Generator name -> its trace: 2x nearest or bilinear upsampling, or bilinear upsampling through a decoder
with its own colour response (channel gains)."""
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "patch_size": 32}


def real_image(i: int, size: int = 64) -> Image.Image:
    """A smooth random scene with fine noise, deterministic in ``i``."""
    rng = np.random.default_rng(i)
    base = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    im = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC), np.float32)
    im += rng.normal(0, 12, im.shape)
    return Image.fromarray(np.clip(im, 0, 255).astype(np.uint8))


def upsampled(im: Image.Image, kind: str) -> Image.Image:
    """The upsampling generator: half size, then back up with ``kind``'s trace."""
    w, h = im.size
    small = im.resize((w // 2, h // 2), Image.BILINEAR)
    if kind == "tint":  # a decoder with its own colour response: bilinear 2x upsampling, channel gains
        arr = np.asarray(small.resize((w, h), Image.BILINEAR), np.float32) * np.array([1.12, 1.0, 0.88], np.float32)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    return small.resize((w, h), Image.NEAREST if kind == "nearest" else Image.BILINEAR)


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_dataset(root: Path, n: int, per_shard: int = 16, generators: Sequence[str] = ("up-nearest", "up-bilinear"), size: int = 64,
                 with_real: bool = True, first: int = 0) -> tuple[Path, Path]:
    """Write ``n`` records as D3 shards under ``root/shards`` and their reals under ``root/real``; return both."""
    shards, reals = root / "shards", root / "real"
    shards.mkdir(parents=True, exist_ok=True)
    reals.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(first, first + n):
        r = real_image(i, size)
        rid = f"rec{i:05d}"
        if with_real:
            r.save(reals / f"{rid}.png")
        gens = [Generation(model=f"model-{g}", width=size, height=size, steps=None, filepath=None,
                           image=png(upsampled(r, f)), generator=g) for g, f in ((g, GENERATORS[g]) for g in generators)]
        records.append(D3Record(id=rid, original_prompt="p", positive_prompt="p", negative_prompt=None,
                                url=f"http://example.invalid/{i}.png", generations=gens))
    for s in range(0, n, per_shard):
        write_shard(records[s:s + per_shard], shards / f"d3-{s // per_shard:05d}.parquet",
                    n_generators=len(generators))
    return shards, reals


def tiny_config(**over) -> dict:
    """Keys of a fast run on this CPU (a reduced CoDE)."""
    cfg = dict(TINY_MODEL, batch_size=4, workers=1, steps=4, steps_per_epoch=2, warmup_steps=1, holdout=8,
               precision="fp32", log_every=1, patience=0)
    cfg.update(over)
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    """The config as a YAML file (JSON is YAML)."""
    path.write_text(json.dumps(cfg))
    return path


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(p * q for p, q in zip(a, b))
    return dot / (math.sqrt(sum(p * p for p in a)) * math.sqrt(sum(q * q for q in b)))


def _nce(q: list[float], k: list[float], negs: list[list[float]], tau: float) -> float:
    pos = math.exp(_cos(q, k) / tau)
    return -math.log(pos / (pos + sum(math.exp(_cos(q, n) / tau) for n in negs)))


def reference_loss(emb: list, pr: list[int], pf: list[int], tau: float = 0.1) -> float:
    """Section 2 of the reference, term by term, with plain Python loops (views: r, Ar, Gr, Lr, x, Ax, Gx, Lx)."""
    B = len(emb)
    real = fake = 0.0
    for i in range(B):
        real += 0.5 * (_nce(emb[i][0], emb[pr[i]][1], [emb[j][5] for j in range(B)], tau)
                       + _nce(emb[i][3], emb[i][2], [emb[j][6] for j in range(B)], tau))
        fake += 0.5 * (_nce(emb[i][4], emb[pf[i]][5], [emb[j][1] for j in range(B)], tau)
                       + _nce(emb[i][7], emb[i][6], [emb[j][2] for j in range(B)], tau))
    return real / B + fake / B
