"""Request and response shapes of the demo's JSON API (they make its OpenAPI schema)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class HeadScore(BaseModel):
    """One classifier head's answer: its raw score, calibrated P(fake) and label by the one rule."""

    score: float
    probability: float
    label: int


class Heatmap(BaseModel):
    """P(fake) of local 224-px crops on a rows x cols grid over the image (row-major)."""

    rows: int
    cols: int
    values: list[list[float]]
    boxes: list[list[int]] = Field(description="each crop's [x, y, width, height] in image pixels, row-major")
    crop: int = Field(description="side of each crop in the pixels it was cut from")
    width: int
    height: int
    scale: float = Field(1.0, description="the crops were cut from the image shrunk by this factor "
                                          "(1: full resolution; a crop covers crop x scale image pixels)")


class C2pa(BaseModel):
    present: bool | None
    valid: bool | None = Field(description="the manifest is intact and its signature checks out (signer unknown)")
    trusted: bool | None = Field(None, description="the signer chains to a root of the configured trust list")
    state: str | None = None
    signer: str | None = Field(None, description="the signing certificate's name and issuer, as it claims them")
    claim_generator: str | None = None
    declares_ai: bool | None = Field(None, description="an action's digitalSourceType says trained algorithmic media")
    error: str | None = None


class GenerationChunk(BaseModel):
    key: str
    tool: str
    value: str


class Metadata(BaseModel):
    """Signals apart from the pixels: easy to strip or forge, never part of the verdict."""

    exif: dict[str, str]
    generation: list[GenerationChunk]
    c2pa: C2pa
    orientation: int | None = Field(None, description="EXIF Orientation (1-8): how to turn the stored pixels for "
                                                       "display; the detector reads the stored pixels")


class DetectResult(BaseModel):
    """One image. ``source`` .. ``verdict`` are the columns of ``deepsift detect`` (same values)."""

    source: str
    verdict: Literal["real", "fake", "error"] = Field(description="the one decision rule: fake iff P(fake) >= threshold")
    label: int | None
    probability: float | None = Field(description="calibrated P(fake)")
    score: float | None
    head: str | None
    generator: str | None = Field(description="most likely generator (fake verdicts, per-generator heads loaded)")
    error: str | None
    generator_name: str | None = Field(None, description="the likely generator's name for people")
    band: Literal["real", "unsure", "fake", "error"] = Field(description="verdict shown on the page: 'unsure' "
                                                                       "inside the unsure band")
    heads: dict[str, HeadScore] | None = None
    generators: dict[str, float] | None = Field(None, description="P(fake) of each per-generator head")
    heatmap: Heatmap | None = None
    metadata: Metadata | None = None
    preview: str | None = Field(None, description="a small JPEG of the image as a data: URL (preview=true)")
    format: str | None = None
    width: int | None = None
    height: int | None = None


class DetectResponse(BaseModel):
    model: str
    classifier: str
    threshold: float
    unsure_band: list[float] | None
    rule: str
    results: list[DetectResult]


class DetectorInfo(BaseModel):
    model: str
    classifier: str
    threshold: float
    unsure_band: list[float] | None
    rule: str
    heads: list[str]
    generators: list[str]
    max_images: int
    max_image_mb: float
    max_megapixels: float


class Error(BaseModel):
    detail: str


class DetectError(BaseModel):
    detail: str
    results: list[DetectResult] = []


class Guess(BaseModel):
    guess: Literal["real", "fake"]


class Tally(BaseModel):
    rounds: int
    you: int
    detector: int


class RoundOut(BaseModel):
    id: str
    image_url: str
    tally: Tally


class Reveal(BaseModel):
    id: str
    guess: Literal["real", "fake"]
    truth: Literal["real", "fake"]
    generator: str | None = Field(description="the generator of a fake image")
    generator_name: str | None = Field(None, description="its name for people")
    detector: Literal["real", "fake"] | None
    detector_probability: float | None
    you_right: bool
    detector_right: bool | None
    tally: Tally


class GeneratorStats(BaseModel):
    generator: str
    name: str | None = Field(None, description="the generator's name for people")
    visitors: int = Field(description="distinct visitors whose answers count")
    rounds: int = Field(description="counted rounds (each visitor's first answer per image)")
    people_right: int
    detector_right: int
    people_accuracy: float | None = Field(description="mean over visitors of each visitor's accuracy")
    detector_accuracy: float | None
