"""Service configuration, from ``EXPLAIN_*`` environment variables or ``python -m service`` flags."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from explain.machine import available_cores, thread_plan

__all__ = ["Settings"]

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every setting can be given as an environment variable named ``EXPLAIN_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EXPLAIN_", extra="ignore", frozen=True)

    models: Annotated[list[str], NoDecode] = Field(
        default=["efficientnet_lite0"],
        description="Model specs to load, comma-separated; the first is the default model.",
    )
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind.")
    max_body_bytes: int = Field(
        default=32 * MiB, ge=1, description="Largest request body, as sent."
    )
    max_image_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description="Largest image (width x height), checked before decoding.",
    )
    max_images: int = Field(default=64, ge=1, description="Most images in one request.")
    max_aspect_ratio: float = Field(
        default=20.0, ge=1.0, description="Longest / shortest image side."
    )
    queue_size: int = Field(
        default=128, ge=1, description="Images waiting per model before requests get 503."
    )
    max_batch_size: int = Field(
        default=2,
        ge=1,
        description="Most images in one model batch. On CPU a batch is hardly cheaper per image "
        "than one image; small batches on several batch threads keep every core busy.",
    )
    max_batch_wait_ms: float = Field(
        default=2.0, ge=0.0, description="How long a batch waits for more requests to join it."
    )
    retry_after_seconds: int = Field(default=1, ge=1, description="Retry-After on 503 answers.")
    batch_threads: int = Field(
        default=0,
        ge=0,
        description="Batches of one model run at once, each on its own thread; 0: 2 when there "
        "are 2 or more cores, else 1.",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Threads for one model batch (torch.set_num_threads); 0: cores / batch_threads.",
    )
    io_threads: int = Field(
        default=2, ge=1, description="Threads that decode images and encode PNGs, beside the model."
    )
    scorecam_max_channels: int = Field(
        default=128,
        ge=0,
        description="Score-CAM scores this many strongest channels per image (one forward pass each); "
        "0: all of them, as in the paper.",
    )
    png_compress_level: int = Field(
        default=1, ge=0, le=9, description="zlib level of returned PNGs."
    )
    log_level: str = Field(default="info", description="uvicorn/app log level.")

    def thread_plan(self) -> tuple[int, int]:
        """``(batch_threads, torch_threads)`` with the automatic values (0) worked out from the
        usable cores (:func:`explain.machine.thread_plan`)."""
        return thread_plan(self.batch_threads, self.torch_threads, available_cores())

    @field_validator("models", mode="before")
    @classmethod
    def _split_specs(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            specs = [str(spec).strip() for spec in value if str(spec).strip()]
            if not specs:
                raise ValueError("at least one model spec is needed")
            return specs
        return value
