"""A bounded look at an untrusted score/label file before any parser sees it.

One streaming pass over the raw bytes in fixed-size chunks (its memory does not grow with the
file), at C speed (``bytes`` methods and numpy). It refuses, naming the line: bytes that are not
UTF-8, NUL bytes, a line longer than :data:`MAX_LINE` (CSV, JSONL), an unterminated JSON string,
JSON nested deeper than :data:`MAX_DEPTH` or closing a bracket it never opened, and a file larger
than ``max_bytes``. After it no parser (Python's ``json``/``csv``, pyarrow's readers) can recurse
deeply, meet a field over its limit, or take memory out of proportion to what the caller allowed.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import EvaluationError

CHUNK = 256 << 10
NL = b"\n"
MAX_LINE = 64 << 10
"""Longest line of a CSV/JSONL score file (and longest JSON string): rows are an id and a number."""
MAX_DEPTH = 8
"""Deepest JSON nesting accepted (a score file needs 2: a list of row objects)."""
_DELTA = np.zeros(256, np.int8)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1


@dataclass
class ScanInfo:
    """What the pass saw: bytes and non-empty lines (up to where it stopped), and whether it read to the end."""

    bytes: int
    lines: int
    complete: bool = True


def prescan(path: str | Path, max_bytes: int | None = None, max_lines: int | None = None) -> ScanInfo:
    """Check ``path`` (.csv/.json/.jsonl by suffix) in bounded memory; EvaluationError naming the line.

    ``max_lines``: stop (``complete=False``) after the chunk where the non-empty lines pass it (a
    CSV/JSONL reader that stops at that row then reads only checked bytes).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    is_json, by_line = suffix in (".json", ".jsonl"), suffix in (".csv", ".jsonl")
    line, total, nonblank, line_len, depth = 1, 0, 0, 0, 0
    pending = carry = b""

    def fail(at: bytes, msg: str) -> None:
        raise EvaluationError(f"{p} line {line + at.count(NL)}: {msg}")

    try:
        fh = open(p, "rb")
    except OSError as exc:
        raise EvaluationError(f"{p}: cannot read ({exc.strerror or exc})") from None
    with fh:
        while True:
            chunk = fh.read(CHUNK)
            final = not chunk
            total += len(chunk)
            # UTF-8 (a sequence cut by the chunk's end waits for the next chunk)
            data = pending + chunk
            try:
                _, used = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError as exc:
                fail(carry + data[:exc.start], f"cannot read: not utf-8 text ({exc.reason} at byte "
                                               f"{total - len(chunk) - len(pending) + exc.start})")
            pending = data[used:]
            if (nul := chunk.find(b"\x00")) >= 0:
                fail(carry + chunk[:nul], "holds a NUL byte (not a text file)")
            # line lengths and non-empty lines
            arr = np.frombuffer(chunk, np.uint8)
            ends = np.flatnonzero(arr == 10)
            if len(ends):
                lengths = np.diff(ends, prepend=-1 - line_len)
                nonblank += int(np.count_nonzero(lengths > 1)) - int(np.count_nonzero(
                    (lengths == 2) & (arr[np.maximum(ends - 1, 0)] == 13)))
                longest = int(lengths.max()) - 1
                line_len = len(chunk) - 1 - int(ends[-1])
            else:
                longest, line_len = 0, line_len + len(chunk)
            if by_line and max(longest, line_len) > MAX_LINE:
                first = int(np.argmax(lengths - 1 > MAX_LINE)) if longest > MAX_LINE else len(ends)
                fail(carry + chunk[:int(ends[first - 1]) + 1 if first else 0],
                     f"longer than {MAX_LINE:,} bytes (a row is an id and a score)")
            if final:
                nonblank += line_len > 0 and not (line_len == 1 and chunk[-1:] == b"\r")
            if is_json:
                carry, depth = _json_depth(carry + chunk, final, depth, fail)
            if final or (by_line and max_lines is not None and nonblank > max_lines):
                return ScanInfo(total, nonblank, final)
            if max_bytes is not None and total > max_bytes:
                fail(chunk[:max_bytes - total + len(chunk)],
                     f"the file is larger than a predictions file for this test set can be ({max_bytes:,} bytes)")
            line += chunk.count(b"\n")


def _json_depth(buf: bytes, final: bool, depth: int, fail) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    """Bracket depth over ``buf`` outside strings; returns (the unfinished string to carry, depth)."""
    arr = np.frombuffer(buf, np.uint8)
    quotes = np.flatnonzero(arr == 34)
    if len(quotes) and buf.find(b"\\") >= 0:  # a quote after an odd run of backslashes is escaped
        idx = np.arange(len(arr), dtype=np.int64)
        last_other = np.maximum.accumulate(np.where(arr != 92, idx, -1))
        run = quotes - 1 - last_other[np.maximum(quotes - 1, 0)]
        quotes = quotes[(run * (quotes > 0)) % 2 == 0]
    ends = np.flatnonzero(arr == 10)
    if len(ends) and (odd := np.flatnonzero(np.searchsorted(quotes, ends) & 1)).size:
        fail(buf[:int(ends[odd[0]])], "an unterminated JSON string")
    rest, cut = b"", len(arr)
    if len(quotes) & 1:  # a string runs past this chunk: carry it, from its opening quote
        cut = int(quotes[-1])
        rest = buf[cut:]
        if final or len(rest) > MAX_LINE:
            fail(buf[:cut], "an unterminated JSON string" if final else f"a JSON string longer than {MAX_LINE:,} bytes")
    head = arr[:cut]
    brackets = np.flatnonzero((head == 91) | (head == 93) | (head == 123) | (head == 125))
    brackets = brackets[(np.searchsorted(quotes, brackets) & 1) == 0]  # outside strings
    if len(brackets):
        steps = np.cumsum(_DELTA[arr[brackets]], dtype=np.int64) + depth
        bad = np.flatnonzero((steps > MAX_DEPTH) | (steps < 0))
        if len(bad):
            fail(buf[:int(brackets[bad[0]])], f"JSON nested deeper than {MAX_DEPTH} levels (rows are flat objects)"
                 if steps[bad[0]] > 0 else "invalid JSON (a closing bracket without its opening one)")
        depth = int(steps[-1])
    return rest, depth
