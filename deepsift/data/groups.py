"""Groups for grouped splits: an image's source (or prompt) never straddles train and test.

``by="folder"`` (default): the first folder below ``real/`` or below a generator's folder (what
:mod:`deepsift.data.layout` records; a file directly in the class folder is its own group).
``by="camera"``: the EXIF camera make and model of a real image, read from the header only (no
pixel decode; no EXIF, or a generated image: the folder rule). ``by="image"``: every image
alone (the plain per-image split). A group file (CSV with ``id`` or ``path`` and ``group``
columns) names groups itself, for real and generated images alike, and wins over ``by`` for the
images it lists; a file that matches no image is refused, one matching less than
:data:`MIN_MATCHED` of its rows is warned about.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from ..exceptions import DataError
from .layout import Sample

GROUP_BY = ("folder", "camera", "image")
MIN_MATCHED = 0.9


def camera_of(source: str | bytes) -> str | None:
    """``"Make Model"`` from the EXIF header of an image, or None (no EXIF, unreadable)."""
    from PIL import Image

    from ..images import open_source

    try:
        fp, _ = open_source(source)  # the one safe opener: a FIFO or a device is refused unread, never blocks
        with fp, Image.open(fp) as im:
            exif = im.getexif()
    except Exception:  # noqa: BLE001 - any unreadable header means "no camera"
        return None
    make, model = str(exif.get(0x010F, "")).strip("\x00 "), str(exif.get(0x0110, "")).strip("\x00 ")
    text = " ".join(x for x in (make, model) if x)
    return text or None


def read_group_file(path: str | os.PathLike) -> dict[str, str]:
    """``{id or path: group}`` from a CSV file with an ``id`` (or ``path``) and a ``group`` column."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the group file ({getattr(exc, 'strerror', None) or exc})") from None
    if not rows or "group" not in rows[0] or not ({"id", "path"} & set(rows[0])):
        raise DataError(f"{path}: a group file needs an 'id' (or 'path') column and a 'group' column")
    key = "id" if "id" in rows[0] else "path"
    out = {}
    for n, row in enumerate(rows, start=2):
        if not (row.get(key) or "").strip() or not (row.get("group") or "").strip():
            raise DataError(f"{path} line {n}: empty {key} or group")
        out[row[key].strip()] = row["group"].strip()
    return out


def assign_groups(samples: Sequence[Sample], by: str = "folder", table: dict[str, str] | None = None) -> list[Sample]:
    """The samples with the ``group`` of each image set by ``by`` and ``table`` (a group file's rows).

    A ``table`` whose keys match no image is a DataError (one line); one whose rows match less
    than :data:`MIN_MATCHED` of the time is warned about on stderr.
    """
    if by not in GROUP_BY:
        raise DataError(f"unknown grouping {by!r}; choose from {', '.join(GROUP_BY)}")
    out, used = [], set()
    for s in samples:
        group = s.group
        if by == "image":
            group = None
        elif by == "camera" and s.label == 0:
            cam = camera_of(s.source)
            group = f"camera:{cam}" if cam else group
        if table:
            src = s.source if isinstance(s.source, str) else None
            key = next((k for k in (s.id, src, Path(src).name if src else None) if k and k in table), None)
            if key is not None:
                used.add(key)
                group = f"column:{table[key]}"
        out.append(replace(s, group=group))
    if table:
        _check_matched(len(used), len(table), len(samples))
    return out


def _check_matched(matched: int, rows: int, images: int) -> None:
    """Refuse a group file that matches nothing; warn when it matches less than MIN_MATCHED of its rows."""
    from ..output import note

    if matched == 0:
        raise DataError(f"the group file matches none of the {images} images (0 of its {rows} rows): its ids or paths "
                        f"must be the dataset's ids (relative paths such as real/src/a.jpg), full paths or file names")
    if matched < MIN_MATCHED * rows:
        note(f"deepsift: warning: the group file matches only {matched} of its {rows} rows "
             f"({matched / rows:.0%}); the unmatched images keep the --group rule")


def group_key(s: Sample) -> str:
    """The unit a split keeps together: the group, or the image itself (its id) without one."""
    return f"group:{s.group}" if s.group else f"image:{s.id}"


def groups_of(samples: Iterable[Sample]) -> dict[str, list[int]]:
    """``{group key: sample indices}`` of the real samples, in first-seen order."""
    out: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.label == 0:
            out.setdefault(group_key(s), []).append(i)
    return out


def hash_unit(key: str, salt: str = "deepsift") -> float:
    """A uniform number in [0, 1) from a key (the same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode("utf-8")).digest()[:8], "big") / 2.0**64
