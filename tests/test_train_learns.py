"""It learns: a reduced CoDE trained for 150 steps on fakes that differ from their reals only by an
upsampling generator's traces (2x bilinear upsampling with its own colour response) lowers the loss and
gives a linear head on held-out images that beats the same head on the untrained network. ~2-3 min on a CPU."""
from __future__ import annotations

import numpy as np
import torch

from deepsift.model.backbone import load_backbone
from deepsift.train.config import make_config
from deepsift.train.data import build_index, split_holdout
from deepsift.train.loader import probe_pixels
from deepsift.train.loop import build_model, train
from deepsift.train.probe import embed_uint8, probe_accuracy
from trainkit import make_dataset, tiny_config


def test_a_reduced_code_learns_a_generators_trace(tmp_path):
    shards, reals = make_dataset(tmp_path, 200, size=128, generators=("up-tint",))
    cfg = make_config(**tiny_config(steps=150, steps_per_epoch=50, batch_size=8, holdout=80, aug_max_ops=0, patch_size=16,
                                    lr=2e-3, warmup_steps=20, log_every=10, workers=2))
    index = build_index([str(shards)], real=str(reals))
    _, held = split_holdout(index, cfg.holdout, cfg.seed)
    x, y, _ = probe_pixels(index.files, held, cfg.seed + 1)  # untouched held-out images, never trained on
    cpu = torch.device("cpu")
    before = probe_accuracy(embed_uint8(build_model(cfg), x, cpu), y, cfg.seed)
    result = train([str(shards)], tmp_path / "run", cfg, real=str(reals), progress=False)
    after = probe_accuracy(embed_uint8(load_backbone(tmp_path / "run"), x, cpu), y, cfg.seed)
    first, last = float(np.mean(result.losses[:20])), float(np.mean(result.losses[-20:]))
    print(f"\nloss: first 20 steps {first:.3f}, last 20 steps {last:.3f}; held-out linear head balanced accuracy: "
          f"untrained {before:.3f}, trained {after:.3f} (per epoch: {result.head_accuracy})")
    assert last < first - 0.3  # chance is 2 log(9) = 4.39 at 8 records per batch
    assert after >= before + 0.1, (before, after)
