"""What the local and the Ray build share: the chunk plan, the restart rule, the manifest, the summary.

:mod:`deepsift.generate.builder` (one process) and :mod:`deepsift.generate.ray_build` (a Ray
cluster) both import this module and never each other's internals: the same chunks, the same
"a finished shard is the proof" restart rule, the same ``build.json`` and the same summary.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

from ..exceptions import UsageError
from .chunks import read_chunk_metadata
from .sources import RealDir, SourceItem, iter_source
from .spec import GeneratorSpec

log = logging.getLogger("deepsift.generate")

MANIFEST = "build.json"
"""File in the output folder recording how the dataset was built and grown (checked on restart)."""


@dataclass
class BuildSummary:
    """What a build did, and what it found already done: records, images per generator, failures.

    ``records``, ``images``, ``failures`` and ``notes`` cover every output shard of the build (done
    now or before); ``records_written`` and ``chunks - chunks_resumed`` are this run's share.
    """

    input_records: int = 0
    records: int = 0
    records_written: int = 0
    images: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    chunks: int = 0
    chunks_resumed: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0

    def add(self, meta: dict, resumed: bool) -> None:
        """Fold one chunk's metadata into the totals."""
        n = int(meta.get("records", 0))
        self.input_records += int(meta.get("input_records", 0))
        self.records += n
        self.records_written += 0 if resumed else n
        self.images.update(meta.get("images", {}))
        self.failures.update(meta.get("failures", {}))
        self.notes.update(meta.get("notes", {}))
        self.chunks += 1
        self.chunks_resumed += int(resumed)

    def lines(self) -> list[str]:
        """Human-readable summary lines: this run's work, then the state of the whole output."""
        new = self.chunks - self.chunks_resumed
        if new == 0 and self.chunks:
            first = (f"build: nothing to do, all {self.chunks} shard(s) were already done "
                     f"({self.records} record(s) from {self.input_records} input record(s))")
        else:
            first = (f"build: wrote {self.records_written} record(s) in {new} shard(s), {self.seconds:.1f} s "
                     f"({self.load_seconds:.1f} s loading generators)")
            if self.chunks_resumed:
                first += (f"; {self.chunks_resumed} shard(s) ({self.records - self.records_written} record(s)) were "
                          f"already done")
            first += f"; {self.records} record(s) from {self.input_records} input record(s) in all"
        out = [
            first,
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


def _read_manifest(path: Path) -> dict | None:
    """A ``build.json``, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recorded_source(source: str, out: Path, moves_with: str | os.PathLike | None = None) -> dict:
    """How ``build.json`` records a prompt ``source``: relative to ``out`` (with ``source_relative``) when it is a
    file or folder inside ``moves_with`` (default ``out``), the folder moved as a whole, so a moved build resumes;
    as given otherwise (outside it, or a hub id)."""
    root = Path(moves_with if moves_with is not None else out).resolve()
    path = Path(source)
    if not path.exists() or root not in path.resolve().parents:
        return {"source": source}
    return {"source": os.path.relpath(path.resolve(), Path(out).resolve()), "source_relative": True}


def manifest_source(folder: Path, manifest: dict) -> str:
    """The prompt source a ``build.json`` in ``folder`` records, resolved against the folder when stored relative."""
    src = str(manifest.get("source") or "")
    return str(folder / src) if src and manifest.get("source_relative") else src


def write_manifest(out: Path, settings: dict, *, add_to: str | None = None) -> dict:
    """Record the build in ``out/build.json``, or refuse a restart with other settings; returns what was written.

    A new build records its settings (source, generators, chunk size, real-image folder) and a
    re-run must repeat them. A build with ``add_to`` appends its generators to ``additions`` of
    the grown dataset's manifest (read from the ``add_to`` folder; started afresh for shards
    deepsift did not build), so ``build.json`` always lists every generator of the dataset; the
    same addition run again changes nothing.
    """
    path = out / MANIFEST
    old = _read_manifest(path)
    if add_to is None:
        if old is not None and {k: v for k, v in old.items() if k != "additions"} != settings:
            raise UsageError(f"{out} holds a build with other settings ({path}: {old}); use a new output "
                             f"folder or the same options")
        manifest = {**settings, **({"additions": old["additions"]} if old and "additions" in old else {})}
    else:
        root = Path(add_to)
        base = _read_manifest(root / MANIFEST) if root.is_dir() else None
        if base is None:
            base = {"source": str(add_to), "generators": [], "chunk_size": None}
        addition = {k: v for k, v in settings.items() if k in ("generators", "real_dir")}
        additions = list(base.get("additions", []))
        if addition not in additions:
            additions.append(addition)
        manifest = {**base, "additions": additions}
        if old is not None and Path(add_to).resolve() != out.resolve() and old != manifest:
            raise UsageError(f"{out} holds a build with other settings ({path}: {old}); use a new output "
                             f"folder or the same options")
    if manifest != old:
        tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    return manifest


def clean_temporaries(out: Path) -> None:
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
        log.warning("the real-image folder %s is not used: no generator needs a real image", real_dir.root)
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


def finished_addition(add_to: str, out: Path, names: Sequence[str]) -> BuildSummary | None:
    """The summary of an ``add_to`` build whose every shard already holds ``names`` (read from the shards'
    metadata alone: no record, no generator, no torch), else None (there is work to do)."""
    from ..data.reader import parquet_files

    root = Path(add_to)
    summary = BuildSummary()
    for shard in parquet_files(root):
        rel = shard.relative_to(root) if root.is_dir() else Path(shard.name)
        meta = chunk_done(Chunk(summary.chunks, [], out / rel), names)
        if meta is None:
            return None
        summary.add(meta, resumed=True)
    return summary if summary.chunks else None


def chunk_done(chunk: Chunk, names: Sequence[str]) -> dict | None:
    """The metadata of a chunk's finished shard (with every generator of ``names``), else None."""
    if not chunk.path.is_file():
        return None
    meta = read_chunk_metadata(chunk.path)
    if meta is None or not set(names) <= set(meta.get("generators", [])):
        return None
    return meta


