"""A replica of the service on Ray Serve whose models load only when the test says so.

Imported by the replicas (Ray puts the driver's working directory on their ``sys.path``), so it
imports nothing from pytest. The deployment is the real one; only the loader that
:class:`service.state.ServiceState` calls is wrapped, in the replica, to wait for a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from service import ray_serve, state

__all__ = ["GatedReplica", "open_gate"]


def _hold_model_loading(gates: Path) -> None:
    """Each replica takes the first free slot (``slot-1``, ``slot-2``, ...), then its models load
    once ``open-<slot>`` exists."""
    slot = 1
    while True:
        try:
            os.close(os.open(gates / f"slot-{slot}", os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            slot += 1
    real_load = state.load_model

    def gated_load(spec: str) -> Any:
        deadline = time.monotonic() + 300
        while not (gates / f"open-{slot}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return real_load(spec)

    state.load_model = gated_load


class GatedReplica(ray_serve.ExplainService.func_or_class):  # type: ignore[misc,name-defined]
    """:class:`service.ray_serve.ExplainService` whose model loading waits at a gate."""

    async def __init__(self, settings: dict[str, Any], gates: str) -> None:
        await super().__init__(settings)
        self.gates = Path(gates)

    def __serve_build_asgi_app__(self) -> Any:
        _hold_model_loading(self.gates)
        return super().__serve_build_asgi_app__()


def open_gate(gates: Path, slot: int) -> None:
    (gates / f"open-{slot}").touch()
