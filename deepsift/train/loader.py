"""Batches of views for training: worker processes read, decode and augment; uint8 tensors come out.

Item ``s`` of :class:`StepBatches` is the whole per-process batch of optimiser step ``s``: for
rank ``r`` of ``world`` it takes records ``s*world*B + r*B ... + B - 1`` of the seeded
:class:`~deepsift.train.data.RecordStream`, and every random choice of record ``j`` (its fake,
its crops, its augmentations) comes from ``numpy.random.default_rng([seed, s, r, j])``. So a
batch depends on the step only, never on the worker that made it or on the number of workers,
and resuming at step ``s`` is exact. Views are (B, 8, 224, 224, 3) uint8 in
:data:`deepsift.train.loss.VIEWS` order; normalisation happens on the device.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..data.augment import TrainAugment, finish_view, random_resized_crop
from ..exceptions import DataError, ImageError
from ..images import CROP_SIZE, crop_uint8, decode_image
from .data import Record, RecordStream

GLOBAL_SCALE = (0.4, 1.0)
LOCAL_SCALE = (0.05, 0.4)
MAX_TRIES = 16  # records tried for one batch slot before the data is called unreadable
TRY_STRIDE = 7919  # a record that cannot be decoded is replaced by the one this many stream positions on


class RefReader:
    """Reads the bytes of index references; one per process (files and row groups cached)."""

    def __init__(self, files: Sequence[str], cache_groups: int = 8) -> None:
        self.files = list(files)
        self._pq: dict[int, object] = {}
        self._groups: OrderedDict = OrderedDict()
        self.cache_groups = cache_groups

    def read(self, ref: tuple) -> bytes:
        """The encoded bytes that ``ref`` points to."""
        kind = ref[0]
        if kind == "file":
            with open(ref[1], "rb") as fh:
                return fh.read()
        if kind == "tar":
            _, fid, offset, size = ref
            with open(self.files[fid], "rb") as fh:
                fh.seek(offset)
                data = fh.read(size)
            if len(data) != size:
                raise DataError(f"{self.files[fid]}: truncated tar member at byte {offset}")
            return data
        _, fid, rg, row, slot = ref
        column = self._row_group(fid, rg)[slot]
        value = column[row]
        if value is None:
            raise DataError(f"{self.files[fid]}: row group {rg}, row {row}: image_gen{slot} is empty")
        return value

    def _row_group(self, fid: int, rg: int) -> dict[int, list]:
        key = (fid, rg)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        import pyarrow.parquet as pq

        if fid not in self._pq:
            self._pq[fid] = pq.ParquetFile(self.files[fid])
        pf = self._pq[fid]
        cols = [n for n in pf.schema_arrow.names if n.startswith("image_gen") and n[9:].isdigit()]
        table = pf.read_row_group(rg, columns=cols)
        out = {int(c[9:]): table.column(c).combine_chunks().field("bytes").to_pylist() for c in cols}
        self._groups[key] = out
        while len(self._groups) > self.cache_groups:
            self._groups.popitem(last=False)
        return out


def four_views(im: Image.Image, rng: np.random.Generator, aug: TrainAugment) -> list[np.ndarray]:
    """Untouched, A(im), A(G(im)), A(L(im)): each finished to 224x224x3 uint8 (resize 248, centre crop)."""
    g = random_resized_crop(im, rng, scale=GLOBAL_SCALE)
    loc = random_resized_crop(im, rng, scale=LOCAL_SCALE)
    return [finish_view(im), finish_view(aug(im, rng)), finish_view(aug(g, rng)), finish_view(aug(loc, rng))]


def pick_fake(record: Record, rng: np.random.Generator) -> tuple[str, tuple]:
    """The record's fake for this step: one of its generators, uniformly."""
    return record.fakes[int(rng.integers(len(record.fakes)))]


@dataclass
class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset: item ``step`` -> dict(views uint8 (B,8,224,224,3), ids, step)."""

    files: Sequence[str]
    records: Sequence[Record]
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    aug_max_ops: int = 2

    def __post_init__(self) -> None:
        self._reader: RefReader | None = None
        self._stream = RecordStream(self.records, self.seed)
        self.aug = TrainAugment(max_ops=self.aug_max_ops)

    def __len__(self) -> int:  # steps are unbounded; the sampler decides which ones are drawn
        return 2**62

    def positions(self, step: int) -> range:
        """The record-stream positions of this rank's batch of ``step``: ranks take consecutive, disjoint blocks."""
        start = (int(step) * self.world + self.rank) * self.batch_size
        return range(start, start + self.batch_size)

    def records_at(self, step: int) -> list[Record]:
        """The records of this rank's batch of ``step`` (nothing decoded)."""
        return [self._stream[g] for g in self.positions(step)]

    def __getitem__(self, step: int) -> dict:
        """The batch of ``step``; a record whose image cannot be decoded is skipped (its id in ``skipped``) and
        replaced by a record further on in the stream, the same one on every run, so a resumed run skips it too.
        When no record decodes, ``error`` holds one line (raised by the training loop, not in a worker)."""
        if self._reader is None:
            self._reader = RefReader(self.files)
        B = self.batch_size
        views = np.empty((B, 8, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        start = self.positions(step).start  # this rank's block; a skipped record is replaced further on
        ids: list[str] = []
        skipped: list[str] = []
        for j in range(B):
            rng = np.random.default_rng([self.seed, int(step), self.rank, j])
            for attempt in range(MAX_TRIES):
                rec = self._stream[start + j + attempt * TRY_STRIDE]
                gen, fake_ref = pick_fake(rec, rng)
                try:
                    real = self._decode(rec.real, rec.id, "real")
                    fake = self._decode(fake_ref, rec.id, gen)
                except DataError as exc:
                    skipped.append(f"{rec.id}: {exc}")
                    continue
                views[j] = np.stack(four_views(real, rng, self.aug) + four_views(fake, rng, self.aug))
                ids.append(f"{rec.id}:{gen}")
                break
            else:
                return {"step": int(step), "skipped": skipped,
                        "error": f"none of {MAX_TRIES} records tried for one batch could be decoded, e.g. "
                                 f"{skipped[0]}: is the data (or its --real folder) readable images?"}
        return {"views": torch.from_numpy(views), "ids": ids, "step": int(step), "skipped": skipped}

    def _decode(self, ref: tuple, rid: str, what: str) -> Image.Image:
        try:
            return decode_image(self._reader.read(ref))  # type: ignore[union-attr]
        except (ImageError, OSError, DataError) as exc:
            raise DataError(f"its {what} image cannot be read ({exc})") from None


class StepRange(torch.utils.data.Sampler):
    """Steps ``start .. stop - 1`` in order (the DataLoader's sampler)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def make_loader(dataset: StepBatches, start: int, stop: int, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """A DataLoader over steps [start, stop): ``workers`` processes, each building whole batches."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=StepRange(start, stop), num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=2 if workers else None, persistent_workers=False,
        multiprocessing_context="fork" if workers and hasattr(__import__("os"), "fork") else None,
    )


def probe_pixels(files: Sequence[str], records: Sequence[Record], seed: int, generators: Sequence[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Untouched images (official centre crop) of held-out records: one real and one fake each.

    Returns (N, 224, 224, 3) uint8, labels (0 real, 1 fake) and the generator of each (``real`` for reals).
    ``generators`` picks the fake among those generators (default: any, seeded).
    """
    reader = RefReader(files)
    pixels, labels, gens = [], [], []
    for i, rec in enumerate(records):
        rng = np.random.default_rng([seed, 15485863, i])
        fakes = [f for f in rec.fakes if generators is None or f[0] in generators]
        if not fakes:
            continue
        gen, ref = fakes[int(rng.integers(len(fakes)))]
        for label, r, name in ((0, rec.real, "real"), (1, ref, gen)):
            try:
                im = decode_image(reader.read(r))
            except (ImageError, OSError, DataError):
                continue
            pixels.append(crop_uint8(im, "official"))
            labels.append(label)
            gens.append(name)
    if not pixels:
        return np.empty((0, CROP_SIZE, CROP_SIZE, 3), np.uint8), np.empty(0, np.int64), []
    return np.stack(pixels), np.asarray(labels, np.int64), gens


def image_bytes(files: Sequence[str], ref: tuple) -> bytes:
    """The bytes of one reference (for exporting evaluation folders)."""
    return RefReader(files).read(ref)


