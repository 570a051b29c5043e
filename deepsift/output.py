"""Streaming writers for per-image results: table, json, jsonl and csv."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
from pathlib import Path
from typing import IO, Iterable, Iterator

from .exceptions import DataError, UsageError

OUTPUT_FORMATS = ("table", "json", "jsonl", "csv")
PREDICTION_COLUMNS = ["source", "verdict", "label", "probability", "score", "head", "generator", "error"]
EXIT_SOME_FAILED = 3
"""Exit code of a command that finished but could not read some of its inputs."""


def _cell(value: object) -> str:
    """Format one table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


class RowWriter:
    """Write dict rows to a stream as they come, in one of :data:`OUTPUT_FORMATS`."""

    def __init__(self, stream: IO[str], fmt: str, columns: list[str]) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
        self.stream, self.fmt, self.columns = stream, fmt, columns
        self.count = 0
        self._csv = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore") if fmt == "csv" else None
        if self._csv:
            self._csv.writeheader()
        elif fmt == "json":
            stream.write("[")
        elif fmt == "table":
            self._widths = [max(len(c), 10) for c in columns]
            self._widths[0] = max(self._widths[0], 40)

    def write(self, row: dict) -> None:
        """Write one row and flush, so a crash loses nothing already decided."""
        if self.fmt == "csv":
            self._csv.writerow({k: ("" if v is None else v) for k, v in row.items()})  # type: ignore[union-attr]
        elif self.fmt == "jsonl":
            self.stream.write(json.dumps(row) + "\n")
        elif self.fmt == "json":
            self.stream.write(("," if self.count else "") + "\n  " + json.dumps(row))
        else:
            if self.count == 0:
                self.stream.write("  ".join(c.ljust(w) for c, w in zip(self.columns, self._widths)).rstrip() + "\n")
            cells = [_cell(row.get(c)) for c in self.columns]
            self.stream.write("  ".join(v.ljust(w) for v, w in zip(cells, self._widths)).rstrip() + "\n")
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        """Finish the document (closes the JSON array)."""
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
        self.stream.flush()


def write_rows(rows: Iterable[dict], fmt: str, columns: list[str], stream: IO[str] | None = None) -> int:
    """Write all ``rows``; returns how many were written."""
    writer = RowWriter(stream or sys.stdout, fmt, columns)
    for row in rows:
        writer.write(row)
    writer.close()
    return writer.count


@contextlib.contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """Yield a text stream for ``path`` (stdout when None); a path that cannot be written is a UsageError."""
    if path is None:
        yield sys.stdout
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "w", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield fh
    except BaseException:
        with contextlib.suppress(OSError):  # the error in flight says more than a failed close
            fh.close()
        raise
    try:
        fh.close()
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


def progress(iterable: Iterable, desc: str, unit: str = "img") -> Iterable:
    """A tqdm bar on stderr, shown only when stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True)


def write_predictions(predictions: Iterable, fmt: str, out: str | None, label: str = "deepsift") -> int:
    """Stream Prediction objects to ``out`` in ``fmt``, print a one-line summary; returns the exit code."""
    failed = total = fakes = 0
    with open_output(out) as stream:
        writer = RowWriter(stream, fmt, PREDICTION_COLUMNS)
        try:
            for pred in progress(predictions, "detect"):
                writer.write(pred.to_dict())
                total += 1
                failed += pred.error is not None
                fakes += pred.label == 1
            writer.close()
        except OSError as exc:
            if out is None and isinstance(exc, BrokenPipeError):
                raise
            raise DataError(f"cannot write {out or 'stdout'}: {exc.strerror or exc}; the {total} row(s) "
                            f"before it were written and flushed") from None
    print(f"{label}: {total} input(s): {fakes} fake, {total - fakes - failed} real, {failed} failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0
