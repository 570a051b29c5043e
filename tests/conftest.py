"""Shared fixtures: a random CoDE-format model saved like the published one, and image files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with the hub offline (a test may lift it explicitly, e.g. to test errors)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory):
    """Tiny random diffusers pipeline, VAE and tokenizer saved like hub models (built once per session)."""
    from tiny_models import shared_tiny_models

    return shared_tiny_models(tmp_path_factory)


@pytest.fixture(scope="session")
def code_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ViT-Tiny in the published aimagelab/CoDE layout, random weights, saved by transformers."""
    from deepsift.model.backbone import create_backbone, save_backbone

    out = tmp_path_factory.mktemp("code-model")
    save_backbone(create_backbone(seed=0), out)
    return out


def smooth_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A 'real-looking' smooth colour field (low-frequency noise)."""
    small = rng.integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def checker_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A 'generated-looking' image: smooth field plus a periodic 8-px grid artefact."""
    base = smooth_image(rng, w, h).astype(np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    grid = (((yy // 4) + (xx // 4)) % 2) * 60 - 30
    return np.clip(base + grid[..., None], 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def labelled_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders real/, gen_a/, gen_b/ of separable synthetic images (PNG and JPEG mixed)."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(1)
    out = {}
    for name, maker in (("real", smooth_image), ("gen_a", checker_image), ("gen_b", checker_image)):
        d = root / name
        d.mkdir()
        for i in range(12):
            arr = maker(rng, 256, 256)
            if name == "gen_b":
                arr = arr[:, ::-1].copy()
            Image.fromarray(arr).save(d / f"{i:03d}.{'png' if i % 2 else 'jpg'}", quality=95)
        out[name] = d
    return out
