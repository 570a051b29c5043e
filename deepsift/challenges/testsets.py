"""Hidden test sets: import images with their labels, anonymise them, split public/private, keep the key.

Sources: the D3 test layout ``{augm,no_augm}/{real,gen_*}`` (``augm`` = transformed), a labelled
folder (``real/`` + one folder per generator, or ``real/`` + ``fake/<generator>/`` as ``heads fit``
takes it), D3 parquet shards plus a fetch-real folder of real
images, or an answer key alone (``labels``: ``id,label[,generator][,transformed]``, no images).

What participants get reveals nothing but pixels: every image is decoded and re-encoded into one
format chosen by the host (no metadata survives; optionally resized to one square size), named with
a random 16-hex-digit name, and archived in name order (random, so order carries no label). The
answer key (name, label, generator, transformed, part) is a parquet file in private storage; the
public/private split is stratified by (generator, transformed) with the spec's seed.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import secrets
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..exceptions import DataError, DeepsiftError, InvalidInputError
from ..server.storage import file_sha256
from .spec import TestSetSpec

KEY_FILE = "key.parquet"
ARCHIVE_FILE = "testset.zip"
IMAGES_DIR = "images"
PARTS = ("public", "private")
EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class Item:
    """One test image before import: where its pixels come from and what it is."""

    source: Any  # path, bytes, or None (labels-only)
    label: int
    generator: str
    transformed: bool
    perturbation: Any = None  # a deepsift.data.augment.Perturbation applied at import
    name: str | None = None  # labels-only: the host's id


@dataclass
class Key:
    """A test set's answer key (aligned arrays)."""

    names: Any  # pyarrow string array (fast joins)
    labels: np.ndarray  # int8, 1 = fake
    generators: np.ndarray  # object
    transformed: np.ndarray  # bool
    public: np.ndarray  # bool: in the public part

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def generator_codes(self) -> tuple[np.ndarray, list[str]]:
        """``(codes, names)``: each image's generator as a small integer into ``names``."""
        names, codes = np.unique(self.generators.astype(str), return_inverse=True)
        return codes.astype(np.int32), [str(n) for n in names]


@dataclass
class ImportResult:
    """What :func:`build_testset` wrote."""

    folder: Path
    n_images: int
    n_public: int
    has_images: bool
    key_sha256: str
    archive_sha256: str | None
    archive_bytes: int | None
    summary: dict


# -- collecting items ------------------------------------------------------------------------------
def collect(spec: TestSetSpec) -> list[Item]:
    """The labelled items of a test-set spec (paths already absolute)."""
    from ..evaluate.datasets import load_eval_set

    if spec.source == "labels":
        return _read_label_file(Path(spec.labels))  # type: ignore[arg-type]
    try:
        if spec.source == "d3-test":
            data = load_eval_set(spec.path, "d3-test")  # type: ignore[arg-type]
        elif spec.source in ("folders", "classes"):
            data = load_eval_set(spec.path, spec.source)  # type: ignore[arg-type]
        else:
            data = load_eval_set(spec.path, "parquet", real=spec.real)  # type: ignore[arg-type]
    except DeepsiftError as exc:
        raise InvalidInputError(f"test set {spec.source} {spec.path}: {exc}") from None
    items = [Item(s.source, s.label, s.generator, s.split == "augm") for s in data.samples]
    if spec.transform:
        from ..data.augment import robustness_perturbations

        perts = robustness_perturbations(spec.transform)
        rng = np.random.default_rng(spec.seed)
        items += [Item(it.source, it.label, it.generator, True, perts[int(rng.integers(len(perts)))])
                  for it in items if not it.transformed]
    return items


def _read_label_file(path: Path) -> list[Item]:
    """An answer key CSV/JSON without images: id, label (0/1, real/fake), generator, transformed."""
    from ..evaluate.rowfiles import ID_COLUMNS, LABEL_WORDS, _pick, _rows

    try:
        rows = _rows(path)
    except DeepsiftError as exc:
        raise InvalidInputError(str(exc)) from None
    items, seen = [], set()
    for line, row in rows:
        key = _pick(row, ID_COLUMNS)
        if key is None or "label" not in row:
            raise InvalidInputError(f"{path}: needs id and label columns; got {sorted(row)}")
        rid = str(row[key]).strip()
        lab = str(row["label"]).strip().lower()
        if not rid or rid in seen or lab not in LABEL_WORDS:
            what = "empty id" if not rid else "duplicate id" if rid in seen else f"label {row['label']!r}"
            raise InvalidInputError(f"{path} line {line}: {what}")
        seen.add(rid)
        label = LABEL_WORDS[lab]
        gen = str(row.get("generator") or ("real" if label == 0 else "fake"))
        tr = str(row.get("transformed", "0")).strip().lower() in ("1", "true", "yes", "augm")
        items.append(Item(None, label, gen, tr, name=rid))
    if not items:
        raise InvalidInputError(f"{path}: no rows")
    return items


# -- splitting and encoding ------------------------------------------------------------------------
def split_public(items: Sequence[Item], fraction: float, seed: int) -> np.ndarray:
    """A public mask, stratified by (generator, transformed): each stratum gets ``fraction`` public."""
    rng = np.random.default_rng(seed)
    public = np.zeros(len(items), bool)
    strata: dict[tuple[str, bool], list[int]] = {}
    for i, it in enumerate(items):
        strata.setdefault((it.generator, it.transformed), []).append(i)
    for _, idx in sorted(strata.items()):
        idx_arr = np.array(idx)
        rng.shuffle(idx_arr)
        k = int(round(fraction * len(idx_arr)))
        if len(idx_arr) >= 2:
            k = min(max(k, 1), len(idx_arr) - 1)  # both parts see every stratum
        public[idx_arr[:k]] = True
    return public


def encode_image(item: Item, fmt: str, quality: int, resize: int | None, seed: int) -> bytes:
    """Decode, optionally transform and resize, and re-encode one image (no metadata kept)."""
    from PIL import Image, ImageOps

    from ..images import decode_image

    try:
        im = decode_image(item.source)
    except DeepsiftError as exc:
        raise InvalidInputError(f"test image {item.source if isinstance(item.source, str) else '(bytes)'}: {exc}") from None
    if item.perturbation is not None:
        im = item.perturbation(im, np.random.default_rng(seed))
    if resize:
        im = ImageOps.fit(im, (resize, resize), Image.BICUBIC)
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG", compress_level=6)
    elif fmt == "jpeg":
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "WEBP", quality=quality)
    return buf.getvalue()


def _names(n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(secrets.token_hex(8))
    return list(out)


def build_testset(items: Sequence[Item], dest: Path, *, image_format: str = "png", jpeg_quality: int = 95,
                  resize: int | None = None, public_fraction: float = 0.5, seed: int = 0,
                  threads: int = 4, progress: bool | None = None) -> ImportResult:
    """Write the anonymised images, the participants' archive and the answer key into ``dest`` (new).

    ``progress``: a progress bar of the re-encoding on stderr (None: when stderr is a terminal).
    """
    from ..output import progress as progress_bar

    if not items:
        raise InvalidInputError("the test set is empty")
    labels = np.array([it.label for it in items], np.int8)
    if labels.min() == labels.max():
        raise InvalidInputError(f"the test set needs real and fake images (all are {'fake' if labels[0] else 'real'})")
    dest.mkdir(parents=True, exist_ok=False)
    has_images = all(it.source is not None for it in items)
    try:
        public = split_public(items, public_fraction, seed)
        if has_images:
            names = [n + EXT[image_format] for n in _names(len(items))]
            img_dir = dest / IMAGES_DIR
            img_dir.mkdir()

            def work(i: int) -> None:
                data = encode_image(items[i], image_format, jpeg_quality, resize, seed + i)
                (img_dir / names[i]).write_bytes(data)

            with ThreadPoolExecutor(max(1, threads)) as pool:
                list(progress_bar(pool.map(work, range(len(items))), "test images", total=len(items),
                                  enabled=progress))
            archive = dest / ARCHIVE_FILE
            _write_archive(archive, img_dir, sorted(names), image_format)
            archive_sha, archive_bytes = file_sha256(archive), archive.stat().st_size
        else:
            names = [it.name for it in items]  # type: ignore[misc]
            archive_sha = archive_bytes = None
        key_path = dest / KEY_FILE
        write_key(key_path, names, labels, [it.generator for it in items], [it.transformed for it in items], public)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return ImportResult(dest, len(items), int(public.sum()), has_images, file_sha256(key_path), archive_sha,
                        archive_bytes, _summary(items, public))


def _summary(items: Sequence[Item], public: np.ndarray) -> dict:
    by_gen: dict[str, dict[str, int]] = {}
    for it, pub in zip(items, public):
        d = by_gen.setdefault(it.generator, {"public": 0, "private": 0, "transformed": 0})
        d["public" if pub else "private"] += 1
        d["transformed"] += int(it.transformed)
    fakes = sorted({it.generator for it in items if it.label == 1})
    return {"n": len(items), "public": int(public.sum()), "private": int((~public).sum()), "generators": by_gen,
            "fake_generators": fakes}


def _write_archive(path: Path, img_dir: Path, names: list[str], fmt: str) -> None:
    """The participants' zip: images/<random name>, a README and a sample submission, fixed dates."""
    readme = (f"deepsift challenge test set: {len(names)} images, all re-encoded as {fmt.upper()} and named at "
              "random.\nSubmit predictions as CSV 'id,score[,label]' (score: higher = more likely fake; label 1 = "
              "fake, 0 = real), JSON {\"<id>\": 0|1} (ELSA) or JSONL rows {\"id\": ..., \"score\": ...}.\n"
              "Ids are the file names below images/. sample_submission.csv lists every id once.\n")
    sample = io.StringIO()
    w = csv.writer(sample)
    w.writerow(["id", "score"])
    for n in names:
        w.writerow([n, 0.5])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for arcname, data in (("README.txt", readme.encode()), ("sample_submission.csv", sample.getvalue().encode())):
            zf.writestr(zipfile.ZipInfo(arcname, _ZIP_DATE), data, zipfile.ZIP_DEFLATED)
        for n in names:
            info = zipfile.ZipInfo(f"{IMAGES_DIR}/{n}", _ZIP_DATE)
            info.external_attr = 0o644 << 16
            with open(img_dir / n, "rb") as src, zf.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)


# -- the key ---------------------------------------------------------------------------------------
def write_key(path: Path, names: Sequence[str], labels: np.ndarray, generators: Sequence[str],
              transformed: Sequence[bool], public: np.ndarray) -> None:
    """Write the answer key parquet (to a temporary name, renamed when complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"name": pa.array(list(names), pa.string()), "label": pa.array(labels, pa.int8()),
                      "generator": pa.array(list(generators), pa.string()),
                      "transformed": pa.array(list(transformed), pa.bool_()),
                      "part": pa.array(np.where(public, "public", "private"), pa.string())})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


@functools.lru_cache(maxsize=8)
def _load_key(path: str, mtime_ns: int) -> Key:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    enc = t["generator"].combine_chunks().dictionary_encode()
    gen_names = [str(x) for x in enc.dictionary.to_pylist()]
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    key = Key(names=t["name"].combine_chunks(), labels=t["label"].to_numpy().astype(np.int8),
              generators=np.asarray(gen_names, dtype=object)[codes],
              transformed=t["transformed"].to_numpy(zero_copy_only=False).astype(bool),
              public=pc.equal(t["part"], "public").to_numpy(zero_copy_only=False).astype(bool))
    key.__dict__["generator_codes"] = (codes, gen_names)  # the cached_property, filled from the encoding
    return key


def load_key(folder: Path) -> Key:
    """The answer key of a test set folder (cached per file version)."""
    path = folder / KEY_FILE
    if not path.is_file():
        raise DataError(f"test set key missing: {path}")
    return _load_key(str(path), path.stat().st_mtime_ns)


def key_rows(key: Key) -> Iterable[dict]:
    """The key as rows (hosts' download; also what `deepsift eval scores --labels` reads)."""
    names = key.names.to_pylist()
    for i, n in enumerate(names):
        yield {"id": n, "label": int(key.labels[i]), "generator": key.generators[i],
               "transformed": int(key.transformed[i]), "part": "public" if key.public[i] else "private"}


def write_key_csv(key: Key, out: Path) -> None:
    """The key as CSV (id,label,generator,transformed,part) for hosts."""
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "label", "generator", "transformed", "part"])
        w.writeheader()
        w.writerows(key_rows(key))


def summary_json(result: ImportResult) -> str:
    return json.dumps(result.summary)
