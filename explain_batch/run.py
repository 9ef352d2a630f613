"""One batch run, whatever the engine: find the inputs, skip what is already recorded, keep the
engine fed within its bound, write each outcome as it comes, and sum up in ``run.json``."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from explain_batch.engines import (
    Engine,
    Outcome,
    RunAborted,
    RunConfig,
    UsageError,
    engine_module,
)
from explain_batch.inputs import IMAGE_SUFFIXES, check_inputs, iter_paths, read_input
from explain_batch.progress import Progress
from explain_batch.store import OutputDir
from explain_batch.tensorboard import TensorBoardLog, check_available

__all__ = [
    "EXIT_ABORTED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "RunRequest",
    "run",
]

log = logging.getLogger("explain_batch")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_PACKAGES = ("explain-service", "torch", "torchvision", "pillow", "numpy", "httpx")


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs (the command line, parsed).

    Attributes:
        inputs: Files, folders and ``@manifest`` s.
        out: The output folder.
        engine: ``local``, ``http``, ...
        config: What to compute.
        write_images: Write PNG files (not with ``--no-images``).
        overwrite: Recompute everything.
        fail_fast: Stop at the first failed image.
        progress: Show progress (``None``: a bar on a terminal, plain lines otherwise).
        tensorboard: A TensorBoard log folder, or ``None``.
        command: The command line, for ``run.json``.
    """

    inputs: list[str]
    out: str
    engine: str = "local"
    config: RunConfig = field(default_factory=lambda: RunConfig("predict", "efficientnet_lite0"))
    write_images: bool = True
    overwrite: bool = False
    fail_fast: bool = False
    progress: bool | None = None
    tensorboard: str | None = None
    command: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, Any]:
        """What the results depend on: a rerun into the same folder must not change these."""
        config = self.config
        return {
            "endpoint": config.endpoint,
            "model": config.model,
            "options": dict(config.options),
            "images": self.write_images,
            "scorecam_max_channels": config.scorecam_max_channels,
        }


def _key(path: str) -> bytes:
    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()


def _unique(paths: Iterator[str]) -> Iterator[str]:
    """Each path once (a file named twice, or in two given folders)."""
    seen: set[bytes] = set()
    for path in paths:
        key = _key(path)
        if key not in seen:
            seen.add(key)
            yield path


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


class _Run:
    """The loop of one run and its counts."""

    def __init__(self, request: RunRequest, engine: Engine, store: OutputDir, total: int) -> None:
        self.request = request
        self.engine = engine
        self.store = store
        self.tensorboard = TensorBoardLog(request.tensorboard) if request.tensorboard else None
        self.progress = Progress(total, bar=request.progress, enabled=request.progress is not False)
        self.previously_failed = 0
        self.stopped = False

    def loop(self) -> None:
        """Feed the engine the paths to score and write each outcome as it comes; with
        ``--fail-fast``, close the engine's stream at the first failure."""
        outcomes = self.engine.score(self._to_score())
        try:
            for outcome in outcomes:
                self.write(outcome)
                if self.stopped:
                    break
        finally:
            outcomes.close()  # the engine drops its work in flight

    def _to_score(self) -> Iterator[str]:
        """The paths to score, as the engine pulls them: a path already recorded with a result
        that stands is hashed here, and skipped if the file did not change; every other path goes
        to the engine unread (it reads the file where it scores it)."""
        results = self.store.results
        for path in _unique(iter_paths(self.request.inputs)):
            if self.stopped:
                return
            if results.settled(path):
                status = results.lookup(path, read_input(path).sha256)
                if status is not None:
                    self.previously_failed += status == "failed"
                    self.progress.update("skipped")
                    continue
            yield path

    def write(self, outcome: Outcome) -> None:
        self.store.results.append(self.store.line(outcome, self.engine.model))
        if self.tensorboard is not None:
            self.tensorboard.add(outcome)
        failed = outcome.error is not None
        self.progress.update("failed" if failed else "ok")
        if failed and self.request.fail_fast and not self.stopped:
            self.stopped = True  # no new inputs; the engine drops the ones in flight
            log.error(
                "stopping at the first failure (--fail-fast): %s: %s", outcome.path, outcome.error
            )

    def close(self) -> None:
        self.progress.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _count(inputs: list[str]) -> int:
    return sum(1 for _ in _unique(iter_paths(inputs)))


def run(request: RunRequest, engine: Engine | None = None) -> int:
    """Run a batch; the exit status: :data:`EXIT_OK` or :data:`EXIT_FAILED`.

    Args:
        request: What to run.
        engine: An engine opened for ``request.config`` to use (and leave open), e.g. to keep a
            model loaded across runs; by default the run opens ``request.engine`` and closes it.

    Raises:
        UsageError: a problem found before any work (exit status 2), or a failure that concerns
            every image found by the first batch.
        RunAborted: the run could not go on (exit status 3); ``run.json`` says so.
        KeyboardInterrupt: interrupted (exit status 130); ``run.json`` says so.
    """
    check_inputs(request.inputs)
    if request.tensorboard:
        check_available()
    store = OutputDir(request.out, request.write_images)
    settings = request.settings()
    store.check(settings, request.overwrite)
    total = _count(request.inputs)
    if total == 0:
        kinds = " ".join(sorted(IMAGE_SUFFIXES))
        raise UsageError(f"no images in {' '.join(request.inputs)} (looked for {kinds}, any case)")
    owned = engine is None
    if engine is None:
        engine = engine_module(request.engine).open_engine(request.config)
    started, clock = datetime.now(UTC), time.monotonic()
    summary: dict[str, Any] = {
        "status": "running",
        **settings,
        "engine": request.engine,
        "model_name": engine.model,
        "batch_size": engine.batch_size,
        "inputs": total,
        "tensorboard": request.tensorboard,
        "command": request.command,
        "versions": _versions(),
        "started": started.isoformat(timespec="seconds"),
    }
    the_run: _Run | None = None
    stopped_by: BaseException | None = None
    try:
        store.start(request.overwrite)
        store.write_run(summary)
        store.results.open()
        the_run = _Run(request, engine, store, total)
        the_run.loop()
        summary["status"] = "stopped" if the_run.stopped else "complete"
    except KeyboardInterrupt as error:
        summary["status"], stopped_by = "interrupted", error
    except (RunAborted, UsageError) as error:
        summary["status"], stopped_by = "aborted", error
    finally:
        try:
            if the_run is not None:
                the_run.close()
        finally:
            if owned:
                engine.close()
            store.results.close()
    seconds = time.monotonic() - clock
    progress = the_run.progress if the_run is not None else None
    counts = dict(progress.counts) if progress else {"ok": 0, "failed": 0, "skipped": 0}
    counts["previously_failed"] = the_run.previously_failed if the_run else 0
    scored = counts["ok"] + counts["failed"]
    summary.update(
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        counts=counts,
        wall_seconds=round(seconds, 3),
        images_per_second=round(scored / seconds, 3) if seconds > 0 else None,
    )
    store.write_run(summary)
    if stopped_by is not None:
        raise stopped_by
    return EXIT_FAILED if counts["failed"] or counts["previously_failed"] else EXIT_OK
