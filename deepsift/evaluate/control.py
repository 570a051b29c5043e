"""The re-encoding control: pass every image, real and fake, through one transform before scoring.

``jpeg:Q`` re-encodes to JPEG at quality Q (1-100), ``png`` re-encodes losslessly (drops the
container and its metadata), ``resize:N`` scales the shorter side to N px (8-4096, bilinear) and
stores PNG. When a detector's figure falls once every image has the same file history, the
figure was (partly) reading that history, not the picture. Controlled copies are written to a
temporary folder, never held all in memory; an image that cannot be decoded is left out of both
the original and the controlled metrics, and listed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

CONTROL_KINDS = ("jpeg:Q", "png", "resize:N")


@dataclass(frozen=True)
class Control:
    """One control transform: ``kind`` in jpeg / png / resize and its value (quality or side)."""

    kind: str
    value: int | None = None

    @property
    def name(self) -> str:
        """The spec as written (``jpeg:90``)."""
        return self.kind if self.value is None else f"{self.kind}:{self.value}"

    def apply(self, source: Any, out: Path) -> str:
        """Decode ``source``, transform it, write it to ``out`` (suffix set here); returns the path."""
        from ..images import decode_image, resize_shorter

        im = decode_image(source)
        if self.kind == "jpeg":
            path = out.with_suffix(".jpg")
            im.save(path, "JPEG", quality=int(self.value or 90))
            return str(path)
        if self.kind == "resize":  # the package's resize rule (aspect ratio capped: no 100000 x 1 blow-up)
            im = resize_shorter(im, int(self.value or 512))
        path = out.with_suffix(".png")
        im.save(path, "PNG", compress_level=1)
        return str(path)


def parse_control(text: str) -> Control:
    """``jpeg:Q`` (Q in 1..100), ``png`` or ``resize:N`` (N in 8..4096); ValueError naming the forms otherwise."""
    kind, _, arg = str(text).strip().lower().partition(":")
    forms = f"one of {', '.join(CONTROL_KINDS)} (e.g. jpeg:90, png, resize:512)"
    if kind == "png" and not arg:
        return Control("png")
    if kind in ("jpeg", "resize"):
        lo, hi = (1, 100) if kind == "jpeg" else (8, 4096)
        try:
            value = int(arg)
        except ValueError:
            raise ValueError(f"must be {forms}, got {text!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"{kind}:N needs N in [{lo}, {hi}], got {text!r}")
        return Control(kind, value)
    raise ValueError(f"must be {forms}, got {text!r}")


def controlled_samples(samples: Sequence[Any], control: Control, folder: str | os.PathLike,
                       desc: str = "control") -> tuple[list[Any], list[tuple[str, str]]]:
    """Each sample with its source replaced by its controlled copy in ``folder``; and the ones that failed."""
    from ..exceptions import ImageError
    from ..output import progress

    out, failed = [], []
    for i, s in enumerate(progress(samples, f"{desc} ({control.name})", unit="img", leave=False)):
        try:
            out.append(replace(s, source=control.apply(s.source, Path(folder) / f"{i:08d}")))
        except (ImageError, OSError) as exc:
            failed.append((s.id, str(exc)))
    return out, failed
