"""The progress bar of ``replay``: bytes read, spans and runs per second, on a terminal only."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Final

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from otel_adaptive.cli._common import stderr_console
from otel_adaptive.processor import AdaptiveSpanProcessor

#: Shortest time between two redraws (reading the processor's counters is not free).
_REFRESH_SECONDS: Final = 0.1


class ReplayProgress:
    """A bar on standard error when it is a terminal and ``enabled``; otherwise nothing."""

    def __init__(self, total_bytes: int | None, *, enabled: bool) -> None:
        console = stderr_console()
        self._progress: Progress | None = None
        if enabled and console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[rates]}"),
                TimeElapsedColumn(),
                console=console,
            )
        self._total = total_bytes
        self._task: TaskID | None = None
        self._started = time.monotonic()
        self._next_draw = 0.0
        self._files_done = 0  # bytes of the files read completely
        self._current = 0  # size of the file being read

    def __enter__(self) -> ReplayProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("replay", total=self._total, rates="")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_file(self, name: str) -> None:
        self._files_done += self._current
        path = Path(name)
        self._current = path.stat().st_size if name != "-" and path.is_file() else 0

    def update(
        self, name: str, file_bytes: int, spans: int, processor: AdaptiveSpanProcessor
    ) -> None:
        """Redraw (at most every _REFRESH_SECONDS) after ``file_bytes`` of ``name`` were read."""
        if self._progress is None or self._task is None:
            return
        now = time.monotonic()
        if now < self._next_draw:
            return
        self._next_draw = now + _REFRESH_SECONDS
        elapsed = max(now - self._started, 1e-9)
        runs = processor.stats()["runs_completed"]
        self._progress.update(
            self._task,
            description=name,
            completed=self._files_done + file_bytes,
            rates=(
                f"{spans:,} spans ({spans / elapsed:,.0f}/s), "
                f"{runs:,} runs ({runs / elapsed:,.0f}/s)"
            ),
        )
