"""A submitted model's preprocessing spec, and the image batches the worker builds from it.

The spec is the participant's, so it must not size the worker's memory: :func:`plan_batches` shrinks
the batch until one batch of float32 pixels fits the platform's cap (``max_batch_mb``), and counts the
worker's buffers (that batch plus the image being prepared) against the phase's ``model_memory_mb``:
the model process gets what is left. A spec whose batch of one cannot fit is refused up front.
:func:`batches` streams: one preallocated batch array, filled image by image, reused.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..exceptions import InvalidInputError
from .runfailures import ModelRunError, RunFailure

MIB = 1 << 20
RUNTIME_BASE_MB = 128  # a lower bound of the model process before its tensors (Python, numpy, onnxruntime)
PREPARE_IMAGES = 2  # the worker's transient buffers while one image is normalised, in preprocessed images


class Preprocessing(BaseModel):
    """How the platform turns a test image into the model's input, and how to read its output.

    Image -> RGB -> (``resize``: shorter side to this many px, bicubic) -> ``crop``: ``center`` crops
    ``input_size`` (zero-padding a short side), ``stretch`` resizes to it, -> pixels * ``scale`` ->
    (x - mean) / std -> ``layout``. Output: ``probability`` or ``score`` (one value per image, higher
    = fake; a (N, 2) output takes column ``fake_index``), or ``logits`` ((N, 2): softmax, column
    ``fake_index``; (N,) or (N, 1): sigmoid). ``batch_size`` is an upper bound: the platform sends
    smaller batches when its batch memory cap or the phase's memory limit needs it.
    """

    model_config = ConfigDict(extra="forbid")

    input_size: int | tuple[int, int] = 224
    resize: int | None = Field(None, ge=8, le=4096)
    crop: Literal["center", "stretch"] = "center"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = Field(1 / 255, gt=0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    output: Literal["probability", "score", "logits"] = "probability"
    fake_index: int = Field(1, ge=0, le=1)
    batch_size: int = Field(16, ge=1, le=256)

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (v, v) if isinstance(v, int) else v
        if not all(8 <= s <= 2048 for s in sides):
            raise ValueError("input_size sides are 8..2048 px")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("std values must be positive")
        return v

    @property
    def hw(self) -> tuple[int, int]:
        return (self.input_size, self.input_size) if isinstance(self.input_size, int) else tuple(self.input_size)  # type: ignore[return-value]

    def shape(self, n: int) -> tuple[int, int, int, int]:
        """The model input's shape for a batch of ``n`` images."""
        h, w = self.hw
        return (n, 3, h, w) if self.layout == "NCHW" else (n, h, w, 3)


def parse_preprocessing(data: object) -> Preprocessing:
    """A validated spec from JSON text/bytes or a dict; InvalidInputError naming the first bad field."""
    try:
        if isinstance(data, (str, bytes)):
            data = json.loads(data or "{}")
        return Preprocessing.model_validate(data or {})
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"preprocessing spec: not JSON ({exc.msg})") from None
    except RecursionError:  # [[[[...]]]]: short enough for the field, too deep for Python's JSON decoder
        raise InvalidInputError("preprocessing spec: nested too deeply (a spec is one flat JSON object)") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInputError(f"preprocessing spec: {'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}") from None


def _pixels(path: Path, spec: Preprocessing) -> np.ndarray:
    """One image as (H, W, 3) uint8 at the spec's input size."""
    from PIL import Image

    from ..images import decode_image

    im = decode_image(str(path))
    h, w = spec.hw
    if spec.resize:
        s = spec.resize / min(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
    if spec.crop == "stretch":
        return np.asarray(im.resize((w, h), Image.BICUBIC))
    arr = np.asarray(im)
    ph, pw = max(h - arr.shape[0], 0), max(w - arr.shape[1], 0)
    if ph or pw:
        arr = np.pad(arr, [(ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)])
    top, left = int(round((arr.shape[0] - h) / 2.0)), int(round((arr.shape[1] - w) / 2.0))
    return arr[top:top + h, left:left + w]


def _normalised(path: Path, spec: Preprocessing) -> np.ndarray:
    x = _pixels(path, spec).astype(np.float32)
    x *= np.float32(spec.scale)
    x -= np.array(spec.mean, np.float32)
    x /= np.array(spec.std, np.float32)
    return x


def preprocess(path: Path, spec: Preprocessing) -> np.ndarray:
    """One image as the model's float32 input (C, H, W) or (H, W, C)."""
    x = _normalised(path, spec)
    return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "NCHW" else x)


@dataclass(frozen=True)
class BatchPlan:
    """How a model run is batched, and what its buffers take from the phase's memory limit."""

    batch: int  # images per batch actually sent (at most the spec's batch_size)
    image_bytes: int  # one preprocessed image, float32
    buffer_bytes: int  # the worker's buffers: one batch plus the image being prepared
    child_memory_mb: int  # the model process's limit: the phase's limit less the worker's buffers

    @property
    def buffer_mb(self) -> int:
        return math.ceil(self.buffer_bytes / MIB)


def plan_batches(spec: Preprocessing, memory_mb: int, max_batch_bytes: int) -> BatchPlan:
    """The largest batch (<= the spec's) that fits the batch cap and the memory limit; ModelRunError if none does."""
    h, w = spec.hw
    image = 3 * h * w * 4
    by_cap = max_batch_bytes // image
    if by_cap < 1:
        raise ModelRunError(RunFailure.SPEC_TOO_LARGE, height=h, width=w, need_mb=math.ceil(image / MIB),
                            limit_mb=max_batch_bytes // MIB)
    # the model process needs its runtime and its own copy of the batch; the worker its buffers
    by_memory = ((memory_mb - RUNTIME_BASE_MB) * MIB - PREPARE_IMAGES * image) // (2 * image)
    if by_memory < 1:
        need = RUNTIME_BASE_MB * MIB + (2 + PREPARE_IMAGES) * image
        raise ModelRunError(RunFailure.SPEC_TOO_LARGE, height=h, width=w, need_mb=math.ceil(need / MIB),
                            limit_mb=memory_mb)
    batch = min(spec.batch_size, by_cap, by_memory)
    buffers = (batch + PREPARE_IMAGES) * image
    return BatchPlan(batch, image, buffers, memory_mb - math.ceil(buffers / MIB))


def batches(images: Sequence[Path], spec: Preprocessing, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first image, float32 batch) in order; one array reused, so use each before the next."""
    buf = np.empty(spec.shape(min(batch, len(images))), np.float32)
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        out = buf[:len(chunk)]
        for i, p in enumerate(chunk):
            x = _normalised(p, spec)
            out[i] = x.transpose(2, 0, 1) if spec.layout == "NCHW" else x
            del x
        yield start, out
