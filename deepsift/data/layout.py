"""The one reader of labelled image datasets on disk, for every command (eval, data split, heads fit).

Accepted layouts (``layout="auto"`` picks one from what is on disk):

* ``classes``: ``ROOT/real/<source>/...`` and ``ROOT/fake/<generator>/...``, the layout
  ``heads fit`` takes. A ``fake/`` folder holding images directly is one generator, ``fake``.
* ``folders``: ``ROOT/real/`` plus one folder per generator (``ROOT/sd21/``, ``ROOT/dalle3/``...).
* ``d3-test``: the official D3 test layout, ``ROOT/{augm,no_augm}/{real,gen_0,gen_1,...}/``;
  each sample records its split (``augm`` or ``no_augm``).
* ``parquet``: D3 parquet shards (a ``.parquet`` file or a folder of them); generated images are
  labelled by their generator's name. D3 shards hold no real images (``real=`` adds a folder).
* ``real-only``: any folder of real photos (for the false-positive-rate protocol).

Images carry a *group*: for a real image the source it came from, the first folder below
``real/`` (``real/<source>/...``); for a generated image the first folder below its generator's
folder (``fake/<generator>/<prompt or source>/...``, e.g. one folder per prompt); none for a file
directly in the class folder. Grouped splits keep a group on one side. Folders are walked by :func:`deepsift.sources.walk_images` only (``follow_links``
as ``--follow-links``); hidden files and folders are skipped; an empty class folder is an error
naming it; a folder that cannot be walked is listed in ``skipped``, never silently dropped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..choices import DATASET_LAYOUTS, IMAGE_EXTENSIONS
from ..exceptions import DataError
from ..sources import SourceError, walk_images

if TYPE_CHECKING:
    from .schema import D3Record

REAL = "real"
FAKE = "fake"
D3_SPLITS = ("augm", "no_augm")
LAYOUTS = DATASET_LAYOUTS  # the names live in choices (import-light, for --help)


@dataclass(frozen=True)
class Sample:
    """One labelled image: a stable id, what to feed a detector, its label, generator, split and group."""

    id: str
    source: str | bytes = field(repr=False)
    label: int  # 1 = fake, 0 = real
    generator: str  # "real" for real images
    split: str | None = None  # "augm" / "no_augm" in the D3 test layout
    group: str | None = None  # its source or prompt folder (real/<group>/..., <generator>/<group>/...); None: alone
    shard: tuple[str, int, int] | None = field(default=None, compare=False)  # parquet: (file, row, generation)


@dataclass
class Dataset:
    """The samples of one dataset, its layout, and what the walk could not read."""

    root: str
    layout: str
    samples: list[Sample]
    skipped: list[SourceError] = field(default_factory=list)


def images_under(folder: str | os.PathLike, *, follow_links: bool = False) -> tuple[list[str], list[SourceError]]:
    """Image files below ``folder`` (sorted, hidden ones skipped) and the walk's error rows."""
    root = Path(folder)
    files: list[str] = []
    errors: list[SourceError] = []
    for item in walk_images(root, follow_links=follow_links):
        if isinstance(item, SourceError):
            errors.append(item)
        elif not any(part.startswith(".") for part in Path(item).relative_to(root).parts):
            files.append(item)
    return files, errors


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_direct_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
               for p in folder.iterdir())


def generator_folders(fake_dirs: list[str | os.PathLike]) -> dict[str, list[Path]]:
    """Generator name -> folders: each fake folder by its name, or the sub-folders of a single one without images."""
    dirs = [Path(d) for d in fake_dirs]
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"{d}: not a folder of generated images")
    if len(dirs) == 1 and not _has_direct_images(dirs[0]):
        subs = _subdirs(dirs[0])
        if subs:
            return {p.name: [p] for p in subs}
    out: dict[str, list[Path]] = {}
    for d in dirs:
        out.setdefault(d.resolve().name, []).append(d)
    return out


def detect_layout(root: Path) -> str:
    """Name the layout of ``root`` or raise a :class:`DataError` listing the accepted ones."""
    if root.is_file() and root.suffix == ".parquet":
        return "parquet"
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset file or folder")
    names = {p.name for p in _subdirs(root)}
    if names & set(D3_SPLITS):
        return "d3-test"
    if REAL in names and FAKE in names:
        return "classes"
    if REAL in names and len(names) > 1:
        return "folders"
    if any(root.rglob("*.parquet")):
        return "parquet"
    accepted = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items() if k != "real-only")
    found = ", ".join(sorted(names)) or "no sub-folders"
    raise DataError(f"{root}: unknown dataset layout (found {found}). Accepted layouts: {accepted}")


class _Reader:
    """Collects samples and walk errors relative to one dataset root."""

    def __init__(self, root: Path, follow_links: bool):
        self.root, self.follow_links = root, follow_links
        self.skipped: list[SourceError] = []

    def _id(self, path: str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def class_folder(self, folder: Path, label: int, generator: str, split: str | None) -> list[Sample]:
        """Samples of one class folder; raises when it holds no image."""
        files, errors = images_under(folder, follow_links=self.follow_links)
        self.skipped += errors
        if not files:
            raise DataError(f"{folder}: {'real' if label == 0 else 'generator'} folder '{generator}' contains no "
                            f"images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
        out = []
        for p in files:
            parts = Path(p).relative_to(folder).parts
            group = parts[0] if len(parts) > 1 else None
            out.append(Sample(self._id(p), p, label, generator, split, group))
        return out

    def folders(self, base: Path, split: str | None) -> list[Sample]:
        """``base/real/`` plus one folder per generator."""
        subs = _subdirs(base)
        if REAL not in {p.name for p in subs}:
            raise DataError(f"{base}: no '{REAL}/' folder (expected {LAYOUTS['folders']})")
        out: list[Sample] = []
        for sub in subs:
            label = 0 if sub.name == REAL else 1
            out += self.class_folder(sub, label, sub.name, split)
        if not any(s.label == 1 for s in out):
            raise DataError(f"{base}: only a '{REAL}/' folder, no generator folder")
        return out

    def classes(self, base: Path) -> list[Sample]:
        """``base/real/<source>/...`` plus ``base/fake/<generator>/...`` (or loose images in ``fake/``)."""
        for name in (REAL, FAKE):
            if not (base / name).is_dir():
                raise DataError(f"{base}: no '{name}/' folder (expected {LAYOUTS['classes']})")
        others = [p.name for p in _subdirs(base) if p.name not in (REAL, FAKE)]
        if others:  # never left out silently
            raise DataError(f"{base}: holds real/ and fake/ (the classes layout) but also {', '.join(others)}/: "
                            f"move generator folders under fake/, or read it with the folders layout")
        out = self.class_folder(base / REAL, 0, REAL, None)
        gens = generator_folders([base / FAKE])
        for gen, dirs in gens.items():
            name = FAKE if dirs == [base / FAKE] else gen
            for d in dirs:
                out += self.class_folder(d, 1, name, None)
        return out


def read_dataset(path: str | os.PathLike, layout: str = "auto", real: str | os.PathLike | None = None, *,
                 follow_links: bool = False) -> Dataset:
    """Read a labelled dataset in one of :data:`LAYOUTS` (``auto`` detects it); ``real`` adds a real folder."""
    root = Path(path)
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; accepted: {', '.join(LAYOUTS)}")
    reader = _Reader(root, follow_links)
    if layout == "d3-test":
        samples = [s for split in D3_SPLITS if (root / split).is_dir() for s in reader.folders(root / split, split)]
    elif layout == "folders":
        samples = reader.folders(root, None)
    elif layout == "classes":
        samples = reader.classes(root)
    elif layout == "parquet":
        samples = _read_parquet(root)
    else:
        return real_only(root, follow_links=follow_links)
    skipped = reader.skipped
    if real is not None:
        extra = real_only(real, follow_links=follow_links)
        samples = samples + [Sample(f"{REAL}:{s.id}", s.source, 0, REAL, None, s.group) for s in extra.samples]
        skipped = skipped + extra.skipped
    elif layout == "parquet":
        raise DataError(f"{root}: D3 parquet shards hold no real images; give a folder of real images too "
                        f"(the real option)")
    return Dataset(str(root), layout, samples, skipped)


def real_only(path: str | os.PathLike, *, follow_links: bool = False) -> Dataset:
    """All images below a folder of real photos (label 0; grouped by their first sub-folder)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of real photos")
    reader = _Reader(root, follow_links)
    try:
        samples = reader.class_folder(root, 0, REAL, None)
    except DataError:
        raise DataError(f"{root}: contains no images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})") from None
    return Dataset(str(root), "real-only", samples, reader.skipped)


def _read_parquet(root: Path) -> list[Sample]:
    from .reader import parquet_files, read_parquet_file

    out: list[Sample] = []
    for path in parquet_files(root):
        for row, rec in enumerate(read_parquet_file(path)):
            for k, gen in enumerate(rec.generations):
                if gen.image is None:
                    continue
                out.append(Sample(f"{rec.id}/gen{k}", gen.image, 1, gen.generator or f"gen_{k}",
                                  shard=(str(path), row, k)))
    if not out:
        raise DataError(f"{root}: the parquet shards hold no generated images")
    return out


class ShardImages:
    """The image bytes of parquet samples by reference (file, row, generation), read as a stream: asked for in
    file order (as :func:`read_dataset` lists them), each file is read once."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._records: Iterator[D3Record] = iter(())
        self._row = -1
        self._record: D3Record | None = None

    def get(self, path: str, row: int, k: int, sample_id: str | None = None) -> bytes:
        """The bytes of generation ``k`` of row ``row`` of ``path`` (``sample_id``: checked against the record)."""
        from .reader import read_parquet_file

        if path != self._path or row < self._row:
            self._path, self._records, self._row, self._record = path, read_parquet_file(path), -1, None
        while self._row < row:
            self._record = next(self._records, None)
            self._row += 1
            if self._record is None:
                self._path = None
                raise DataError(f"{path}: has no row {row}: the shard changed since its samples were listed")
        rec = self._record
        assert rec is not None
        image = rec.generations[k].image if k < len(rec.generations) else None
        if image is None or (sample_id is not None and sample_id != f"{rec.id}/gen{k}"):
            raise DataError(f"{path}: row {row} no longer holds image {sample_id or k}: the shard changed since its "
                            f"samples were listed")
        return image
