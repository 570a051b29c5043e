"""UnivFD baseline: a linear probe on frozen CLIP image features.

After Ojha et al., "Towards Universal Fake Image Detectors that Generalize Across Generative
Models" (CVPR 2023): the image embedding of a frozen CLIP ViT (``image_embeds``, 768-d for
the default ``openai/clip-vit-large-patch14``) feeds a logistic regression. The CLIP model is a
hub id or any local folder in the ``transformers`` layout (a full ``CLIPModel`` checkpoint or
a vision-only one); only ``safetensors`` weights are loaded. Preprocessing follows the
folder's ``preprocessor_config.json`` (resize shortest edge, centre crop, rescale, normalise),
re-implemented with Pillow and numpy with ``transformers``' geometry.

The saved baseline stores the probe and the model *reference* (hub id or absolute path), not
a copy of the CLIP weights; the embedding size is checked when it is used again.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...exceptions import ModelError, ModelNotFoundError
from ...model.backbone import resolve_model_dir
from ...model.engine import Preprocessor
from .base import Baseline
from .probe import LogisticProbe

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPPreprocessing:
    """The subset of a CLIP image-processor config that defines the pixels the model sees."""

    resize_shortest_edge: int | None = 224
    resize_to: tuple[int, int] | None = None  # (height, width), when the config gives both
    resample: int = 3  # PIL bicubic
    crop: tuple[int, int] | None = (224, 224)  # (height, width); None = no centre crop
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, ...] | None = OPENAI_CLIP_MEAN
    std: tuple[float, ...] | None = OPENAI_CLIP_STD

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "CLIPPreprocessing":
        """Read a ``preprocessor_config.json`` dictionary (old int sizes and new dict sizes)."""
        size = cfg.get("size", 224)
        shortest, resize_to = None, None
        if cfg.get("do_resize", True):
            if isinstance(size, (int, float)):
                shortest = int(size)
            elif "shortest_edge" in size:
                shortest = int(size["shortest_edge"])
            elif "height" in size and "width" in size:
                resize_to = (int(size["height"]), int(size["width"]))
            else:
                raise ModelError(f"preprocessor_config.json: unsupported size {size!r}")
        crop = None
        if cfg.get("do_center_crop", True):
            c = cfg.get("crop_size", 224)
            crop = (int(c), int(c)) if isinstance(c, (int, float)) else (int(c["height"]), int(c["width"]))
        normalize = cfg.get("do_normalize", True)
        return cls(
            resize_shortest_edge=shortest, resize_to=resize_to, resample=int(cfg.get("resample", 3)), crop=crop,
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else None,
            mean=tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)) if normalize else None,
            std=tuple(cfg.get("image_std", OPENAI_CLIP_STD)) if normalize else None,
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> a float32 CHW array (what ``pixel_values`` holds for it)."""
        w, h = image.size
        if self.resize_to is not None:
            new_h, new_w = self.resize_to
        elif self.resize_shortest_edge is not None:
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.resize_shortest_edge, int(self.resize_shortest_edge * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            new_w, new_h = w, h
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample=Image.Resampling(self.resample))
        arr = np.asarray(image)
        if self.crop is not None:
            arr = _centre_crop(arr, *self.crop)
        x = arr.astype(np.float64)
        if self.rescale_factor is not None:
            x = x * self.rescale_factor
        x = x.astype(np.float32)
        if self.mean is not None and self.std is not None:
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _centre_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """``transformers``' centre crop: floor offsets; short sides zero-padded ceil-before."""
    h, w = arr.shape[:2]
    if h < height or w < width:
        ph, pw = max(height - h, 0), max(width - w, 0)
        before_h, before_w = math.ceil(ph / 2), math.ceil(pw / 2)
        arr = np.pad(arr, [(before_h, ph - before_h), (before_w, pw - before_w), (0, 0)])
        h, w = arr.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return arr[top : top + height, left : left + width]


def load_clip(model: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, CLIPPreprocessing]:
    """Load a frozen CLIP vision tower (with projection) and its preprocessing."""
    from transformers import AutoConfig, CLIPConfig, CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    folder = resolve_model_dir(model)
    cfg_path = folder / "preprocessor_config.json"
    if not cfg_path.is_file():
        raise ModelNotFoundError(f"{folder}: no preprocessor_config.json (needed for CLIP preprocessing)")
    if not (folder / "model.safetensors").is_file():
        raise ModelNotFoundError(f"{folder}: no model.safetensors (deepsift loads safetensors weights only)")
    try:
        prep = CLIPPreprocessing.from_config(json.loads(cfg_path.read_text()))
        config = AutoConfig.from_pretrained(folder)
        if not isinstance(config, (CLIPConfig, CLIPVisionConfig)):
            kind = getattr(config, "model_type", None) or type(config).__name__
            raise ModelError(f"{model}: a {kind} model, not a CLIP model; univfd needs a CLIP checkpoint "
                             f"(e.g. {DEFAULT_CLIP}) in the transformers layout")
        if isinstance(config, CLIPConfig):  # a full CLIP checkpoint: its projection size lives at the top
            vision = config.vision_config
            vision.projection_dim = config.projection_dim
            config = vision
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the text tower's weights are "unexpected" here, by design
        try:
            net = CLIPVisionModelWithProjection.from_pretrained(folder, config=config, use_safetensors=True)
        finally:
            hf_logging.set_verbosity(verbosity)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers/hub raise many types for a wrong or damaged checkpoint
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"{folder}: cannot load the CLIP vision model ({first})") from None
    return net.to(device).eval().requires_grad_(False), prep


class UnivFDBaseline(Baseline):
    """Logistic probe on frozen CLIP ViT image embeddings, UnivFD-style (see the module docstring)."""

    name = "univfd"

    def __init__(self, model: str = DEFAULT_CLIP, C: float = 1.0, *, batch_size: int = 32, device: str = "cpu",
                 workers: int | None = None, progress: bool | None = None, threshold: float = 0.5) -> None:
        super().__init__(batch_size=batch_size, workers=workers, progress=progress, threshold=threshold)
        path = Path(model).expanduser()
        self.model = str(path.resolve()) if path.is_dir() else str(model)  # a saved probe must find it again
        self.C = C
        self.device = device
        self._clip: tuple[torch.nn.Module, CLIPPreprocessing] | None = None

    def _loaded(self) -> tuple[torch.nn.Module, CLIPPreprocessing]:
        """The CLIP tower and preprocessing, loaded on first use."""
        if self._clip is None:
            self._clip = load_clip(self.model, self.device)
        return self._clip

    def _setup(self) -> None:
        self._loaded()

    def preprocessor(self) -> Preprocessor:
        return self._loaded()[1]  # a small frozen dataclass: picklable

    @torch.inference_mode()
    def _reduce(self, batch: np.ndarray) -> np.ndarray:
        net = self._loaded()[0]
        dtype = next(net.parameters()).dtype
        out = net(pixel_values=torch.from_numpy(batch).to(device=self.device, dtype=dtype))
        return out.image_embeds.float().cpu().numpy()

    def _fit_prepared(self, data: np.ndarray, y: np.ndarray) -> None:
        self.probe_ = LogisticProbe(C=self.C).fit(data, y)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        return self.probe_.decision_function(self._reduce(batch))

    def _state(self) -> dict[str, np.ndarray]:
        return self.probe_.state()

    def _restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.probe_ = LogisticProbe.from_state(arrays, C=self.C)

    def _extra_meta(self) -> dict[str, Any]:
        return {"embedding_dim": int(self.probe_.coef_.shape[0])}
