"""Helpers for the demo's tests: a tiny CoDE model with fitted heads, a demo app, test images."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from serverkit import make_settings


def fit_demo_heads(model_dir: Path, folders: dict[str, Path], out: Path) -> Path:
    """linear/knn/svm heads and per-generator heads (gen_a, gen_b) on the labelled folders, as `heads fit` does."""
    from deepsift.model.fitting import fit_heads_from_folders

    fit_heads_from_folders([str(folders["real"])], [str(folders["gen_a"]), str(folders["gen_b"])], str(model_dir),
                           str(out), workers=1)
    return out


def demo_settings(database_url: str, data_dir: Path, model_dir: Path, heads_dir: Path, quiz: Path | None = None,
                  **demo: Any):
    """Server settings whose demo runs the tiny model (loopback URLs allowed unless ``demo`` says otherwise)."""
    opts: dict[str, Any] = {"model": str(model_dir), "heads": str(heads_dir), "allow_private_urls": True,
                            "url_timeout": 2.0, "quiz_dataset": str(quiz) if quiz else None}
    opts.update(demo)
    return make_settings(database_url, data_dir, domain_overrides={"demo": opts})


def jpeg_bytes(seed: int = 0, w: int = 300, h: int = 260, quality: int = 92, **save: Any) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality, **save)
    return buf.getvalue()


def png_bytes(seed: int = 0, w: int = 256, h: int = 256, text: dict[str, str] | None = None) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()
