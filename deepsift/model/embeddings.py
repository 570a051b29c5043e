"""Embedding files: parquet with one row per input (source, embedding, error), written in batches.

The file is written under a temporary name beside the target and renamed into place when
complete; an error, Ctrl-C or SIGTERM leaves nothing. Names that are not UTF-8 are written
escaped as in every other output (:func:`deepsift.output.printable`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import DataError, UsageError
from ..output import printable, sigterm_as_interrupt


def embedding_schema(dim: int) -> pa.Schema:
    """Arrow schema of an embeddings file: source, fixed-size float32 embedding (null on error), error."""
    return pa.schema([("source", pa.string()), ("embedding", pa.list_(pa.float32(), dim)), ("error", pa.string())])


class EmbeddingWriter:
    """Stream batches of embeddings into a parquet file (temporary name, renamed when complete)."""

    def __init__(self, path: str | os.PathLike, dim: int, model: str | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".parquet":
            raise UsageError(f"{path}: embeddings are written as parquet; use a .parquet file name")
        if self.path.is_dir():
            raise DataError(f"cannot write {self.path}: is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        meta = {b"deepsift.model": (model or "").encode(), b"deepsift.dim": str(dim).encode()}
        self.schema = embedding_schema(dim).with_metadata(meta)
        self.dim = dim
        try:
            self._writer = pq.ParquetWriter(self.tmp, self.schema)
        except OSError as exc:
            raise DataError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._signals = sigterm_as_interrupt()

    def write_batch(self, items: Sequence, embeddings: np.ndarray) -> None:
        """Write one engine batch: items with ``source``, ``row`` and ``error``."""
        flat = pa.array(np.asarray(embeddings, dtype=np.float32).reshape(-1), pa.float32())
        values = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        taken = pa.array([it.row for it in items], pa.int64())
        column = values.take(taken) if len(values) else pa.nulls(len(items), pa.list_(pa.float32(), self.dim))
        table = pa.table({"source": [printable(it.source) for it in items], "embedding": column,
                          "error": [None if it.error is None else printable(it.error) for it in items]},
                         schema=self.schema)
        try:
            self._writer.write_table(table)
        except OSError as exc:
            raise DataError(f"cannot write {self.path}: {exc}; nothing was written there "
                            f"(the partial file is removed)") from None

    def close(self) -> Path:
        """Finish the file and move it into place."""
        try:
            self._writer.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            raise DataError(f"cannot write {self.path}: {exc}; nothing was written there") from None
        return self.path

    def __enter__(self) -> "EmbeddingWriter":
        self._signals.__enter__()  # SIGTERM unwinds like Ctrl-C, so the temporary file goes
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.close()
            else:
                try:
                    self._writer.close()
                except OSError:
                    pass
                self.tmp.unlink(missing_ok=True)
        finally:
            self._signals.__exit__(None, None, None)


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str | None]]:
    """Read an embeddings file: (sources, (N, D) float32 with NaN rows for errors, errors)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    missing = {"source", "embedding"} - set(table.column_names)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    filled = col.fill_null([float("nan")] * dim) if col.null_count else col
    emb = filled.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    errors = table.column("error").to_pylist() if "error" in table.column_names else [None] * len(emb)
    return table.column("source").to_pylist(), emb, errors
