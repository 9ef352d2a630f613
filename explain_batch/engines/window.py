"""A bounded window of batches in flight, for engines that are handed batches one at a time
(``local``, ``http``): cut the paths into batches, keep at most ``max_pending`` submitted, and
yield the outcomes of whichever finishes first."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait

from explain_batch.engines import Outcome

__all__ = ["score_in_batches"]


def score_in_batches(
    paths: Iterable[str],
    submit: Callable[[list[str]], Future[list[Outcome]]],
    batch_size: int,
    max_pending: int,
) -> Generator[Outcome, None, None]:
    """The outcomes of ``submit`` over ``paths`` cut into batches of ``batch_size``, as they
    finish; at most ``max_pending`` batches are in flight, so a path is pulled only when there
    is room for it.

    Closed early (or after an error), the generator lets the batches in flight end, unwritten,
    so that no work outlives it.

    Raises:
        ValueError: ``batch_size`` or ``max_pending`` below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, got {max_pending}")
    window: set[Future[list[Outcome]]] = set()

    def finished() -> Generator[Outcome, None, None]:
        done, _ = wait(window, return_when=FIRST_COMPLETED)
        for future in done:
            window.remove(future)
            yield from future.result()

    try:
        batch: list[str] = []
        for path in paths:
            batch.append(path)
            if len(batch) >= batch_size:
                window.add(submit(batch))
                batch = []
                while len(window) >= max_pending:
                    yield from finished()
        if batch:
            window.add(submit(batch))
        while window:
            yield from finished()
    finally:
        if window:
            wait(window)
