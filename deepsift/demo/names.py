"""Generator names for the public: "Stable Diffusion XL", not "stabilityai/stable-diffusion-xl-base-1.0" or "gen_2".

Heads and datasets name generators by whatever their folders or shards said (a hub id, ``gen_0``,
``sdxl``). The page shows a name a person knows: the operator's own mapping first
(``DEEPSIFT_DEMO_GENERATOR_NAMES``), then the well-known models recognised by pattern, else the
raw name tidied (``gen_a`` -> "gen a").
"""
from __future__ import annotations

import re

KNOWN: tuple[tuple[str, str], ...] = (
    (r"stable[-_ ]?diffusion[-_ ]?xl|sd[-_ ]?xl", "Stable Diffusion XL"),
    (r"stable[-_ ]?diffusion[-_ ]?(v)?1[-_.]?4|^sd[-_ ]?1[-_.]?4$", "Stable Diffusion 1.4"),
    (r"stable[-_ ]?diffusion[-_ ]?(v)?1[-_.]?5|^sd[-_ ]?1[-_.]?5$", "Stable Diffusion 1.5"),
    (r"stable[-_ ]?diffusion[-_ ]?2[-_.]?1|^sd[-_ ]?2[-_.]?1$", "Stable Diffusion 2.1"),
    (r"stable[-_ ]?diffusion[-_ ]?3|^sd[-_ ]?3", "Stable Diffusion 3"),
    (r"deepfloyd|^if[-_ ]?i[-_ ]|^(deepfloyd[-_ ]?)?if$", "DeepFloyd IF"),
    (r"dall[-_ ]?e[-_ ]?3", "DALL·E 3"),
    (r"dall[-_ ]?e[-_ ]?2", "DALL·E 2"),
    (r"midjourney", "Midjourney"),
    (r"flux", "FLUX"),
    (r"kandinsky", "Kandinsky"),
    (r"pixart", "PixArt"),
    (r"stylegan", "StyleGAN"),
    (r"biggan", "BigGAN"),
    (r"glide", "GLIDE"),
)
"""(pattern on the lower-cased name, display name) of widely known generators."""


def display_name(raw: str | None, overrides: dict[str, str] | None = None) -> str | None:
    """The name a visitor reads for the generator ``raw`` (None stays None)."""
    if raw is None:
        return None
    if overrides and raw in overrides:
        return overrides[raw]
    low = raw.strip().lower()
    for pattern, name in KNOWN:
        if re.search(pattern, low) or re.search(pattern, low.rsplit("/", 1)[-1]):
            return name
    if low == "real":
        return "real photos"
    return re.sub(r"[_\s]+", " ", raw.rsplit("/", 1)[-1]).strip() or raw
