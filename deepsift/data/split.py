"""Deterministic dataset splits: train/val/test by id hash, and leave-one-generator-out.

Generators are named exactly as :attr:`~deepsift.data.schema.Generation.generator` gives them
(the name given to ``data build``, else the ``model_gen{k}`` value), as ``data info`` lists them.

``split_of(id)`` hashes ``"<salt>:<id>"`` with SHA-256, so a record lands in the same split on
every machine, in every run, whatever order the shards are read in, and adding records never
moves old ones. A leave-generator-out split keeps that id split (a record's prompt and real
image never appear on both sides) and then applies one rule, the same as for folder datasets:
every image of generator ``G`` goes to test, and no image of another generator does. A train/val
record keeps its other generations and sends its ``G`` generation to test as a record of its own
(the same id; the manifest lists the id on both sides); a test record keeps ``G`` only.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from ..exceptions import DataError, UsageError
from ..outplaces import ensure_writable_dir
from .schema import D3Record
from .writer import DEFAULT_MAX_SHARD_BYTES, ShardWriter

SPLITS = ("train", "val", "test")
MANIFEST = "splits.csv"


def split_of(record_id: str, val: float = 0.05, test: float = 0.05, salt: str = "deepsift") -> str:
    """``"train"``, ``"val"`` or ``"test"`` for an id, from a uniform hash in [0, 1)."""
    if val < 0 or test < 0 or val + test > 1:
        raise UsageError(f"val and test fractions must be >= 0 and sum to <= 1, got {val} and {test}")
    digest = hashlib.sha256(f"{salt}:{record_id}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def leave_out(record: D3Record, generator: str, side: str) -> D3Record | None:
    """The record as it goes to ``side``: test keeps only ``generator`` (its exact name), train/val drop it."""
    if side == "test":
        gens = [g for g in record.generations if g.generator == generator]
    else:
        gens = [g for g in record.generations if g.generator != generator]
    return replace(record, generations=gens) if gens else None


def leave_out_parts(record: D3Record, generator: str, side: str) -> tuple[list[tuple[str, D3Record]], int]:
    """Where a record's parts go with ``generator`` left out: ``[(side, record)]`` and the images dropped.

    All of ``generator`` goes to test; the other generations stay on ``side`` unless it is test (dropped).
    """
    out = []
    mine = leave_out(record, generator, "test")
    rest = leave_out(record, generator, "train")
    if rest is not None and side != "test":
        out.append((side, rest))
    if mine is not None:
        out.append(("test", mine))
    return out, (len(rest.generations) if rest is not None and side == "test" else 0)


@dataclass
class SplitSummary:
    """Counts of one split."""

    records: Counter = field(default_factory=Counter)
    images: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in SPLITS})
    dropped: int = 0  # images left out (other generators' images of test records)
    shards: dict[str, list[Path]] = field(default_factory=dict)
    left_out: str | None = None

    def line(self, unit: str = "records") -> str:
        """One-line summary for the end of the command."""
        parts = []
        for s in SPLITS:
            per_gen = ", ".join(f"{m} {c}" for m, c in sorted(self.images[s].items()))
            parts.append(f"{s} {self.records[s]} {unit} ({per_gen or 'no images'})")
        line = "; ".join(parts)
        total = sum(sum(c.values()) for c in self.images.values())
        if total:
            line += "; achieved " + " / ".join(f"{s} {sum(self.images[s].values()) / total:.0%}" for s in SPLITS)
        if self.left_out is not None:
            n = sum(c[self.left_out] for c in self.images.values())
            line += (f"; left out {self.left_out}: all {n} of its images in test; dropped {self.dropped} image(s) "
                     f"of other generators from test")
        return line


def split_records(
    records: Iterable[D3Record],
    out_dir: str | os.PathLike,
    *,
    n_generators: int,
    val: float = 0.05,
    test: float = 0.05,
    salt: str = "deepsift",
    leave_out_generator: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: bool = True,
) -> SplitSummary:
    """Write ``out_dir/{train,val,test}/d3-*.parquet`` and ``out_dir/splits.csv`` (id, split)."""
    from ..output import progress as progress_bar

    split_of("", val, test, salt)  # validates the fractions before any work
    out = Path(out_dir)
    if out.exists() and any(any((out / s).glob("*.parquet")) for s in SPLITS):
        raise DataError(f"{out}: already holds split shards; choose an empty output folder")
    ensure_writable_dir(out)
    summary = SplitSummary(left_out=leave_out_generator)
    writers = {s: ShardWriter(out / s, n_generators=n_generators, max_shard_bytes=max_shard_bytes) for s in SPLITS}
    tmp_manifest = out / f".{MANIFEST}.tmp-{os.getpid()}"
    seen: set[str] = set()
    try:
        with open(tmp_manifest, "w", newline="", encoding="utf-8") as fh:
            manifest = csv.writer(fh)
            manifest.writerow(["id", "split"])
            for record in progress_bar(records, "split", unit="rec", enabled=None if progress else False):
                if record.id in seen:
                    raise DataError(f"duplicate record id {record.id!r}: ids must be unique to split by id")
                seen.add(record.id)
                side = split_of(record.id, val, test, salt)
                parts = [(side, record)]
                if leave_out_generator is not None:
                    parts, dropped = leave_out_parts(record, leave_out_generator, side)
                    summary.dropped += dropped
                for where, part in parts:
                    writers[where].write(part)
                    manifest.writerow([part.id, where])
                    summary.records[where] += 1
                    summary.images[where].update(g.generator for g in part.generations)
        for s, w in writers.items():
            summary.shards[s] = w.close()
        os.replace(tmp_manifest, out / MANIFEST)
    except BaseException as exc:
        for w in writers.values():
            w.abort()
        tmp_manifest.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk or a folder gone read-only: one line, nothing half-written
            raise DataError(f"cannot write the split to {out}: {exc.strerror or exc}; nothing was kept") from None
        raise
    return summary


FOLDER_MANIFEST_COLUMNS = ("id", "path", "label", "generator", "group", "split")


def split_samples(samples: Iterable, out_dir: str | os.PathLike, *, val: float = 0.05, test: float = 0.05,
                  salt: str = "deepsift", leave_out_generator: str | None = None) -> SplitSummary:
    """Split a plain folder dataset (:mod:`deepsift.data.layout` samples) into ``out_dir/splits.csv``.

    Images split by their group (:func:`deepsift.data.groups.group_key`: a whole source or prompt
    folder on one side, never per image when a group is given), real and generated alike. With
    ``leave_out_generator`` G: every image of G goes to test, other generated images never do.
    A side given a share (val, test) that gets no real or no generated image is refused, nothing
    kept. The images stay where they are; the manifest names each one's split.
    """
    from .groups import group_key

    split_of("", val, test, salt)
    out = Path(out_dir)
    ensure_writable_dir(out)
    if (out / MANIFEST).exists():
        raise DataError(f"{out}: already holds a {MANIFEST}; choose an empty output folder")
    summary = SplitSummary(left_out=leave_out_generator)
    tmp = out / f".{MANIFEST}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(FOLDER_MANIFEST_COLUMNS)
            for s in samples:
                side = split_of(group_key(s), val, test, salt)
                if leave_out_generator is not None and s.label == 1:
                    if s.generator == leave_out_generator:
                        side = "test"
                    elif side == "test":
                        summary.dropped += 1
                        continue
                w.writerow([s.id, s.source, s.label, s.generator, s.group or "", side])
                summary.records[side] += 1
                summary.images[side][s.generator] += 1
        _check_both_classes(summary, {"train": 1.0 - val - test, "val": val, "test": test})
        os.replace(tmp, out / MANIFEST)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write the split to {out}: {exc.strerror or exc}; nothing was kept") from None
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    return summary


def _check_both_classes(summary: SplitSummary, shares: dict[str, float]) -> None:
    """A DataError when a side with a share gets no real or no generated image (said with the counts)."""
    for side, share in shares.items():
        if share <= 0:
            continue
        n_real = summary.images[side].get("real", 0)
        n_fake = sum(summary.images[side].values()) - n_real
        if not n_real or not n_fake:
            raise DataError(f"the {side} side would hold {n_real} real and {n_fake} generated image(s): a side with no "
                            f"{'real' if not n_real else 'generated'} image cannot be evaluated; change the fractions "
                            f"or the salt, or group less coarsely ({summary.line('images')}); nothing was written")
