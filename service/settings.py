"""Service configuration, from ``EXPLAIN_*`` environment variables or ``python -m service`` flags."""

from __future__ import annotations

import os
from typing import Annotated, Literal

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
        default=128,
        ge=1,
        description="Work that may wait per model, in forward passes (a /predict image costs 1, a "
        "Score-CAM image 1 + its scored channels); beyond it requests get 503.",
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
    retry_after_seconds: int = Field(
        default=1,
        ge=1,
        description="Retry-After while loading or stopping, and the least one given when the "
        "queue is full (then it is estimated from the queued work and the measured rate).",
    )
    batch_threads: int = Field(
        default=0,
        ge=0,
        description="Batches of one model run at once, each on its own thread; 0: 2 when there "
        "are 2 or more cores, else 1.",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Threads for one model batch (torch.set_num_threads); 0: every core for a "
        "batch that runs alone, an even share for batches that run side by side.",
    )
    optimize: bool = Field(
        default=True,
        description="Run forward passes without gradients, and the part of a model before a "
        "CAM's layer, as ONNX Runtime graphs checked against the eager model; false: eager only.",
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
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or as one JSON object each."
    )
    # -- cost per request
    max_targets: int = Field(default=16, ge=1, description="Most /gradcam targets per image.")
    max_layers: int = Field(
        default=16, ge=1, description="Most distinct /featuremaps layers per request."
    )
    max_channels: int = Field(
        default=256, ge=1, description="Largest /featuremaps max_channels (tiles per layer)."
    )
    decode_budget_bytes: int = Field(
        default=1024 * MiB,
        ge=1 * MiB,
        description="Memory for the images being decoded at once (width x height x bytes per "
        "pixel of the decoded mode and its conversions). One image may take three quarters of "
        "it; the last quarter is kept for images smaller than a quarter.",
    )
    max_body_buffer_bytes: int = Field(
        default=256 * MiB,
        ge=1,
        description="Request bodies being received at once, all requests together; beyond it "
        "503 overloaded. At least max_body_bytes.",
    )
    # -- time and connections
    request_timeout_s: float = Field(
        default=120.0, gt=0, description="Whole-request deadline; then 504 deadline_exceeded."
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="The whole request body must arrive within this."
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="The request line and headers must arrive within this."
    )
    keepalive_timeout_s: float = Field(
        default=5.0, gt=0, description="An idle keep-alive connection is closed after this."
    )
    send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A client that takes none of an answer for this long (its socket buffers "
        "full) is disconnected and the unsent answer dropped.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request line plus headers."
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        description="Open connections; beyond it the oldest connection without a request in "
        "progress is closed to make room, or the new one gets 503.",
    )
    shutdown_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="On SIGTERM/SIGINT, running batches get this long to finish; then the "
        "process exits 0.",
    )
    allow_partial_start: bool = Field(
        default=False,
        description="Keep serving the models that loaded when another fails (else the process "
        "exits non-zero).",
    )
    # -- access
    api_keys: str | None = Field(
        default=None,
        description="API keys, comma-separated, or the path of a file with one key per line; "
        "unset: no keys needed.",
        repr=False,
    )
    protect_metrics: bool = Field(default=False, description="/metrics needs a key too.")

    def thread_plan(self) -> tuple[int, int]:
        """``(batch_threads, torch_threads)`` with the automatic values (0) worked out from the
        usable cores (:func:`explain.machine.thread_plan`)."""
        return thread_plan(self.batch_threads, self.torch_threads, available_cores())

    def api_key_set(self) -> frozenset[str]:
        """The configured API keys (empty: no key needed), read from the file if one is named
        (a value starting with ``/``, ``./`` or ``~``; a missing file is an error, never a key).

        Raises:
            OSError: the named file cannot be read.
            ValueError: no key in it.
        """
        if not self.api_keys or not self.api_keys.strip():
            return frozenset()
        text = self.api_keys.strip()
        if text.startswith(("/", "./", "../", "~")):
            with open(os.path.expanduser(text), encoding="utf-8") as file:
                keys = [line.strip() for line in file if not line.lstrip().startswith("#")]
        else:
            keys = [key.strip() for key in text.split(",")]
        keys = [key for key in keys if key]
        if not keys:
            raise ValueError("api_keys names no key")
        return frozenset(keys)

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
