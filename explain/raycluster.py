"""Joining a Ray cluster, the same way for every part that runs on one (the ``ray`` batch engine,
the service on Ray Serve): the address given, else ``RAY_ADDRESS``, else a new local cluster of
this process alone. Ray is optional (``pip install 'explain-service[ray]'``) and imported here only
when called."""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

__all__ = ["INSTALL_HINT", "RayUnavailableError", "connect", "import_ray"]

INSTALL_HINT = "pip install 'explain-service[ray]'"


class RayUnavailableError(Exception):
    """Ray is not installed, or no cluster answers at the address."""


def import_ray() -> ModuleType:
    """The ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(f"this needs Ray: {INSTALL_HINT} ({error})") from error
    return ray


def connect(address: str | None = None, **options: Any) -> bool:
    """Connect this process to a Ray cluster: ``address`` (``host:6379``, ``ray://host:10001``,
    ``auto`` for one that ``ray start`` made on this machine), else the ``RAY_ADDRESS``
    environment variable, else a new local cluster, without a dashboard, that lives as long as
    this process's connection.

    Args:
        address: The cluster's address, or ``None``.
        options: More arguments for ``ray.init`` (``num_cpus`` of a local cluster, ...).

    Returns:
        Whether the connection is new (the caller ends it with ``ray.shutdown()``, which also
        stops a local cluster); ``False`` when this process was connected already, in which
        case it is left as it is.

    Raises:
        RayUnavailableError: Ray is not installed, or no cluster answers at the address.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:  # a new cluster, even when `ray start` made another on this machine
        options = {"address": "local", "include_dashboard": False, **options}
    else:
        options = {"address": address, **options}
    try:
        ray.init(logging_level=logging.WARNING, **options)
    except (ConnectionError, OSError, RuntimeError, ValueError) as error:
        where = f"at {address}" if address else "(a local one)"
        raise RayUnavailableError(f"cannot connect to a Ray cluster {where}: {error}") from error
    return True
