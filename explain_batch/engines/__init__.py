"""Engines: where a batch run's images are scored. Every engine takes the same :class:`RunConfig`
and turns a stream of input paths into :class:`Outcome` s; finding inputs, resuming, writing
results, TensorBoard and progress are the run's (:mod:`explain_batch.run`), the same for all.

A new engine is one module in this package, named in :data:`ENGINES`, that defines:

- ``OPTIONS``: its own command-line options (:class:`EngineOption`), e.g. ``--url``;
- ``open_engine(config: RunConfig) -> Engine``: load or connect, check everything that can be
  checked before any work (raising :class:`UsageError`), and return the engine.

An :class:`Engine` has ``model`` (the name recorded with each result), ``batch_size`` (inputs per
model call or request), ``score(paths)``, a generator of outcomes, and ``close()``. ``score`` pulls
the paths it is given as it has room for them, reads the files itself (on its own threads, or on
the workers of a cluster, with :func:`explain_batch.inputs.read_input`), and yields one outcome
per path as results come, in any order; a file that cannot be read or an image that fails is an
outcome with an ``error``, while a failure that concerns every image raises :class:`UsageError` or
:class:`RunAborted`. An engine holds a bounded number of inputs at a time, so memory stays flat.
The run may stop early by closing the generator: the engine then drops its work in flight, and
none outlives the close. Engines that take batches one at a time (``local``, ``http``) share
:func:`explain_batch.engines.window.score_in_batches`; a streaming engine (``ray``) pulls the paths
into its own pipeline.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

__all__ = [
    "ENGINES",
    "PASSING_ERRORS",
    "Engine",
    "EngineOption",
    "Input",
    "Outcome",
    "RunAborted",
    "RunConfig",
    "UsageError",
    "engine_module",
]

PASSING_ERRORS = frozenset(
    {
        "overloaded",
        "shutting_down",
        "not_ready",
        "deadline_exceeded",
        "request_timeout",
        "timeout",
        "unreachable",
        "internal_error",
    }
)
"""Error codes of a failure of the moment rather than of the image: an engine records them for
the images concerned and the run goes on; a rerun scores those images again."""

ENGINES: Mapping[str, str] = {
    "local": "explain_batch.engines.local",
    "http": "explain_batch.engines.http",
    "ray": "explain_batch.engines.ray",
}
"""Engine name to its module."""


class UsageError(Exception):
    """A problem with the command found before any work (exit status 2)."""


class RunAborted(Exception):
    """A failure that stops the whole run after work began (the service went away, ...)."""


@dataclass(frozen=True)
class RunConfig:
    """What to compute, the same for every engine.

    Attributes:
        endpoint: ``predict``, ``featuremaps`` or ``gradcam``.
        model: A model spec (``efficientnet_lite0``, ``resnet18:none``, ...).
        options: The endpoint's options, named as :func:`explain.records.make_plan` takes them;
            only the ones given (the rest keep their defaults).
        pictures: Whether outcomes need their PNGs (files or TensorBoard); without, an engine may
            skip drawing them.
        batch_size: Inputs per batch, or ``None`` for the engine's own choice.
        scorecam_max_channels: Score-CAM's channel limit where the engine runs the model (0: all).
        optimize: Where the engine runs the model: use the optimised inference path
            (:mod:`explain.inference`); ``False``: the eager model only.
        engine_options: The chosen engine's own :data:`OPTIONS`, by ``dest``.
    """

    endpoint: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    pictures: bool = True
    batch_size: int | None = None
    scorecam_max_channels: int = 128
    optimize: bool = True
    engine_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineOption:
    """One command-line option of an engine: ``argparse.add_argument(*flags, **settings)``."""

    flags: tuple[str, ...]
    settings: Mapping[str, Any]

    @property
    def dest(self) -> str:
        return self.settings.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Input:
    """One input file, read.

    Attributes:
        path: The path as recorded (as given, or found under a given folder or manifest).
        data: The file's bytes (empty when it could not be read).
        sha256: Hex digest of ``data``, ``None`` when unreadable.
        error: ``{"code", "message"}`` when the file could not be read.
    """

    path: str
    data: bytes
    sha256: str | None
    error: dict[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """One input's result.

    Attributes:
        path, sha256: The input's.
        record: The API's result fields (``top_k``, ``featuremaps``, ``explanations``,
            ``warnings``) with every picture as PNG bytes (or ``None`` when pictures were not
            wanted); ``None`` for a failure.
        error: ``{"code", "message"}`` with the API's error code, or ``None``.
    """

    path: str
    sha256: str | None
    record: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    @classmethod
    def failed(cls, item: Input, code: str, message: str) -> Outcome:
        return cls(item.path, item.sha256, error={"code": code, "message": message})


class Engine(Protocol):
    model: str
    batch_size: int

    def score(self, paths: Iterable[str]) -> Generator[Outcome, None, None]: ...

    def close(self) -> None: ...


def engine_module(name: str) -> ModuleType:
    """The module of engine ``name``.

    Raises:
        UsageError: no such engine.
    """
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])
