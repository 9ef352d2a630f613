"""The service on Ray Serve: the app of ``python -m service`` (:func:`service.app.create_app`)
behind Serve's ingress, one replica per copy of the models.

Each replica builds the app from its settings and runs its lifespan: its own models, hooks, model
workers (micro-batching) and I/O threads, exactly as one ``python -m service`` process. Its
start-up returns only once every model is loaded and warm, so Serve routes no request to a replica
that would answer 503 ``not_ready``; ``check_health`` fails whenever the replica is not ready.

    serve run deploy/serve.yaml                 # Serve's CLI: the config file's replicas, autoscaling
    python -m service --ray --replicas 2        # fixed replicas on a local cluster (or --ray-address)

Ray is an optional dependency (``pip install 'explain-service[ray]'``); nothing else in
:mod:`service` imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from explain.machine import thread_plan
from explain.raycluster import RayUnavailableError, connect
from service.accesslog import JsonFormatter
from service.app import create_app
from service.settings import Settings
from service.state import ServiceState

__all__ = [
    "APP_NAME",
    "DEPLOYMENT_NAME",
    "ExplainService",
    "application",
    "build_app",
    "serve_on_ray",
]

log = logging.getLogger("service")

APP_NAME = "explain"
DEPLOYMENT_NAME = "ExplainService"


def replica_settings(overrides: Mapping[str, Any]) -> Settings:
    """The replica's settings: ``EXPLAIN_*`` variables of its environment, then ``overrides``;
    batch and torch threads left automatic (0) are planned from the CPUs Ray gave the replica
    (``ray_actor_options.num_cpus``), not from the machine's cores, which other replicas share."""
    settings = Settings(**overrides)
    if settings.batch_threads and settings.torch_threads:
        return settings
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    batch_threads, torch_threads = thread_plan(
        settings.batch_threads, settings.torch_threads, max(1, int(cpus))
    )
    return settings.model_copy(
        update={"batch_threads": batch_threads, "torch_threads": torch_threads}
    )


def _replica_logging(settings: Settings) -> None:
    """The service's log lines (the access log included) on the replica's stderr, which Ray
    keeps in the replica's log file and shows on the driver; Ray's own loggers are left alone."""
    logger = logging.getLogger("service")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(settings.log_level.upper())
    logger.propagate = False


def _serve_when_ready(app: FastAPI, state: ServiceState) -> None:
    """Make the app's start-up (its lifespan, which Serve runs in the replica) return only once
    the models are loaded and warm; a model that fails to load fails the start-up, and Serve
    replaces the replica."""
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with started(app):
            while not state.ready:
                if state.status == "failed":
                    raise RuntimeError(f"a model failed to load: {state.error}")
                await asyncio.sleep(0.05)
            yield

    app.router.lifespan_context = lifespan


@serve.deployment(
    name=DEPLOYMENT_NAME,
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=64,
    health_check_period_s=5,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=25,
)
@serve.ingress()
class ExplainService:
    """One replica: the service's app with its own models.

    Args:
        settings: Settings by field name (``{"models": "efficientnet_lite0", ...}``); the
            replica's ``EXPLAIN_*`` environment variables fill in the rest.
    """

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = replica_settings(settings or {})
        self.state: ServiceState | None = None
        _replica_logging(self.settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The app, built in the replica (Serve calls this after ``__init__``, then runs the
        app's lifespan)."""
        app = create_app(self.settings)
        self.state = app.state.service
        _serve_when_ready(app, self.state)
        return app

    def check_health(self) -> None:
        """Serve's health check: fails unless every model is loaded and the replica is not
        stopping (with ``allow_partial_start``, the models that loaded are enough)."""
        state = self.state
        if state is None or not state.ready:
            status = "starting" if state is None else state.status
            raise RuntimeError(f"the replica is not ready ({status})")


def application(
    settings: Mapping[str, Any] | None = None,
    replicas: int | None = None,
    replica_cpus: float | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> Application:
    """The service as a Serve application.

    Args:
        settings: Settings by field name, for every replica.
        replicas: A fixed number of replicas; ``None``: the deployment's own (or the config
            file's) replicas or autoscaling.
        replica_cpus: CPUs each replica reserves (default 1); its batch and torch threads follow.
        runtime_env: Ray's runtime environment of the replicas (``env_vars``, ...).

    Raises:
        ValueError: ``replicas`` or ``replica_cpus`` below 1.
    """
    options: dict[str, Any] = {}
    if replicas is not None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        options["num_replicas"] = replicas
    actor_options: dict[str, Any] = {"num_cpus": 1}
    if replica_cpus is not None:
        if replica_cpus < 1:
            raise ValueError(f"replica_cpus must be at least 1, got {replica_cpus}")
        actor_options["num_cpus"] = replica_cpus
    if runtime_env is not None:
        actor_options["runtime_env"] = dict(runtime_env)
    options["ray_actor_options"] = actor_options
    return ExplainService.options(**options).bind(dict(settings or {}))


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (``import_path: service.ray_serve:build_app`` in a config
    file, or ``serve run service.ray_serve:build_app``).

    Args:
        args: The config file's ``args``: ``settings`` (settings by field name), optionally
            ``replicas`` and ``replica_cpus``.
    """
    return application(
        args.get("settings"),
        replicas=args.get("replicas"),
        replica_cpus=args.get("replica_cpus"),
    )


class _Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve_on_ray(
    settings: Settings,
    replicas: int = 1,
    replica_cpus: float = 1,
    address: str | None = None,
) -> int:
    """``python -m service --ray``: deploy the service with ``replicas`` replicas on a Ray
    cluster (``address``, ``RAY_ADDRESS``, or a local cluster of this process), serve until
    SIGTERM or SIGINT, then remove it (and Serve, and the local cluster, when this process
    started them). The exit status: 0 after a signal, 1 when the replicas could not start (a
    model that fails to load), 2 when no cluster answers.

    Serve's HTTP proxy listens on ``settings.host``/``settings.port`` when this process starts
    Serve; a Serve already running on the cluster keeps its own address.
    """
    try:
        owns_connection = connect(address)
    except RayUnavailableError as error:
        log.error("%s", error)
        return 2
    serve_was_running = bool(serve.status().proxies)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        if serve_was_running:
            log.warning("Serve already runs on this cluster: its HTTP proxy keeps its own address")
        target = application(settings.model_dump(exclude={"host", "port"}), replicas, replica_cpus)
        log.info("deploying %d replica(s) of %s", replicas, ", ".join(settings.models))
        started = time.monotonic()
        try:
            serve.run(
                target,
                name=APP_NAME,
                route_prefix="/",
                logging_config={"log_level": "WARNING", "enable_access_log": False},
            )
        except RuntimeError as error:  # Serve gave up starting replicas
            log.error("the replicas could not start: %s", error)
            return 1
        log.info(
            "ready: %d replica(s) in %.1f s, at http://%s:%d",
            replicas,
            time.monotonic() - started,
            settings.host,
            settings.port,
        )
        while True:
            time.sleep(3600)
    except _Stop as stop:
        log.info("%s: removing the application", stop)
        return 0
    finally:
        for sig in previous:  # a second signal must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        try:
            _remove(shutdown_serve=not serve_was_running, timeout=settings.shutdown_timeout_s + 10)
        finally:
            if owns_connection:
                ray.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _remove(shutdown_serve: bool, timeout: float) -> None:
    """Delete the application (its replicas finish their requests and release their models),
    and Serve too if asked; give up after ``timeout`` seconds (a cluster that went away)."""

    def remove() -> None:
        with contextlib.suppress(Exception):
            serve.delete(APP_NAME)
        if shutdown_serve:
            with contextlib.suppress(Exception):
                serve.shutdown()

    remover = threading.Thread(target=remove, name="serve-teardown", daemon=True)
    remover.start()
    remover.join(timeout)
    if remover.is_alive():
        log.warning("Serve did not remove the application within %.0f s; leaving it", timeout)
