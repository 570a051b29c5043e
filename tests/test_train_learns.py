"""It learns, the right objective: a reduced CoDE trained for 150 steps on fakes that differ from their reals only by
an upsampling generator's traces (2x bilinear upsampling with its own colour response).

* The objective: the run's first loss equals the reference formula (tau 0.1, L_real + L_fake, the positive a
  different image of the same class), written out with loops in trainkit, on that step's batch.
* The loss falls (in 150 steps mostly L_real; L_fake barely moves on this data, so it is not asserted).
* Measured on records never used for training or for choosing anything (a separate dataset; the run keeps its
  last step): a linear probe fitted on 80 of them and scored on 80 others beats every one of five untrained
  networks by 2.5 times their spread (and their mean by 0.05). ~3 min on a CPU.

Searched for a setup with a wider margin, not found yet (2026-12-07, same measurement, 5 untrained seeds,
probe fitted on 80 unused records and scored on 80 others): a colour trace is read by a linear probe on
untrained features almost as well as colour alone allows (~0.81 here), so training adds little; traces
without a colour shift (2x nearest or bilinear upsampling, 64 px, 100 steps, lr 2e-3 or 1e-2) leave the loss
flat (4.23, uniform ~4.39) and the probe at chance (untrained 0.51-0.54, trained 0.50-0.51); up-tint at 64 px
with patch 32: untrained 0.67 +/- 0.04, trained 0.71; a kNN head instead of the linear probe on this setup:
untrained 0.711 +/- 0.029, trained 0.831 (no better ratio to the spread).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deepsift.model.backbone import load_backbone
from deepsift.train.config import make_config
from deepsift.train.data import build_index
from deepsift.train.holdout import held_out
from deepsift.train.loader import StepBatches, probe_pixels
from deepsift.train.loop import build_model, step_perms, to_pixels, train
from deepsift.train.metrics import read_log
from deepsift.train.probe import embed_uint8, probe_accuracy
from trainkit import make_dataset, reference_loss, tiny_config

CPU = torch.device("cpu")


def _probe(model: torch.nn.Module, fit: tuple, score: tuple) -> float:
    acc = probe_accuracy(embed_uint8(model, fit[0], CPU), fit[1], embed_uint8(model, score[0], CPU), score[1])
    assert acc is not None
    return acc


def test_a_reduced_code_learns_a_generators_trace_with_the_reference_objective(tmp_path):
    shards, reals = make_dataset(tmp_path / "train", 200, size=128, generators=("up-tint",))
    m_shards, m_reals = make_dataset(tmp_path / "measure", 160, size=128, generators=("up-tint",), first=100_000)
    cfg = make_config(**tiny_config(steps=150, steps_per_epoch=50, batch_size=8, holdout=8, aug_max_ops=0,
                                    patch_size=16, lr=2e-3, warmup_steps=20, log_every=10, workers=2, keep="last"))
    measure = build_index([str(m_shards)], real=str(m_reals))
    fit = probe_pixels(measure.files, measure.records[:80], 1)[:2]
    score = probe_pixels(measure.files, measure.records[80:], 1)[:2]
    untrained = [_probe(build_model(dataclasses.replace(cfg, seed=s)), fit, score) for s in range(5)]

    index = build_index([str(shards)], real=str(reals))
    recs, _ = held_out(index, cfg)
    views = StepBatches(index.files, recs, cfg.batch_size, cfg.seed, aug_max_ops=cfg.aug_max_ops)[0]["views"]
    with torch.no_grad():
        emb = build_model(cfg)(pixel_values=to_pixels(views, CPU)).last_hidden_state[:, 0].view(8, 8, -1)
    pr, pf = step_perms(cfg.seed, 0, 0, 0, cfg.batch_size)
    assert not bool((pr == torch.arange(8)).any() or (pf == torch.arange(8)).any())
    objective = reference_loss(emb.double().tolist(), pr.tolist(), pf.tolist(), tau=0.1)

    first = train([str(shards)], tmp_path / "first", dataclasses.replace(cfg, steps=1), real=str(reals), progress=False)
    assert first.losses[0] == pytest.approx(objective, rel=1e-4), (first.losses[0], objective)  # checked first: fast

    result = train([str(shards)], tmp_path / "run", cfg, real=str(reals), progress=False)
    assert result.losses[0] == first.losses[0]
    after = _probe(load_backbone(tmp_path / "run"), fit, score)
    log = [e for e in read_log(tmp_path / "run/train_log.jsonl") if "loss_real" in e]
    start, end = log[0], log[-1]
    spread = float(np.std(untrained))
    print(f"\nloss_real {start['loss_real']:.3f} -> {end['loss_real']:.3f}, loss_fake {start['loss_fake']:.3f} -> "
          f"{end['loss_fake']:.3f}; probe on unused records: untrained {np.round(untrained, 3).tolist()} "
          f"(spread {spread:.3f}), trained {after:.3f}")
    first_mean, last_mean = float(np.mean(result.losses[:20])), float(np.mean(result.losses[-20:]))
    assert last_mean < first_mean - 0.3 and end["loss_real"] < start["loss_real"] - 0.15, (first_mean, last_mean)
    # Seen on 2026-12-07: untrained 0.756-0.800 (spread 0.017), trained 0.850 after 150 steps (0.844 after 300):
    # on records never used for anything the gain is ~0.05, not the 0.1 the old in-sample yardstick suggested.
    assert after >= max(untrained) + 2.5 * spread and after >= float(np.mean(untrained)) + 0.05, (untrained, after)
