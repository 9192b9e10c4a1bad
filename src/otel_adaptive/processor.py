"""``AdaptiveSpanProcessor``: the hot path and the lifecycle.

``on_start``/``on_end`` run on the application's threads inside ``span.start()``
and ``span.end()``. They append the span's capture (one object the garbage
collector does not track, :mod:`otel_adaptive._span_capture`) to a bounded queue
for the exporter thread and keep just what hints need *now* (:class:`~otel_adaptive.live.LiveSpans`:
the open spans by id and, per open trace, the spans that ended in it). They
never do I/O, never wait for the exporter, take no lock on the normal path, and
never raise.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_adaptive._span_capture import SpanCapture, SpanEnded, capture_start
from otel_adaptive.cache import PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.exporter import Exporter, FlushRequest, QueueItem
from otel_adaptive.hints import AgentHints, HintService, _activate, _deactivate
from otel_adaptive.learners import build_learners, learner_options
from otel_adaptive.live import LiveSpans
from otel_adaptive.store.base import Store
from otel_adaptive.store.factory import create_store

_logger = logging.getLogger(__name__)

#: Open spans tracked for hints, per open trace allowed by the config.
_LIVE_SPANS_PER_TRACE = 16
#: Trace ids remembered between two exporter batches as having lost an event; beyond
#: it the exporter treats every run in flight as damaged (whole runs or nothing).
_MAX_DAMAGED_TRACES = 4096
#: Indexes of the drop counters: span starts and span ends.
_STARTS, _ENDS = 0, 1


class AdaptiveSpanProcessor(SpanProcessor):
    """Learns from agent runs and serves hints for the next LLM call.

    Register it like any span processor::

        provider.add_span_processor(AdaptiveSpanProcessor())

    ``config`` defaults to :class:`AdaptiveConfig` defaults (in-memory store);
    keyword arguments override single fields. Pass ``store`` to supply your own
    :class:`~otel_adaptive.store.base.Store`. With ``per_run_batches`` what each run
    taught is merged under an id derived from that run, so feeding the same spans
    again (a second replay of a file, in any process) leaves learned state unchanged.
    """

    def __init__(
        self,
        config: AdaptiveConfig | None = None,
        *,
        store: Store | None = None,
        per_run_batches: bool = False,
        **overrides: Any,
    ) -> None:
        self._per_run_batches = per_run_batches
        config = config or AdaptiveConfig()
        if overrides:
            config = config.replace(**overrides)
        self._config = config
        learners = build_learners(config.learners, learner_options(config))
        self._learners = learners
        self._store = store if store is not None else create_store(config, learners)
        self._cache = PlanCache()
        self._enabled = config.enabled
        self._max_queue = config.max_queue_size
        self._batch_size = config.max_export_batch_size
        self._drop_lock = threading.Lock()
        self._dropped = [0, 0]  # indexed by _STARTS, _ENDS
        self._after_shutdown = 0
        # Traces that lost an event to a full queue since the exporter last looked.
        self._damaged: dict[int, None] = {}
        self._damage_overflow = False
        self._hot_errors = 0
        self._shutdown = False
        self._live = LiveSpans(
            config.max_open_traces * _LIVE_SPANS_PER_TRACE, config.max_open_traces
        )
        self._start_pipeline()
        self.hints = HintService(config, self._cache, self._live)
        if self._enabled:
            _activate(self.hints)
        if hasattr(os, "register_at_fork"):
            reinit = weakref.WeakMethod(self._after_fork_in_child)

            def _after_in_child() -> None:
                method = reinit()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=_after_in_child)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> AdaptiveSpanProcessor:
        """A processor configured from ``OTEL_ADAPTIVE_*`` (keyword arguments win)."""
        return cls(AdaptiveConfig.from_env(environ, **overrides))

    def _start_pipeline(self) -> None:
        self._queue: deque[QueueItem] = deque()
        self._live.clear()
        self._exporter = Exporter(
            self._config,
            self._queue,
            self._store,
            list(self._learners.values()),
            self._cache,
            self._live.forget,
            self._take_damaged,
            per_run_batches=self._per_run_batches,
        )
        self._wake = self._exporter.wake_event
        if self._enabled:
            self._exporter.start()

    # --- public read access -------------------------------------------------------------------

    @property
    def config(self) -> AdaptiveConfig:
        return self._config

    @property
    def store(self) -> Store:
        """Where runs and learned state are kept (``list_runs``, ``load_trie``, ``load_plan``)."""
        return self._store

    @property
    def cache(self) -> PlanCache:
        """The latest published plans (what hints are served from)."""
        return self._cache

    # --- the hot path -------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            if not self._enabled:
                return
            capture = capture_start(span)
            if capture is None:  # the SDK never makes one; counted as a hot-path error
                raise ValueError("a span without a context")
            self._live.started(capture)
            if len(self._queue) >= self._max_queue or self._shutdown:
                self._drop(_STARTS, span)
                return
            self._enqueue(capture)
        except Exception:
            self._count_hot_error()

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if not self._enabled:
                return
            # Hint lookups count the LLM calls among what ended: no classification here.
            capture = self._live.ended(span)
            if capture is None:  # as in on_start
                raise ValueError("a span without a context")
            if len(self._queue) >= self._max_queue or self._shutdown:
                self._drop(_ENDS, span)
                return
            self._enqueue(SpanEnded(capture))
        except Exception:
            self._count_hot_error()

    def _enqueue(self, event: SpanCapture | SpanEnded) -> None:
        queue = self._queue
        queue.append(event)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _drop(self, kind: int, span: ReadableSpan) -> None:
        """The rare path: count the event and remember its trace, so its runs go whole."""
        with self._drop_lock:  # exact counting matters more than speed here
            if self._shutdown:
                self._after_shutdown += 1
                return
            self._dropped[kind] += 1
            context = span.context
            if context is None:
                return
            if len(self._damaged) < _MAX_DAMAGED_TRACES:
                self._damaged[context.trace_id] = None
            else:
                self._damage_overflow = True

    def _take_damaged(self) -> tuple[list[int], bool]:
        """For the exporter: traces that lost events since the last call (O(1) if none)."""
        if not self._damaged and not self._damage_overflow:
            return [], False
        with self._drop_lock:
            damaged, self._damaged = self._damaged, {}
            overflowed, self._damage_overflow = self._damage_overflow, False
        return list(damaged), overflowed

    def _count_hot_error(self) -> None:
        with self._drop_lock:
            self._hot_errors += 1
        _logger.debug("otel-adaptive swallowed an error on the span hot path", exc_info=True)

    # --- hints --------------------------------------------------------------------------------

    def current_hints(self) -> AgentHints | None:
        """Hints for an LLM call about to be made under the current span (None if unknown)."""
        return self.hints.current_hints()

    def inject_hints(
        self,
        body: MutableMapping[str, Any] | None = None,
        headers: MutableMapping[str, str] | None = None,
    ) -> AgentHints | None:
        """Write the current hints into a request body and/or headers; returns them."""
        return self.hints.inject_hints(body, headers)

    def set_latency_sensitivity(self, value: int) -> bool:
        """Mark the current span latency-sensitive; the highest value among ancestors wins."""
        return self.hints.set_latency_sensitivity(value)

    # --- lifecycle ----------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Assemble every span that ended before this call and store every completed run.

        Returns True when that finished within the timeout and the store accepted
        everything; False otherwise (the data stays buffered for a later attempt).
        """
        if not self._enabled:
            return True
        if self._shutdown:
            return self._exporter.pending_runs() == 0 and not self._queue
        request = FlushRequest()
        self._queue.append(request)
        self._wake.set()
        if not request.done.wait(max(timeout_millis, 0) / 1000.0):
            return False
        return request.ok

    def shutdown(self) -> None:
        """Flush within ``shutdown_timeout_millis``, stop the exporter, close the store."""
        if self._shutdown:
            return
        self._shutdown = True
        _deactivate(self.hints)
        if not self._enabled:
            self._store.close()
            return
        finished = self._exporter.stop(self._config.shutdown_timeout_millis / 1000.0)
        counts = self._exporter.stats()
        # Completed runs the store has not taken, whether buffered or still being learned.
        unstored = (
            counts["runs_completed"] - counts["runs_stored"] - counts["runs_dropped_buffer_full"]
        )
        unmerged = counts["batches_pending_store"]
        if not finished or unstored or unmerged or self._queue:
            _logger.warning(
                "otel-adaptive shut down before everything was stored: "
                "%d span events still queued, %d completed runs and %d learned batches not stored",
                len(self._queue),
                unstored,
                unmerged,
            )
        if finished:
            self._store.close()

    def _after_fork_in_child(self) -> None:
        # The parent's queue, open spans and thread belong to the parent: start afresh
        # so the child's runs are stored and the parent's are not stored twice.
        self._drop_lock = threading.Lock()
        if not self._shutdown:
            self._start_pipeline()

    # --- counters -----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters of what the processor did; see ``docs/operations.md``."""
        values = self._exporter.stats()
        values["events_dropped"] = sum(self._dropped)
        values["spans_after_shutdown"] = self._after_shutdown
        # Every span the SDK handed us is in exactly one place: seen, queued or dropped.
        queued = [type(event) for event in list(self._queue)]
        values["spans_started"] += queued.count(SpanCapture) + self._dropped[_STARTS]
        values["spans_ended"] += queued.count(SpanEnded) + self._dropped[_ENDS]
        values["live_spans_untracked"] = self._live.untracked
        values["hot_path_errors"] = self._hot_errors
        values["hint_errors"] = self.hints.errors
        values["queue_depth"] = len(self._queue)
        values["live_spans"] = len(self._live.open)
        return values
