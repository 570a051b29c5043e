"""Summarise a D3 source: records, images per generator, sizes, steps, prompts, URLs."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from ..exceptions import ImageError
from .reader import is_local, parquet_files, read_d3
from .schema import D3Record


@dataclass
class DatasetInfo:
    """What :func:`summarize` found."""

    files: int = 0
    disk_bytes: int = 0
    records: int = 0
    images: Counter = field(default_factory=Counter)
    missing_images: Counter = field(default_factory=Counter)
    bad_images: Counter = field(default_factory=Counter)
    sizes: dict[str, Counter] = field(default_factory=dict)
    steps: dict[str, Counter] = field(default_factory=dict)
    blank_prompts: int = 0
    missing_urls: int = 0
    duplicate_ids: int = 0
    longest_prompt: int = 0

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        out = [f"records: {self.records}" + (f" in {self.files} file(s), {self.disk_bytes / 1e6:.1f} MB" if self.files else "")]
        for model, n in sorted(self.images.items()):
            sizes = ", ".join(f"{w}x{h} {c}" for (w, h), c in self.sizes[model].most_common(4))
            steps = ", ".join(f"{s} {c}" for s, c in self.steps[model].most_common(3))
            extra = "".join(
                f", {label} {counter[model]}" for label, counter in (("missing", self.missing_images), ("bad", self.bad_images))
                if counter[model]
            )
            out.append(f"  {model or '<no model name>'}: {n} images (sizes {sizes or '?'}; steps {steps or '?'}{extra})")
        out.append(f"blank prompts: {self.blank_prompts}; longest prompt: {self.longest_prompt} chars; "
                   f"records without URL: {self.missing_urls}; duplicate ids: {self.duplicate_ids}")
        return out


def models_in(records: Iterable[D3Record]) -> Counter:
    """Images per generator model name."""
    return Counter(g.model for r in records for g in r.generations)


def summarize(
    source: str | os.PathLike, *, check_images: bool = False, split: str = "train", progress: bool = True
) -> DatasetInfo:
    """Scan ``source`` once; with ``check_images`` decode every image and count failures."""
    from tqdm import tqdm

    info = DatasetInfo()
    if is_local(source):
        files = parquet_files(source)
        info.files = len(files)
        info.disk_bytes = sum(p.stat().st_size for p in files)
    seen: set[str] = set()
    records = read_d3(source, images=check_images, split=split)
    for rec in tqdm(records, desc="info", unit="rec", disable=None if progress else True):
        info.records += 1
        if rec.id in seen:
            info.duplicate_ids += 1
        seen.add(rec.id)
        prompt = rec.positive_prompt or rec.original_prompt or ""
        if not prompt.strip():
            info.blank_prompts += 1
        info.longest_prompt = max(info.longest_prompt, len(prompt))
        if not rec.url:
            info.missing_urls += 1
        for g in rec.generations:
            info.images[g.model] += 1
            info.sizes.setdefault(g.model, Counter())[(g.width, g.height)] += 1
            info.steps.setdefault(g.model, Counter())[g.steps] += 1
            if check_images:
                if g.image is None:
                    info.missing_images[g.model] += 1
                    continue
                try:
                    g.decode()
                except ImageError:
                    info.bad_images[g.model] += 1
    return info
