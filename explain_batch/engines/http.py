"""The ``http`` engine: a running service at ``--url`` scores the images, through
:class:`explain_client.Client`; ``--concurrency`` requests at a time."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from PIL import Image

from explain.models import parse_spec
from explain_batch.engines import (
    PASSING_ERRORS,
    EngineOption,
    Input,
    Outcome,
    RunAborted,
    RunConfig,
    UsageError,
)
from explain_batch.engines.window import score_in_batches
from explain_batch.inputs import read_input
from explain_batch.options import positive_int
from explain_client import DEFAULT_URL, ApiError, Client, ClientError, Result, UnreachableError

__all__ = ["IMAGE_ERRORS", "OPTIONS", "HttpEngine", "open_engine"]

DEFAULT_BATCH_SIZE = 2
DEFAULT_CONCURRENCY = 8
READY_TIMEOUT = 120.0

IMAGE_ERRORS = frozenset(
    {"invalid_image", "image_too_large", "extreme_aspect_ratio", "body_too_large"}
)
"""Error codes that concern one image: recorded for it, and the run goes on. Any other error
answer is about the options, the model or the key, the same for every image, and stops the run."""

OPTIONS = (
    EngineOption(
        ("--url",),
        {"default": DEFAULT_URL, "help": f"http: the service's base URL (default {DEFAULT_URL})"},
    ),
    EngineOption(
        ("--api-key",),
        {
            "default": None,
            "help": "http: the service's API key (default: the EXPLAIN_API_KEY environment variable)",
        },
    ),
    EngineOption(
        ("--concurrency",),
        {
            "type": positive_int,
            "default": DEFAULT_CONCURRENCY,
            "metavar": "N",
            "help": f"http: requests in flight at once (default {DEFAULT_CONCURRENCY})",
        },
    ),
    EngineOption(
        ("--timeout",),
        {
            "type": float,
            "default": 300.0,
            "metavar": "SECONDS",
            "help": "http: longest wait for one answer (default 300)",
        },
    ),
)


def _probe_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


class HttpEngine:
    """Sends each batch as one request; an image-specific error answer makes the engine send the
    batch's images one by one, so that only the bad image fails."""

    def __init__(self, config: RunConfig, client: Client, model: str, concurrency: int) -> None:
        self.config = config
        self.client = client
        self.model = model
        self.batch_size = config.batch_size or DEFAULT_BATCH_SIZE
        self.max_pending = concurrency + 1
        self._options = {"model": model, **config.options}
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="batch-http")

    def check(self) -> None:
        """One tiny image through the endpoint, so that options the service refuses stop the run
        before any work (exit status 2).

        Raises:
            UsageError: the service refuses the options, the model or the key.
        """
        try:
            self.client.explain(self.config.endpoint, _probe_png(), **self._options)
        except ApiError as error:
            raise UsageError(f"{self.client.url} refuses this run: {error}") from error
        except ClientError as error:
            raise UsageError(f"{self.client.url}: {error}") from error

    def score(self, paths: Iterable[str]) -> Generator[Outcome, None, None]:
        return score_in_batches(paths, self.submit, self.batch_size, self.max_pending)

    def submit(self, paths: list[str]) -> Future[list[Outcome]]:
        """Send one batch (its files read on the engine's threads); its outcomes once answered."""
        return self._pool.submit(self._read_and_score, paths)

    def _read_and_score(self, paths: list[str]) -> list[Outcome]:
        items = [read_input(path) for path in paths]
        unreadable = [Outcome.failed(item, **item.error) for item in items if item.error]
        readable = [item for item in items if item.error is None]
        return unreadable + (self._score(readable) if readable else [])

    def _score(self, inputs: list[Input]) -> list[Outcome]:
        try:
            results = self.client.explain(
                self.config.endpoint, [item.data for item in inputs], **self._options
            )
        except ApiError as error:
            if error.code in IMAGE_ERRORS and len(inputs) > 1:
                return [outcome for item in inputs for outcome in self._score([item])]
            if error.code in IMAGE_ERRORS | PASSING_ERRORS:
                return [Outcome.failed(item, error.code, _message(error, item)) for item in inputs]
            raise RunAborted(f"{self.client.url}: {error}") from error
        except UnreachableError as error:
            raise RunAborted(f"the service stopped answering: {error}") from error
        except ClientError as error:
            return [Outcome.failed(item, error.code, error.message) for item in inputs]
        assert isinstance(results, list)  # a list in, a list out
        return [self._outcome(item, result) for item, result in zip(inputs, results, strict=True)]

    def _outcome(self, item: Input, result: Result) -> Outcome:
        return Outcome(item.path, item.sha256, dict(result.data))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def _message(error: ApiError, item: Input) -> str:
    return error.message.replace("image 0", item.path, 1)


def _wait_ready(client: Client, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) while the service loads its models.

    Raises:
        UsageError: nothing answers at the URL.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ready():
                return
        except UnreachableError as error:
            raise UsageError(f"cannot reach the service at {client.url}: {error}") from error
        if time.monotonic() > deadline:
            return  # the check that follows reports what the service says
        time.sleep(0.5)


def open_engine(config: RunConfig) -> HttpEngine:
    """Connect to the service and check the model and options with one tiny image.

    Raises:
        UsageError: nothing answers at the URL, the model is not loaded there, or the options,
            the key or the model are refused.
    """
    settings = config.engine_options
    concurrency = settings.get("concurrency", DEFAULT_CONCURRENCY)
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {concurrency}")
    api_key = settings.get("api_key") or os.environ.get("EXPLAIN_API_KEY") or None
    url = settings.get("url", DEFAULT_URL)
    client = Client(url, api_key=api_key, timeout=settings.get("timeout", 300.0), max_retries=8)
    try:
        _wait_ready(client, READY_TIMEOUT)
        try:
            name = parse_spec(config.model)[0]
        except ValueError as error:
            raise UsageError(str(error)) from error
        engine = HttpEngine(config, client, name, concurrency)
        engine.check()
    except BaseException:
        client.close()
        raise
    return engine
