"""Batch scoring: the ``explain-batch`` command, its engines, resumable results on disk."""

from explain_batch.engines import ENGINES, Engine, Input, Outcome, RunConfig, UsageError
from explain_batch.run import RunRequest, run

__all__ = ["ENGINES", "Engine", "Input", "Outcome", "RunConfig", "RunRequest", "UsageError", "run"]
