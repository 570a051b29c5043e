"""Label and score files: read, validate and join them by id.

Accepted formats (by extension):

* ``.csv``: a header row with an id column (``id``, ``file``, ``filename``, ``source`` or
  ``path``) and a value column: ``label`` for label files (0/1 or real/fake, plus an optional
  ``generator`` column); for score files the first of ``probability``, ``score``, ``label``,
  ``prediction`` that exists (``deepsift detect`` CSV output works as is).
* ``.json``: an object ``{id: value}`` (the ELSA Track 1 submission format) or a list of
  objects with the columns above; ``.jsonl``: one such object per line.

Every problem is reported at once with the file and the offending ids/lines: duplicate ids,
non-numeric or NaN values, and, when joining, ids unknown to the labels or missing from the
scores.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import EvaluationError

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
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read ({exc})") from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = []
        for row in reader:
            if None in row:  # more fields than the header (e.g. an unquoted comma in a file name)
                raise EvaluationError(f"{path} line {reader.line_num}: {len(reader.fieldnames or []) + len(row[None])} "
                                      f"fields but the header has {len(reader.fieldnames or [])}")
            rows.append((reader.line_num, {k.strip().lower(): v for k, v in row.items() if k}))
        return rows
    if suffix == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                out.append((i, _object(_json(line, path, i), path, i)))
        return out
    if suffix == ".json":
        data = _json(text, path, None)
        if isinstance(data, dict):  # re-read as pairs so duplicate keys are not silently merged
            return [(0, {"id": k, "value": v}) for k, v in _json_pairs(text)]
        if isinstance(data, list):
            return [(i + 1, _object(row, path, i + 1)) for i, row in enumerate(data)]
        raise EvaluationError(f"{path}: expected a JSON object {{id: value}} or a list of rows")
    raise EvaluationError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .json or .jsonl")


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
class LabelTable:
    """Labels (and generators) by id, in file order."""

    path: str
    labels: dict[str, int]
    generators: dict[str, str]


def read_labels(path: str | os.PathLike) -> LabelTable:
    """Read a label file (ids -> 0 real / 1 fake, optional generator)."""
    p = Path(path)
    rows = _rows(p)
    labels: dict[str, int] = {}
    gens: dict[str, str] = {}
    dupes, bad = [], []
    for line, row in rows:
        key = _pick(row, ID_COLUMNS)
        col = "value" if "value" in row else _pick(row, ("label", "is_fake", "target"))
        if key is None or col is None:
            raise EvaluationError(f"{p}: needs an id column ({'/'.join(ID_COLUMNS)}) and a label column; "
                                  f"got {sorted(row)}")
        rid = _row_id(row, key, p, line)
        raw = str(row[col]).strip().lower()
        if rid in labels:
            dupes.append(rid)
        if raw not in LABEL_WORDS:
            bad.append(f"{rid} (line {line}): {row[col]!r}" if line else f"{rid}: {row[col]!r}")
            continue
        labels[rid] = LABEL_WORDS[raw]
        gen = row.get("generator")
        gens[rid] = str(gen) if gen not in (None, "") else ("fake" if labels[rid] else "real")
    if dupes:
        raise EvaluationError(f"{p}: duplicate ids {_listing(sorted(set(dupes)))}")
    if bad:
        raise EvaluationError(f"{p}: labels must be 0/1 or real/fake; bad values: {', '.join(bad[:_SHOW])}")
    if not labels:
        raise EvaluationError(f"{p}: no labels")
    return LabelTable(str(p), labels, gens)


def read_scores(path: str | os.PathLike, columns: tuple[str, ...] = SCORE_COLUMNS) -> dict[str, float]:
    """Read a score file (ids -> finite float score or probability; the first of ``columns`` present)."""
    p = Path(path)
    scores: dict[str, float] = {}
    dupes, bad = [], []
    for line, row in _rows(p):
        key = _pick(row, ID_COLUMNS)
        col = "value" if "value" in row else _pick(row, columns)
        if key is None or col is None:
            raise EvaluationError(f"{p}: needs an id column ({'/'.join(ID_COLUMNS)}) and a score column "
                                  f"({'/'.join(columns)}); got {sorted(row)}")
        rid = _row_id(row, key, p, line)
        if rid in scores:
            dupes.append(rid)
        raw = row[col]
        try:
            val = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            val = math.nan
        if not math.isfinite(val):
            bad.append(f"{rid}" + (f" (line {line})" if line else "") + f": {raw!r}")
            continue
        scores[rid] = val
    if dupes:
        raise EvaluationError(f"{p}: duplicate ids {_listing(sorted(set(dupes)))}")
    if bad:
        raise EvaluationError(f"{p}: {len(bad)} non-numeric or NaN score(s): {', '.join(bad[:_SHOW])}"
                              + (f" ... and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""))
    if not scores:
        raise EvaluationError(f"{p}: no scores")
    return scores


def join(labels: LabelTable, scores: dict[str, float], scores_path: str = "scores") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Align scores to labels: ``(ids, labels, scores)``; unknown or missing ids are an error."""
    unknown = [k for k in scores if k not in labels.labels]
    missing = [k for k in labels.labels if k not in scores]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} id(s) not in the labels {labels.path}: {_listing(unknown)}")
    if missing:
        problems.append(f"{len(missing)} labelled id(s) missing from the scores: {_listing(missing)}")
    if problems:
        raise EvaluationError(f"{scores_path}: " + "; ".join(problems))
    ids = list(labels.labels)
    return ids, np.array([labels.labels[i] for i in ids], np.int8), np.array([scores[i] for i in ids], np.float64)
