"""The training loop of ``deepsift train``: AdamW, warm-up + cosine, bf16 autocast, accumulation, DDP, checkpoints.

Steps are optimiser steps; an epoch is ``steps_per_epoch`` of them (the data is an endless,
reshuffled stream). At the end of each epoch the linear head is refitted on held-out records
and scored on other held-out records (:mod:`deepsift.train.holdout`), its balanced accuracy is
logged and drives early stopping, and a
checkpoint is written; a new best epoch's weights go to ``OUT/best.safetensors``. Every random
choice derives from (seed, step, rank), so ``--resume`` continues exactly where the checkpoint was
taken. The run ends with the model folder written in the published layout at ``OUT``
(config.json, model.safetensors, preprocessor_config.json, heads/ refitted on the fit and select
records, never on the leave-out report's), holding the best epoch's weights (``keep="best"``, the default) or the last step's.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..exceptions import DataError, UsageError
from ..images import IMAGENET_MEAN, IMAGENET_STD
from . import distributed as ddp
from .checkpoint import BEST, NAME as CKPT, load_best, load_checkpoint, save_best, save_checkpoint
from .config import TrainConfig
from .loss import LossParts, code_loss, derangement

NO_DECAY_NAMES = ("position_embeddings", "cls_token")


@dataclass
class TrainResult:
    """What a run did: steps, losses per step, head accuracies per epoch, where the model is."""

    out: Path
    start_step: int
    step: int
    losses: list[float] = field(default_factory=list)
    head_accuracy: list[tuple[int, float | None]] = field(default_factory=list)
    stopped_early: bool = False
    kept_step: int | None = None  # the step whose weights the model folder holds (None: the last)
    summary: list[str] = field(default_factory=list)
    main: bool = True  # rank 0 (or a single process): the one that reports and evaluates


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The network to train: ``cfg.init`` (published weights or a folder) or a fresh CoDE of ``cfg``'s shape."""
    from ..model.backbone import build_code_config, create_backbone, load_backbone

    if cfg.init:
        return load_backbone(cfg.init).train()
    return create_backbone(build_code_config(**cfg.model_overrides()), seed=cfg.seed).train()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weights only (not biases, norms, position embedding, CLS token)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(".bias") or any(n in name for n in NO_DECAY_NAMES) or "norm" in name.lower()
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up from warmup_lr, then cosine to min_lr."""
    total = cfg.schedule_steps or cfg.steps
    if step < cfg.warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def to_pixels(views: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(b, 8, H, W, 3) uint8 -> normalised float (b*8, 3, H, W) on ``device`` (ToTensor + Normalize)."""
    x = views.to(device, non_blocking=True).flatten(0, 1).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def perm_generator(seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    """The generator of the positives' derangements for one micro-batch (seeded by its coordinates)."""
    s = int(np.random.SeedSequence([seed, step, rank, micro, 2718]).generate_state(1)[0])
    return torch.Generator().manual_seed(s)


def step_perms(seed: int, step: int, rank: int, micro: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The derangements (real, fake) of one micro-batch of ``n`` records: uniform, fresh at every step."""
    g = perm_generator(seed, step, rank, micro)
    return derangement(n, g), derangement(n, g)


def micro_loss(model: torch.nn.Module, views: torch.Tensor, cfg: TrainConfig, step: int, rank: int, micro: int,
               device: torch.device, global_negatives: bool = False) -> LossParts:
    """The loss of one micro-batch of records (forward under autocast, loss in float32)."""
    b = views.shape[0]
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        h = model(pixel_values=to_pixels(views, device)).last_hidden_state[:, 0]
    emb = h.float().view(b, 8, -1)
    pr, pf = (p.to(device) for p in step_perms(cfg.seed, step, rank, micro, b))
    negatives = ddp.gather_with_grad(emb) if global_negatives else None
    return code_loss(emb, pr, pf, tau=cfg.tau, negatives=negatives)


def _rng_restore(rng: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in rng:
        torch.set_rng_state(rng["rng.torch"])
    if "rng.cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["rng.cuda"])


def _skip_bad(batch: dict, bad: dict[str, str], n_records: int, share: float, log: Any) -> None:
    """Count the records a batch skipped (undecodable), log new ids, stop past ``share`` of the records."""
    new = {}
    for entry in batch.get("skipped", ()):
        rid, _, why = entry.partition(": ")
        if rid not in bad:
            bad[rid] = new[rid] = why
    if new and log is not None:
        log.write({"step": batch["step"], "event": "skipped", "ids": sorted(new), "reasons": list(new.values())[:8]})
    if "error" in batch:
        raise DataError(batch["error"])
    if len(bad) > share * n_records:
        first = next(iter(bad.items()))
        raise DataError(f"{len(bad)} of {n_records} training records cannot be decoded (more than the "
                        f"max_bad_share {share:g}), e.g. {first[0]}: {first[1]}; their ids are in the metrics log")


def _nan_stop(out: Path, step: int, ids: Sequence[str], value: float, main: bool) -> DataError:
    path = out / "nan_batch.json"
    if main:
        path.write_text(json.dumps({"step": step, "loss": str(value), "ids": list(ids)}, indent=1))
    shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    return DataError(f"loss is {value} at step {step}: training stopped; the batch held {shown} "
                     f"(all ids in {path}); the last checkpoint is kept")


def train(data: Sequence[str], out: str | os.PathLike, cfg: TrainConfig, *, real: str | None = None,
          resume: bool = False, progress: bool | None = None) -> TrainResult:
    """Train (or continue, ``resume=True``) a CoDE network on ``data``; the model folder is written to ``out``."""
    from ..output import progress as progress_bar
    from .data import build_index
    from .holdout import held_out
    from .loader import StepBatches, make_loader, probe_pixels
    from .metrics import MetricsLog, write_plot

    out = Path(out)
    info = ddp.init_distributed(cfg.device)
    state: dict[str, Any] = {}
    if resume:
        model_t, opt_state, rng, state = load_checkpoint(out)  # checked before any other work
    elif any((out / name).exists() for name in (CKPT, f"{CKPT}.prev", BEST)):
        raise UsageError(f"{out} holds a training run: resume it (deepsift train --resume {out}) or choose another output folder")
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
    index = build_index(data, real=real, leave_out=cfg.leave_out)
    train_recs, roles = held_out(index, cfg)
    torch.manual_seed(cfg.seed + info.rank)
    model = build_model(cfg).to(info.device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg.lr)
    start, best, bad, history = 0, -1.0, 0, []
    if resume:
        model.load_state_dict(model_t)
        opt.load_state_dict(opt_state)
        sched.load_state_dict(state["scheduler"])
        _rng_restore(rng)
        start, best, bad, history = state["step"], state["best"], state["bad_epochs"], state.get("history", [])
    net = model
    if info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    fit_x, fit_y, _ = probe_pixels(index.files, roles.fit, cfg.seed)
    sel_x, sel_y, _ = probe_pixels(index.files, roles.select, cfg.seed)
    log = MetricsLog(out, enabled=info.main, resume_step=start)
    if info.main and not resume:
        log.write({"step": 0, "event": "start", "records": len(train_recs),
                   "held_out": {"fit": len(roles.fit), "select": len(roles.select), "report": len(roles.report)},
                   "index": index.summary(), "world": info.world, "config": cfg.to_dict()})
    dataset = StepBatches(index.files, train_recs, cfg.batch_size, cfg.seed, info.rank, info.world, cfg.aug_max_ops)
    loader = make_loader(dataset, start, cfg.steps, cfg.loader_workers(), pin_memory=info.device.type == "cuda")
    result = TrainResult(out=out, start_step=start, step=start, head_accuracy=[tuple(h) for h in history],
                         main=info.main)
    micro_b = cfg.batch_size // cfg.grad_accum
    bar = progress_bar(desc="train", unit="step", total=cfg.steps, enabled=progress if info.main else False)
    bar.n = start
    step = start
    t_last, imgs = time.perf_counter(), 0
    bad_ids: dict[str, str] = {}

    def checkpoint(at: int, sync: bool = True) -> None:
        if info.main:
            save_checkpoint(out, model.state_dict(), opt.state_dict(), {
                "step": at, "scheduler": sched.state_dict(), "best": best, "bad_epochs": bad,
                "history": result.head_accuracy, "config": cfg.to_dict(), "data": list(data), "real": real})
        if sync:
            ddp.barrier()

    try:
        net.train()
        for batch in loader:
            step = batch["step"]
            _skip_bad(batch, bad_ids, len(train_recs), cfg.max_bad_share, log if info.main else None)
            views, ids = batch["views"], batch["ids"]
            parts = []
            for m in range(cfg.grad_accum):
                sl = slice(m * micro_b, (m + 1) * micro_b)
                last = m == cfg.grad_accum - 1
                ctx = net.no_sync() if (info.world > 1 and not last) else _null()
                with ctx:
                    lp = micro_loss(net, views[sl], cfg, step, info.rank, m, info.device, cfg.global_negatives)
                    if not torch.isfinite(lp.total):
                        raise _nan_stop(out, step, ids, float(lp.total), info.main)
                    (lp.total / cfg.grad_accum).backward()
                parts.append(lp)
            with _deferred_signals():  # an interrupt lands before the update or after its step count
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                loss = float(sum(float(p.total.detach()) for p in parts) / len(parts))
                result.losses.append(loss)
                step += 1
                result.step = step
            imgs += views.shape[0] * 8 * info.world
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                rate = imgs / max(now - t_last, 1e-9)
                t_last, imgs = now, 0
                log.write({"step": step, "loss": loss, "loss_real": float(sum(float(p.real) for p in parts) / len(parts)),
                           "loss_fake": float(sum(float(p.fake) for p in parts) / len(parts)),
                           "lr": opt.param_groups[0]["lr"], "img_per_s": rate})
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
            if step % cfg.steps_per_epoch == 0:  # a run ending mid-epoch only checkpoints (resume stays exact)
                acc = _epoch_accuracy(model, fit_x, fit_y, sel_x, sel_y, info.device, cfg.precision == "bf16")
                result.head_accuracy.append((step, acc))
                if acc is not None and acc > best:
                    best, bad = acc, 0
                    if info.main:
                        save_best(out, model.state_dict(), step, acc)
                elif acc is not None and acc < best:
                    bad += 1
                log.write({"step": step, "epoch": step // cfg.steps_per_epoch, "head_accuracy": acc,
                           "best_head_accuracy": best, "bad_epochs": bad})
                stop = cfg.patience > 0 and bad >= cfg.patience
                checkpoint(step)
                if info.main:
                    write_plot(out)
                if ddp.broadcast_flag(stop, info.device):
                    result.stopped_early = True
                    break
    except KeyboardInterrupt:
        if step > start and info.main:  # Ctrl-C / SIGTERM: keep the work done so far
            checkpoint(result.step, sync=False)  # the other ranks are stopping too: no barrier
        raise
    finally:
        bar.close()
        log.close()
    if result.step > start and (not result.head_accuracy or result.head_accuracy[-1][0] != result.step):
        checkpoint(result.step)
    digests = ddp.gather_digests(model)  # every rank takes part; rank 0 logs them (equal when ranks are in step)
    if info.main:
        result.summary.append(_keep_weights(out, model, cfg, result))
        if bad_ids:
            result.summary.append(f"skipped {len(bad_ids)} training record(s) whose image cannot be decoded, e.g. "
                                  f"{next(iter(bad_ids))} (their ids are in the metrics log)")
    log = MetricsLog(out, enabled=info.main)
    log.write({"step": result.step, "event": "end", "rank_weight_digests": digests, "world": info.world,
               "kept_step": result.kept_step if result.kept_step is not None else result.step})
    log.close()
    if info.main:
        result.summary += _finish(out, model, cfg, index, roles.heads, info.device)
        write_plot(out)
    ddp.barrier()
    return result


_null = contextlib.nullcontext


@contextlib.contextmanager
def _deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, so an optimizer update and its step count stay together."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {sig: signal.signal(sig, lambda num, frame: caught.append(num)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


def _epoch_accuracy(model: torch.nn.Module, fit_x: np.ndarray, fit_y: np.ndarray, sel_x: np.ndarray,
                    sel_y: np.ndarray, device: torch.device, bf16: bool) -> float | None:
    """The epoch's held-out accuracy: a linear probe fitted on the fit records, scored on the select records."""
    from .probe import embed_uint8, probe_accuracy

    if not (len(fit_y) and len(sel_y)):
        return None
    return probe_accuracy(embed_uint8(model, fit_x, device, bf16=bf16), fit_y,
                          embed_uint8(model, sel_x, device, bf16=bf16), sel_y)


def _keep_weights(out: Path, model: torch.nn.Module, cfg: TrainConfig, result: TrainResult) -> str:
    """Load the best epoch's weights into ``model`` unless the run keeps the last step's; say which were kept."""
    last = next((a for s, a in reversed(result.head_accuracy) if s == result.step and a is not None), None)
    last_text = f"held-out head accuracy {last:.3f}" if last is not None else "not scored: the run ended mid-epoch"
    best = load_best(out) if cfg.keep == "best" else None
    if best is None:
        why = "keep: last" if cfg.keep == "last" else "no epoch was scored"
        return f"weights: the last step's ({result.step}; {last_text}; {why})"
    weights, step, acc = best
    model.load_state_dict(weights)
    result.kept_step = step
    return (f"weights: the best epoch's (step {step}, held-out head accuracy {acc:.3f}; the last step {result.step}: "
            f"{last_text}; keep: last keeps those)")


def _finish(out: Path, model: torch.nn.Module, cfg: TrainConfig, index: Any, held: list, device: torch.device) -> list[str]:
    """Write the model folder (published layout + heads refitted on ``held``, the fit and select records)."""
    from ..model.backbone import save_backbone, weights_fingerprint
    from ..model.headset import save_headset
    from .loader import probe_pixels
    from .probe import embed_uint8, fit_final_heads

    model.eval()
    save_backbone(model, out)
    x, y, gens = probe_pixels(index.files, held, cfg.seed + 1)
    emb = embed_uint8(model, x, device)
    heads = fit_final_heads(emb, y, gens)
    save_headset(heads, out / "heads", model=str(out), preprocessing="official", embedding_dim=int(emb.shape[1]),
                 backbone_sha256=weights_fingerprint(model))
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    return [f"model: {out} (config.json, model.safetensors, preprocessor_config.json, heads: {', '.join(heads)})"]
