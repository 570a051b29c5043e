"""``deepsift data build``: grow a D3 dataset with generators, restartable at any moment.

The input is cut into chunks of ``chunk_size`` records in input order (for ``--add-to``:
one chunk per existing shard). Each chunk becomes exactly one output shard, written under a
temporary name and renamed (``part-00000.parquet``, ... or the existing shard's name); its
metadata records the chunk's counts and failures. A restarted build re-reads the input,
skips every chunk whose shard exists, and redoes the others: a kill at any moment loses
no record and duplicates none, because a chunk's output is all-or-nothing and the same
chunk always yields the same bytes (seeds derive from record id and generator name).

An image depends only on its record (id, prompts), its generator (name, hence seed) and the
generator's options, never on the chunk or the batch it was made in: text-to-image calls always
hold exactly ``batch`` images (see :class:`~deepsift.generate.backends.DiffusersText2Image`), so
other chunk sizes, failed neighbours, restarts, ``--add-to`` and Ray give the same bytes.
Bit-identical images also need the same hardware and the same number of torch threads
(``threads``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from ..exceptions import UsageError, input_not_found
from ..output import progress as progress_bar
from .backends import load_generators
from .chunks import generate_chunk, prepare_chunk, write_chunk
from .plan import (
    MANIFEST,  # noqa: F401  (re-exported)
    BuildSummary,
    chunk_done,
    clean_temporaries,
    finished_addition,
    log,
    log_failures,
    plan_chunks,
    real_dir_for,
    recorded_source,
    write_manifest,
)
from .sources import RealDir
from .spec import GeneratorSpec

__all__ = ["BuildSummary", "build"]

def build(
    source: str | None,
    specs: Sequence[GeneratorSpec],
    out: str | os.PathLike,
    *,
    add_to: str | None = None,
    chunk_size: int = 64,
    threads: int | None = None,
    ray_address: str | None = None,
    ray_actors: int | None = None,
    progress: bool | None = None,
    real_dir: str | os.PathLike | None = None,
    moves_with: str | os.PathLike | None = None,
) -> BuildSummary:
    """Build (or resume) a dataset: every record x every generator, one shard per chunk.

    ``real_dir``: a ``deepsift data fetch-real`` folder; each record's real image (for ``vae``
    generators) is looked up there by id. ``moves_with``: a folder moved as a whole with ``out``
    (default ``out``); a prompt source inside it is recorded relative to ``out``, so the build
    still resumes after the folder is moved.
    """
    if not specs:
        raise UsageError("give at least one generator spec (specs=[parse_spec('NAME=KIND:SOURCE')])")
    if (source is None) == (add_to is None):
        raise UsageError("give either a prompt source (source=, a new build) or existing shards (add_to=, grow them)")
    if chunk_size <= 0:
        raise UsageError(f"chunk_size must be positive, got {chunk_size}")
    for option, value in (("threads", threads), ("ray_actors", ray_actors)):
        if value is not None and value <= 0:
            raise UsageError(f"{option} must be positive, got {value}")
    if add_to is not None and not Path(add_to).exists():
        raise input_not_found(add_to)
    out = Path(out)
    reals = RealDir(real_dir) if real_dir is not None else None
    recorded = {"source": str(add_to)} if add_to is not None else recorded_source(str(source), out, moves_with)
    settings = {**recorded, "add_to": add_to is not None,
                "generators": [s.to_text() for s in specs], "chunk_size": None if add_to else chunk_size}
    if reals is not None:  # only when given, so builds made before --real-dir existed still resume
        settings["real_dir"] = str(reals.resolved)
    if add_to is not None and out.is_dir():  # everything already grown: say so before torch or any generator loads
        t0 = time.perf_counter()
        done = finished_addition(add_to, out, [s.name for s in specs])
        if done is not None:
            write_manifest(out, settings, add_to=add_to)
            done.seconds = time.perf_counter() - t0
            return done
    if ray_address is not None:
        from .ray_build import build_on_ray

        return build_on_ray(source, specs, out, settings=settings, add_to=add_to, chunk_size=chunk_size,
                            threads=threads, address=ray_address, actors=ray_actors, progress=progress,
                            real_dir=reals)
    import torch

    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _build_local(source, specs, out, settings, add_to=add_to, chunk_size=chunk_size, progress=progress, t0=t0,
                            real_dir=reals)
    finally:
        torch.set_num_threads(threads_before)


def _build_local(
    source: str | None, specs: Sequence[GeneratorSpec], out: Path, settings: dict, *, add_to: str | None,
    chunk_size: int, progress: bool | None, t0: float, real_dir: RealDir | None = None,
) -> BuildSummary:
    """The single-process build loop."""
    names = [s.name for s in specs]
    t_load = time.perf_counter()
    generators = load_generators(specs)  # fails before any work starts
    load_seconds = time.perf_counter() - t_load
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, settings, add_to=add_to)
    clean_temporaries(out)
    needs_real = any(g.needs_real_image for g in generators)
    needs_prompt = any(not g.needs_real_image for g in generators)
    real_dir = real_dir_for(real_dir, needs_real)
    summary = BuildSummary(load_seconds=load_seconds)
    bar = progress_bar(desc="build", unit="rec", enabled=progress)
    try:
        for chunk in plan_chunks(source, out, specs, chunk_size=chunk_size, add_to=add_to, real_dir=real_dir):
            meta = chunk_done(chunk, names)
            if meta is None:
                prep = prepare_chunk(chunk.items, needs_prompt=needs_prompt, needs_real=needs_real, base=chunk.base)
                meta = write_chunk(generate_chunk(prep, generators), chunk.path)
                summary.add(meta, resumed=False)
                log_failures(meta)
                log.info("wrote %s (%d records)", chunk.path, meta.get("records", 0))
            else:
                summary.add(meta, resumed=True)
            bar.update(len(chunk.items))
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
