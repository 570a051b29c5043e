"""Tiny worlds for ``deepsift adapt`` tests: a small base network whose heads know gen_a, the known data
(real + gen_a) and image-making helpers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from conftest import checker_image, smooth_image
from deepsift.cli import main
from trainkit import TINY_MODEL


def save_images(folder: Path, maker: Callable, n: int, rng: np.random.Generator, groups: int = 1, size: int = 64) -> None:
    """``n`` images from ``maker(rng, w, h)`` as PNG files, spread over ``groups`` sub-folders (prompts) when > 1."""
    for i in range(n):
        d = folder / f"p{i % groups}" if groups > 1 else folder
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(maker(rng, size, size)).save(d / f"{i:03d}.png")


def tiny_world(root: Path, n_known: int = 20, seed: int = 11) -> Path:
    """``root/known`` (real/ + fake/gen_a/) and ``root/base``: a tiny CoDE network with linear and kNN heads on it."""
    from deepsift.model.backbone import build_code_config, create_backbone, save_backbone

    rng = np.random.default_rng(seed)
    save_images(root / "known" / "real", smooth_image, n_known, rng)
    save_images(root / "known" / "fake" / "gen_a", checker_image, n_known, rng)
    base = root / "base"
    save_backbone(create_backbone(build_code_config(**TINY_MODEL), seed=0), base)
    assert main(["heads", "fit", "--real", str(root / "known" / "real"), "--fake", str(root / "known" / "fake"),
                 "--model", str(base), "--out", str(base / "heads"), "--classifier", "linear",
                 "--classifier", "knn", "--workers", "1"]) == 0
    return root
