"""Prompt sources for the builder: D3/ELSA parquet shards, JSONL or CSV files of prompts.

JSONL (one object per line) and CSV (a header row) use the same fields:

* ``prompt`` or ``original_prompt`` (required column in CSV), ``positive_prompt`` (defaults
  to the prompt), ``negative_prompt``, ``url``;
* ``id`` (default: ``<file stem>-<row number>``, stable when rows are appended);
* ``image``: the real image, a path relative to the prompt file's folder (it may not
  escape that folder) or an absolute path. Needed by reconstruction (``vae``) generators.

Rows that cannot be used become items with a ``problem`` (``bad_line``, ``duplicate_id``,
``bad_image_path``) so the builder logs and counts them and carries on.

:class:`RealDir` attaches real images from a ``deepsift data fetch-real`` folder by record id
(``--real-dir``); a record whose image was not fetched keeps ``real_problem`` instead, so only
the generators that need a real image skip it.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..data.fetch import STATUS_FILE, load_status, real_image_path
from ..exceptions import DataError, SchemaError, input_not_found

PROMPT_FIELDS = ("prompt", "original_prompt", "positive_prompt")
CSV_FIELD_LIMIT = 1 << 30
"""Largest CSV field read (the csv module's default, 128 KiB, is below some real prompts)."""


@dataclass
class SourceItem:
    """One input record: prompts, URL, optional real image, or the reason it is unusable."""

    id: str
    original_prompt: str | None = None
    positive_prompt: str | None = None
    negative_prompt: str | None = None
    url: str | None = None
    real: str | None = None  # absolute path of the real image, if any
    problem: str | None = None  # e.g. "bad_line: ..." when the row itself is unusable
    real_from_dir: bool = False  # real image looked up in a --real-dir folder
    real_problem: str | None = None  # why a --real-dir lookup found no usable image ("no_real_image: ...")

    @property
    def prompt(self) -> str:
        """The prompt generators see: positive, else original, else ``""``."""
        return self.positive_prompt or self.original_prompt or ""


def source_kind(src: str | os.PathLike) -> str:
    """``jsonl``, ``csv`` or ``d3`` (parquet file, folder of shards, or hub dataset id)."""
    s = str(src).lower()
    if s.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if s.endswith((".csv", ".tsv")):
        return "csv"
    return "d3"


def iter_source(src: str | os.PathLike) -> Iterator[SourceItem]:
    """Yield the items of a prompt source in a stable order, marking duplicate ids as problems."""
    kind = source_kind(src)
    if kind != "d3" and not Path(src).is_file():
        raise DataError(f"{src}: no such prompt file")
    rows = {"jsonl": _iter_jsonl, "csv": _iter_csv, "d3": _iter_d3}[kind](src)
    seen: set[str] = set()
    for item in rows:
        if item.problem is None:
            if item.id in seen:
                item.problem = f"duplicate_id: id {item.id!r} appeared earlier in {src}"
            seen.add(item.id)
        yield item


def _item_from_row(row: dict[str, Any], default_id: str, base: Path, where: str) -> SourceItem:
    """Build an item from a JSONL/CSV row (image paths resolved under ``base``)."""

    def text(key: str) -> str | None:
        v = row.get(key)
        return None if v is None or v == "" else str(v)

    original = text("original_prompt") or text("prompt")
    positive = text("positive_prompt") or original
    item = SourceItem(
        id=text("id") or default_id,
        original_prompt=original if original is not None else "",
        positive_prompt=positive if positive is not None else "",
        negative_prompt=text("negative_prompt"),
        url=text("url"),
    )
    image = text("image")
    if image is not None:
        p = Path(image)
        resolved = (p if p.is_absolute() else base / p).resolve()
        if not p.is_absolute() and not resolved.is_relative_to(base.resolve()):
            item.problem = f"bad_image_path: {where}: image path {image!r} escapes {base}"
        item.real = str(resolved)
    return item


def _iter_jsonl(src: str | os.PathLike) -> Iterator[SourceItem]:
    """Items of a JSONL file; a line that is not a JSON object is an item with a problem."""
    path = Path(src)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            default_id = f"{path.stem}-{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield SourceItem(id=default_id, problem=f"bad_line: {where}: not JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                yield SourceItem(id=default_id, problem=f"bad_line: {where}: not a JSON object")
                continue
            yield _item_from_row(row, default_id, path.parent, where)


def _iter_csv(src: str | os.PathLike) -> Iterator[SourceItem]:
    """Items of a CSV (or TSV) file with a header row naming the prompt column."""
    path = Path(src)
    # over-long prompts must reach the prompt_too_long check, not stop at csv's 128 KiB field limit
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = reader.fieldnames or []
        if not any(f in header for f in PROMPT_FIELDS):
            raise SchemaError(f"{path}: no prompt column; expected one of {', '.join(PROMPT_FIELDS)}, got {header}")
        for n, row in enumerate(reader, 2):
            yield _item_from_row(row, f"{path.stem}-{n}", path.parent, f"{path}:{n}")


def _iter_d3(src: str | os.PathLike) -> Iterator[SourceItem]:
    """Items of D3/ELSA parquet shards (prompts and URLs; images are not read)."""
    from ..data.reader import read_d3

    for rec in read_d3(src, images=False):
        yield SourceItem(
            id=rec.id,
            original_prompt=rec.original_prompt,
            positive_prompt=rec.positive_prompt,
            negative_prompt=rec.negative_prompt,
            url=rec.url,
        )


class RealDir:
    """The real images of a ``deepsift data fetch-real`` folder, looked up by record id.

    Lookups go through :func:`deepsift.data.fetch.load_status` / :func:`~deepsift.data.fetch.real_image_path`;
    a path that resolves outside the folder (e.g. a symlink) is refused, so bytes are only read
    from inside it. ``status.jsonl`` is read on the first lookup.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise input_not_found(path) if not self.root.exists() else DataError(f"{path}: not a folder")
        if not (self.root / STATUS_FILE).is_file():
            raise DataError(f"{path}: no {STATUS_FILE}; real images come from the output folder of "
                            f"'deepsift data fetch-real'")
        self.resolved = self.root.resolve()
        self._status: dict[str, dict] | None = None

    @property
    def status(self) -> dict[str, dict]:
        """The latest fetch status per id (read once)."""
        if self._status is None:
            self._status = load_status(self.root)
        return self._status

    def attach(self, item: SourceItem) -> SourceItem:
        """Set ``item.real`` from the folder, or ``item.real_problem`` saying why there is none."""
        if item.problem is not None or item.real is not None:
            return item  # unusable rows, and rows that name their own image, are left as they are
        item.real_from_dir = True
        path = real_image_path(self.root, self.status, item.id)
        if path is None:
            entry = self.status.get(item.id)
            why = "no line in status.jsonl" if entry is None else f"fetch status {entry.get('status')!r}"
            if entry is not None and entry.get("status") == "ok":
                why = f"fetched as {entry.get('path')!r} but the file is gone"
            item.real_problem = f"no_real_image: {why} in {self.root}"
            return item
        resolved = path.resolve()
        if not resolved.is_relative_to(self.resolved):
            item.real_problem = f"bad_image_path: {path} resolves outside {self.root}"
            return item
        item.real = str(resolved)
        return item
