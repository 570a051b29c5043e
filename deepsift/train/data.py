"""The training index: which records exist, where each one's real image and fakes are, nothing decoded.

Sources (``--data``, any mix, repeatable): D3 parquet shards or folders of them (the published
shards joined with a ``deepsift data fetch-real`` folder given by ``--real``, or the output of
``deepsift data build``, whose ``build.json`` names its real images), and WebDataset tars in the
authors' layout (``gen_0..gen_k`` + ``real`` members; a folder means every ``*.tar`` below it).
Indexing reads ids and generator names only; image bytes are read by the loader's workers.

A record without a usable real image, or without any fake (after ``--leave-out``), is skipped
and counted; an index with no record, or with only one class, is refused with one line.
"""
from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..exceptions import DataError, UsageError, input_not_found, unknown_generator

Ref = tuple  # ("pq", file, row_group, row_in_group, slot) | ("tar", file, offset, size) | ("file", path)


@dataclass
class Record:
    """One training record: its id, where its real image is, and its fakes by generator name."""

    id: str
    real: Ref
    fakes: list[tuple[str, Ref]]
    group: tuple = ()  # (file, row group): records of one group are read together


@dataclass
class TrainIndex:
    """The records of every source, plus what was skipped and why, and the left-out fakes."""

    files: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    left_out: list[Record] = field(default_factory=list)  # records carrying only the left-out generators' fakes
    generators: Counter = field(default_factory=Counter)  # fakes per generator (before leave-out)

    def summary(self) -> str:
        """One line: records, generators, skipped."""
        gens = ", ".join(f"{g} {n}" for g, n in sorted(self.generators.items())) or "none"
        skip = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{len(self.records)} training record(s); fakes per generator: {gens}; skipped: {skip}"


class RealLookup:
    """Real images by record id: a ``fetch-real`` folder (``status.jsonl``) or a folder of ``<id>.<ext>`` files."""

    def __init__(self, folder: str | os.PathLike | None, extra: dict[str, str] | None = None) -> None:
        self.by_id: dict[str, str] = dict(extra or {})
        if folder is None:
            return
        root = Path(folder)
        if not root.is_dir():
            raise input_not_found(folder) if not root.exists() else UsageError(f"{folder}: not a folder")
        from ..data.fetch import STATUS_FILE, load_status, real_image_path

        if (root / STATUS_FILE).is_file():
            status = load_status(root)
            for rid in status:
                path = real_image_path(root, status, rid)
                if path is not None and path.resolve().is_relative_to(root.resolve()):
                    self.by_id.setdefault(rid, str(path))
        else:
            from ..data.layout import images_under

            for p in map(Path, images_under(root)[0]):
                if p.parent == root:
                    self.by_id.setdefault(p.stem, str(p))

    def get(self, record_id: str) -> str | None:
        """The path of the real image of ``record_id``, or None."""
        return self.by_id.get(record_id)


def _build_reals(folder: Path) -> dict[str, str]:
    """Real images named by a ``data build`` output's ``build.json`` (its real_dir, or its prompt file's images)."""
    manifest = folder / "build.json"
    if not manifest.is_file():
        return {}
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out: dict[str, str] = {}
    if meta.get("real_dir"):
        try:
            out.update(RealLookup(meta["real_dir"]).by_id)
        except UsageError:
            pass
    from ..generate.plan import manifest_source

    src = manifest_source(folder, meta)
    if src.lower().endswith((".jsonl", ".json", ".ndjson", ".csv", ".tsv")) and Path(src).is_file():
        from ..generate.sources import iter_source

        for item in iter_source(src):
            if item.problem is None and item.real:
                out.setdefault(item.id, item.real)
    return out


def _source_files(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """("pq"|"tar", path) for a file or every visible parquet/tar file under a folder."""
    path = Path(source)
    if not path.exists():
        raise input_not_found(source)
    if path.is_file():
        if path.suffix == ".tar":
            return [("tar", path)]
        return [("pq", path)]
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".parquet", ".tar")
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not found:
        raise DataError(f"{path}: no .parquet shards or .tar files in this folder")
    return [("tar" if p.suffix == ".tar" else "pq", p) for p in found]


def build_index(sources: Sequence[str | os.PathLike], real: str | os.PathLike | None = None,
                leave_out: Iterable[str] = ()) -> TrainIndex:
    """Index every record of ``sources``; raises DataError for an empty or one-class dataset."""
    leave = set(leave_out)
    index = TrainIndex()
    lookup = RealLookup(real)
    for src in sources:
        p = Path(src)
        extra = _build_reals(p if p.is_dir() else p.parent)
        for rid, path in extra.items():
            lookup.by_id.setdefault(rid, path)
        for kind, path in _source_files(src):
            fid = len(index.files)
            index.files.append(str(path))
            rows = _parquet_rows(path, fid) if kind == "pq" else _tar_rows(path, fid)
            for rid, real_ref, fakes, group in rows:
                for g, _ in fakes:
                    index.generators[g] += 1
                if real_ref is None:
                    rp = lookup.get(rid)
                    real_ref = ("file", rp) if rp else None
                if real_ref is None:
                    index.skipped["no real image"] += 1
                    continue
                kept = [(g, r) for g, r in fakes if g not in leave]
                gone = [(g, r) for g, r in fakes if g in leave]
                if gone:
                    index.left_out.append(Record(rid, real_ref, gone, group))
                if not kept:
                    index.skipped["left-out generators only" if gone else "no generated image"] += 1
                    continue
                index.records.append(Record(rid, real_ref, kept, group))
    unknown = sorted(leave - set(index.generators))
    if unknown:
        raise unknown_generator("leave-out generator", unknown, set(index.generators))
    _check_classes(index)
    return index


def _check_classes(index: TrainIndex) -> None:
    """Refuse an index that cannot train: no records, no reals, or no fakes."""
    if index.records:
        return
    n_seen = sum(index.skipped.values())
    if n_seen == 0:
        raise DataError("the dataset is empty: no records in the given data")
    if index.skipped.get("no real image", 0) == n_seen:
        raise DataError(f"only one class: none of the {n_seen} record(s) has a real image (give the fetch-real "
                        f"folder as the real images); training needs real and generated images")
    raise DataError(f"only one class: none of the {n_seen} record(s) with a real image has a generated image "
                    f"left ({', '.join(f'{k} {v}' for k, v in sorted(index.skipped.items()))})")


def _parquet_rows(path: Path, fid: int):
    """(id, None, [(generator, ref)], group) per row of a D3 shard (ids and names only are read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data.reader import detect_layout
    from ..data.schema import n_generators_of

    try:
        pf = pq.ParquetFile(path)
        layout = detect_layout(pf.schema_arrow, str(path))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if layout != "d3":
        raise DataError(f"{path}: an ELSA1M shard has no real images to pair; training reads D3 shards")
    names = pf.schema_arrow.names
    n_gen = n_generators_of(names)
    cols = ["id"] + [c for k in range(n_gen) for c in (f"model_gen{k}", f"generator_gen{k}") if c in names]
    for rg in range(pf.metadata.num_row_groups):
        t = pf.read_row_group(rg, columns=cols).to_pydict()
        for i, rid in enumerate(t["id"]):
            if rid is None or rid == "":
                continue
            fakes = []
            for k in range(n_gen):
                model = t[f"model_gen{k}"][i]
                if model is None:
                    continue
                name = (t.get(f"generator_gen{k}") or [None] * (i + 1))[i] or model
                fakes.append((name, ("pq", fid, rg, i, k)))
            yield str(rid), None, fakes, (fid, rg)


def _tar_rows(path: Path, fid: int):
    """(id, real ref, [(gen_k, ref)], group) per sample of a WebDataset tar (member offsets only)."""
    samples: dict[str, dict[str, tuple]] = {}
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                key, dot, suffix = base.partition(".")
                if not dot:
                    continue
                samples.setdefault(key, {})[suffix] = ("tar", fid, m.offset_data, m.size)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path}: not a readable tar file ({exc})") from None
    for key, members in samples.items():
        real = next((r for s, r in members.items() if s.split(".")[0] == "real"), None)
        fakes = sorted((s.split(".")[0], r) for s, r in members.items() if s.startswith("gen_"))
        rid = key.split("__")[-1]
        yield rid, real, fakes, (fid, 0)


def split_holdout(index: TrainIndex, n: int, seed: int) -> tuple[list[Record], list[Record]]:
    """(training records, held-out records): ``n`` records drawn by ``seed``, at most a fifth, at least 4."""
    recs = index.records
    k = min(n, max(4, len(recs) // 5))
    if len(recs) - k < 2:
        raise DataError(f"too few records to train: {len(recs)} (need at least {k + 2}: {k} held out for the "
                        f"linear head, 2 per step)")
    order = np.random.default_rng([seed, 7919]).permutation(len(recs))
    held = set(order[:k].tolist())
    return [r for i, r in enumerate(recs) if i not in held], [recs[i] for i in sorted(held)]


def record_order(records: Sequence[Record], seed: int, epoch: int, window: int = 8) -> np.ndarray:
    """Pass ``epoch`` over the records: groups (row groups, tars) shuffled, then records shuffled within windows of groups.

    Reading stays local (a batch touches a few row groups) while the order is a fresh shuffle each pass.
    """
    rng = np.random.default_rng([seed, epoch, 104729])
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.group, []).append(i)
    keys = list(groups)
    gorder = rng.permutation(len(keys))
    out = []
    for s in range(0, len(keys), window):
        members = [i for g in gorder[s:s + window] for i in groups[keys[g]]]
        out.extend(np.asarray(members)[rng.permutation(len(members))].tolist())
    return np.asarray(out, dtype=np.int64)


class RecordStream:
    """The infinite, seeded record sequence: position g -> record (pass g // N, reshuffled each pass)."""

    def __init__(self, records: Sequence[Record], seed: int) -> None:
        self.records, self.seed = list(records), seed
        self._orders: dict[int, np.ndarray] = {}

    def __getitem__(self, g: int) -> Record:
        n = len(self.records)
        epoch, pos = divmod(int(g), n)
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.clear()
            self._orders[epoch] = record_order(self.records, self.seed, epoch)
        return self.records[int(self._orders[epoch][pos])]

