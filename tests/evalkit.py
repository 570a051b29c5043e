"""Helpers for the evaluation tests: a tiny CoDE model, fitted heads, datasets in every layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def real_pixels(rng: np.random.Generator, w: int = 64, h: int = 64) -> np.ndarray:
    """A smooth colour field ('real')."""
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def fake_pixels(rng: np.random.Generator, w: int = 64, h: int = 64, period: int = 4) -> np.ndarray:
    """A smooth field plus a periodic grid artefact ('generated')."""
    base = real_pixels(rng, w, h).astype(np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    grid = (((yy // period) + (xx // period)) % 2) * 90 - 45
    return np.clip(base + grid[..., None], 0, 255).astype(np.uint8)


def write_class(folder: Path, n: int, fake: bool, seed: int, period: int = 4, fmt: str = "png") -> list[Path]:
    """Write ``n`` images of one class into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arr = fake_pixels(rng, period=period) if fake else real_pixels(rng)
        p = folder / f"img_{i:03d}.{fmt}"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


def folders_dataset(root: Path, n: int = 8, gens: dict[str, int] | None = None, seed: int = 0) -> Path:
    """``root/real`` plus one folder per generator (name -> grid period)."""
    gens = gens or {"gen_a": 4, "gen_b": 8}
    write_class(root / "real", n, False, seed)
    for j, (g, period) in enumerate(gens.items()):
        write_class(root / g, n, True, seed + 100 + j, period)
    return root


def d3_test_dataset(root: Path, n: int = 6) -> Path:
    """The D3 test layout ``{augm,no_augm}/{real,gen_0,gen_1}``."""
    for k, split in enumerate(("augm", "no_augm")):
        folders_dataset(root / split, n, {"gen_0": 4, "gen_1": 8}, seed=10 * k)
    return root


def tiny_model(folder: Path) -> Path:
    """A 2-layer random ViT-Tiny saved in the CoDE layout (loads through Detector)."""
    from deepsift.model.backbone import build_code_config, create_backbone, save_backbone

    save_backbone(create_backbone(build_code_config(num_hidden_layers=2), seed=0), folder)
    return folder


def tiny_heads(model: Path, train_root: Path, out: Path, kinds: tuple[str, ...] = ("linear", "knn")) -> Path:
    """Fit heads on a folders-layout training set and save them as a headset."""
    from deepsift.model.fitting import fit_heads_from_folders

    fakes = sorted(str(p) for p in train_root.iterdir() if p.is_dir() and p.name != "real")
    fit_heads_from_folders([str(train_root / "real")], fakes, model, str(out), kinds=kinds, per_generator=False)
    return out


def header_rows(rows: list[tuple[str, str | None, object]]) -> tuple[list, list]:
    """Samples ('real' is label 0) and their header facts from (generator, group, HeaderInfo) rows: audit(*these)."""
    from deepsift.evaluate.datasets import Sample

    samples = [Sample(id=f"{gen}/{i}", source=b"", label=int(gen != "real"), generator=gen, group=group)
               for i, (gen, group, _) in enumerate(rows)]
    return samples, [info for *_, info in rows]


def header(fmt: str = "PNG", w: int = 256, h: int | None = None, **kw: object) -> object:
    """A HeaderInfo of a ``w`` x ``h`` file of ``fmt`` at 3 bytes per pixel (no file needed)."""
    from deepsift.evaluate.headers import HeaderInfo

    h = w if h is None else h
    sub = "4:2:0" if fmt == "JPEG" else "none"
    return HeaderInfo(fmt, w, h, 3 * w * h, 90.0 if fmt == "JPEG" else None, sub, **kw)
