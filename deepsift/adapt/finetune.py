"""Fine-tune with replay: the second route of ``deepsift adapt``, when refitting the heads misses the target.

The fitting side of the split (never a held-out image) becomes a training set in D3 form under
``OUT/steps/replay/``: one record per slot, each with a real image and one image of every generator,
the known ones and the new one (cycled when a generator has fewer images). ``train``'s loader draws
one of a record's fakes per step uniformly, so the known generators are replayed as often as the new
one is shown: nothing is forgotten for want of examples. :func:`deepsift.train.loop.train` (the
loop, config, checkpoints and held-out roles of ``deepsift train --init MODEL``) fine-tunes on it
into ``OUT/steps/fine-tune/``; an interrupted fine-tune resumes from its checkpoint exactly. Then every
image is embedded again (``embed-2``), the heads refitted (``refit-heads-2``) and the figures measured
again against BEFORE (``after-2``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from ..exceptions import DataError
from .loop import Run, _arrays, embed_rows, measure_round, refit_heads

REPLAY = "replay"
FINE_TUNE = "fine-tune"
ROUTE = "fine-tune with replay"


def _copy(src: str, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_replay(run: Run) -> dict:
    """``OUT/steps/replay``: the fitting images as D3 records (shards/ + real/), written whole or not at all."""
    from PIL import Image

    from ..data.schema import D3Record, Generation
    from ..data.writer import ShardWriter

    final = run.steps / REPLAY
    manifest = final / "replay.json"
    if manifest.is_file():
        return json.loads(manifest.read_text())
    c = run.read("collect")
    rows, _, ok = _arrays(run, 1)  # the first embedding marks the images that do not decode
    fit = [r for r, good in zip(rows, ok) if good and r["side"] == "fit"]
    reals = [r for r in fit if r["label"] == 0]
    gens = c["generators"] + [c["new"]]
    by_gen = {g: [r for r in fit if r["label"] == 1 and r["generator"] == g] for g in gens}
    missing = [g for g, found in by_gen.items() if not found]
    if not reals or missing:
        raise DataError(f"cannot fine-tune: no decodable fitting image of {', '.join(missing or ['the reals'])}")
    n = max(len(reals), *(len(found) for found in by_gen.values()))
    stage = run.steps / f".{REPLAY}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "real").mkdir(parents=True)
    files = _shard_files(run, [r for found in by_gen.values() for r in found], stage / "known")
    with ShardWriter(stage / "shards", prefix=REPLAY, n_generators=len(gens), max_records_per_shard=256) as writer:
        for i in range(n):
            rid = f"{REPLAY}{i:06d}"
            real = run.source(reals[i % len(reals)])
            _copy(real, stage / "real" / f"{rid}{Path(real).suffix.lower()}")
            made = []
            for g in gens:
                row = by_gen[g][i % len(by_gen[g])]
                src = files[_shard_key(row)] if "row" in row else run.source(row)
                with Image.open(src) as im:
                    w, h = im.size
                made.append(Generation(model=g, width=w, height=h, steps=None,
                                       filepath=row["id"] if "row" in row else src,
                                       image=Path(src).read_bytes(), generator=g))
            writer.write(D3Record(id=rid, original_prompt=None, positive_prompt=None, negative_prompt=None, url=None,
                                  generations=made))
    info = {"records": n, "reals": len(reals), "images": {g: len(found) for g, found in by_gen.items()},
            "shards": str(final / "shards"), "real": str(final / "real")}
    shutil.rmtree(stage / "known", ignore_errors=True)
    (stage / "replay.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(stage, final)
    return info


def _shard_key(row: dict) -> tuple:
    return row["source"], row["row"], row["gen"]


def _shard_files(run: Run, rows: list[dict], folder: Path) -> dict[tuple, str]:
    """(shard, row, generation) -> a file holding that image, for the rows whose image lives in a parquet shard
    (each shard read once, in file order; the replay shards then take the bytes from these files)."""
    refs = sorted({_shard_key(r): r for r in rows if "row" in r}.values(), key=_shard_key)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for n, (r, data) in enumerate(zip(refs, run.inputs(refs))):
        path = folder / f"{n:06d}.img"
        path.write_bytes(data)  # type: ignore[arg-type]
        out[_shard_key(r)] = str(path)
    return out


def fine_tune_config(run: Run, records: int) -> Any:
    """The train settings: the plan's train keys, then its steps / epochs / learning rate / seed / device."""
    from ..model.devices import resolve_device
    from ..train.config import TrainConfig, make_config

    p = run.plan
    base = {**p.train_config}
    holdout = int(base.get("holdout", TrainConfig.holdout))
    held = min(holdout, max(4, records // 5))
    base.setdefault("batch_size", max(2, min(64, records - held)))
    base.setdefault("warmup_steps", p.fine_tune_steps // 10)
    base.setdefault("patience", 0)
    return make_config(None, **{**base, "init": p.model, "steps": p.fine_tune_steps, "lr": p.fine_tune_lr,
                                "seed": p.seed, "steps_per_epoch": math.ceil(p.fine_tune_steps / p.fine_tune_epochs),
                                "device": str(resolve_device(p.device)), "workers": p.workers})


def step_fine_tune(run: Run) -> dict:
    """``train --init MODEL`` on the new generator's fitting images with replay; resumes from its checkpoint."""
    from ..train.checkpoint import NAME as CKPT
    from ..train.loop import train

    p = run.plan
    if p.fine_tune == "never":
        return {"skipped": "fine-tuning is off (never)"}
    if p.fine_tune == "auto" and run.read("after")["method"]:
        return {"skipped": "refitting the heads reached the target"}
    replay = write_replay(run)
    cfg = fine_tune_config(run, replay["records"])
    out = run.steps / FINE_TUNE
    resume = any((out / name).is_dir() for name in (CKPT, f"{CKPT}.prev"))
    if not resume:  # killed before its first checkpoint: nothing worth keeping
        shutil.rmtree(out, ignore_errors=True)
    final = run.steps / REPLAY  # where it is now (the manifest's paths name where it was written)
    result = train([str(final / "shards")], out, cfg, real=str(final / "real"), resume=resume)
    return {"route": ROUTE, "model": str(out), "resumed_at": result.start_step if resume else None,
            "steps": result.step, "kept_step": result.kept_step, "stopped_early": result.stopped_early,
            "head_accuracy": result.head_accuracy, "summary": result.summary, "replay": replay,
            "config": cfg.to_dict()}


def _skipped(run: Run) -> dict | None:
    ft = run.read(FINE_TUNE)
    return {"skipped": f"no fine-tune ({ft['skipped']})"} if ft.get("skipped") else None


def step_embed2(run: Run) -> dict:
    """Embed every image again with the fine-tuned backbone."""
    from ..model.detector import Detector

    skip = _skipped(run)
    if skip:
        return skip
    p = run.plan
    det = Detector.load_backbone_only(str(run.steps / FINE_TUNE), device=p.device, batch_size=p.batch_size,
                                      workers=p.workers)  # inside the folder, wherever it is now
    return embed_rows(run, det, 2)


def step_refit2(run: Run) -> dict:
    """The heads again, on the fine-tuned embeddings of the fitting side."""
    return _skipped(run) or refit_heads(run, 2)


def step_after2(run: Run) -> dict:
    """The fine-tuned route's figures on the held-out images, forgetting against BEFORE."""
    return _skipped(run) or measure_round(run, 2, ROUTE)
