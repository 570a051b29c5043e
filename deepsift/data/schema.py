"""The D3 record and its parquet schema, column for column as published (``elsaEU/ELSA_D3``).

A published row holds ``id``, ``original_prompt``, ``positive_prompt``, ``negative_prompt``,
``url`` (of the real LAION image) and, for each generator slot ``k``: ``model_gen{k}``,
``width_gen{k}``, ``height_gen{k}``, ``num_inference_steps_gen{k}``, ``filepath_gen{k}`` and
``image_gen{k}`` (the Hugging Face ``Image`` feature: ``struct<bytes: binary, path: string>``).
deepsift's builder adds two nullable extension columns per slot: ``generator_gen{k}`` (string:
the name the user gave the generator, e.g. ``sd14`` in ``-g sd14=t2i:CompVis/...``, beside the
model source in ``model_gen{k}``) and ``seed_gen{k}`` (int64). Readers accept shards without
them; a generation's :attr:`Generation.generator` is then its ``model_gen{k}`` value (so for the
published D3 shards the generator name is the model name). Generator names are matched exactly
(``data split --leave-out``, ``eval logo``, ``data info``, the reports).

The parquet schema carries the ``huggingface`` metadata key, so ``datasets.load_dataset(
"parquet", ...)`` sees ``image_gen{k}`` as an ``Image`` feature.

``D3Record.generations`` lists the non-empty generator slots in column order; a slot whose
model and image are both null is left out when reading, and slots are written back in list
order (``generations[i]`` -> ``*_gen{i}``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa

from ..exceptions import SchemaError

RECORD_COLUMNS: tuple[str, ...] = ("id", "original_prompt", "positive_prompt", "negative_prompt", "url")
"""Per-record columns, in published order."""

GEN_COLUMNS: tuple[str, ...] = ("model", "width", "height", "num_inference_steps", "filepath", "image")
"""Per-generator column stems (``{stem}_gen{k}``), in published order."""

SEED_STEM = "seed"
"""deepsift's optional per-generator extension column stem (``seed_gen{k}``)."""

GENERATOR_STEM = "generator"
"""deepsift's optional per-generator extension column stem (``generator_gen{k}``): the generator's name."""

EXTENSION_STEMS: tuple[str, ...] = (GENERATOR_STEM, SEED_STEM)
"""deepsift's extension columns per slot, written after the published ones."""

IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
"""Arrow storage type of the Hugging Face ``Image`` feature."""

_GEN_TYPES: dict[str, pa.DataType] = {
    "model": pa.string(),
    "width": pa.int64(),
    "height": pa.int64(),
    "num_inference_steps": pa.int64(),
    "filepath": pa.string(),
    "image": IMAGE_TYPE,
    GENERATOR_STEM: pa.string(),
    SEED_STEM: pa.int64(),
}


@dataclass
class Generation:
    """One generated image of a record: which generator (by name) and model made it, its size, steps, file, bytes.

    ``generator`` is the generator's name: the one given to ``data build -g NAME=...``, or, for
    shards without a ``generator_gen{k}`` column (the published D3 ones), the ``model`` value.
    """

    model: str
    width: int
    height: int
    steps: int | None
    filepath: str | None
    image: bytes | None = field(default=None, repr=False)
    seed: int | None = None
    generator: str | None = None

    def __post_init__(self) -> None:
        if not self.generator:
            self.generator = self.model

    def decode(self, **kwargs: Any):  # -> PIL.Image.Image
        """Decode the stored bytes with :func:`deepsift.images.decode_image` (an RGB PIL image)."""
        from ..exceptions import ImageDecodeError
        from ..images import decode_image

        if self.image is None:
            raise ImageDecodeError(f"{self.filepath or self.model}: no image bytes stored for this generation")
        return decode_image(self.image, **kwargs)


@dataclass
class D3Record:
    """One D3 row: prompts, the real image's URL and the generated images."""

    id: str
    original_prompt: str | None
    positive_prompt: str | None
    negative_prompt: str | None
    url: str | None
    generations: list[Generation] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        """The prompt a generator saw: the positive prompt, else the original one, else ``""``."""
        return self.positive_prompt or self.original_prompt or ""


def gen_column(stem: str, k: int) -> str:
    """Column name of generator slot ``k`` for ``stem`` (``gen_column("model", 0) == "model_gen0"``)."""
    return f"{stem}_gen{k}"


def hf_features_json(schema: pa.Schema) -> dict:
    """The ``datasets`` features description of an arrow schema (``image_gen*`` as ``Image``)."""
    feats: dict[str, dict] = {}
    for f in schema:
        if f.type == IMAGE_TYPE:
            feats[f.name] = {"_type": "Image"}
        elif pa.types.is_large_string(f.type) or pa.types.is_string(f.type):
            feats[f.name] = {"dtype": "string", "_type": "Value"}
        else:
            feats[f.name] = {"dtype": str(f.type), "_type": "Value"}
    return {"info": {"features": feats}}


def with_hf_metadata(schema: pa.Schema) -> pa.Schema:
    """Return ``schema`` with the ``huggingface`` metadata key that ``datasets`` reads."""
    meta = dict(schema.metadata or {})
    meta[b"huggingface"] = json.dumps(hf_features_json(schema)).encode()
    return schema.with_metadata(meta)


def d3_arrow_schema(n_generators: int, *, with_seed: bool = True) -> pa.Schema:
    """The D3 parquet schema for ``n_generators`` slots (plus ``generator_gen{k}``, ``seed_gen{k}`` unless disabled)."""
    if n_generators < 0:
        raise ValueError(f"n_generators must be >= 0, got {n_generators}")
    fields = [pa.field(c, pa.string()) for c in RECORD_COLUMNS]
    stems = GEN_COLUMNS + (EXTENSION_STEMS if with_seed else ())
    for k in range(n_generators):
        fields += [pa.field(gen_column(s, k), _GEN_TYPES[s]) for s in stems]
    return with_hf_metadata(pa.schema(fields))


def n_generators_of(names: list[str] | tuple[str, ...]) -> int:
    """Number of generator slots named in a list of columns (``model_gen{k}`` or ``image_gen{k}``)."""
    ks = set()
    for name in names:
        for stem in ("model", "image"):
            prefix = f"{stem}_gen"
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                ks.add(int(name[len(prefix):]))
    return max(ks) + 1 if ks else 0


def check_d3_schema(schema: pa.Schema, source: str = "<table>", *, require_images: bool = True) -> int:
    """Validate a D3 schema (names and types); return its generator count or raise :class:`SchemaError`."""
    n = n_generators_of(schema.names)
    problems = []
    expected: list[tuple[str, pa.DataType]] = [(c, pa.string()) for c in RECORD_COLUMNS]
    for k in range(n):
        for s in GEN_COLUMNS:
            if s == "image" and not require_images:
                continue
            expected.append((gen_column(s, k), _GEN_TYPES[s]))
    names = set(schema.names)
    for name, typ in expected:
        if name not in names:
            problems.append(f"missing column {name!r}")
        elif not _type_ok(schema.field(name).type, typ):
            problems.append(f"column {name!r} has type {schema.field(name).type}, expected {typ}")
    for k in range(n):
        for stem in EXTENSION_STEMS:
            name, typ = gen_column(stem, k), _GEN_TYPES[stem]
            if name in names and not _type_ok(schema.field(name).type, typ):
                problems.append(f"column {name!r} has type {schema.field(name).type}, expected {typ}")
    if n == 0 and not problems:
        problems.append("no generator columns (model_gen0/image_gen0 ...)")
    if problems:
        raise SchemaError(f"{source}: not a D3 shard: " + "; ".join(problems))
    return n


def _type_ok(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether ``actual`` can stand for ``expected`` (any int width, large string/binary variants)."""
    if expected == pa.string():
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or pa.types.is_null(actual)
    if expected == pa.int64():
        return pa.types.is_integer(actual) or pa.types.is_null(actual)
    if expected == IMAGE_TYPE:
        if not pa.types.is_struct(actual):
            return pa.types.is_binary(actual) or pa.types.is_large_binary(actual)
        kinds = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        b = kinds.get("bytes")
        return b is not None and (pa.types.is_binary(b) or pa.types.is_large_binary(b))
    return actual == expected


def record_to_row(record: D3Record, n_generators: int, *, with_seed: bool = True) -> dict[str, Any]:
    """Flatten a record into a row dict for :func:`d3_arrow_schema` (empty slots become nulls)."""
    if len(record.generations) > n_generators:
        raise SchemaError(
            f"record {record.id!r} has {len(record.generations)} generations but the shard has "
            f"{n_generators} generator slots"
        )
    row: dict[str, Any] = {c: getattr(record, c) for c in RECORD_COLUMNS}
    for k in range(n_generators):
        g = record.generations[k] if k < len(record.generations) else None
        row[gen_column("model", k)] = g.model if g else None
        row[gen_column("width", k)] = g.width if g else None
        row[gen_column("height", k)] = g.height if g else None
        row[gen_column("num_inference_steps", k)] = g.steps if g else None
        row[gen_column("filepath", k)] = g.filepath if g else None
        if g is not None and g.image is not None:
            path = os.path.basename(g.filepath) if g.filepath else None
            row[gen_column("image", k)] = {"bytes": bytes(g.image), "path": path}
        else:
            row[gen_column("image", k)] = None
        if with_seed:
            row[gen_column(GENERATOR_STEM, k)] = g.generator if g else None
            row[gen_column(SEED_STEM, k)] = g.seed if g else None
    return row


def row_to_record(row: Mapping[str, Any], n_generators: int | None = None) -> D3Record:
    """Build a :class:`D3Record` from a row dict as read from a D3 shard (slots all-null are skipped)."""
    if n_generators is None:
        n_generators = n_generators_of(list(row.keys()))
    gens = []
    for k in range(n_generators):
        model = row.get(gen_column("model", k))
        image = _image_bytes(row.get(gen_column("image", k)))
        if model is None and image is None and row.get(gen_column("filepath", k)) is None:
            continue
        gens.append(
            Generation(
                model=model or "",
                width=_opt_int(row.get(gen_column("width", k))),
                height=_opt_int(row.get(gen_column("height", k))),
                steps=_opt_int(row.get(gen_column("num_inference_steps", k))),
                filepath=row.get(gen_column("filepath", k)),
                image=image,
                seed=_opt_int(row.get(gen_column(SEED_STEM, k))),
                generator=row.get(gen_column(GENERATOR_STEM, k)),
            )
        )
    rid = row.get("id")
    return D3Record(
        id="" if rid is None else str(rid),
        original_prompt=row.get("original_prompt"),
        positive_prompt=row.get("positive_prompt"),
        negative_prompt=row.get("negative_prompt"),
        url=row.get("url"),
        generations=gens,
    )


def _image_bytes(value: Any) -> bytes | None:
    """The encoded bytes of an HF ``Image`` cell (a struct dict or raw bytes)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("bytes")
    return bytes(value) if value is not None else None


def _opt_int(value: Any) -> int | None:
    """``int(value)`` or ``None``."""
    return None if value is None else int(value)
