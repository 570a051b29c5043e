"""The training loop's state, pinned down: derangements, optimizer groups, LR values, gradient accumulation,
the ranks' records, and every piece of state a resume restores."""
from __future__ import annotations

import json
import math
from collections import Counter
from itertools import permutations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import deepsift.train.probe as probe
from deepsift.train.config import make_config
from deepsift.train.data import Record, build_index
from deepsift.train.holdout import held_out
from deepsift.train.loader import StepBatches
from deepsift.train.loop import build_model, lr_at, micro_loss, param_groups, step_perms, to_pixels, train
from deepsift.train.loss import code_loss, derangement
from deepsift.train.metrics import read_log
from trainkit import make_dataset, tiny_config

CPU = torch.device("cpu")
CHI2_P001 = {8: 26.12, 43: 77.42}  # chi-square quantile at p = 0.001 for these degrees of freedom


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("sdata"), 40)


def _derangements(n: int) -> list[tuple[int, ...]]:
    return [p for p in permutations(range(n)) if all(p[i] != i for i in range(n))]


def _chi2(counts: Counter, support: list) -> float:
    expected = sum(counts.values()) / len(support)
    assert set(counts) <= set(support)
    return sum((counts.get(k, 0) - expected) ** 2 / expected for k in support)


def test_derangement_is_uniform_over_all_derangements():
    support = _derangements(5)  # 44 of them
    g = torch.Generator().manual_seed(0)
    counts = Counter(tuple(derangement(5, g).tolist()) for _ in range(4400))
    assert len(counts) == 44 and _chi2(counts, support) < CHI2_P001[43]


def test_the_loop_s_derangements_are_uniform_and_fresh_at_every_step_rank_and_micro_batch():
    support = _derangements(4)  # 9; a cyclic-shift fallback would give i -> i-1 about 2/3 of the time
    real, fake = Counter(), Counter()
    for step in range(1800):
        pr, pf = step_perms(42, step, 0, 0, 4)
        real[tuple(pr.tolist())] += 1
        fake[tuple(pf.tolist())] += 1
    assert _chi2(real, support) < CHI2_P001[8] and _chi2(fake, support) < CHI2_P001[8], (real, fake)
    pairs = [tuple(torch.cat(step_perms(42, s, 0, 0, 4)).tolist()) for s in range(400)]
    assert len(set(pairs)) > 60  # 81 possible pairs: fresh at each step, the two drawn independently
    assert sum(p[:4] == p[4:] for p in pairs) < 400 * 0.25  # equal about 1 time in 9
    other = [tuple(torch.cat(step_perms(42, s, r, m, 4)).tolist()) for s in range(40) for r, m in ((1, 0), (0, 1))]
    assert sum(a == b for a, b in zip(other[0::2], pairs[:40])) < 15 and sum(
        a == b for a, b in zip(other[1::2], pairs[:40])) < 15  # another rank or micro-batch draws its own
    assert [tuple(torch.cat(step_perms(42, s, 0, 0, 4)).tolist()) for s in range(400)] == pairs  # seeded


def test_micro_loss_takes_that_step_s_derangements(tiny_data):
    shards, reals = tiny_data
    cfg = make_config(**tiny_config(batch_size=4))
    index = build_index([str(shards)], real=str(reals))
    recs, _ = held_out(index, cfg)
    views = StepBatches(index.files, recs, 4, cfg.seed)[0]["views"]
    model = build_model(cfg).eval()
    with torch.no_grad():
        emb = model(pixel_values=to_pixels(views, CPU)).last_hidden_state[:, 0].view(4, 8, -1)
        got = [float(micro_loss(model, views, cfg, s, 0, 0, CPU).total) for s in range(6)]
        want = [float(code_loss(emb, *step_perms(cfg.seed, s, 0, 0, 4)).total) for s in range(6)]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert len({round(v, 5) for v in got}) > 1  # the same views, other positives: other losses


def test_no_weight_decay_on_biases_norms_position_embedding_and_cls_token():
    model = build_model(make_config(**tiny_config()))
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    got_no = {names[id(p)] for p in no_decay["params"]}
    got_yes = {names[id(p)] for p in decay["params"]}
    want_no = {n for n in names.values() if n.endswith(".bias") or "layernorm" in n
               or n in ("embeddings.cls_token", "embeddings.position_embeddings")}
    assert got_no == want_no and got_yes == set(names.values()) - want_no
    assert "embeddings.patch_embeddings.projection.weight" in got_yes and "layers.1.mlp.fc2.weight" in got_yes
    assert len(got_yes) == 13  # patch projection + 2 layers x (q, k, v, o, fc1, fc2)


def test_learning_rate_is_linear_warm_up_then_cosine_from_the_end_of_warm_up():
    cfg = make_config(lr=1e-3, warmup_lr=1e-5, min_lr=2e-5, warmup_steps=10, steps=110)
    expect = {0: 1e-5, 4: 1e-5 + 0.4 * (1e-3 - 1e-5), 9: 1e-5 + 0.9 * (1e-3 - 1e-5), 10: 1e-3,
              35: 2e-5 + 0.5 * (1e-3 - 2e-5) * (1 + math.cos(math.pi * 0.25)), 60: (1e-3 + 2e-5) / 2,
              110: 2e-5, 500: 2e-5}
    for step, lr in expect.items():
        assert lr_at(step, cfg) == pytest.approx(lr, rel=1e-12), step
    longer = make_config(lr=1e-3, warmup_lr=1e-5, min_lr=2e-5, warmup_steps=10, steps=110, schedule_steps=210)
    assert lr_at(110, longer) == pytest.approx((1e-3 + 2e-5) / 2, rel=1e-12)  # the schedule's own length


def test_one_step_with_grad_accum_two_is_the_mean_of_the_micro_batches_gradients(tiny_data, tmp_path):
    shards, reals = tiny_data
    cfg = make_config(**tiny_config(steps=1, batch_size=8, grad_accum=2, warmup_steps=0, lr=1e-3, aug_max_ops=1))
    train([str(shards)], tmp_path / "acc", cfg, real=str(reals), progress=False)
    index = build_index([str(shards)], real=str(reals))
    recs, _ = held_out(index, cfg)
    views = StepBatches(index.files, recs, 8, cfg.seed, aug_max_ops=1)[0]["views"]
    model = build_model(cfg)
    total = 0
    for m in range(2):  # micro-batch m: records 4m..4m+3, its own derangements, its own negatives
        emb = model(pixel_values=to_pixels(views[4 * m:4 * m + 4], CPU)).last_hidden_state[:, 0].view(4, 8, -1)
        total = total + code_loss(emb, *step_perms(cfg.seed, 0, 0, m, 4)).total
    (total / 2).backward()
    saved = load_file(str(tmp_path / "acc/checkpoint/optimizer.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    grads = dict(model.named_parameters())
    order = [names[id(p)] for g in param_groups(model, cfg.weight_decay) for p in g["params"]]
    worst = max(float((saved[f"opt.{i}.exp_avg"] / 0.1 - grads[n].grad).abs().max() / (grads[n].grad.abs().max() + 1e-8))
                for i, n in enumerate(order))
    assert worst < 1e-4, worst


def _records(n: int) -> list[Record]:
    return [Record(f"r{i:02d}", ("file", "x"), [("g", ("file", "y"))], group=(i // 4, 0)) for i in range(n)]


@pytest.mark.parametrize("n, world, batch", [(12, 3, 2), (10, 2, 2), (9, 2, 3)])
def test_ranks_read_disjoint_records_and_together_all_of_them_once_per_pass(n, world, batch):
    recs = _records(n)
    sets = [StepBatches([], recs, batch, seed=1, rank=r, world=world) for r in range(world)]
    steps = -(-3 * n // (world * batch))  # three passes over the records
    positions = sorted(g for s in range(steps) for b in sets for g in b.positions(s))
    assert positions == list(range(steps * world * batch))  # disjoint blocks, nothing skipped
    order = [None] * len(positions)
    for s in range(steps):
        for b in sets:
            for g, rec in zip(b.positions(s), b.records_at(s)):
                order[g] = rec.id
    for p in range(3):  # each pass (n consecutive positions) holds every record exactly once
        assert sorted(order[p * n:(p + 1) * n]) == sorted(r.id for r in recs), p
    assert order[:n] != order[n:2 * n]  # and each pass is reshuffled
    one_step = [set(r.id for r in b.records_at(0)) for b in sets]
    assert all(not a & b for i, a in enumerate(one_step) for b in one_step[i + 1:])


def test_a_batch_holds_the_records_records_at_names(tiny_data):
    shards, reals = tiny_data
    index = build_index([str(shards)], real=str(reals))
    b = StepBatches(index.files, index.records, 3, seed=5, rank=1, world=2)
    assert b[2]["ids"] and [i.split(":")[0] for i in b[2]["ids"]] == [r.id for r in b.records_at(2)]


def test_resume_restores_the_best_accuracy_and_the_early_stopping_counter(tiny_data, tmp_path, monkeypatch):
    shards, reals = tiny_data
    scores = iter([0.75, 0.5, 0.625, 0.6, 0.55, 0.55])
    monkeypatch.setattr(probe, "probe_accuracy", lambda *a, **k: next(scores))
    keys = tiny_config(steps_per_epoch=2, patience=3, schedule_steps=10, warmup_steps=2, lr=1e-3)
    out = tmp_path / "run"
    first = train([str(shards)], out, make_config(**{**keys, "steps": 4}), real=str(reals), progress=False)
    assert first.head_accuracy == [(2, 0.75), (4, 0.5)]
    state = json.loads((out / "checkpoint/state.json").read_text())
    assert (state["best"], state["bad_epochs"]) == (0.75, 1)
    resumed = train([str(shards)], out, make_config(**{**keys, "steps": 10}), real=str(reals), resume=True, progress=False)
    # 0.625 and 0.6 are below the restored best 0.75: the counter reaches 3 at step 8 and the run stops there
    assert resumed.stopped_early and resumed.step == 8, (resumed.step, resumed.head_accuracy)
    assert resumed.kept_step == 2  # --keep best keeps the epoch before the resume, not a worse later one
    from safetensors import safe_open

    with safe_open(str(out / "best.safetensors"), framework="pt") as fh:
        assert fh.metadata()["step"] == "2"
    log = read_log(out / "train_log.jsonl")
    assert [e["bad_epochs"] for e in log if "bad_epochs" in e] == [0, 1, 2, 3]
    lrs = {e["step"]: e["lr"] for e in log if "lr" in e}
    cfg = make_config(**{**keys, "steps": 10})
    assert sorted(lrs) == list(range(1, 9))
    assert all(lrs[s] == pytest.approx(lr_at(s, cfg), rel=1e-9) for s in lrs)  # the optimizer's LR after s steps
