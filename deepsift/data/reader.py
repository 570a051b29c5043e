"""Read D3 records from a parquet file, a folder of shards, or a hub dataset id.

* Local files and folders are read batch by batch with pyarrow (nothing is loaded whole);
  a folder means every ``*.parquet`` below it, sorted, hidden temporaries excluded.
* A hub dataset id (``elsaEU/ELSA_D3``), or any source with ``backend="datasets"``, goes
  through ``datasets.load_dataset`` (streaming by default, which fetches shards lazily
  through ``huggingface_hub``); image columns are cast to ``Image(decode=False)``.
* Images are never decoded while reading: :meth:`Generation.decode` does it on demand.
* ELSA1M-style rows (one generated image per row: ``image``, ``id``, prompts, ``model``,
  ``nsfw``, ``url_real_image``, ``filepath``, ``aspect_ratio``) become records with one
  generation (width/height ``None``: that format does not store them).

Every problem with a file's columns is reported at once, in one :class:`SchemaError` naming
the file and the columns; an unreadable or corrupt parquet file is a :class:`DataError`; a row
with a null or empty ``id`` is a :class:`SchemaError` naming the file and the row (0-based).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import DataError, SchemaError, input_not_found
from ..hub import hub_access, looks_like_hub_id
from .schema import (
    GEN_COLUMNS,
    IMAGE_TYPE,
    RECORD_COLUMNS,
    EXTENSION_STEMS,
    GENERATOR_STEM,
    SEED_STEM,
    D3Record,
    Generation,
    _type_ok,
    check_d3_schema,
    gen_column,
    n_generators_of,
    row_to_record,
)

ELSA1M_COLUMNS: dict[str, pa.DataType] = {
    "id": pa.string(),
    "image": IMAGE_TYPE,
    "model": pa.string(),
}
"""Required ELSA1M columns; ``original_prompt``, ``positive_prompt``, ``negative_prompt``,
``url_real_image`` and ``filepath`` are read when present."""

BATCH_ROWS = 256


def parquet_files(source: str | os.PathLike) -> list[Path]:
    """The parquet files of ``source``: the file itself, or every visible ``*.parquet`` under a folder."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*.parquet")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(f"{path}: no .parquet shards in this folder")
        return files
    raise input_not_found(path)


def is_local(source: str | os.PathLike) -> bool:
    """Whether ``source`` names an existing local file or folder."""
    return Path(source).exists()


def detect_layout(schema: pa.Schema, source: str) -> str:
    """``"d3"`` or ``"elsa1m"`` for a valid schema; :class:`SchemaError` otherwise."""
    names = set(schema.names)
    if n_generators_of(schema.names) == 0 and ("image" in names or "model" in names or "url_real_image" in names):
        check_elsa1m_schema(schema, source)
        return "elsa1m"
    check_d3_schema(schema, source)
    return "d3"


def check_elsa1m_schema(schema: pa.Schema, source: str) -> None:
    """Validate an ELSA1M schema (one generated image per row) or raise :class:`SchemaError`."""
    problems = []
    optional = {c: pa.string() for c in ("original_prompt", "positive_prompt", "negative_prompt", "url_real_image", "filepath")}
    for name, typ in {**ELSA1M_COLUMNS, **optional}.items():
        if name not in schema.names:
            if name in ELSA1M_COLUMNS:
                problems.append(f"missing column {name!r}")
        elif not _id_ok(name, schema.field(name).type) and not _type_ok(schema.field(name).type, typ):
            problems.append(f"column {name!r} has type {schema.field(name).type}, expected {typ}")
    if problems:
        raise SchemaError(f"{source}: not an ELSA1M shard: " + "; ".join(problems))


def _id_ok(name: str, typ: pa.DataType) -> bool:
    """Integer ids are accepted (and read as strings)."""
    return name == "id" and pa.types.is_integer(typ)


def _open_parquet(path: Path) -> pq.ParquetFile:
    """Open a parquet file or raise a clear :class:`DataError`."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    """First line of an exception message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_d3(
    source: str | os.PathLike,
    *,
    streaming: bool = True,
    split: str = "train",
    images: bool = True,
    backend: str = "auto",
    batch_rows: int = BATCH_ROWS,
) -> Iterator[D3Record]:
    """Yield :class:`D3Record` objects from a parquet file, a folder of shards or a hub dataset id.

    ``images=False`` skips the image columns entirely (fast scans of ids, prompts and URLs).
    ``backend`` is ``"auto"`` (pyarrow for local paths, ``datasets`` for hub ids),
    ``"pyarrow"`` or ``"datasets"``.
    """
    if backend not in ("auto", "pyarrow", "datasets"):
        raise ValueError(f"backend must be auto, pyarrow or datasets, got {backend!r}")
    use_datasets = backend == "datasets" or (backend == "auto" and not is_local(source))
    if use_datasets and backend == "auto" and not looks_like_hub_id(str(source)):
        raise input_not_found(source)  # neither a local file/folder nor an owner/name hub id
    if use_datasets:
        yield from _read_datasets(str(source), split=split, streaming=streaming, images=images)
        return
    for path in parquet_files(source):
        yield from read_parquet_file(path, images=images, batch_rows=batch_rows)


def read_parquet_file(path: str | os.PathLike, *, images: bool = True, batch_rows: int = BATCH_ROWS) -> Iterator[D3Record]:
    """Yield the records of one local D3 or ELSA1M parquet file."""
    path = Path(path)
    pf = _open_parquet(path)
    try:
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: unreadable parquet schema ({_short(exc)})") from None
    layout = detect_layout(schema, str(path))
    columns = [n for n in schema.names if images or not _is_image_column(n)]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            for record in (_d3_batch(batch) if layout == "d3" else _elsa1m_batch(batch)):
                _check_id(record, path, row)
                row += 1
                yield record
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: corrupt parquet data ({_short(exc)})") from None


def _check_id(record: D3Record, source: str | os.PathLike, row: int) -> None:
    """Raise :class:`SchemaError` for a record read from a null or empty ``id``."""
    if record.id == "":
        raise SchemaError(f"{source}: row {row}: null or empty 'id' (every row needs an id)")


def _is_image_column(name: str) -> bool:
    """Whether ``name`` holds encoded images."""
    return name == "image" or (name.startswith("image_gen") and name[9:].isdigit())


def _column_lists(batch: pa.RecordBatch) -> dict[str, list]:
    """Python lists per column (image structs reduced to their bytes)."""
    out: dict[str, list] = {}
    for name, col in zip(batch.schema.names, batch.columns):
        if pa.types.is_struct(col.type):
            col = col.field("bytes")
        out[name] = col.to_pylist()
    return out


def _d3_batch(batch: pa.RecordBatch) -> Iterator[D3Record]:
    """Records of one D3 batch (column-wise conversion, much faster than ``to_pylist``)."""
    cols = _column_lists(batch)
    n = n_generators_of(batch.schema.names)
    none = [None] * batch.num_rows
    rec = {c: cols.get(c, none) for c in RECORD_COLUMNS}
    gen = [{s: cols.get(gen_column(s, k), none) for s in GEN_COLUMNS + EXTENSION_STEMS} for k in range(n)]
    for i in range(batch.num_rows):
        gens = []
        for g in gen:
            model, image = g["model"][i], g["image"][i]
            if model is None and image is None and g["filepath"][i] is None:
                continue
            gens.append(Generation(
                model=model or "", width=g["width"][i], height=g["height"][i],
                steps=g["num_inference_steps"][i], filepath=g["filepath"][i], image=image, seed=g[SEED_STEM][i],
                generator=g[GENERATOR_STEM][i],
            ))
        rid = rec["id"][i]
        yield D3Record(
            id="" if rid is None else str(rid), original_prompt=rec["original_prompt"][i],
            positive_prompt=rec["positive_prompt"][i], negative_prompt=rec["negative_prompt"][i],
            url=rec["url"][i], generations=gens,
        )


def _elsa1m_batch(batch: pa.RecordBatch) -> Iterator[D3Record]:
    """Records (one generation each) of one ELSA1M batch."""
    cols = _column_lists(batch)
    none = [None] * batch.num_rows
    get = lambda name: cols.get(name, none)  # noqa: E731
    for i in range(batch.num_rows):
        yield _elsa1m_record({k: get(k)[i] for k in (
            "id", "image", "model", "original_prompt", "positive_prompt", "negative_prompt", "url_real_image", "filepath")})


def _elsa1m_record(row: dict[str, Any]) -> D3Record:
    """One ELSA1M row as a record with a single generation."""
    image = row.get("image")
    if isinstance(image, dict):
        image = image.get("bytes")
    gens = []
    if row.get("model") is not None or image is not None:
        gens.append(Generation(model=row.get("model") or "", width=None, height=None, steps=None,  # type: ignore[arg-type]
                               filepath=row.get("filepath"), image=image))
    rid = row.get("id")
    return D3Record(
        id="" if rid is None else str(rid), original_prompt=row.get("original_prompt"), positive_prompt=row.get("positive_prompt"),
        negative_prompt=row.get("negative_prompt"), url=row.get("url_real_image"), generations=gens,
    )


def _read_datasets(source: str, *, split: str, streaming: bool, images: bool) -> Iterator[D3Record]:
    """Records through ``datasets.load_dataset`` (hub ids, or local dataset folders)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{source}: reading hub datasets needs the 'datasets' package ({exc})") from None
    if looks_like_hub_id(source) and not Path(source).exists():
        from ..exceptions import ModelNotFoundError

        try:  # fail at once, naming the cause, when the hub is off or out of reach and nothing is cached
            hub_access(source, marker="README.md", repo_type="dataset", what="dataset")
        except ModelNotFoundError as exc:
            raise DataError(str(exc)) from None
    try:
        ds = datasets.load_dataset(source, split=split, streaming=streaming)
    except (FileNotFoundError, ValueError, OSError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise DataError(f"{source}: cannot open dataset split {split!r} ({_short(exc)})") from None
    features = ds.features
    if features is not None:
        schema = features.arrow_schema
        layout = detect_layout(schema, source)
        img_cols = [n for n in schema.names if _is_image_column(n)]
        if images:
            for name in img_cols:
                ds = ds.cast_column(name, datasets.Image(decode=False))
        else:
            ds = ds.remove_columns(img_cols)
    else:
        layout = None
    for n, row in enumerate(ds):
        if layout is None:
            layout = detect_layout(pa.Table.from_pylist([row]).schema, source)
        record = row_to_record(row) if layout == "d3" else _elsa1m_record(row)
        _check_id(record, source, n)
        yield record


def count_records(source: str | os.PathLike) -> int | None:
    """Number of rows in a local source from parquet metadata (``None`` for hub ids)."""
    if not is_local(source):
        return None
    total = 0
    for path in parquet_files(source):
        total += _open_parquet(path).metadata.num_rows
    return total


def read_many(sources: Sequence[str | os.PathLike], **kwargs: Any) -> Iterator[D3Record]:
    """Chain :func:`read_d3` over several sources."""
    for s in sources:
        yield from read_d3(s, **kwargs)


def n_generators_in(source: str | os.PathLike) -> int:
    """Largest number of generator slots among a local source's shards (1 for ELSA1M)."""
    best = 0
    for path in parquet_files(source):
        schema = _open_parquet(path).schema_arrow
        best = max(best, n_generators_of(schema.names) or (1 if detect_layout(schema, str(path)) == "elsa1m" else 0))
    return best
