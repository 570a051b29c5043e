"""Generator spec strings: ``NAME=KIND:SOURCE[,key=value...]`` and per-image seeds.

Kinds:

* ``t2i``    text-to-image with any ``diffusers`` pipeline; SOURCE is a hub id or a local
  directory saved with ``save_pretrained`` (SD 1.x/2.x/XL, DeepFloyd IF, ...).
* ``vae``    reconstruction: an ``AutoencoderKL`` round-trip of the record's real image;
  SOURCE is a hub id or local directory (an empty SOURCE means ``stabilityai/sd-vae-ft-mse``).
* ``plugin`` a class registered under the entry-point group ``deepsift.generators``;
  SOURCE is the entry-point name.

Options (all optional): ``steps``, ``width``, ``height``, ``guidance``, ``negative`` (a
negative prompt used when the record has none), ``batch`` (images per pipeline call, always
exactly that many: short calls are padded so an image never depends on its neighbours),
``device`` (``auto``/``cpu``/``cuda``/``cuda:N``), ``dtype`` (``float32``/``float16``/``bfloat16``),
``model`` (the model name written to ``model_gen{k}``; default: SOURCE). Plugins receive every
option as a string keyword argument.

Example: ``sd14=t2i:CompVis/stable-diffusion-v1-4,steps=25,width=512,height=512,guidance=7.5``.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..exceptions import GeneratorError

KINDS: tuple[str, ...] = ("t2i", "vae", "plugin")
"""Generator kinds a spec may name."""

DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"
"""The published SD VAE, used by ``vae`` specs with an empty SOURCE."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
INT_OPTIONS = ("steps", "width", "height", "batch")
FLOAT_OPTIONS = ("guidance",)
STR_OPTIONS = ("negative", "device", "dtype", "model")

SPEC_HELP = (
    "NAME=KIND:SOURCE[,key=value...]; KIND is t2i (any diffusers text-to-image pipeline, hub id "
    "or local dir), vae (AutoencoderKL round-trip of the real image; empty SOURCE = "
    f"{DEFAULT_VAE}) or plugin (entry point in group 'deepsift.generators'); keys: steps, width, "
    "height, guidance, negative, batch, device, dtype, model. "
    "E.g. sd14=t2i:CompVis/stable-diffusion-v1-4,steps=25,width=512,height=512,guidance=7.5"
)


@dataclass(frozen=True)
class GeneratorSpec:
    """A parsed generator spec: name, kind, source and typed options."""

    name: str
    kind: str
    source: str
    options: dict[str, object] = field(default_factory=dict)
    text: str = ""

    def to_text(self) -> str:
        """The spec back as a string (``NAME=KIND:SOURCE,k=v...``)."""
        return self.text or f"{self.name}={self.kind}:{self.source}" + "".join(
            f",{k}={v}" for k, v in self.options.items()
        )


def parse_spec(text: str) -> GeneratorSpec:
    """Parse ``NAME=KIND:SOURCE[,key=value...]`` or raise :class:`GeneratorError` naming the problem."""
    name, eq, rest = text.partition("=")
    name = name.strip()
    if not eq or not _NAME_RE.match(name):
        raise GeneratorError(
            f"generator spec {text!r}: expected NAME=KIND:SOURCE[,key=value...] with NAME made of "
            "letters, digits, '_', '.', '-'"
        )
    kind, colon, rest = rest.partition(":")
    kind = kind.strip()
    if not colon or kind not in KINDS:
        raise GeneratorError(f"generator spec {text!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    source, *pairs = rest.split(",")
    source = source.strip()
    if kind == "vae" and not source:
        source = DEFAULT_VAE
    if not source:
        raise GeneratorError(f"generator spec {text!r}: SOURCE is empty")
    options: dict[str, object] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise GeneratorError(f"generator spec {text!r}: option {pair!r} is not key=value")
        options[key] = value if kind == "plugin" else _typed_option(text, key, value.strip())
    return GeneratorSpec(name=name, kind=kind, source=source, options=options, text=text)


def _typed_option(text: str, key: str, value: str) -> object:
    """Convert one option value to its type, with a clear error."""
    try:
        if key in INT_OPTIONS:
            v = int(value)
            if v <= 0:
                raise ValueError
            return v
        if key in FLOAT_OPTIONS:
            return float(value)
    except ValueError:
        kind = "a positive integer" if key in INT_OPTIONS else "a number"
        raise GeneratorError(f"generator spec {text!r}: option {key}={value!r} must be {kind}") from None
    if key in STR_OPTIONS:
        return value
    known = ", ".join(INT_OPTIONS + FLOAT_OPTIONS + STR_OPTIONS)
    raise GeneratorError(f"generator spec {text!r}: unknown option {key!r}; known options: {known}")


def derive_seed(record_id: str, generator_name: str) -> int:
    """Seed of one image: 63 bits of ``blake2b(record_id NUL generator_name)``, stable everywhere."""
    digest = hashlib.blake2b(f"{record_id}\0{generator_name}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
