"""The row-by-row reading of a score file aligned to known ids, streaming, in bounded memory.

What :func:`~.scorefiles.read_aligned_scores` falls back to when its vectorised path cannot take
a file. Rows are read one at a time and looked up among the ids in batches (pyarrow); memory is a
few arrays of one entry per id plus one batch, whatever the file holds. Reading stops at the first
row past the number of ids (such a file cannot be valid). The rules and messages are those of
:func:`~.scorefiles.read_scores` + :func:`~.scorefiles.join`: duplicates first, then bad values,
then unknown and missing ids, then bad labels, each naming the first offending ids and lines.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import EvaluationError
from .rowfiles import (_SHOW, ID_COLUMNS, LABEL_WORDS, AlignedScores, _iter_rows, _listing, _pick, _row_id,
                       as_key_ids)

BATCH = 32768


def _short(text: str, width: int = 80) -> str:
    """An id as messages show it: at most ``width`` characters."""
    return text if len(text) <= width else text[:width - 3] + "..."


def _more(items: list[str], count: int) -> str:
    return ", ".join(items) + (f" ... and {count - len(items)} more" if count > len(items) else "")


class _Tally:
    """A count and the first few descriptions of one kind of problem."""

    def __init__(self) -> None:
        self.count, self.first = 0, []  # type: ignore[var-annotated]

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.first) < _SHOW:
            self.first.append(text)


def stream_aligned(p: Path, key: Any, columns: tuple[str, ...], with_labels: bool, ids_name: str) -> AlignedScores:
    """Read ``p`` row by row and align it to ``key`` (a pyarrow string array); EvaluationError naming rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(key)
    scores = np.zeros(n, np.float64)
    line_of = np.zeros(n, np.int64)  # the line that gave each id its score; 0: none yet
    dup = np.zeros(n, bool)
    labels = np.full(n, -1, np.int8)
    bad, unknown, bad_labels = _Tally(), _Tally(), _Tally()
    val_col, want_labels, rows, stopped = None, False, 0, ""
    batch: list[tuple[int, str, Any, Any]] = []

    def flush() -> None:
        pos = pc.index_in(as_key_ids(pa.array([b[1] for b in batch], pa.string()), key), value_set=key)
        for (line, rid, raw, lab), k in zip(batch, pos.fill_null(-1).to_numpy(zero_copy_only=False)):
            if k >= 0 and line_of[k]:
                dup[k] = True
            try:
                val = float(raw) if not isinstance(raw, bool) else math.nan
            except (TypeError, ValueError):
                val = math.nan
            if want_labels:
                word = str(lab).strip().lower()
                if word in LABEL_WORDS:
                    if k >= 0:
                        labels[k] = LABEL_WORDS[word]
                else:
                    bad_labels.add(f"{_short(rid)} (line {line}): {_short(repr(lab))}")
            if not math.isfinite(val):
                bad.add(f"{_short(rid)}" + (f" (line {line})" if line else "") + f": {_short(repr(raw))}")
            elif k < 0:
                unknown.add(repr(_short(rid)) + (f" (line {line})" if line else ""))
            elif not line_of[k]:
                line_of[k], scores[k] = line or -1, val
        batch.clear()

    for line, row in _iter_rows(p, p.suffix.lower()):
        idk = _pick(row, ID_COLUMNS)
        col = "value" if "value" in row else _pick(row, columns)
        if idk is None or col is None:
            raise EvaluationError(f"{p}: needs an id column ({'/'.join(ID_COLUMNS)}) and a score column "
                                  f"({'/'.join(columns)}); got {sorted(row)}")
        if val_col is None:
            val_col = col
            want_labels = with_labels and col not in ("label", "value") and "label" in row
        batch.append((line, _row_id(row, idk, p, line), row[col], row.get("label")))
        rows += 1
        if rows > n:  # a valid file has one row per id: stop here
            stopped = f"line {line}" if line else f"entry {rows}"
            break
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    tail = (f" (reading stopped at {stopped}: the file has more rows than {ids_name} has ids, {n})"
            if stopped else "")
    if dup.any():
        names = sorted(_short(x) for x in key.filter(pa.array(dup)).to_pylist())
        raise EvaluationError(f"{p}: duplicate ids {_listing(names)}{tail}")
    if bad.count:
        raise EvaluationError(f"{p}: {bad.count} non-numeric or NaN score(s): {_more(bad.first, bad.count)}")
    if not line_of.any() and not unknown.count:
        raise EvaluationError(f"{p}: no scores")
    problems = []
    if unknown.count:
        problems.append(f"{unknown.count} id(s) not in {ids_name}: {_more(unknown.first, unknown.count)}")
    missing = np.flatnonzero(line_of == 0)
    if len(missing) and not stopped:
        names = [_short(x) for x in key.take(pa.array(missing[:_SHOW])).to_pylist()]
        problems.append(f"{len(missing)} id(s) of {ids_name} missing from the file: "
                        f"{_more([repr(x) for x in names], len(missing))}")
    if problems:
        raise EvaluationError(f"{p}: " + "; ".join(problems) + tail)
    if bad_labels.count:
        raise EvaluationError(f"{p}: {bad_labels.count} bad label(s) (0/1 or real/fake): "
                              f"{_more(bad_labels.first, bad_labels.count)}")
    return AlignedScores(str(p), scores, labels if want_labels else None, val_col or "value")
