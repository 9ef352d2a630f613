"""``python -m service [--host HOST] [--port PORT] [--models SPEC,SPEC,...] [--ray [--replicas N]]``

Flags override the ``EXPLAIN_*`` environment variables. One process serves one copy of each model;
scale with more processes (containers), not uvicorn workers, or with ``--ray``: the same app as
replicas on Ray Serve (:mod:`service.ray_serve`), each with its own copy.

Exit status: 0 after a SIGTERM or SIGINT (running batches get ``EXPLAIN_SHUTDOWN_TIMEOUT_S`` to
finish), 1 when a model fails to load (unless ``EXPLAIN_ALLOW_PARTIAL_START=true``), 2 for a
configuration that cannot work (an unknown model name).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading

from explain.errors import ExplainError
from explain.models import get_entry, parse_spec
from explain.raycluster import INSTALL_HINT
from service.accesslog import configure_logging
from service.app import create_app
from service.server import GracefulServer, server_config
from service.settings import Settings

log = logging.getLogger("service")


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--host", default=defaults.host, help=f"address to bind (default {defaults.host})"
    )
    parser.add_argument(
        "--port", type=int, default=defaults.port, help=f"port (default {defaults.port})"
    )
    parser.add_argument(
        "--models",
        default=",".join(defaults.models),
        help="comma-separated model specs, the first is the default "
        f"(default {','.join(defaults.models)}; env EXPLAIN_MODELS)",
    )
    parser.add_argument(
        "--log-level", default=defaults.log_level, help="debug, info, warning, error"
    )
    ray_group = parser.add_argument_group("Ray Serve (needs pip install 'explain-service[ray]')")
    ray_group.add_argument(
        "--ray", action="store_true", help="serve as Ray Serve replicas instead of this process"
    )
    ray_group.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="--ray: replicas, each with its own models (default 1)",
    )
    ray_group.add_argument(
        "--replica-cpus",
        type=float,
        default=1.0,
        help="--ray: CPUs each replica reserves; its batch and torch threads follow (default 1)",
    )
    ray_group.add_argument(
        "--ray-address",
        default=None,
        help="--ray: an existing cluster (default: RAY_ADDRESS, else a local cluster of this process)",
    )
    args = parser.parse_args(argv)
    if not args.ray and (args.replicas != 1 or args.replica_cpus != 1.0 or args.ray_address):
        parser.error("--replicas, --replica-cpus and --ray-address go with --ray")
    if args.replicas < 1 or args.replica_cpus < 1:
        parser.error("--replicas and --replica-cpus must be at least 1")

    try:
        settings = Settings(
            **{
                **defaults.model_dump(),
                "host": args.host,
                "port": args.port,
                "models": args.models,
                "log_level": args.log_level,
            }
        )
        settings.api_key_set()
        for spec in settings.models:  # fail fast on names that cannot load, before binding
            get_entry(parse_spec(spec)[0])
    except (ExplainError, ValueError, OSError) as error:
        print(f"python -m service: {error}", file=sys.stderr)
        return 2

    configure_logging(settings.log_level, settings.log_format)
    if args.ray:
        return _serve_on_ray(settings, args.replicas, args.replica_cpus, args.ray_address)
    app = create_app(settings)
    state = app.state.service
    server = GracefulServer(
        server_config(app, settings),
        on_signal=state.begin_shutdown,
        time_left=state.shutdown_left,
    )

    def fatal(error: str) -> None:
        log.error(
            "a model failed to load; exiting (EXPLAIN_ALLOW_PARTIAL_START=true keeps the others)"
        )
        server.should_exit = True

    state.on_fatal = fatal
    asyncio.run(server.serve())
    code = 1 if state.failed and not settings.allow_partial_start else 0
    if server.signalled is None and not state.failed and not server.started:
        code = 1  # could not bind, or the lifespan failed
    _exit_now_if_stuck(code)
    return code


def _serve_on_ray(
    settings: Settings, replicas: int, replica_cpus: float, address: str | None
) -> int:
    try:
        from service.ray_serve import serve_on_ray
    except ImportError as error:
        print(
            f"python -m service: --ray needs Ray Serve: {INSTALL_HINT} ({error})", file=sys.stderr
        )
        return 2
    return serve_on_ray(settings, replicas, replica_cpus, address)


def _exit_now_if_stuck(code: int) -> None:
    """A batch still running past the shutdown deadline must not hold the process: its threads
    are daemons, but the decoding pools are joined at interpreter exit."""
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    if any(t.name.startswith(("io", "decode-large", "model-")) for t in stuck):
        log.warning("exiting with work still running on %s", ", ".join(t.name for t in stuck))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
