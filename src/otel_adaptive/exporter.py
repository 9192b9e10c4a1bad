"""The exporter thread: everything that must not run on the application's threads.

This module is the batch loop. It drains span events from the processor's queue,
assembles runs and hands them on, one direction: completed runs go to the
:class:`~otel_adaptive._store_writer.StoreWriter` (stored) and to the
:class:`~otel_adaptive._learned_state.LearnedState` (learned in coalesced intervals,
published for hints, refreshed from the store). Like the SDK's batch processor it wakes
on a schedule or when a batch is ready, and it runs with OpenTelemetry instrumentation
suppressed so that an instrumented Redis client cannot trace our own writes back to us.

The periodic steps (learning at the end of an interval, writing, publishing, refresh)
are checked after every batch, so a busy queue never starves them.

Runs are admitted whole or not at all: a trace that lost an event to a full queue is
reported by the processor (``take_damaged``) and the assembler drops its runs whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeAlias

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from otel_adaptive._counters import ExporterCounters
from otel_adaptive._learned_state import LearnedState
from otel_adaptive._logs import RateLimitedLog
from otel_adaptive._span_capture import SpanCapture, SpanEnded
from otel_adaptive._store_writer import StoreWriter
from otel_adaptive.assembler import RunAssembler
from otel_adaptive.cache import PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.learners.base import Learner
from otel_adaptive.store.base import Store, StoreUnavailableError

_logger = logging.getLogger(__name__)

#: Returns the trace ids that lost events since the last call, and whether some were
#: lost without their id being kept (then every run in flight counts as damaged).
TakeDamaged = Callable[[], tuple[list[int], bool]]

__all__ = ["Exporter", "ExporterCounters", "FlushRequest", "QueueItem"]


class FlushRequest:
    """A marker in the queue: everything queued before it has been handled when ``done`` is set."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


#: What the queue holds: a span's start (its capture), its end, or a flush marker.
QueueItem: TypeAlias = SpanCapture | SpanEnded | FlushRequest


def _nothing_damaged() -> tuple[list[int], bool]:
    return [], False


class Exporter:
    """Owns the worker thread and every stage after the queue."""

    def __init__(
        self,
        config: AdaptiveConfig,
        queue: deque[QueueItem],
        store: Store,
        learners: Sequence[Learner],
        cache: PlanCache,
        forget_spans: Callable[[list[int]], None],
        take_damaged: TakeDamaged = _nothing_damaged,
        *,
        per_run_batches: bool = False,
    ) -> None:
        self._config = config
        self._queue = queue
        self._forget_spans = forget_spans
        self._take_damaged = take_damaged
        self._assembler = RunAssembler(config)
        self.counters = ExporterCounters()
        self._log = RateLimitedLog(_logger)
        self._writer = StoreWriter(store, config.retry_buffer_runs, self.counters, self._log)
        self._learned = LearnedState(
            config,
            store,
            learners,
            cache,
            self._writer,
            self.counters,
            self._log,
            per_run_batches=per_run_batches,
        )
        self._wake = threading.Event()
        self._stopping = False
        self._write_interval = config.learn_interval_millis / 1000.0
        self._next_write = 0.0
        self._thread = threading.Thread(
            target=self._run, name="otel-adaptive-exporter", daemon=True
        )

    # --- lifecycle (called from application threads) -----------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def wake_event(self) -> threading.Event:
        return self._wake

    def stop(self, timeout: float) -> bool:
        """Drain, write and stop within ``timeout`` seconds; True when it finished."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def open_traces(self) -> int:
        return self._assembler.open_traces

    def pending_runs(self) -> int:
        """Completed runs not yet stored or not yet learned."""
        return self._writer.pending_runs + self._learned.waiting_runs

    def stats(self) -> dict[str, int]:
        values = asdict(self.counters)
        values.update(asdict(self._assembler.counters))
        values["runs_pending_store"] = self._writer.pending_runs
        values["batches_pending_store"] = self._writer.pending_batches
        values["runs_pending_learning"] = self._learned.waiting_runs
        values["agents_learned"] = self._learned.agent_count
        values["open_runs"] = self._assembler.open_traces
        return values

    def refresh(self) -> None:
        """Re-read changed agents' learned state from the store and republish them."""
        self._learned.refresh()

    # --- the worker loop ----------------------------------------------------------------------

    def _run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            delay = min(self._config.schedule_delay_millis, self._config.learn_interval_millis)
            while True:
                self._wake.wait(delay / 1000.0)
                self._wake.clear()
                self._cycle()
                if self._stopping and not self._queue:
                    break
            # Last chance before the process goes: take the runs the final housekeeping
            # completed, learn and write them now, even inside a back-off.
            self._guard(self._after_batch, force=True)
        finally:
            detach(token)

    def _cycle(self) -> None:
        """Drain the queue batch by batch; the periodic steps run between batches."""
        while True:
            flushes: list[FlushRequest] = []
            took = self._take_batch(flushes)
            self._guard(self._after_batch, force=bool(flushes))
            for request in flushes:
                request.ok = self._writer.idle and not self._learned.waiting_runs
                request.done.set()
            self._guard(self._learned.refresh_if_due)
            if not took:
                break

    def _guard(self, step: Callable[..., object], **kwargs: Any) -> None:
        try:
            step(**kwargs)
        except StoreUnavailableError as exc:  # expected during outages; retried later
            self.counters.store_errors += 1
            self._log.report(
                "store_unavailable_read",
                f"otel-adaptive could not read its store ({exc})",
                traceback=False,
            )
        except Exception:  # the thread must survive anything
            self.counters.exporter_errors += 1
            self._log.report("exporter_step", "otel-adaptive exporter step failed")

    def _take_batch(self, flushes: list[FlushRequest]) -> int:
        queue = self._queue
        assembler = self._assembler
        # Only events queued before the damaged traces are taken: a run whose root ends
        # in this batch then already knows whether its trace lost an event (the drop
        # happened before the root's end was queued).
        available = min(self._config.max_export_batch_size, len(queue))
        self._mark_damaged()
        took = started = ended = 0  # counted here, added to the counters once a batch
        while took < available:
            try:
                event = queue.popleft()
            except IndexError:
                break
            took += 1
            try:
                if isinstance(event, SpanEnded):
                    ended += 1
                    assembler.span_ended(event.capture)
                elif isinstance(event, SpanCapture):
                    started += 1
                    if took < available and _is_end_of(queue, event):
                        # A leaf span's end right behind its start: both in one step.
                        queue.popleft()
                        took += 1
                        ended += 1
                        assembler.span_started_and_ended(event)
                    else:
                        assembler.span_started(event)
                else:
                    flushes.append(event)
                    break  # answer the flush as soon as what preceded it is handled
            except Exception:
                self.counters.exporter_errors += 1
                self._log.report("assemble", "otel-adaptive could not assemble a span")
        self.counters.spans_started += started
        self.counters.spans_ended += ended
        return took

    def _mark_damaged(self) -> None:
        trace_ids, overflowed = self._take_damaged()
        if trace_ids or overflowed:
            self._assembler.mark_damaged(trace_ids, all_in_flight=overflowed)

    def _after_batch(self, force: bool) -> None:
        assembler = self._assembler
        assembler.evict_idle()
        evicted = assembler.take_evicted_span_ids()
        if evicted:
            self._forget_spans(evicted)
        runs = assembler.take_completed()
        self._learned.add_aliases(assembler.take_aliases())
        if runs:
            self._writer.add_runs(runs)
            # Truncated runs (stored, marked) are never learned: nothing partial is.
            self._learned.add_runs([run for run in runs if not run.truncated])
        self._learned.learn(force=force)
        now = time.monotonic()
        if force or now >= self._next_write:
            self._next_write = now + self._write_interval
            self._writer.write(force=force)
        self._learned.publish(force=force)


def _is_end_of(queue: deque[QueueItem], capture: SpanCapture) -> bool:
    """Whether the next queued event is the end of the span ``capture`` started."""
    try:
        following = queue[0]
    except IndexError:
        return False
    return isinstance(following, SpanEnded) and following.capture is capture
