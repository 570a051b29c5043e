"""``deepsift data build``: grow a D3 dataset with generators, restartable at any moment.

The input is cut into chunks of ``chunk_size`` records in input order (for ``--add-to``:
one chunk per existing shard). Each chunk becomes exactly one output shard, written under a
temporary name and renamed (``part-00000.parquet``, ... or the existing shard's name); its
metadata records the chunk's counts and failures. A restarted build re-reads the input,
skips every chunk whose shard exists, and redoes the others: a kill at any moment loses
no record and duplicates none, because a chunk's output is all-or-nothing and the same
chunk always yields the same bytes (seeds derive from record id and generator name).

Bit-identical images across runs also need the same hardware and the same number of torch
threads (``threads``); the Ray and local paths give equal bytes under that condition.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from ..exceptions import DataError, UsageError
from .backends import load_generators
from .chunks import generate_chunk, prepare_chunk, read_chunk_metadata, write_chunk
from .sources import RealDir, SourceItem, iter_source
from .spec import GeneratorSpec

log = logging.getLogger("deepsift.generate")

MANIFEST = "build.json"
"""File in the output folder recording the build's settings (checked on restart)."""


@dataclass
class BuildSummary:
    """What a build did: records written, images per generator, failures by reason."""

    input_records: int = 0
    records: int = 0
    images: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    chunks: int = 0
    chunks_resumed: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0

    def add(self, meta: dict, resumed: bool) -> None:
        """Fold one chunk's metadata into the totals."""
        self.input_records += int(meta.get("input_records", 0))
        self.records += int(meta.get("records", 0))
        self.images.update(meta.get("images", {}))
        self.failures.update(meta.get("failures", {}))
        self.notes.update(meta.get("notes", {}))
        self.chunks += 1
        self.chunks_resumed += int(resumed)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"build: {self.records} record(s) written from {self.input_records} input record(s) in "
            f"{self.chunks} shard(s) ({self.chunks_resumed} already done), {self.seconds:.1f} s "
            f"({self.load_seconds:.1f} s loading generators)",
            "images per generator: " + (", ".join(f"{k}={v}" for k, v in self.images.items()) or "none"),
            "failures by reason: " + (", ".join(f"{k}={v}" for k, v in sorted(self.failures.items())) or "none"),
        ]
        if self.notes:
            out.append("notes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.notes.items())))
        return out


@dataclass
class Chunk:
    """One unit of work: its items, output path and (for ``--add-to``) the shard it grows."""

    index: int
    items: list[SourceItem]
    path: Path
    base: str | None = None


def _write_manifest(out: Path, settings: dict) -> None:
    """Record the build settings, or refuse a restart with different ones."""
    path = out / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old is not None and old != settings:
            raise UsageError(
                f"{out} holds a build with other settings ({path}: {old}); use a new --out or the same options"
            )
    tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _clean_temporaries(out: Path) -> None:
    """Remove temporaries left by a killed build (hidden ``.name.tmp-PID`` files)."""
    for p in out.rglob(".*.tmp-*"):
        if p.is_file():
            p.unlink(missing_ok=True)


def log_failures(meta: dict) -> None:
    """Log each record a chunk skipped (or kept without its real-image generators), with the reason."""
    for rid, reason in meta.get("failed_ids", []):
        log.warning("record %s skipped: %s", rid, reason)
    for rid, reason in meta.get("skipped_ids", []):
        log.warning("record %s skipped for real-image generators: %s", rid, reason)


def real_dir_for(real_dir: RealDir | None, needs_real: bool) -> RealDir | None:
    """The ``--real-dir`` lookup to use: ``None`` (with a warning) when no generator needs a real image."""
    if real_dir is not None and not needs_real:
        log.warning("--real-dir %s is not used: no generator needs a real image", real_dir.root)
        return None
    return real_dir


def plan_chunks(
    source: str | None, out: Path, specs: Sequence[GeneratorSpec], *, chunk_size: int, add_to: str | None,
    real_dir: RealDir | None = None,
) -> Iterator[Chunk]:
    """The build's chunks, in order (lazily: the input is streamed); ``real_dir`` attaches real images."""
    for chunk in _input_chunks(source, out, chunk_size=chunk_size, add_to=add_to):
        if real_dir is not None:
            chunk.items = [real_dir.attach(item) for item in chunk.items]
        yield chunk


def _input_chunks(source: str | None, out: Path, *, chunk_size: int, add_to: str | None) -> Iterator[Chunk]:
    """The input cut into chunks: one per existing shard (``add_to``), else ``chunk_size`` records each."""
    if add_to is not None:
        from ..data.reader import parquet_files, read_parquet_file

        root = Path(add_to)
        for i, shard in enumerate(parquet_files(root)):
            rel = shard.relative_to(root) if root.is_dir() else Path(shard.name)
            items = [SourceItem(r.id, r.original_prompt, r.positive_prompt, r.negative_prompt, r.url)
                     for r in read_parquet_file(shard, images=False)]
            yield Chunk(i, items, out / rel, base=str(shard))
        return
    assert source is not None
    it = iter_source(source)
    i = 0
    while True:
        items = list(islice(it, chunk_size))
        if not items:
            return
        yield Chunk(i, items, out / f"part-{i:05d}.parquet")
        i += 1


def chunk_done(chunk: Chunk, names: Sequence[str]) -> dict | None:
    """The metadata of a chunk's finished shard (with every generator of ``names``), else None."""
    if not chunk.path.is_file():
        return None
    meta = read_chunk_metadata(chunk.path)
    if meta is None or not set(names) <= set(meta.get("generators", [])):
        return None
    return meta


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
) -> BuildSummary:
    """Build (or resume) a dataset: every record x every generator, one shard per chunk.

    ``real_dir``: a ``deepsift data fetch-real`` folder; each record's real image (for ``vae``
    generators) is looked up there by id.
    """
    if not specs:
        raise UsageError("give at least one --generator NAME=KIND:SOURCE")
    if (source is None) == (add_to is None):
        raise UsageError("give either --prompts SRC (a new build) or --add-to EXISTING (grow shards)")
    if chunk_size <= 0:
        raise UsageError(f"--chunk-size must be positive, got {chunk_size}")
    for option, value in (("--threads", threads), ("--ray-actors", ray_actors)):
        if value is not None and value <= 0:
            raise UsageError(f"{option} must be positive, got {value}")
    if add_to is not None and not Path(add_to).exists():
        raise DataError(f"{add_to}: no such file or folder to add to")
    out = Path(out)
    reals = RealDir(real_dir) if real_dir is not None else None
    settings = {"source": str(add_to or source), "add_to": add_to is not None,
                "generators": [s.to_text() for s in specs], "chunk_size": None if add_to else chunk_size}
    if reals is not None:  # only when given, so builds made before --real-dir existed still resume
        settings["real_dir"] = str(reals.resolved)
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
    if add_to is None or Path(add_to).resolve() != out.resolve():
        _write_manifest(out, settings)
    _clean_temporaries(out)
    needs_real = any(g.needs_real_image for g in generators)
    needs_prompt = any(not g.needs_real_image for g in generators)
    real_dir = real_dir_for(real_dir, needs_real)
    summary = BuildSummary(load_seconds=load_seconds)
    bar = tqdm(desc="build", unit="rec", disable=None if progress is None else not progress)
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
