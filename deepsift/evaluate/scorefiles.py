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
scores. No parser sees a file before the bounded pre-scan (:mod:`.prescan`: UTF-8, NUL bytes,
line length, JSON depth; for :func:`read_aligned_scores` also a size cap from the ids).
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
from .prescan import prescan
from .rowfiles import (ID_COLUMNS, LABEL_WORDS, RAW_SCORE_COLUMNS, SCORE_COLUMNS, _SHOW,  # noqa: F401 (re-exported)
                       AlignedScores, _listing, _pick, _row_id, _rows, as_key_ids, stream_rows)


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
    for line, row in stream_rows(p):
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


# -- vectorised path: large score files aligned to a known id list (the benchmark platform) --------
MAX_COLUMNS = 16
"""Wider files skip the vectorised reader (a table of thousands of columns costs memory per column)."""


def _fast_table(p: Path) -> Any | None:
    """The file as a pyarrow table of string columns (lower-cased names), or None when the fast path can't."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            with open(p, "rb") as fh:
                head = fh.readline().decode("utf-8-sig")
            names = next(csv.reader([head]), [])
            if not names or len(names) > MAX_COLUMNS or len(set(n.strip().lower() for n in names)) != len(names):
                return None
            table = pacsv.read_csv(p, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                                   convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                                        strings_can_be_null=False))
            return table.rename_columns([n.strip().lower() for n in names])
        if suffix == ".json":
            text = p.read_text(encoding="utf-8-sig")
            if not text.lstrip().startswith("{"):
                return None
            pairs = json.loads(text, object_pairs_hook=lambda kv: kv)  # top-level pairs, duplicates kept
            if not pairs:
                return None
            vals = pa.array([v for _, v in pairs])
            if not (pa.types.is_floating(vals.type) or pa.types.is_integer(vals.type)):
                return None
            return pa.table({"id": pa.array([str(k) for k, _ in pairs], pa.string()), "value": vals})
        if suffix == ".jsonl":  # the first row's columns and types; a row with another column: not here
            with open(p, encoding="utf-8-sig") as fh:
                first = json.loads(next((ln for ln in fh if ln.strip()), "null"))
            if not isinstance(first, dict) or not first or len(first) > MAX_COLUMNS or any(
                    isinstance(v, bool) or not isinstance(v, (str, int, float)) for v in first.values()):
                return None
            schema = pa.schema([(k, pa.string() if isinstance(v, str) else
                                 pa.int64() if isinstance(v, int) and k.lower() in ID_COLUMNS else pa.float64())
                                for k, v in first.items()])
            return pajson.read_json(p, parse_options=pajson.ParseOptions(explicit_schema=schema,
                                                                         unexpected_field_behavior="error"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError, OSError, ValueError):
        return None
    return None


def _labels_of(col: Any) -> np.ndarray | None:
    """0/1 from a column of label words, or None when a value is not one."""
    import pyarrow.compute as pc

    words = pc.utf8_lower(pc.utf8_trim_whitespace(col.cast("string")))
    known = list(LABEL_WORDS)
    idx = pc.index_in(words, value_set=__import__("pyarrow").array(known))
    if idx.null_count:
        return None
    return np.array([LABEL_WORDS[k] for k in known], np.int8)[idx.to_numpy(zero_copy_only=False)]


def read_aligned_scores(path: str | os.PathLike, ids: Any, columns: tuple[str, ...] = SCORE_COLUMNS,
                        with_labels: bool = True, ids_name: str = "the labels") -> AlignedScores:
    """Read a score file and align it to ``ids`` (every id exactly once): the rules of
    :func:`read_scores` + :func:`join`, vectorised for million-row files, in bounded memory.

    The file is first checked by :func:`~.prescan.prescan` (encoding, NUL bytes, line length, JSON
    depth) with a size cap of what a valid file for ``ids`` can need (:func:`size_cap`). A file the
    fast path cannot take as it is (a bad value, a duplicate, an unknown or missing id, more rows
    than ids, odd quoting...) is re-read row by row, streaming, and stops at the first row past
    the number of ids; the error names the first offending ids with their lines. ``with_labels``:
    also return a ``label`` column (0/1 or real/fake) found beside the score column (e.g.
    ``id,score,label``). ``ids_name`` names ``ids`` in messages.
    """
    import pyarrow as pa

    from .streamscores import stream_aligned

    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"{p}: no such file")
    key = ids if isinstance(ids, pa.Array) else pa.array(list(ids), pa.string())
    suffix = p.suffix.lower()
    most = len(key) + (suffix == ".csv")  # more lines than ids (+ a header): cannot be valid, stream it
    seen = prescan(p, size_cap(key), most)
    if seen.complete and (suffix == ".json" or seen.lines <= most):
        fast = _fast_aligned(p, key, columns, with_labels)
        if fast is not None:
            return fast
    return stream_aligned(p, key, columns, with_labels, ids_name)


def size_cap(key: Any) -> int:
    """The most bytes a valid score file for these ids needs: 3 bytes per id byte (JSON's ``\\uXXXX``
    escapes) + 128 per row (the score, a label, quotes and separators) + 64 KiB (a header, spacing)."""
    import pyarrow.compute as pc

    id_bytes = int(pc.sum(pc.binary_length(key)).as_py() or 0)
    return 3 * id_bytes + 128 * len(key) + (64 << 10)


def _fast_aligned(p: Path, key: Any, columns: tuple[str, ...], with_labels: bool) -> AlignedScores | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _fast_table(p)
    if table is None or table.num_rows == 0:
        return None
    names = dict.fromkeys(table.column_names)
    id_col = _pick(names, ID_COLUMNS)
    val_col = "value" if "value" in names else _pick(names, columns)
    if id_col is None or val_col is None:
        return None
    rid = pc.utf8_trim_whitespace(table[id_col].cast(pa.string()))
    if rid.null_count or pc.min(pc.utf8_length(rid)).as_py() == 0:
        return None
    try:
        values = table[val_col]
        if pa.types.is_string(values.type):
            values = pc.utf8_trim_whitespace(values)
        vals = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if not np.isfinite(vals).all():
        return None
    labels = None
    if with_labels and val_col != "label" and "label" in names:
        labels = _labels_of(table["label"])
        if labels is None:
            return None
    if len(rid) != len(key):
        return None
    rid = as_key_ids(rid, key)  # a path whose file name is an id counts as that id
    pos = pc.index_in(key, value_set=rid)  # for each wanted id, its row in the file
    if pos.null_count:
        return None
    order = pos.to_numpy(zero_copy_only=False)
    if np.bincount(order, minlength=len(rid)).max(initial=0) > 1:  # as many rows as ids, all found: distinct?
        return None
    return AlignedScores(str(p), vals[order], labels[order] if labels is not None else None, val_col)
