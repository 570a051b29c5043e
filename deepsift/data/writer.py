"""Write D3 parquet shards atomically: a temporary name in the same folder, renamed when complete.

A half-written shard is never visible under its final name: each shard is written to
``.<name>.tmp-<pid>`` beside it and moved into place with :func:`os.replace` only after the
parquet footer is on disk. A write error (out of space included) removes the temporary file,
leaves the shards already finished untouched, and raises :class:`DataError`.

``opener`` (``path -> binary file object``) can be swapped, e.g. to simulate a full disk.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import DataError
from .schema import D3Record, d3_arrow_schema, record_to_row

Opener = Callable[[Path], BinaryIO]

DEFAULT_MAX_SHARD_BYTES = 512 * 1024 * 1024
"""Default size bound of one shard (estimated from the bytes written): 512 MiB."""

ROW_GROUP_RECORDS = 256
"""Records buffered before a parquet row group is flushed."""


def _default_opener(path: Path) -> BinaryIO:
    """Open ``path`` for writing bytes."""
    return open(path, "wb")


def temp_path_for(path: Path) -> Path:
    """The hidden temporary name a shard is written under before its rename."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _record_size(row: dict) -> int:
    """Rough encoded size of a row: image bytes plus text."""
    size = 0
    for v in row.values():
        if isinstance(v, dict):
            size += len(v.get("bytes") or b"") + len(v.get("path") or "")
        elif isinstance(v, str):
            size += len(v)
        elif v is not None:
            size += 8
    return size


def _write_error(exc: OSError, path: Path, finished: int) -> DataError:
    """A clear DataError for an OSError raised while writing ``path``."""
    what = "out of disk space" if exc.errno == errno.ENOSPC else f"write failed ({exc.strerror or exc})"
    return DataError(
        f"{path}: {what}; the partial shard was removed, {finished} earlier shard(s) in "
        f"{path.parent} are intact"
    )


class _AtomicParquet:
    """One parquet file written under a temporary name and renamed on :meth:`commit`."""

    def __init__(self, path: Path, schema: pa.Schema, opener: Opener, compression: str) -> None:
        self.path = path
        self.tmp = temp_path_for(path)
        self.fh = opener(self.tmp)
        try:
            self.writer = pq.ParquetWriter(self.fh, schema, compression=compression)
        except BaseException:
            self.abort()
            raise

    def write_table(self, table: pa.Table) -> None:
        """Append ``table`` as row groups."""
        self.writer.write_table(table)

    def commit(self) -> Path:
        """Finish the footer, flush to disk and rename into place."""
        self.writer.close()
        self.fh.flush()
        if hasattr(self.fh, "fileno"):
            try:
                os.fsync(self.fh.fileno())
            except (OSError, ValueError):
                pass
        self.fh.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (best effort; never raises)."""
        for closer in (getattr(getattr(self, "writer", None), "close", None), self.fh.close):
            if closer is None:
                continue
            try:
                closer()
            except Exception:
                pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def write_table_atomic(
    table: pa.Table, path: str | os.PathLike, *, opener: Opener | None = None, compression: str = "snappy",
    finished_before: int = 0,
) -> Path:
    """Write an arrow table as one parquet file at ``path``, atomically (temp name + rename)."""
    return write_batches_atomic(table.schema, [table], path, compression=compression, opener=opener,
                                finished_before=finished_before)


def write_batches_atomic(schema: pa.Schema, tables: Iterable[pa.Table], path: str | os.PathLike, *,
                         compression: str = "snappy", opener: Opener | None = None, finished_before: int = 0) -> Path:
    """Write tables of ``schema`` one after another as one parquet file, atomically: memory holds one at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = None
    try:
        out = _AtomicParquet(path, schema, opener or _default_opener, compression)
        for table in tables:
            out.write_table(table)
        return out.commit()
    except OSError as exc:
        if out is not None:
            out.abort()
        else:
            _unlink_quiet(temp_path_for(path))
        raise _write_error(exc, path, finished_before) from None
    except BaseException:
        if out is not None:
            out.abort()
        raise


def write_shard(
    records: Iterable[D3Record], path: str | os.PathLike, *, n_generators: int, with_seed: bool = True,
    opener: Opener | None = None,
) -> Path:
    """Write ``records`` as one complete D3 shard at ``path``, atomically."""
    schema = d3_arrow_schema(n_generators, with_seed=with_seed)
    rows = [record_to_row(r, n_generators, with_seed=with_seed) for r in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    return write_table_atomic(table, path, opener=opener)


class ShardWriter:
    """Stream D3 records into size-bounded parquet shards ``<prefix>-00000.parquet``, ...

    Numbering continues after shards with the same prefix already in ``out_dir``, so nothing
    is overwritten. Use as a context manager, or call :meth:`close` (which returns the paths).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        prefix: str = "d3",
        *,
        n_generators: int,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        max_records_per_shard: int | None = None,
        with_seed: bool = True,
        row_group_records: int = ROW_GROUP_RECORDS,
        opener: Opener | None = None,
        compression: str = "snappy",
    ) -> None:
        if max_shard_bytes <= 0 or (max_records_per_shard is not None and max_records_per_shard <= 0):
            raise ValueError("max_shard_bytes and max_records_per_shard must be positive")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.n_generators = n_generators
        self.with_seed = with_seed
        self.max_shard_bytes = max_shard_bytes
        self.max_records_per_shard = max_records_per_shard
        self.row_group_records = row_group_records
        self.opener = opener or _default_opener
        self.compression = compression
        self.schema = d3_arrow_schema(n_generators, with_seed=with_seed)
        self.paths: list[Path] = []
        self.records_written = 0
        self._index = self._next_index()
        self._current: _AtomicParquet | None = None
        self._buffer: list[dict] = []
        self._shard_bytes = 0
        self._shard_records = 0
        self._closed = False

    def _next_index(self) -> int:
        """First shard number not used by an existing ``<prefix>-NNNNN.parquet``."""
        used = [-1]
        for p in self.out_dir.glob(f"{self.prefix}-*.parquet"):
            stem = p.stem[len(self.prefix) + 1:]
            if stem.isdigit():
                used.append(int(stem))
        return max(used) + 1

    def write(self, record: D3Record) -> None:
        """Add one record, starting a new shard when the current one is full."""
        if self._closed:
            raise DataError(f"{self.out_dir}: shard writer is closed")
        row = record_to_row(record, self.n_generators, with_seed=self.with_seed)
        size = _record_size(row)
        if self._shard_records and (
            self._shard_bytes + size > self.max_shard_bytes
            or (self.max_records_per_shard is not None and self._shard_records >= self.max_records_per_shard)
        ):
            self._finish_shard()
        self._buffer.append(row)
        self._shard_bytes += size
        self._shard_records += 1
        if len(self._buffer) >= self.row_group_records:
            self._flush()

    def write_many(self, records: Iterable[D3Record]) -> None:
        """Add every record of ``records``."""
        for r in records:
            self.write(r)

    def _shard_path(self) -> Path:
        """Final path of the shard being written."""
        return self.out_dir / f"{self.prefix}-{self._index:05d}.parquet"

    def _guard(self, fn: Callable[[], object]) -> object:
        """Run a write step; on OSError drop the partial shard and raise a clear DataError."""
        try:
            return fn()
        except OSError as exc:
            path = self._shard_path()
            if self._current is not None:
                self._current.abort()
            else:
                _unlink_quiet(temp_path_for(path))
            self._current = None
            self._buffer = []
            self._shard_bytes = self._shard_records = 0
            self._closed = True
            raise _write_error(exc, path, len(self.paths)) from None

    def _flush(self) -> None:
        """Write the buffered rows as one row group of the current shard."""
        if not self._buffer:
            return

        def step() -> None:
            if self._current is None:
                self._current = _AtomicParquet(self._shard_path(), self.schema, self.opener, self.compression)
            self._current.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))

        self._guard(step)
        self._buffer = []

    def _finish_shard(self) -> None:
        """Flush, commit (rename) the current shard and move to the next number."""
        self._flush()
        if self._current is None:
            return
        path = self._guard(self._current.commit)
        self.paths.append(path)  # type: ignore[arg-type]
        self.records_written += self._shard_records
        self._current = None
        self._index += 1
        self._shard_bytes = self._shard_records = 0

    def close(self) -> list[Path]:
        """Finish the last shard and return the paths of every shard written."""
        if not self._closed:
            self._finish_shard()
            self._closed = True
        return list(self.paths)

    def abort(self) -> None:
        """Drop the shard in progress (finished shards stay)."""
        if self._current is not None:
            self._current.abort()
            self._current = None
        self._buffer = []
        self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _unlink_quiet(path: Path) -> None:
    """Remove ``path`` if it exists."""
    try:
        os.unlink(path)
    except OSError:
        pass
