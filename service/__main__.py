"""``python -m service [--host HOST] [--port PORT] [--models SPEC,SPEC,...]``

Flags override the ``EXPLAIN_*`` environment variables. One process serves one copy of each model;
scale with more processes (containers), not uvicorn workers.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from explain.errors import ExplainError
from explain.models import get_entry, parse_spec
from service.app import create_app
from service.settings import Settings


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
    args = parser.parse_args(argv)

    settings = Settings(
        **{
            **defaults.model_dump(),
            "host": args.host,
            "port": args.port,
            "models": args.models,
            "log_level": args.log_level,
        }
    )
    try:  # fail fast on names that cannot load, before binding the port
        for spec in settings.models:
            get_entry(parse_spec(spec)[0])
    except (ExplainError, ValueError) as error:
        print(f"python -m service: {error}", file=sys.stderr)
        return 2

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        workers=1,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
