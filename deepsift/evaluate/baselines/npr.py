"""NPR baseline: a small ResNet-style CNN on Neighbouring Pixel Relationships, trained from scratch.

After Tan et al., "Rethinking the Up-Sampling Operations in CNN-based Generative Network for
Generalizable Deepfake Detection" (CVPR 2024): generators up-sample, which ties each pixel to
its neighbours. The network sees only ``x - up(down(x))`` (nearest neighbour, factor 2), the
residual that an up-sampled image lacks, scaled by 2/3 as in the reference code, and learns
from it with AdamW and binary cross-entropy. Input: a ``crop_size`` centre crop (zero padding
for smaller images, torchvision geometry), ImageNet-normalised. Training is seeded: the same
data, seed and thread count give the same weights.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ...exceptions import ModelError, UsageError
from ...images import center_crop_array, normalize_batch
from ...model.engine import Preprocessor
from ...output import progress
from .base import Baseline


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """``x - up2(down2(x))`` with nearest-neighbour resampling (NCHW, even H and W)."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    return x - F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm: unlike BatchNorm, scores never depend on batch statistics or their warm-up."""
    return nn.GroupNorm(min(8, channels), channels)


class _Block(nn.Module):
    """A ResNet basic block (two 3x3 convs + shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class NPRNet(nn.Module):
    """NPR residual -> 3x3 stem (stride 2) -> max-pool -> 2 basic blocks -> global pool -> logit."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), _norm(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = _Block(width, width, 1)
        self.layer2 = _Block(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake logits, shape (N,), from a normalised NCHW batch."""
        h = self.stem(npr_residual(x) * (2.0 / 3.0))
        h = self.layer2(self.layer1(h))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)).squeeze(1)


def centre_crop_image(image: Image.Image, size: int) -> np.ndarray:
    """The ``size`` x ``size`` centre crop of a decoded RGB image (zero padding for short sides)."""
    return np.ascontiguousarray(center_crop_array(np.asarray(image), size))


class NPRBaseline(Baseline):
    """Small ResNet on neighbouring-pixel residuals, trained from scratch (see the module docstring)."""

    name = "npr"

    def __init__(self, crop_size: int = 224, width: int = 32, epochs: int = 10, lr: float = 1e-3,
                 weight_decay: float = 1e-4, seed: int = 0, *, batch_size: int = 32, device: str = "cpu",
                 workers: int | None = None, progress: bool | None = None, threshold: float = 0.5) -> None:
        super().__init__(batch_size=batch_size, workers=workers, progress=progress, threshold=threshold)
        if crop_size < 8 or crop_size % 2:
            raise UsageError(f"npr: crop_size must be an even number >= 8, got {crop_size}")
        if epochs < 1:
            raise UsageError(f"npr: epochs must be >= 1, got {epochs}")
        self.crop_size = crop_size
        self.width = width
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device

    def preprocessor(self) -> Preprocessor:
        return functools.partial(centre_crop_image, size=self.crop_size)

    def _fit_prepared(self, data: np.ndarray, y: np.ndarray) -> None:
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        net = NPRNet(self.width).to(self.device)
        n = len(data)
        steps_per_epoch = math.ceil(n / self.batch_size)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps_per_epoch)
        pos_weight = torch.tensor(float((y == 0).sum()) / float((y == 1).sum()), device=self.device)
        labels = torch.as_tensor(y, dtype=torch.float32)
        history = []
        net.train()
        with progress(desc="npr: training", total=self.epochs * steps_per_epoch, unit="step",
                      enabled=self.progress) as bar:
            for epoch in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                total = 0.0
                for start in range(0, n, self.batch_size):
                    idx = order[start : start + self.batch_size]
                    xb = normalize_batch(data[idx.numpy()])
                    flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flips keep the 2x2 grid
                    xb[flip] = xb[flip].flip(-1)
                    loss = F.binary_cross_entropy_with_logits(net(xb.to(self.device)), labels[idx].to(self.device),
                                                              pos_weight=pos_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += loss.item() * len(idx)
                    bar.update()
                history.append(total / n)
                bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
        self.net_ = net.eval()
        self.history_ = history
        self.train_batch_size_ = self.batch_size  # shapes the weights, yet a runtime option: recorded

    @torch.inference_mode()
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        return self.net_(normalize_batch(batch).to(self.device)).float().cpu().numpy().astype(np.float64)

    def _train_summary(self) -> dict[str, Any]:
        return {"loss_per_epoch": [round(v, 6) for v in self.history_], "batch_size": self.train_batch_size_}

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}

    def _restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        net = NPRNet(self.width)
        try:
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        except RuntimeError as exc:
            raise ModelError(f"npr: stored weights do not match the network (width={self.width}): "
                             f"{str(exc).splitlines()[0]}") from None
        self.net_ = net.to(self.device).eval()
        self.history_ = list((meta.get("train") or {}).get("loss_per_epoch", []))
