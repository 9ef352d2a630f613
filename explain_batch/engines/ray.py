"""The ``ray`` engine: a Ray cluster scores the images, one model copy per actor.

The paths are listed on the driver (this process) and become a Ray Dataset; ``map_batches`` runs
them through a pool of actors, each of which loads the model once (its hooks attached for its
lifetime) and reads, decodes, scores and renders its batches with the same
:class:`~explain_batch.scorer.Scorer` as the ``local`` engine. Outcomes stream back to the driver
as they are ready, where the run writes them like any engine's.

Ray is an optional dependency (``pip install 'explain-service[ray]'``), imported when the engine
is opened. Every node of the cluster needs this package and the model's weights at the same path.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import pickle
from collections.abc import Generator, Iterable
from typing import Any

from explain.raycluster import INSTALL_HINT, RayUnavailableError, connect, import_ray
from explain_batch.engines import EngineOption, Outcome, RunAborted, RunConfig, UsageError
from explain_batch.options import positive_int

__all__ = ["DEFAULT_BATCH_SIZE", "OPTIONS", "PATHS_PER_DATASET", "RayEngine", "open_engine"]

DEFAULT_BATCH_SIZE = 2
"""Images per model call in an actor: as for the ``local`` engine, batches of 2 on one torch
thread per core keep the cores busy on CPU."""

PATHS_PER_DATASET = 50_000
"""Paths in one Ray Dataset: the driver lists at most this many at a time (a few MB), so memory
stays bounded however many inputs there are. Each dataset starts its own actor pool, a few seconds
against the hour or so that this many images take on a few cores."""

BATCHES_PER_BLOCK = 4
"""Model batches per Ray Data block, the unit of work sent to an actor (see ``RayEngine._dataset``)."""

OPTIONS = (
    EngineOption(
        ("--ray-address",),
        {
            "default": None,
            "metavar": "ADDRESS",
            "help": "ray: an existing cluster (host:6379, ray://host:10001 or auto; default: the "
            "RAY_ADDRESS environment variable, else a local cluster started and stopped here)",
        },
    ),
    EngineOption(
        ("--actors",),
        {
            "type": positive_int,
            "default": None,
            "metavar": "N",
            "help": "ray: model copies, one per actor (default: the cluster's CPUs / "
            "--cpus-per-actor)",
        },
    ),
    EngineOption(
        ("--cpus-per-actor",),
        {
            "type": positive_int,
            "default": 1,
            "metavar": "N",
            "help": "ray: CPUs each actor reserves, and its torch threads (default 1)",
        },
    ),
)


def _import_ray() -> Any:
    """``ray``, with Ray Data.

    Raises:
        UsageError: Ray (or Ray Data) is not installed.
    """
    try:
        ray = import_ray()
        importlib.import_module("ray.data")  # Ray Data comes with ray's 'data' extra
    except (RayUnavailableError, ImportError) as error:
        raise UsageError(
            f"the ray engine needs Ray and Ray Data: {INSTALL_HINT} ({error})"
        ) from error
    return ray


class ScoringActor:
    """One model copy on the cluster: Ray Data's callable class for ``map_batches``.

    Args:
        config: What to compute.
        torch_threads: ``torch.set_num_threads`` in this actor (its share of the CPUs).
    """

    def __init__(self, config: RunConfig, torch_threads: int) -> None:
        import torch

        from explain_batch.scorer import Scorer

        torch.set_num_threads(torch_threads)
        self.scorer = Scorer(config)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        """Read, decode, score and render the batch's files; one pickled outcome per path."""
        outcomes = self.scorer([str(path) for path in batch["path"]])
        return {"outcome": [pickle.dumps(outcome) for outcome in outcomes]}


def _check(config: RunConfig, torch_threads: int) -> str:
    """Load the model and try the options once, on the cluster (where the actors will load it);
    the model's name."""
    actor = ScoringActor(config, torch_threads)
    try:
        return actor.scorer.model
    finally:
        actor.scorer.close()


class RayEngine:
    """Scores streams of paths on a Ray cluster.

    Args:
        config: What to compute.
        model: The model's name (checked on the cluster by :func:`open_engine`).
        actors: Model copies, one per actor.
        cpus_per_actor: CPUs each actor reserves; also its torch threads.
        owns_connection: Disconnect from the cluster (and stop it, when it was started here) on
            :meth:`close`.
        paths_per_dataset: Paths in one Ray Dataset (:data:`PATHS_PER_DATASET`).
    """

    def __init__(
        self,
        config: RunConfig,
        model: str,
        actors: int,
        cpus_per_actor: int = 1,
        owns_connection: bool = True,
        paths_per_dataset: int = PATHS_PER_DATASET,
    ) -> None:
        if actors < 1:
            raise ValueError(f"actors must be at least 1, got {actors}")
        if cpus_per_actor < 1:
            raise ValueError(f"cpus_per_actor must be at least 1, got {cpus_per_actor}")
        if paths_per_dataset < 1:
            raise ValueError(f"paths_per_dataset must be at least 1, got {paths_per_dataset}")
        self.config = config
        self.model = model
        self.batch_size = config.batch_size or DEFAULT_BATCH_SIZE
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.paths_per_dataset = paths_per_dataset
        self._owns_connection = owns_connection

    def score(self, paths: Iterable[str]) -> Generator[Outcome, None, None]:
        """The outcomes of ``paths``, one dataset of at most :attr:`paths_per_dataset` paths at a
        time. Closed early, the dataset's execution stops and its actors go."""
        ray = _import_ray()
        listed = iter(paths)
        while chunk := list(itertools.islice(listed, self.paths_per_dataset)):
            batches = iter(self._dataset(ray, chunk).iter_batches(batch_size=None))
            try:
                for batch in batches:
                    for outcome in batch["outcome"]:
                        yield pickle.loads(outcome)
            except ray.exceptions.RayError as error:
                raise RunAborted(f"the Ray cluster failed: {error}") from error
            finally:
                batches.close()  # type: ignore[attr-defined]  # ends the execution if cut short

    def _dataset(self, ray: Any, chunk: list[str]) -> Any:
        """``chunk`` as a dataset of paths, mapped by a pool of :attr:`actors` scoring actors
        (fewer for a chunk of fewer blocks).

        Blocks of :data:`BATCHES_PER_BLOCK` batches: an actor's task returns its outcomes when
        its block is done, so small blocks stream results back (and bound what a killed run
        loses, or what a block of PNGs weighs) while keeping every actor busy."""
        rows = self.batch_size * BATCHES_PER_BLOCK
        blocks = max(-(-len(chunk) // rows), min(len(chunk), self.actors))
        dataset = ray.data.from_items(
            [{"path": path} for path in chunk], override_num_blocks=blocks
        )
        return dataset.map_batches(
            ScoringActor,
            fn_constructor_kwargs={"config": self.config, "torch_threads": self.cpus_per_actor},
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(self.actors, blocks)),
            num_cpus=self.cpus_per_actor,
        )

    def close(self) -> None:
        if self._owns_connection:
            ray = _import_ray()
            ray.shutdown()
            self._owns_connection = False


def _quiet_data(ray: Any) -> None:
    """The run shows its own progress: no Ray Data bars, progress lines or execution banners on
    stderr (Ray Data still logs everything to ``ray-data.log`` in the session's log folder)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.ERROR)


def open_engine(config: RunConfig) -> RayEngine:
    """Connect to the cluster (or start a local one), then load the model and try the options
    once on it.

    Raises:
        UsageError: Ray is not installed, no cluster answers at ``--ray-address``, the cluster
            has too few CPUs for one actor, or the model or the options are refused.
    """
    ray = _import_ray()
    settings = config.engine_options
    address = settings.get("ray_address")
    cpus_per_actor = settings.get("cpus_per_actor") or 1
    try:
        owns = connect(address)
    except RayUnavailableError as error:
        raise UsageError(str(error)) from error
    try:
        _quiet_data(ray)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < cpus_per_actor:
            raise UsageError(
                f"the Ray cluster has {cpus} CPU(s); an actor needs {cpus_per_actor} "
                "(--cpus-per-actor)"
            )
        actors = settings.get("actors") or max(1, cpus // cpus_per_actor)
        if actors * cpus_per_actor > cpus:  # the pool would wait for CPUs that never come
            raise UsageError(
                f"{actors} actors of {cpus_per_actor} CPU(s) need {actors * cpus_per_actor} "
                f"CPUs; the Ray cluster has {cpus} (--actors, --cpus-per-actor)"
            )
        check = ray.remote(num_cpus=cpus_per_actor, max_calls=1)(_check)
        try:
            model = ray.get(check.remote(config, cpus_per_actor))
        except ray.exceptions.RayTaskError as error:
            cause = error.cause
            if isinstance(cause, UsageError):
                raise UsageError(str(cause)) from None
            raise UsageError(f"the model cannot run on the Ray cluster: {cause!r}") from error
        return RayEngine(config, model, actors, cpus_per_actor, owns, PATHS_PER_DATASET)
    except BaseException:
        if owns:
            ray.shutdown()
        raise
