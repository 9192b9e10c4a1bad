"""Writes completed runs and learned deltas to the store, each with its own buffer.

Runs and learned deltas fail separately: each has its own bounded buffer and its own
back-off, so a run the store cannot take never holds learning back, and a store that
rejects one delta batch still receives every run. Delta batches that wait together (a
backlog after an outage, a replay's one batch per run) go to the store in one
``merge_batches`` call: one write per agent, not one per batch. An unreachable store
(``StoreUnavailableError``) is waited out; any other error is the data's fault: the
offending runs (found one by one) or batch are dropped and counted, the rest go on.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence

from otel_adaptive._counters import ExporterCounters
from otel_adaptive._logs import RateLimitedLog
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import AgentDelta, Store, StoreUnavailableError

#: Runs written to the store per call, so a long outage backlog drains in pieces.
WRITE_CHUNK = 500
#: Learned delta batches waiting for the store, at most (each holds one interval).
MAX_PENDING_BATCHES = 1000
#: Delta batches written together in one ``merge_batches`` call, at most.
MERGE_CHUNK = 200
_BACKOFF_MIN_SECONDS = 0.1
_BACKOFF_MAX_SECONDS = 30.0


def _written(reply: object, runs: Sequence[RunRecord]) -> int:
    # Stores written before save_runs returned a count return None: all were written.
    return len(runs) if reply is None else int(reply)  # type: ignore[call-overload]


class _Backoff:
    """Exponential, jittered back-off of one kind of write."""

    __slots__ = ("_delay", "retry_at")

    def __init__(self) -> None:
        self._delay = _BACKOFF_MIN_SECONDS
        self.retry_at = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.retry_at

    def failed(self, now: float) -> float:
        self.retry_at = now + self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, _BACKOFF_MAX_SECONDS)
        return self._delay

    def succeeded(self) -> None:
        self._delay = _BACKOFF_MIN_SECONDS
        self.retry_at = 0.0


class StoreWriter:
    """Buffers what waits for the store and writes it, runs and deltas independently."""

    def __init__(
        self,
        store: Store,
        max_buffered_runs: int,
        counters: ExporterCounters,
        log: RateLimitedLog,
    ) -> None:
        self._store = store
        self._max_runs = max_buffered_runs
        self._counters = counters
        self._log = log
        self._runs: deque[RunRecord] = deque()
        self._deltas: deque[tuple[str, list[AgentDelta]]] = deque()
        # A store that only has the default merge_batches merges batch by batch anyway:
        # writing it one batch per call keeps a failing batch from being retried with others.
        self._merge_chunk = (
            MERGE_CHUNK if type(store).merge_batches is not Store.merge_batches else 1
        )
        self._runs_backoff = _Backoff()
        self._deltas_backoff = _Backoff()

    @property
    def pending_runs(self) -> int:
        return len(self._runs)

    @property
    def pending_batches(self) -> int:
        return len(self._deltas)

    @property
    def idle(self) -> bool:
        """Nothing waits for the store."""
        return not self._runs and not self._deltas

    def unwritten_deltas(self) -> list[AgentDelta]:
        """Learned deltas the store has not taken yet (a refresh merges them back in)."""
        return [delta for _, deltas in self._deltas for delta in deltas]

    def add_runs(self, runs: Sequence[RunRecord]) -> None:
        self._runs.extend(runs)

    def add_deltas(self, batch_id: str, deltas: list[AgentDelta]) -> None:
        self._deltas.append((batch_id, deltas))

    def write(self, *, force: bool) -> None:
        """Write what waits (``force``: even inside a back-off); then apply the bounds."""
        now = time.monotonic()
        if self._runs and (force or self._runs_backoff.ready(now)):
            self._write_runs(now)
        if self._deltas and (force or self._deltas_backoff.ready(now)):
            self._write_deltas(now)
        self._trim()

    # --- runs ------------------------------------------------------------------------------

    def _write_runs(self, now: float) -> None:
        while self._runs:
            chunk = [self._runs[i] for i in range(min(WRITE_CHUNK, len(self._runs)))]
            try:
                written = _written(self._store.save_runs(chunk), chunk)
            except StoreUnavailableError as exc:
                self._unavailable("runs", now, self._runs_backoff, exc)
                return
            except Exception:
                one_by_one = self._save_one_by_one(chunk)
                if one_by_one is None:
                    return  # the store went away meanwhile: the rest waits
                written = one_by_one
            for _ in chunk:
                self._runs.popleft()
            self._counters.runs_stored += written
            # A store may decline runs it keeps bad data for: counted, never retried.
            self._counters.runs_not_written += len(chunk) - written
        self._runs_backoff.succeeded()

    def _save_one_by_one(self, chunk: list[RunRecord]) -> int | None:
        """Find the runs the store cannot take: they are dropped, the others written."""
        written = 0
        for run in chunk:
            try:
                written += _written(self._store.save_runs([run]), [run])
            except StoreUnavailableError as exc:
                self._unavailable("runs", time.monotonic(), self._runs_backoff, exc)
                return None
            except Exception:
                self._counters.runs_unstorable += 1
                self._log.report("run_unstorable", f"otel-adaptive could not store run {run.id}")
        return written

    # --- learned deltas --------------------------------------------------------------------

    def _write_deltas(self, now: float) -> None:
        while self._deltas:
            chunk = [self._deltas[i] for i in range(min(self._merge_chunk, len(self._deltas)))]
            try:
                outcomes: list[bool | None]
                if len(chunk) == 1:
                    outcomes = [self._store.merge(*chunk[0])]
                else:
                    outcomes = list(self._store.merge_batches(chunk))
            except StoreUnavailableError as exc:
                self._unavailable("learned state", now, self._deltas_backoff, exc)
                return
            except Exception:
                if len(chunk) == 1:
                    outcomes = [None]  # a lone batch: it is the bad one
                else:
                    found = self._merge_one_by_one(chunk)
                    if found is None:
                        return  # the store went away meanwhile: the rest waits
                    outcomes = found
            for outcome in outcomes:
                self._deltas.popleft()
                self._count_merge(outcome)
        self._deltas_backoff.succeeded()

    def _merge_one_by_one(
        self, chunk: list[tuple[str, list[AgentDelta]]]
    ) -> list[bool | None] | None:
        """Find the batches the store cannot take: they are dropped (None), the others merged."""
        outcomes: list[bool | None] = []
        for batch_id, deltas in chunk:
            try:
                outcomes.append(self._store.merge(batch_id, deltas))
            except StoreUnavailableError as exc:
                self._unavailable("learned state", time.monotonic(), self._deltas_backoff, exc)
                # Those merged already are settled; the rest waits.
                for outcome in outcomes:
                    self._deltas.popleft()
                    self._count_merge(outcome)
                return None
            except Exception:
                outcomes.append(None)
        return outcomes

    def _count_merge(self, outcome: bool | None) -> None:
        if outcome is None:
            self._counters.batches_unstorable += 1
            self._log.report("batch_unstorable", "otel-adaptive could not store a learned batch")
        elif outcome:
            self._counters.batches_merged += 1
        else:
            self._counters.batches_deduplicated += 1

    # --- bounds and failures ---------------------------------------------------------------

    def _trim(self) -> None:
        """Bound what waits for the store: the oldest runs and deltas go first, counted."""
        overflow = len(self._runs) - self._max_runs
        for _ in range(max(overflow, 0)):
            self._runs.popleft()
            self._counters.runs_dropped_buffer_full += 1
        while len(self._deltas) > MAX_PENDING_BATCHES:
            self._deltas.popleft()
            self._counters.batches_dropped_buffer_full += 1

    def _unavailable(
        self, what: str, now: float, backoff: _Backoff, exc: StoreUnavailableError
    ) -> None:
        self._counters.store_errors += 1
        delay = backoff.failed(now)
        # An unreachable store is expected to happen: one line, no traceback.
        self._log.report(
            f"store_unavailable_{what}",
            f"otel-adaptive could not write {what} to its store ({exc}); "
            f"{len(self._runs)} runs and {len(self._deltas)} learned batches wait, "
            f"retrying in {delay:.1f} s",
            traceback=False,
        )
