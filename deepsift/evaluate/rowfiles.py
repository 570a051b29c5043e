"""Rows of label and score files (CSV, JSON, JSONL), read one at a time after the bounded pre-scan.

The shared base of :mod:`.scorefiles` (the readers and their rules) and :mod:`.streamscores` (the
streaming aligned reader): column names, label words, and the row iterator.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..exceptions import EvaluationError
from .prescan import prescan

ID_COLUMNS = ("id", "file", "filename", "source", "path")
SCORE_COLUMNS = ("probability", "score", "label", "prediction")
RAW_SCORE_COLUMNS = ("score", "probability", "label", "prediction")
"""Column preference for fitting a calibration: it is applied to a detector's raw score."""
LABEL_WORDS = {"0": 0, "1": 1, "real": 0, "fake": 1, "0.0": 0, "1.0": 1}
_SHOW = 10


def _listing(items: list[str]) -> str:
    """``a, b, c`` (first ten) ``... and N more``."""
    head = ", ".join(repr(x) for x in items[:_SHOW])
    return head + (f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row dict) of a CSV/JSON/JSONL file; JSON objects become id/value rows."""
    return list(stream_rows(path))


def stream_rows(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`_rows` one row at a time, after the bounded :func:`~.prescan.prescan` (run at once)."""
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl"):
        raise EvaluationError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .json or .jsonl")
    prescan(path, max_bytes)
    return _iter_rows(path, suffix)


def _iter_rows(path: Path, suffix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        if suffix == ".csv":
            with open(path, encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                last = 0  # the line the last row ended on: an error is in the row after it
                try:
                    for row in reader:
                        last = reader.line_num
                        if None in row:  # more fields than the header (e.g. an unquoted comma in a file name)
                            width = len(reader.fieldnames or [])
                            raise EvaluationError(f"{path} line {reader.line_num}: {width + len(row[None])} fields "
                                                  f"but the header has {width}")
                        yield reader.line_num, {k.strip().lower(): v for k, v in row.items() if k}
                except csv.Error as exc:  # e.g. a quoted field running over many lines past csv's field limit
                    raise EvaluationError(f"{path} line {last + 1}: {exc}") from None
        elif suffix == ".jsonl":
            with open(path, encoding="utf-8-sig", newline="\n") as fh:
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        yield i, _object(_json(line, path, i), path, i)
        else:
            text = path.read_text(encoding="utf-8-sig")
            data = _json(text, path, None)
            if isinstance(data, dict):  # re-read as pairs so duplicate keys are not silently merged
                yield from ((0, {"id": k, "value": v}) for k, v in _json_pairs(text))
            elif isinstance(data, list):
                yield from ((i + 1, _object(row, path, i + 1)) for i, row in enumerate(data))
            else:
                raise EvaluationError(f"{path}: expected a JSON object {{id: value}} or a list of rows")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read ({exc})") from None


def _object(row: Any, path: Path, line: int) -> dict[str, Any]:
    """A JSON row must be an object ``{"id": ..., "score": ...}``."""
    if not isinstance(row, dict):
        raise EvaluationError(f"{path} line {line}: row is not an object with id and value columns "
                              f"(got {type(row).__name__} {str(row)[:50]})")
    return row


def _row_id(row: dict[str, Any], key: str, path: Path, line: int) -> str:
    """The stripped id of a row; an empty one is an error naming the line."""
    rid = "" if row[key] is None else str(row[key]).strip()
    if not rid:
        raise EvaluationError(f"{path}" + (f" line {line}" if line else "") + f": empty id in column {key!r}")
    return rid


def _json(text: str, path: Path, line: int | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" line {line}" if line else ""
        raise EvaluationError(f"{path}{where}: invalid JSON ({exc.msg})") from None


def _json_pairs(text: str) -> list[tuple[str, Any]]:
    """Top-level (key, value) pairs of a JSON object, duplicates kept."""
    top: list[list[tuple[str, Any]]] = []
    json.loads(text, object_pairs_hook=lambda kv: top.append(kv) or dict(kv))
    return top[-1]


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in row), None)


@dataclass
class AlignedScores:
    """Scores (and optional hard labels) of a score file, in the order of a given id list."""

    path: str
    scores: np.ndarray  # float64, aligned to the ids
    labels: np.ndarray | None  # int8 0/1 from a 'label' column beside the score column, else None
    score_column: str


def as_key_ids(ids: Any, key: Any) -> Any:
    """Row ids matched to ``key``: an id that is not in ``key`` but whose file name (after the last ``/`` or
    ``\\``) is, stands for that file name, so ``deepsift detect`` output (paths) is accepted as it is.
    Two rows naming one key this way are duplicates (refused as such)."""
    import pyarrow.compute as pc

    base = pc.replace_substring_regex(ids, pattern=r"^.*[/\\]", replacement="")
    return pc.if_else(pc.is_in(ids, value_set=key), ids, base)
