"""Evaluation datasets on disk: which images, which label, which generator.

Accepted layouts (``layout="auto"`` picks one from what is on disk):

* ``d3-test``: the official D3 test layout, ``ROOT/{augm,no_augm}/{real,gen_0,gen_1,...}/``;
  each sample records its split (``augm`` or ``no_augm``).
* ``folders``: ``ROOT/real/`` plus one folder per generator (``ROOT/sd21/``, ``ROOT/dalle3/``...).
* ``parquet``: D3 parquet shards (a ``.parquet`` file or a folder of them) read with
  :func:`deepsift.data.reader.read_d3`; generated images are labelled by their generator's name
  (``generator_gen{k}`` of shards made by ``data build``, else ``model_gen{k}``).
  D3 shards hold no real images, so real ones come from a separate folder (``real=``).
* ``real-only``: any folder of real photos (for the false-positive-rate protocol).

Images are found recursively by extension; an empty class folder is an error naming it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..exceptions import DataError
from ..choices import IMAGE_EXTENSIONS  # one list of image file types for the whole package

REAL = "real"
D3_SPLITS = ("augm", "no_augm")
LAYOUTS: dict[str, str] = {
    "d3-test": "{augm,no_augm}/{real,gen_0,gen_1,...}/ (the official D3 test layout)",
    "folders": "real/ plus one folder per generator (e.g. real/, sd21/, dalle3/)",
    "parquet": "D3 parquet shards (*.parquet); real images from a separate folder",
    "real-only": "one folder of real photos (false-positive rate only)",
}


@dataclass(frozen=True)
class Sample:
    """One evaluation image: a stable id, what to feed the detector, its label and generator."""

    id: str
    source: str | bytes = field(repr=False)
    label: int  # 1 = fake, 0 = real
    generator: str  # "real" for real images
    split: str | None = None  # "augm" / "no_augm" in the D3 test layout


@dataclass
class EvalSet:
    """A labelled set of samples and the layout it was read from."""

    root: str
    layout: str
    samples: list[Sample]

    @property
    def generators(self) -> list[str]:
        """Generator names (without ``real``), in first-seen order."""
        return list(dict.fromkeys(s.generator for s in self.samples if s.label == 1))

    @property
    def splits(self) -> list[str]:
        """D3 splits present (empty outside the D3 test layout)."""
        return list(dict.fromkeys(s.split for s in self.samples if s.split))

    def counts(self) -> dict[str, int]:
        """Images per generator (``real`` included)."""
        out: dict[str, int] = {}
        for s in self.samples:
            out[s.generator] = out.get(s.generator, 0) + 1
        return out


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursive, sorted, hidden files skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                out.append(Path(dirpath) / f)
    return out


def _class_folder(root: Path, folder: Path, label: int, generator: str, split: str | None) -> list[Sample]:
    """Samples of one class folder; raises when it holds no image."""
    files = list_images(folder)
    if not files:
        raise DataError(f"{folder}: generator folder '{generator}' contains no images "
                        f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return [Sample(p.relative_to(root).as_posix(), str(p), label, generator, split) for p in files]


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_layout(root: Path) -> str:
    """Name the layout of ``root`` or raise a :class:`DataError` listing the accepted ones."""
    if root.is_file() and root.suffix == ".parquet":
        return "parquet"
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset file or folder")
    names = {p.name for p in _subdirs(root)}
    if names & set(D3_SPLITS):
        return "d3-test"
    if REAL in names and len(names) > 1:
        return "folders"
    if any(root.rglob("*.parquet")):
        return "parquet"
    accepted = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items() if k != "real-only")
    found = ", ".join(sorted(names)) or "no sub-folders"
    raise DataError(f"{root}: unknown dataset layout (found {found}). Accepted layouts: {accepted}")


def load_eval_set(path: str | os.PathLike, layout: str = "auto", real: str | os.PathLike | None = None) -> EvalSet:
    """Read a labelled dataset in one of :data:`LAYOUTS` (``auto`` detects it)."""
    root = Path(path)
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; accepted: {', '.join(LAYOUTS)}")
    if layout == "d3-test":
        samples = _read_d3_test(root)
    elif layout == "folders":
        samples = _read_folders(root, root, None)
    elif layout == "parquet":
        samples = _read_parquet(root)
    else:
        samples = real_only(root).samples
    if real is not None:
        samples = samples + [Sample(f"{REAL}:{s.id}", s.source, 0, REAL) for s in real_only(real).samples]
    elif layout == "parquet":
        raise DataError(f"{root}: D3 parquet shards hold no real images; give a folder of real images too "
                        f"(the real option)")
    return EvalSet(str(root), layout, samples)


def _read_folders(root: Path, base: Path, split: str | None) -> list[Sample]:
    subs = _subdirs(base)
    if REAL not in {p.name for p in subs}:
        raise DataError(f"{base}: no '{REAL}/' folder (expected {LAYOUTS['folders']})")
    out: list[Sample] = []
    for sub in subs:
        label = 0 if sub.name == REAL else 1
        out += _class_folder(root, sub, label, sub.name, split)
    if not any(s.label == 1 for s in out):
        raise DataError(f"{base}: only a '{REAL}/' folder, no generator folder")
    return out


def _read_d3_test(root: Path) -> list[Sample]:
    out: list[Sample] = []
    for split in D3_SPLITS:
        if (root / split).is_dir():
            out += _read_folders(root, root / split, split)
    return out


def _read_parquet(root: Path) -> list[Sample]:
    from ..data.reader import read_d3

    out: list[Sample] = []
    for rec in read_d3(root, backend="pyarrow"):
        for k, gen in enumerate(rec.generations):
            if gen.image is None:
                continue
            out.append(Sample(f"{rec.id}/gen{k}", gen.image, 1, gen.generator or f"gen_{k}"))
    if not out:
        raise DataError(f"{root}: the parquet shards hold no generated images")
    return out


def real_only(path: str | os.PathLike) -> EvalSet:
    """All images below a folder of real photos (label 0)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of real photos")
    samples = [Sample(p.relative_to(root).as_posix(), str(p), 0, REAL) for p in list_images(root)]
    if not samples:
        raise DataError(f"{root}: contains no images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return EvalSet(str(root), "real-only", samples)


def select(samples: Iterable[Sample], *, generators: Iterable[str] | None = None,
           split: str | None = None) -> list[Sample]:
    """Samples of the given generators (``real`` always kept) and split."""
    keep = None if generators is None else set(generators) | {REAL}
    return [s for s in samples if (keep is None or s.generator in keep) and (split is None or s.split == split)]
