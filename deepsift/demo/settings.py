"""The demo's settings (environment ``DEEPSIFT_DEMO_*``; tests: ``domain_overrides["demo"]``)."""
from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..choices import DEFAULT_MODEL, HEAD_KINDS, PREPROCESS_MODES


class DemoSettings(BaseSettings):
    """Which detector the demo runs, its caps on uploads and URLs, privacy, and the quiz's dataset."""

    model_config = SettingsConfigDict(env_prefix="DEEPSIFT_DEMO_", extra="ignore")

    model: str = Field(DEFAULT_MODEL, description="CoDE hub id or local model folder")
    heads: str | None = Field(None, description="classifier heads folder (default: beside the model, then the cache)")
    classifier: str = Field("linear", description="the head that decides")
    preprocessing: str = Field("official", description="CoDE preprocessing mode")
    device: str = Field("cpu", description="torch device of the network")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="fake when calibrated P(fake) >= this")
    unsure_low: float = Field(0.4, ge=0.0, le=1.0, description="P(fake) from here ...")
    unsure_high: float = Field(0.6, ge=0.0, le=1.0, description="... to below here is shown as 'unsure'")
    max_image_mb: float = Field(20.0, gt=0, le=1024, description="largest image file accepted (upload or URL)")
    max_megapixels: float = Field(40.0, gt=0, le=80, description="largest image, in megapixels, decoded")
    max_images: int = Field(8, ge=1, le=64, description="most images in one request")
    heatmap_grid: int = Field(4, ge=1, le=8, description="heatmap: at most this many 224-px crops per side")
    heatmap_megapixels: float = Field(4.0, gt=0, le=80, description="heatmaps and previews are made from the "
                                      "image shrunk to at most this many megapixels (the verdict always reads "
                                      "the detector's full-resolution input)")
    url_timeout: float = Field(10.0, gt=0, le=120, description="total deadline of one image URL, in seconds")
    allow_private_urls: bool = Field(False, description="fetch URLs on loopback/private networks (tests only)")
    url_allow_networks: tuple[str, ...] = Field((), description="networks allowed even so (an internal image store)")
    url_hosts: dict[str, list[str]] = Field(default_factory=dict,
                                            description="fixed DNS answers (host -> addresses), checked like any")
    workers: int | None = Field(None, ge=1, le=64, description="decoding threads of the demo's own pool "
                                                                 "(default: the CPUs, at most 4)")
    pixel_budget_mp: float | None = Field(None, gt=0, le=1000, description="megapixels decoded at once over all "
                                                                           "requests (default: 2x max_megapixels)")
    busy_wait_s: float = Field(10.0, ge=0, le=300, description="how long a request queues for the pixel budget "
                                                               "before a 503 with Retry-After")
    url_fetches_per_visitor: int = Field(4, ge=1, le=1000, description="image URLs one address may have in flight")
    detect_rate: str | None = Field(None, description="images analysed per client address, e.g. '60/minute' "
                                                      "(default: 30 per CPU per minute)")
    keep_uploads: bool = Field(False, description="keep uploaded images in the data dir (default: never stored)")
    quiz_dataset: str | None = Field(None, description="quiz images: labelled folders, D3 test layout or D3 shards")
    quiz_layout: str = Field("auto", description="auto, classes, folders, d3-test or parquet")
    quiz_real: str | None = Field(None, description="folder of real images (with D3 parquet shards)")
    quiz_rounds_per_hour: int = Field(120, ge=1, description="quiz rounds one address may start per hour")
    quiz_new_visitors_per_hour: int = Field(10, ge=1, description="new quiz players (cookies) one address may "
                                                                  "start per hour")
    quiz_round_ttl: float = Field(900.0, gt=0, description="seconds an unanswered quiz round lives")
    quiz_image_size: int = Field(512, ge=64, le=2048, description="side of the square JPEG every quiz image is "
                                                                  "served as (real and fake alike)")
    generator_names: dict[str, str] = Field(default_factory=dict, description="display names of generators "
                                            "(head or dataset name -> name shown), e.g. {\"gen_0\": \"DALL-E 3\"}")
    c2pa_trust_list: str | None = Field(None, description="PEM file of trusted C2PA signing roots (e.g. the "
                                                           "C2PA/CAI trust list); without it no signer is verified")

    @field_validator("classifier")
    @classmethod
    def _classifier(cls, v: str) -> str:
        if v not in HEAD_KINDS:
            raise ValueError(f"classifier must be one of {HEAD_KINDS}, got {v!r}")
        return v

    @field_validator("preprocessing")
    @classmethod
    def _prep(cls, v: str) -> str:
        if v not in PREPROCESS_MODES:
            raise ValueError(f"preprocessing must be one of {PREPROCESS_MODES}, got {v!r}")
        return v

    @field_validator("c2pa_trust_list")
    @classmethod
    def _trust_list(cls, v: str | None) -> str | None:
        if v:
            from .metadata import read_trust_list

            try:
                read_trust_list(v)
            except OSError as exc:
                raise ValueError(f"C2PA trust list {v!r} cannot be read: {exc.strerror or exc}") from None
        return v

    @field_validator("detect_rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        from ..server.settings import parse_rate

        if v:
            parse_rate(v)
        return v or None

    @model_validator(mode="after")
    def _band(self) -> "DemoSettings":
        if not self.unsure_low <= self.threshold <= self.unsure_high:
            raise ValueError(f"the unsure band [{self.unsure_low}, {self.unsure_high}) must contain the "
                             f"threshold {self.threshold}")
        return self

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * (1 << 20))

    @property
    def max_body_bytes(self) -> int:
        """The demo's request body limit: ``max_images`` files at the file cap, plus 1 MiB for the form."""
        return self.max_images * self.max_image_bytes + (1 << 20)

    @property
    def pixel_budget(self) -> int:
        """Pixels decoded at once over all requests of one process."""
        return int((self.pixel_budget_mp or 2 * self.max_megapixels) * 1_000_000)

    @property
    def image_rate(self) -> str:
        """The images-per-address limit in force (``detect_rate``, else sized from this machine's CPUs)."""
        from .bounds import default_workers

        return self.detect_rate or f"{30 * default_workers(cap=64)}/minute"

    @property
    def heatmap_pixels(self) -> int:
        """The most pixels of the reduced image heatmaps and previews are made from."""
        return int(self.heatmap_megapixels * 1_000_000)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    @property
    def unsure_band(self) -> tuple[float, float] | None:
        """The (low, high) P(fake) band shown as 'unsure'; None when empty."""
        return (self.unsure_low, self.unsure_high) if self.unsure_low < self.unsure_high else None
