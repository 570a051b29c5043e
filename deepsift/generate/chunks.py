"""The three steps of one unit of build work (a chunk of records), shared by local and Ray runs.

1. :func:`prepare_chunk` (CPU): check prompts, decode real images; unusable records become
   failures with a reason.
2. :func:`generate_chunk` (GPU/CPU): every generator on every usable record, in batches,
   with the seed derived from (record id, generator name). Returns raw pixels.
3. :func:`write_chunk` (CPU): PNG-encode, assemble D3 rows and write the chunk's shard
   atomically; the shard's ``deepsift`` metadata carries the chunk's counts and failures, so
   a shard on disk *is* the proof that its chunk is done (this is what makes restarts exact).

Prompt policy: a blank prompt skips the record (``blank_prompt``) when a prompt-driven
generator runs; a prompt over ``MAX_PROMPT_CHARS`` characters is skipped
(``prompt_too_long``); a prompt over the tokenizer's limit (77 CLIP tokens) is truncated to
that limit by the pipeline's own tokenizer, exactly what the text encoder can see, and
counted as ``truncated_prompt`` (the record keeps the full prompt text).

Real-image policy: a record whose real image is missing or does not decode (``no_real_image``,
``image_decode_error``, ...) is skipped by the generators that need one; when text-to-image
generators also run, they still run for it (the real-image slot stays empty, counted under
that reason and logged); only when every generator needs a real image is the record skipped.
Where the image comes from (a JSONL/CSV ``image`` field, a ``--real-dir`` folder, or nowhere)
makes no difference.
"""
from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..data.schema import (
    EXTENSION_STEMS,
    GEN_COLUMNS,
    D3Record,
    Generation,
    d3_arrow_schema,
    gen_column,
    record_to_row,
    with_hf_metadata,
)
from ..data.writer import write_table_atomic
from ..exceptions import DeepsiftError, GeneratorError, ImageError
from ..filenames import safe_name
from ..images import decode_image
from .sources import SourceItem
from .spec import derive_seed

log = logging.getLogger("deepsift.generate")

MAX_PROMPT_CHARS = 10_000
"""Prompts longer than this many characters are skipped as ``prompt_too_long``."""

META_KEY = b"deepsift"
"""Parquet metadata key holding a chunk's build record (generators, counts, failures)."""


@dataclass
class Prepared:
    """A chunk's usable items, their decoded real images, and the failures so far."""

    items: list[SourceItem]
    reals: list[Any]  # RGB PIL image or None, one per item
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, "reason: detail")
    n_input: int = 0
    base: str | None = None  # existing shard grown by --add-to, else None
    real_skips: dict[str, str] = field(default_factory=dict)  # id -> reason: real-image generators skip it


@dataclass
class Generated:
    """Raw generated pixels per generator (None where a record failed) plus failures and notes."""

    items: list[SourceItem]
    gen_meta: list[dict]  # per generator: name, model, steps, spec
    pixels: list[list[np.ndarray | None]]  # [generator][item]
    failures: list[tuple[str, str]]
    notes: Counter
    n_input: int
    base: str | None
    skips: list[tuple[str, str]] = field(default_factory=list)  # (id, reason): kept, real-image slots empty


ADD_TO_BATCH_ROWS = 256
"""Rows of a base shard held at once while ``--add-to`` copies it (images included)."""


def prepare_chunk(items: Sequence[SourceItem], *, needs_prompt: bool, needs_real: bool, base: str | None = None) -> Prepared:
    """Validate prompts and decode real images of one chunk (bad records become failures)."""
    out = Prepared(items=[], reals=[], n_input=len(items), base=base)
    for item in items:
        reason = item.problem
        real = None
        if reason is None and needs_prompt and not item.prompt.strip():
            reason = "blank_prompt: the prompt is empty or whitespace"
        elif reason is None and needs_prompt and len(item.prompt) > MAX_PROMPT_CHARS:
            reason = f"prompt_too_long: {len(item.prompt)} characters > {MAX_PROMPT_CHARS}"
        elif reason is None and needs_real:
            real, real_reason = _load_real(item)
            if real_reason is not None and needs_prompt:
                out.real_skips[item.id] = real_reason  # only the real-image generators skip it
            else:
                reason = real_reason
        if reason is not None:
            out.failures.append((item.id, reason))
            if base is None:
                continue
        out.items.append(item)
        out.reals.append(real)
    return out


def _load_real(item: SourceItem) -> tuple[Image.Image | None, str | None]:
    """The item's decoded real image, or ``None`` and the reason it has none."""
    if item.real is None:
        return None, item.real_problem or "no_real_image: a reconstruction generator needs the record's real image"
    try:
        return decode_image(item.real), None
    except ImageError as exc:
        return None, f"{_reason_of(exc)}: {exc}"


def _reason_of(exc: BaseException) -> str:
    """snake_case reason from an exception class (ImageDecodeError -> image_decode_error)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def generate_chunk(prep: Prepared, generators: Sequence[Any]) -> Generated:
    """Run every generator over the usable items, batch by batch, with derived seeds."""
    failed = {i for i, _ in prep.failures}
    failures = list(prep.failures)
    notes: Counter = Counter()
    pixels: list[list[np.ndarray | None]] = []
    live = [k for k, it in enumerate(prep.items) if it.id not in failed]
    for gen in generators:
        if not gen.needs_real_image and hasattr(gen, "prompt_too_long"):
            long_ids = [prep.items[k].id for k in live if gen.prompt_too_long(prep.items[k].prompt)]
            if long_ids:
                notes[f"truncated_prompt:{gen.name}"] += len(long_ids)
                log.info("%s: %d prompt(s) over the tokenizer limit, truncated: %s", gen.name, len(long_ids), long_ids[:5])
        row: list[np.ndarray | None] = [None] * len(prep.items)
        bs = max(1, int(getattr(gen, "batch_size", 1) or 1))
        todo = [k for k in live if prep.reals[k] is not None] if gen.needs_real_image else live
        for start in range(0, len(todo), bs):
            ks = [k for k in todo[start:start + bs] if prep.items[k].id not in failed]
            if not ks:
                continue
            its = [prep.items[k] for k in ks]
            try:
                images = gen.generate(
                    [it.prompt for it in its],
                    [it.negative_prompt for it in its],
                    [derive_seed(it.id, gen.name) for it in its],
                    [prep.reals[k] for k in ks] if gen.needs_real_image else None,
                )
                if len(images) != len(its):
                    raise GeneratorError(f"generator {gen.name!r} returned {len(images)} images for {len(its)} prompts")
            except DeepsiftError as exc:
                log.warning("%s: batch of %d record(s) failed: %s", gen.name, len(its), exc)
                for it in its:
                    failures.append((it.id, f"generate_failed:{gen.name}: {exc}"))
                    failed.add(it.id)
                continue
            for k, im in zip(ks, images):
                row[k] = np.asarray(im.convert("RGB"), dtype=np.uint8)
        pixels.append(row)
    gen_meta = [{"name": g.name, "model": g.model, "steps": g.steps, "spec": getattr(getattr(g, "spec", None), "text", "")}
                for g in generators]
    real_names = ", ".join(g.name for g in generators if g.needs_real_image)
    skips = [(i, f"{r} (no {real_names} image; the other generators ran)") for i, r in prep.real_skips.items()
             if i not in failed]
    return Generated(prep.items, gen_meta, pixels, failures, notes, prep.n_input, prep.base, skips)


def encode_png(arr: np.ndarray) -> bytes:
    """Lossless PNG bytes of an HxWx3 uint8 array (deterministic)."""
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _generation(meta: dict, item: SourceItem, arr: np.ndarray) -> Generation:
    """A :class:`Generation` from raw pixels."""
    return Generation(
        model=meta["model"], width=int(arr.shape[1]), height=int(arr.shape[0]), steps=meta["steps"],
        filepath=f"{meta['name']}/{safe_name(item.id)}.png", image=encode_png(arr),
        seed=derive_seed(item.id, meta["name"]), generator=meta["name"],
    )


def chunk_metadata(res: Generated, n_records: int, images: dict[str, int]) -> dict:
    """The ``deepsift`` metadata of a chunk shard."""
    failures = Counter(reason.split(":", 1)[0] for _, reason in res.failures + res.skips)
    return {
        "generators": [m["name"] for m in res.gen_meta],
        "specs": [m["spec"] for m in res.gen_meta],
        "input_records": res.n_input,
        "records": n_records,
        "images": images,
        "failures": dict(failures),
        "notes": dict(res.notes),
        "failed_ids": [[i, r[:300]] for i, r in res.failures[:1000]],
        "skipped_ids": [[i, r[:300]] for i, r in res.skips[:1000]],
    }


def write_chunk(res: Generated, path: str | Path) -> dict:
    """Encode and write one chunk's shard atomically; return its ``deepsift`` metadata."""
    path = Path(path)
    if res.base is not None:
        return _write_added(res, path)
    failed = {i for i, _ in res.failures}
    records = []
    images = {m["name"]: 0 for m in res.gen_meta}
    for k, item in enumerate(res.items):
        if item.id in failed:
            continue
        # None = an empty slot (a real-image generator skipped the record); record_to_row writes nulls
        gens = [None if res.pixels[g][k] is None else _generation(meta, item, res.pixels[g][k])
                for g, meta in enumerate(res.gen_meta)]
        for meta, g in zip(res.gen_meta, gens):
            images[meta["name"]] += g is not None
        records.append(D3Record(item.id, item.original_prompt, item.positive_prompt, item.negative_prompt, item.url,
                                gens))  # type: ignore[arg-type]
    n = len(res.gen_meta)
    schema = d3_arrow_schema(n)
    table = pa.Table.from_pylist([record_to_row(r, n) for r in records], schema=schema)
    meta = chunk_metadata(res, len(records), images)
    table = table.replace_schema_metadata({**(schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    write_table_atomic(table, path)
    return meta


def _write_added(res: Generated, path: Path) -> dict:
    """``--add-to``: the existing shard's columns unchanged plus the new generators' columns.

    The base shard is streamed by batches of rows (its images are never all in memory at once):
    each batch is written with the matching slice of the new columns.
    """
    from ..data.writer import write_batches_atomic

    try:
        base = pq.ParquetFile(res.base)
        base_schema, n_rows = base.schema_arrow, base.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise GeneratorError(f"{res.base}: unreadable parquet ({exc})") from None
    if n_rows != len(res.items):
        raise GeneratorError(f"{res.base}: has {n_rows} rows, expected {len(res.items)}")
    old_meta = json.loads((base_schema.metadata or {}).get(META_KEY, b"{}") or b"{}")
    n0 = max((int(c[len("model_gen"):]) + 1 for c in base_schema.names if c.startswith("model_gen")), default=0)
    template = d3_arrow_schema(1)
    failed = {i for i, _ in res.failures}
    images: dict[str, int] = {}
    fields, columns = list(base_schema.remove_metadata()), []
    for g, meta in enumerate(res.gen_meta):
        gens: list[Generation | None] = [
            None if item.id in failed or res.pixels[g][k] is None else _generation(meta, item, res.pixels[g][k])
            for k, item in enumerate(res.items)
        ]
        images[meta["name"]] = sum(x is not None for x in gens)
        for stem in (*GEN_COLUMNS, *EXTENSION_STEMS):
            field_ = template.field(gen_column(stem, 0))
            fields.append(pa.field(gen_column(stem, n0 + g), field_.type))
            columns.append(pa.array([_cell(stem, x) for x in gens], field_.type))
    meta = chunk_metadata(res, n_rows, images)
    meta["generators"] = list(old_meta.get("generators", [])) + meta["generators"]
    meta["added"] = [m["name"] for m in res.gen_meta]
    schema = with_hf_metadata(pa.schema(fields))
    schema = schema.with_metadata({**(schema.metadata or {}), META_KEY: json.dumps(meta).encode()})

    def tables() -> Iterator[pa.Table]:
        offset = 0
        for batch in base.iter_batches(batch_size=ADD_TO_BATCH_ROWS):
            n = batch.num_rows
            yield pa.Table.from_arrays([*batch.columns, *(c.slice(offset, n) for c in columns)], schema=schema)
            offset += n
        if offset == 0:
            yield schema.empty_table()

    write_batches_atomic(schema, tables(), path)
    return meta


def _cell(stem: str, g: Generation | None) -> Any:
    """One new cell value for an added generator column."""
    if g is None:
        return None
    if stem == "image":
        return {"bytes": g.image, "path": Path(g.filepath or "").name}
    return {"model": g.model, "width": g.width, "height": g.height, "num_inference_steps": g.steps,
            "filepath": g.filepath, "seed": g.seed, "generator": g.generator}[stem]


def read_chunk_metadata(path: str | Path) -> dict | None:
    """The ``deepsift`` metadata of a finished shard, or ``None`` if absent/unreadable."""
    try:
        md = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError):
        return None
    raw = md.get(META_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
