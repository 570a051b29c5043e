"""Export D3 records to WebDataset tars in the authors' training layout.

One sample per record, key ``<prefix>__<split>__<id>``, members ``gen_0..gen_k``, ``real``
(when a real image was fetched), ``caption.txt`` (the original LAION caption, no newline) and
``url.txt``. All images of one sample are re-encoded to ONE format, as the authors' writer does,
so the file format cannot leak the label: JPEG (quality 100, 4:2:0, as in their published
sample) when every source image of the sample is JPEG, PNG otherwise; ``fmt`` can force one.
Tars are named ``<prefix>-0000.tar`` ... and written to a temporary name, then renamed.

``prefix`` and ``split`` may hold only ``[A-Za-z0-9_-]`` (they name files and members). The
output folder must be empty, or ``overwrite`` replaces the ``<prefix>-NNNN.tar`` tars (and
temporaries) of an earlier export, keeping every other file; the new export is built in a hidden
staging folder and swapped in only once complete, so a failed export leaves the old one intact. Two records whose ids map to
one sample key (``a.b`` and ``a_b``, or a repeated id) are a :class:`DataError` naming both ids;
the tars finished before it stay on disk, the one in progress is dropped.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from PIL import Image

from ..exceptions import DataError, ImageError, UsageError
from ..images import decode_image
from ..filenames import safe_name
from .fetch import load_status, real_image_path, sniff_ext
from .schema import D3Record

FORMATS = ("auto", "jpeg", "png")
JPEG_OPTIONS = {"quality": 100, "subsampling": "4:2:0"}
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class ExportSummary:
    """Counts of one export."""

    samples: int = 0
    shards: list[Path] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def line(self) -> str:
        """One-line summary for the end of the command."""
        fm = ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items())) or "none"
        sk = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"wrote {self.samples} samples in {len(self.shards)} tar(s) (formats: {fm}); skipped: {sk}"


def sample_key(prefix: str, split: str, record_id: str) -> str:
    """The WebDataset key of a record (dots would split the key, so they never appear)."""
    return f"{prefix}__{split}__{safe_name(record_id, dots=False)}"


def choose_format(encoded: list[bytes], fmt: str = "auto") -> str:
    """``"jpeg"`` or ``"png"`` for a sample: JPEG only when every source image is JPEG (``auto``)."""
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    return "jpeg" if encoded and all(sniff_ext(b) == "jpg" for b in encoded) else "png"


def encode(im: Image.Image, fmt: str) -> bytes:
    """Encode an RGB image as JPEG (quality 100, 4:2:0) or PNG."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, "JPEG", **JPEG_OPTIONS)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()


def sample_members(record: D3Record, real: bytes | None, fmt: str = "auto") -> dict[str, bytes]:
    """The tar members (name suffix -> bytes) of one record; raises ImageError on a bad image."""
    sources = [g.image for g in record.generations]
    if any(b is None for b in sources):
        raise DataError(f"record {record.id!r}: a generation has no image bytes")
    encoded = list(sources) + ([real] if real is not None else [])
    chosen = choose_format(encoded, fmt)  # type: ignore[arg-type]
    ext = "jpg" if chosen == "jpeg" else "png"
    members: dict[str, bytes] = {}
    for k, data in enumerate(sources):
        members[f"gen_{k}.{ext}"] = encode(decode_image(data), chosen)  # type: ignore[arg-type]
    if real is not None:
        members[f"real.{ext}"] = encode(decode_image(real), chosen)
    members["caption.txt"] = (record.original_prompt or record.positive_prompt or "").encode("utf-8")
    members["url.txt"] = (record.url or "").encode("utf-8")
    return members


class _TarShards:
    """Size-bounded tar shards, each written under a temporary name and renamed when complete."""

    def __init__(self, out_dir: Path, prefix: str, samples_per_shard: int) -> None:
        self.out_dir, self.prefix, self.per_shard = out_dir, prefix, samples_per_shard
        self.index, self.count = 0, 0
        self.tar: tarfile.TarFile | None = None
        self.paths: list[Path] = []

    def _final(self) -> Path:
        return self.out_dir / f"{self.prefix}-{self.index:04d}.tar"

    def _tmp(self) -> Path:
        return self.out_dir / f".{self._final().name}.tmp-{os.getpid()}"

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """Append one sample, rolling to a new tar when the current one is full."""
        if self.tar is None:
            self.tar = tarfile.open(self._tmp(), "w", format=tarfile.PAX_FORMAT)
        for suffix, data in members.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1
        if self.count >= self.per_shard:
            self.finish()

    def finish(self) -> None:
        """Close and rename the current tar."""
        if self.tar is None:
            return
        self.tar.close()
        os.replace(self._tmp(), self._final())
        self.paths.append(self._final())
        self.tar, self.count = None, 0
        self.index += 1

    def abort(self) -> None:
        """Drop the tar in progress (a full disk may refuse its closing blocks: it is dropped anyway)."""
        if self.tar is not None:
            try:
                self.tar.close()
            except OSError:
                pass
            finally:
                self._tmp().unlink(missing_ok=True)
                self.tar = None


def _earlier_export(out: Path, prefix: str, overwrite: bool) -> list[Path]:
    """Refuse a non-empty output folder; with ``overwrite`` list an earlier export's tars (to replace)."""
    if not out.is_dir():
        return []
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return []
    if not overwrite:
        raise DataError(f"{out}: output folder is not empty ({len(entries)} entries, e.g. {entries[0]}); "
                        "use the overwrite option to replace an earlier export's tars")
    ours = re.compile(rf"\.?{re.escape(prefix)}-\d{{4,}}\.tar(\.tmp-\d+)?")
    return [out / name for name in entries if ours.fullmatch(name) and (out / name).is_file()]


def _swap_in(staging: Path, out: Path, old: list[Path]) -> list[Path]:
    """Replace the earlier export's tars by the staged ones (only once the new export is complete)."""
    for path in old:
        path.unlink(missing_ok=True)
    moved = []
    for path in sorted(staging.iterdir()):
        os.replace(path, out / path.name)
        moved.append(out / path.name)
    staging.rmdir()
    return moved


def export_webdataset(
    records: Iterable[D3Record],
    out_dir: str | os.PathLike,
    *,
    real_dir: str | os.PathLike | None = None,
    split: str = "train",
    prefix: str = "elsa_v2",
    samples_per_shard: int = 1000,
    fmt: str = "auto",
    require_real: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> ExportSummary:
    """Write ``records`` as WebDataset tars; with ``real_dir`` (a fetch-real folder) add ``real``.

    With ``real_dir`` and ``require_real``, records whose real image was not fetched are skipped.
    A record whose image does not decode is skipped and counted, the export carries on.
    """
    from ..output import progress as progress_bar

    if samples_per_shard < 1:
        raise UsageError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {FORMATS}, got {fmt!r}")
    for option, value in (("prefix", prefix), ("split", split)):
        if not _NAME.fullmatch(value):
            raise UsageError(f"{option} {value!r}: only letters, digits, '_' and '-' are allowed "
                             "(it names tars and sample keys)")
    out = Path(out_dir)
    old = _earlier_export(out, prefix, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    # replacing an earlier export: build the new one beside it, swap only when complete
    target = out / f".export-staging-{os.getpid()}" if old else out
    target.mkdir(exist_ok=True)
    status = load_status(real_dir) if real_dir is not None else {}
    summary = ExportSummary()
    shards = _TarShards(target, prefix, samples_per_shard)
    keys: dict[str, str] = {}
    try:
        for record in progress_bar(records, "export", unit="rec", enabled=None if progress else False):
            real = None
            if real_dir is not None:
                path = real_image_path(real_dir, status, record.id)
                if path is None and require_real:
                    summary.skipped["no_real_image"] += 1
                    continue
                real = path.read_bytes() if path is not None else None
            if not record.generations:
                summary.skipped["no_generations"] += 1
                continue
            try:
                members = sample_members(record, real, fmt)
            except (ImageError, DataError):
                summary.skipped["bad_image"] += 1
                continue
            key = sample_key(prefix, split, record.id)
            if key in keys:
                raise DataError(f"records {keys[key]!r} and {record.id!r} map to the same sample key {key!r}; "
                                "ids must stay distinct once '.' and unsafe characters are replaced")
            keys[key] = record.id
            shards.add(key, members)
            summary.samples += 1
            summary.formats["jpeg" if "gen_0.jpg" in members else "png"] += 1
        shards.finish()
    except BaseException as exc:
        shards.abort()
        if target != out:
            for path in target.iterdir():
                path.unlink()
            target.rmdir()
        if isinstance(exc, OSError):  # a full disk or a folder gone read-only: one line
            raise DataError(f"cannot write the export to {out}: {exc.strerror or exc}; the tar in progress was "
                            f"dropped ({len(shards.paths)} finished before it stay)") from None
        raise
    summary.shards = _swap_in(target, out, old) if target != out else shards.paths
    return summary
