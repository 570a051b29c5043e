"""The ``build`` step of ``deepsift adapt``: make the new generator's images from D3 prompts with ``data build``.

A ``-g NAME=KIND:SOURCE`` spec (as ``deepsift data build`` takes it) is run by
:func:`deepsift.generate.builder.build` over the prompts (the first ``count`` records when given,
copied to ``OUT/steps/build/prompts.jsonl``) into ``OUT/steps/build/shards/`` (on Ray when asked);
a killed build restarts where it stopped (the builder's own resume), also after ``OUT`` was moved:
paths inside ``OUT`` are recorded relative to it (a prompt source outside it stays as given). Its
images are then written one file per record to ``OUT/steps/build/images/``, where ``collect``
finds them: one prompt, one image, so the grouped split keeps every prompt on one side.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..exceptions import DataError, UsageError
from .loop import Run

BUILD = "build"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def first_prompts(source: str, count: int, path: Path) -> Path:
    """The first ``count`` usable records of ``source`` as a JSONL prompt file at ``path`` (kept when present)."""
    from ..generate.sources import iter_source

    if path.is_file():
        return path
    lines = []
    for item in iter_source(source):
        if item.problem is not None:
            continue
        row = {"id": item.id, "original_prompt": item.original_prompt, "positive_prompt": item.positive_prompt,
               "negative_prompt": item.negative_prompt, "url": item.url}
        if item.real:
            row["image"] = str(Path(item.real).resolve())
        lines.append(json.dumps({k: v for k, v in row.items() if v is not None}))
        if len(lines) == count:
            break
    if not lines:
        raise DataError(f"{source}: no usable prompt to build the new generator's images from")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def export_images(shards: Path, generator: str, images: Path) -> int:
    """Write ``generator``'s image of every record of ``shards`` to ``images/`` (names from the record ids, made
    safe: nothing is written outside the folder); returns how many."""
    from io import BytesIO

    from PIL import Image

    from ..data.reader import read_d3

    stage = images.with_name(f".{images.name}.tmp")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    n = 0
    for rec in read_d3(str(shards), images=True):
        gen = next((g for g in rec.generations if g.generator == generator and g.image), None)
        if gen is None:
            continue
        try:
            with Image.open(BytesIO(gen.image)) as im:
                ext = {"JPEG": ".jpg", "WEBP": ".webp"}.get(im.format or "", ".png")
        except OSError:
            continue
        name = _UNSAFE.sub("_", rec.id).strip("._")[:80] or "record"
        (stage / f"{n:06d}-{name}{ext}").write_bytes(gen.image)
        n += 1
    shutil.rmtree(images, ignore_errors=True)
    os.replace(stage, images)
    return n


def step_build(run: Run) -> dict:
    """Build the new generator's images (``data build``) from the prompts, or say that they were given."""
    from ..generate.builder import build
    from ..generate.spec import parse_spec

    p = run.plan
    if not p.generate:
        return {"skipped": "the new generator's images are given"}
    spec = parse_spec(p.generate)
    if spec.name != p.generator:
        raise UsageError(f"the generator spec names {spec.name!r}, the new generator is {p.generator!r}")
    folder = run.steps / BUILD
    folder.mkdir(exist_ok=True)
    source = str(first_prompts(p.prompts, p.count, folder / "prompts.jsonl")) if p.count else p.prompts
    summary = build(source, [spec], folder / "shards", ray_address=p.ray, threads=p.threads, moves_with=run.out)
    n = export_images(folder / "shards", spec.name, Path(run.images()))
    if n == 0:
        raise DataError(f"data build made no image of {spec.name!r} from {p.prompts} "
                        f"({', '.join(f'{k}={v}' for k, v in sorted(summary.failures.items())) or 'no record'})")
    return {"spec": spec.to_text(), "prompts": run.portable(source)["source"], "records": summary.records, "images": n,
            "failures": dict(summary.failures), "chunks": summary.chunks, "resumed_chunks": summary.chunks_resumed,
            "seconds": summary.seconds, "ray": p.ray}
