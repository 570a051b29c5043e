"""Streaming writers for per-image results (table, json, jsonl, csv), and output files that are never torn.

Output files (tested in ``tests/test_output.py`` and ``tests/test_full_disk.py``):

* A results file (``--out``) is written under a temporary name in its own folder and renamed
  into place only when complete, so the path holds either the whole result or whatever was
  there before.
* Interrupted (Ctrl-C, SIGTERM, or a write error such as a full disk), the rows written so far
  are kept when the format can be cut between rows: ``<out>.partial`` holds every complete row,
  never a torn one, and ends with one line saying it is partial (jsonl: ``{"partial": true,
  ...}``; csv: ``# partial: ...``). A json or table output leaves nothing behind.
* Text that is not valid Unicode (a file name that is not UTF-8, legal on Linux, arrives as
  surrogate escapes) is written the same way in every format: each byte that is not UTF-8
  becomes ``\\xNN`` (``caf\\xe9.png``). No row is ever lost to it.
* A target that exists and is not a regular file (``/dev/null``, a FIFO, a terminal) is written in
  place, never replaced by a rename (:func:`is_special_file`); it keeps no ``.partial``.
* Checking an output place before the work, and the modes of new files: :mod:`deepsift.outplaces`.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from .choices import OUTPUT_FORMATS  # re-exported: the formats of result rows
from .exceptions import EXIT_PARTIAL, DataError, Terminated
from .outplaces import is_special_file, through_links, umask_mode

PREDICTION_COLUMNS = ["source", "verdict", "label", "probability", "score", "head", "generator", "error"]
EXIT_SOME_FAILED = EXIT_PARTIAL
"""Exit code of a command that finished but could not read some of its inputs (:data:`EXIT_PARTIAL`)."""
TABLE_SAMPLE = 50
"""A ``table`` output holds back its first rows to size its columns to them (later rows keep those widths)."""
PARTIAL_SUFFIX = ".partial"
"""Suffix of the file that keeps the complete rows of an interrupted jsonl/csv output."""


def printable(text: str) -> str:
    """``text`` with every byte that was not UTF-8 (a surrogate escape) written as ``\\xNN``."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP's CSV injection list)."""


def csv_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: text starting with = + - @ tab or CR gets a leading ``'``."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _cell(value: object) -> str:
    """Format one table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return printable(str(value))


class RowWriter:
    """Write dict rows to a stream as they come, in one of :data:`OUTPUT_FORMATS`.

    Each row is flushed whole; ``on_row`` is called after each one (an :class:`AtomicOutput`
    marks where its last complete row ends). An ``OSError`` of the stream is re-raised as is and
    kept in :attr:`failed`, so a caller can tell a write failure from its input's errors.
    """

    def __init__(self, stream: IO[str], fmt: str, columns: list[str],
                 on_row: Callable[[], None] | None = None, formula_safe: bool = False) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
        self.stream, self.fmt, self.columns, self.on_row = stream, fmt, columns, on_row
        self.formula_safe = formula_safe  # csv: text cells pass through csv_safe (others' text, for spreadsheets)
        self.count = 0
        self.failed: OSError | None = None
        self._csv = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore") if fmt == "csv" else None
        if self._csv:
            self._csv.writeheader()
        elif fmt == "json":
            stream.write("[")
        elif fmt == "table":  # sized to the content of the first TABLE_SAMPLE rows, held back until then
            self._widths: list[int] | None = None
            self._held: list[list[str]] = []

    def write(self, row: dict) -> None:
        """Write one row and flush, so a crash loses nothing already decided."""
        row = {k: (printable(v) if isinstance(v, str) else v) for k, v in row.items()}
        # a row and its mark are one step for Ctrl-C and SIGTERM: a signal landing between the flush and the
        # mark would cut a row already on disk from the .partial file; held, it is raised once the row is counted
        with _signals_held() if self.on_row is not None else contextlib.nullcontext():
            self._write(row)

    def _write(self, row: dict) -> None:
        """Write and flush one row, count it and call ``on_row``."""
        try:
            if self.fmt == "csv":
                cell = csv_safe if self.formula_safe else (lambda v: v)
                self._csv.writerow({k: ("" if v is None else cell(v)) for k, v in row.items()})  # type: ignore[union-attr]
            elif self.fmt == "jsonl":
                self.stream.write(json.dumps(row) + "\n")
            elif self.fmt == "json":
                self.stream.write(("," if self.count else "") + "\n  " + json.dumps(row))
            else:
                cells = [_cell(row.get(c)) for c in self.columns]
                if self._widths is None:
                    self._held.append(cells)
                    if len(self._held) >= TABLE_SAMPLE:
                        self._release()
                else:
                    self._line(cells)
            self.stream.flush()
        except OSError as exc:
            self.failed = exc
            raise
        self.count += 1
        if self.on_row is not None:
            self.on_row()

    def _line(self, cells: list[str]) -> None:
        self.stream.write("  ".join(v.ljust(w) for v, w in zip(cells, self._widths or [])).rstrip() + "\n")

    def _release(self) -> None:
        """Size the columns to the header and the rows held so far, then write them."""
        rows = [list(self.columns)] + self._held
        self._widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        for cells in rows:
            self._line(cells)
        self._held = []

    def close(self) -> None:
        """Finish the document (closes the JSON array; writes a table's rows held for sizing)."""
        try:
            if self.fmt == "table" and self._widths is None and self._held:
                self._release()
            if self.fmt == "json":
                self.stream.write("\n]\n" if self.count else "]\n")
            self.stream.flush()
        except OSError as exc:
            self.failed = exc
            raise

    def partial_line(self, reason: str) -> str | None:
        """The last line of a partial file of this format (None: json and table keep nothing)."""
        if self.fmt == "jsonl":
            return json.dumps({"partial": True, "complete_rows": self.count, "reason": reason}) + "\n"
        if self.fmt == "csv":
            words = "".join(c if c not in ',"\r\n' else " " for c in reason)
            return f"# partial: {self.count} complete rows; {words}\n"
        return None


def write_rows(rows: Iterable[dict], fmt: str, columns: list[str], stream: IO[str] | None = None,
               formula_safe: bool = False) -> int:
    """Write all ``rows``; returns how many were written (``formula_safe``: see :func:`csv_safe`)."""
    writer = RowWriter(stream or sys.stdout, fmt, columns, formula_safe=formula_safe)
    for row in rows:
        writer.write(row)
    writer.close()
    return writer.count


class AtomicOutput:
    """A text file written as a hidden temporary beside ``path`` and renamed into place by :meth:`commit`.

    :meth:`mark` records where the last complete row ends; :meth:`keep_partial` cuts the file
    there, adds a closing line and keeps it as ``<path>.partial``; :meth:`discard` leaves nothing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = through_links(path)  # --out onto a link writes the file it points to
        if self.path.is_dir():
            raise DataError(f"cannot write {path}: is a directory")
        self.complete = 0  # bytes up to the end of the last complete row
        self.direct = is_special_file(self.path)
        if self.direct:  # /dev/null, a FIFO: written in place; a rename would replace the device node
            try:
                self.stream: IO[str] = open(self.path, "w", encoding="utf-8", newline="")
            except OSError as exc:
                raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
            self.tmp = self.path
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.tmp = Path(tmp)
        with contextlib.suppress(OSError):
            os.fchmod(fd, umask_mode())  # the user's umask, not mkstemp's 0600
        self.stream = open(fd, "w", encoding="utf-8", newline="")

    def mark(self) -> None:
        """Everything written so far (and flushed) is complete rows."""
        if not self.direct:
            self.complete = self.stream.tell()

    def commit(self) -> Path:
        """Close the file and move it into place (fsync first, so the rename never exposes a torn file)."""
        try:
            self.stream.flush()
            if self.direct:
                self.stream.close()
                return self.path
            os.fsync(self.stream.fileno())
            self.stream.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise DataError(f"cannot write {self.path}: {exc.strerror or exc}; nothing was written there") from None
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file."""
        with contextlib.suppress(OSError):
            self.stream.close()
        if not self.direct:
            with contextlib.suppress(OSError):
                self.tmp.unlink()

    def keep_partial(self, last_line: str | None) -> Path | None:
        """Cut the file after its last complete row, end it with ``last_line``, keep it as ``<path>.partial``.

        Returns that path, or None when there is nothing to keep (no complete row, or no
        ``last_line`` for this format): then nothing is left behind.
        """
        with contextlib.suppress(OSError):  # a full disk may refuse the buffered tail: it is cut anyway
            self.stream.close()
        if last_line is None or self.complete == 0 or self.direct:
            self.discard()
            return None
        partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        try:
            os.truncate(self.tmp, self.complete)
            try:
                with open(self.tmp, "a", encoding="utf-8", newline="") as fh:
                    fh.write(last_line)
            except OSError:  # no room for the closing line: the name alone says it is partial
                os.truncate(self.tmp, self.complete)
            os.replace(self.tmp, partial)
        except OSError:
            self.discard()
            return None
        return partial


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (a ``KeyboardInterrupt``), so clean-up code runs.

    The ``deepsift`` command holds this around every command and exits 143 (Ctrl-C: 130) after
    the same clean-up. Only in the main thread, and only where SIGTERM still has its default action (a server's
    own handler is left alone).
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    signal.signal(signal.SIGTERM, lambda signum, frame: _interrupt(Terminated("SIGTERM")))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Held:
    """The main thread's row write in progress (``depth``) and the interrupt it holds back (``pending``)."""

    depth = 0
    pending: BaseException | None = None


def _interrupt(exc: BaseException) -> None:
    """Raise ``exc`` (from a signal handler, which Python runs in the main thread), unless a row is being written
    there: then it is raised once that row is written and counted."""
    if _Held.depth:
        _Held.pending = _Held.pending or exc
        return
    raise exc


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back Ctrl-C and SIGTERM (as handled by :func:`_interrupt`) for the block, in the main thread only.

    Masking the signals would not do: the kernel hands a process's signal to any thread that does not
    mask it (the engine's), and Python then runs its handler in the main thread all the same.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Held.depth += 1
    try:
        yield
    finally:
        _Held.depth -= 1
        pending, _Held.pending = _Held.pending, None
    if pending is not None:
        raise pending


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Within the block, Ctrl-C goes through :func:`_interrupt` (main thread, Python's own handler only)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, lambda signum, frame: _interrupt(KeyboardInterrupt()))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _reason(exc: BaseException) -> str:
    """Why an output stopped, in a few words."""
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc.args[0] if exc.args else 'SIGINT'})"
    if isinstance(exc, OSError):
        return f"write failed ({exc.strerror or exc})"
    return f"stopped by an error ({type(exc).__name__})"


@contextlib.contextmanager
def open_rows(out: str | None, fmt: str, columns: list[str]) -> Iterator[RowWriter]:
    """A :class:`RowWriter` on stdout (``out`` None) or on the file ``out``, never torn (see the module policy).

    A write error becomes one :class:`DataError` line naming what was kept.
    """
    if out is None:
        writer = RowWriter(sys.stdout, fmt, columns)
        try:
            yield writer
            writer.close()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) or exc is not writer.failed:
                raise
            raise DataError(f"cannot write stdout: {exc.strerror or exc}; the {writer.count} row(s) before it "
                            f"were written and flushed") from None
        return
    target = AtomicOutput(out)
    with sigterm_as_interrupt(), _ctrl_c_held():
        writer = RowWriter(target.stream, fmt, columns, on_row=target.mark)
        try:
            yield writer
            writer.close()
        except BaseException as exc:
            kept = target.keep_partial(writer.partial_line(_reason(exc)))
            what = (f"the {writer.count} complete row(s) before it are kept in {kept}" if kept
                    else "nothing was written there")
            if isinstance(exc, OSError) and exc is writer.failed:
                raise DataError(f"cannot write {out}: {exc.strerror or exc}; {what}") from None
            print(f"deepsift: {out} not written: {_reason(exc)}; {what}", file=sys.stderr)
            raise
        target.commit()


@contextlib.contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """Yield a text stream for ``path`` (stdout when None): the file appears only if the block completes."""
    if path is None:
        yield sys.stdout
        return
    target = AtomicOutput(path)
    with sigterm_as_interrupt():
        try:
            yield target.stream
        except BaseException:
            target.discard()
            raise
        target.commit()


_CONSOLE_LEVEL = 0


def set_console(level: int) -> None:
    """Process-wide console policy from the CLI: -1 ``--quiet`` (no bars, no summary lines), 0 normal, 1 ``--verbose``."""
    global _CONSOLE_LEVEL
    _CONSOLE_LEVEL = int(level)


def console_level() -> int:
    """-1 quiet, 0 normal (the default, also for the Python API), 1 verbose."""
    return _CONSOLE_LEVEL


def progress(iterable: Iterable | None = None, desc: str = "", unit: str = "img", *, total: int | None = None,
             enabled: bool | None = None, leave: bool = True) -> Any:
    """The one progress bar of deepsift: tqdm on stderr, shown only when stderr is a terminal.

    ``enabled`` (an API caller's ``progress=``) forces it on or off; None follows the console
    policy (:func:`set_console`; off under ``--quiet``), else whether stderr is a terminal.
    Use it as an iterable wrapper or as a context manager with ``update(n)``.
    """
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = _CONSOLE_LEVEL >= 0 and sys.stderr.isatty()
    in_bytes = unit == "B"  # downloads and uploads: KiB, MiB, ...
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, leave=leave, unit_scale=in_bytes, unit_divisor=1024 if in_bytes else 1000)


def note(text: str) -> None:
    """One summary line of what a command did, on stderr (silenced by ``--quiet``)."""
    if _CONSOLE_LEVEL >= 0:
        print(text, file=sys.stderr, flush=True)


def write_predictions(predictions: Iterable, fmt: str, out: str | None, label: str = "deepsift") -> int:
    """Stream Prediction objects to ``out`` in ``fmt``, print a one-line summary; returns the exit code."""
    failed = total = fakes = 0
    with open_rows(out, fmt, PREDICTION_COLUMNS) as writer:
        for pred in progress(predictions, "detect"):
            writer.write(pred.to_dict())
            total += 1
            failed += pred.error is not None
            fakes += pred.label == 1
    note(f"{label}: {total} input(s): {fakes} fake, {total - fakes - failed} real, {failed} failed")
    return EXIT_SOME_FAILED if failed else 0
