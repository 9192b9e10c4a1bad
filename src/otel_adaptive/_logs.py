"""Rate-limited warnings from the exporter thread, one limit per kind of message.

A dead Redis must not flood the application's logs, yet an expected error (the store
is away) must not hide a new one (a bug in a learner) behind a shared limit: each
kind of message has its own clock.
"""

from __future__ import annotations

import logging
import time

#: Shortest time between two log lines of the same kind.
LOG_INTERVAL_SECONDS = 10.0


class RateLimitedLog:
    """``report(kind, ...)`` logs a warning at most once per ``interval`` seconds per kind."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._logger = logger
        self._interval = interval
        # Kinds are a handful of literals in our own code, so this stays tiny.
        self._last: dict[str, float] = {}

    def report(self, kind: str, message: str, *, traceback: bool = True) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            return
        self._last[kind] = now
        self._logger.warning(message, exc_info=traceback)
