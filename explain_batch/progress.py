"""Progress on stderr: a bar with images/s and ETA on a terminal, a plain line every few seconds
otherwise (logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts inputs as they finish and shows it.

    Args:
        total: Inputs in the run (skipped ones included).
        bar: A tqdm bar (``True``), plain lines (``False``), or ``None``: a bar when ``stream``
            is a terminal.
        enabled: Show nothing when false.
        every: Seconds between plain lines.
        stream: Where to write (default ``sys.stderr``).
    """

    def __init__(
        self,
        total: int,
        *,
        bar: bool | None = None,
        enabled: bool = True,
        every: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._every = every
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar = None
        if enabled and (bar if bar is not None else self._stream.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, unit="img", file=self._stream, dynamic_ncols=True, smoothing=0.1
            )

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def update(self, status: str) -> None:
        """One input finished: ``ok``, ``failed`` or ``skipped``."""
        self.counts[status] += 1
        if self._bar is not None:
            self._bar.update(1)
            if status != "ok":
                self._bar.set_postfix(
                    failed=self.counts["failed"], skipped=self.counts["skipped"], refresh=False
                )
        elif self._enabled and time.monotonic() - self._last_line >= self._every:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self._last_line = now
        scored = self.counts["ok"] + self.counts["failed"]
        rate = scored / max(now - self._started, 1e-9)
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        percent = 100 * self.done / self.total if self.total else 100.0
        print(
            f"explain-batch: {self.done}/{self.total} ({percent:.0f}%), {rate:.1f} images/s, "
            f"{self.counts['failed']} failed, {self.counts['skipped']} skipped, ETA {eta}",
            file=self._stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._enabled:
            self._line()
