"""The platform's settings (environment ``DEEPSIFT_CHALLENGES_*``; tests: ``domain_overrides["challenges"]``)."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChallengeSettings(BaseSettings):
    """Upload caps, the scoring queue's lease, and how submitted models are confined."""

    model_config = SettingsConfigDict(env_prefix="DEEPSIFT_CHALLENGES_", extra="ignore")

    max_predictions_mb: float = Field(200.0, gt=0, description="largest predictions file")
    max_model_mb: float = Field(200.0, gt=0, description="largest ONNX model")
    max_testset_upload_mb: float = Field(2048.0, gt=0, description="largest test-set archive a host uploads")
    lease_seconds: float = Field(60.0, gt=0, description="a job not heartbeaten for this long is taken again")
    max_attempts: int = Field(3, ge=1, description="a job whose worker died this many times fails (refunded)")
    allow_unconfined_models: bool = Field(False, description="run submitted models without a network namespace "
                                                             "and user switch when not root (development only)")
    max_batch_mb: int = Field(256, ge=1, description="most memory one batch of a submitted model's preprocessed "
                                                      "images may take (smaller batches are sent to fit)")
    sandbox_user: str = Field("", description="user a submitted model runs as when the worker is root; empty: a "
                                             "uid of its own per model process, shared with nothing (2000000000 + "
                                             "16 x the worker's pid + a counter)")
    import_threads: int = Field(4, ge=1, le=64, description="threads re-encoding images of a test set")
    max_queued_per_team: int = Field(5, ge=1, le=1000, description="jobs a team may have waiting or running at once "
                                                                   "(the queue serves teams round-robin)")
    serve_workers: int = Field(1, ge=0, le=64, description="scoring workers `deepsift serve` runs beside itself "
                                                          "(0 when dedicated `deepsift challenges worker`s run)")
