"""Summarise a D3 source: records, images per generator (by name, with its model), sizes, steps, prompts, URLs."""
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
    images: Counter = field(default_factory=Counter)  # per generator name
    models: dict[str, Counter] = field(default_factory=dict)  # generator name -> model sources
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
        for name, n in sorted(self.images.items()):
            sizes = ", ".join(f"{w}x{h} {c}" for (w, h), c in self.sizes[name].most_common(4))
            steps = ", ".join(f"{s} {c}" for s, c in self.steps[name].most_common(3))
            extra = "".join(
                f", {label} {counter[name]}" for label, counter in (("missing", self.missing_images), ("bad", self.bad_images))
                if counter[name]
            )
            models = [m for m in self.models.get(name, {}) if m != name]
            model = f"model {', '.join(models)}; " if models else ""
            out.append(f"  {name or '<no model name>'}: {n} images ({model}sizes {sizes or '?'}; steps {steps or '?'}{extra})")
        out.append(f"blank prompts: {self.blank_prompts}; longest prompt: {self.longest_prompt} chars; "
                   f"records without URL: {self.missing_urls}; duplicate ids: {self.duplicate_ids}")
        return out


def generators_in(records: Iterable[D3Record]) -> Counter:
    """Images per generator name (:attr:`Generation.generator`)."""
    return Counter(g.generator for r in records for g in r.generations)


def summarize(
    source: str | os.PathLike, *, check_images: bool = False, split: str = "train", progress: bool = True
) -> DatasetInfo:
    """Scan ``source`` once; with ``check_images`` decode every image and count failures."""
    from ..output import progress as progress_bar

    info = DatasetInfo()
    if is_local(source):
        files = parquet_files(source)
        info.files = len(files)
        info.disk_bytes = sum(p.stat().st_size for p in files)
    seen: set[str] = set()
    records = read_d3(source, images=check_images, split=split)
    for rec in progress_bar(records, "info", unit="rec", enabled=None if progress else False):
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
            name = g.generator or g.model
            info.images[name] += 1
            info.models.setdefault(name, Counter())[g.model] += 1
            info.sizes.setdefault(name, Counter())[(g.width, g.height)] += 1
            info.steps.setdefault(name, Counter())[g.steps] += 1
            if check_images:
                if g.image is None:
                    info.missing_images[name] += 1
                    continue
                try:
                    g.decode()
                except ImageError:
                    info.bad_images[name] += 1
    return info
