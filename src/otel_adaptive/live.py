"""The hot path's state: the open spans, and per open trace what ended in it.

``on_start``/``on_end`` run on any application thread at once, with no lock:
every update here is one dictionary or list operation (``setdefault``,
``append``, ``pop``), each atomic under the GIL, and there is no
read-then-write, so spans ending together on many threads never lose one
another. Hint lookups read this state; what they derive from it (scopes, call
counts) lives in each trace's :class:`TraceState` and goes when the trace's
local root ends. Everything is bounded, and what is not tracked is counted.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan

from otel_adaptive._span_capture import SpanCapture, capture_end, capture_start, span_ids

#: Ended spans remembered per open trace; later ones are counted, not kept.
MAX_ENDED_PER_TRACE: Final = 4096


class Tally:
    """LLM calls that ended in a trace, counted by the hint lookups (immutable).

    ``cursor`` is how many of the trace's ended spans are counted;
    ``per_run`` the LLM calls per run root span id; ``per_path`` per
    (run root span id, scope path). Replaced whole, with one assignment.
    """

    __slots__ = ("cursor", "per_path", "per_run")

    def __init__(
        self,
        cursor: int,
        per_run: dict[int, int],
        per_path: dict[tuple[int, tuple[str, ...]], int],
    ) -> None:
        self.cursor = cursor
        self.per_run = per_run
        self.per_path = per_path


_NO_CALLS: Final = Tally(0, {}, {})


class TraceState:
    """What the hot path and hint lookups keep for one open trace."""

    __slots__ = ("ended", "sites", "tally")

    def __init__(self) -> None:
        #: Captures of the spans that ended in the trace, in end order (appended on the
        #: hot path, complete when appended). Captures, not the SDK's spans: a span's
        #: objects go as soon as the application lets go of it, not when its trace ends.
        self.ended: list[SpanCapture] = []
        #: The hint service's call-site cache: span id -> its resolved site.
        self.sites: dict[int, Any] = {}
        self.tally: Tally = _NO_CALLS


class LiveSpans:
    """Open spans by id and per-trace state, updated with single operations.

    The open spans are kept as their captures, the objects the processor queues for
    the exporter: the span's end fills in the capture of its start."""

    __slots__ = ("_lock", "_max_open", "_max_traces", "open", "traces", "untracked")

    def __init__(self, max_open: int, max_traces: int) -> None:
        self._max_open = max_open
        self._max_traces = max_traces
        #: Open spans' captures by span id (each holds its live span until it ends).
        self.open: dict[int, SpanCapture] = {}
        self.traces: dict[int, TraceState] = {}
        #: Spans (or ended spans) not tracked because a bound was reached.
        self.untracked = 0
        self._lock = threading.Lock()  # only on that rare path: exact counting

    def get(self, span_id: int) -> ReadableSpan | None:
        """The open span with this id, if tracked."""
        capture = self.open.get(span_id)
        return None if capture is None else capture.live

    def _count_untracked(self) -> None:
        with self._lock:
            self.untracked += 1

    def started(self, capture: SpanCapture) -> None:
        """A span started (its capture holds the live span until it ends)."""
        if len(self.open) < self._max_open:
            self.open[capture.span_id] = capture
        else:
            self._count_untracked()
        if capture.no_local_parent:
            if len(self.traces) < self._max_traces:
                self.traces.setdefault(capture.trace_id, TraceState())
            else:
                self._count_untracked()  # its calls go uncounted: hints may be off

    def ended(self, span: ReadableSpan) -> SpanCapture | None:
        """``span`` (the snapshot) ended: its capture from the start, or a new one if the
        start was not tracked, with the end filled in (``None`` for a span without a
        context)."""
        ids = span_ids(span)
        if ids is None:
            return None
        trace_id, span_id = ids
        capture = self.open.pop(span_id, None)
        if capture is None or capture.trace_id != trace_id:  # ids repeat in odd input
            capture = capture_start(span)
            if capture is None:
                return None
        capture_end(span, capture)  # before it is recorded: lookups read it complete
        if capture.no_local_parent:
            # The local root: its trace is done here, and so is all that was kept for it.
            self.traces.pop(capture.trace_id, None)
            return capture
        state = self.traces.get(capture.trace_id)
        if state is None:
            return capture
        state.sites.pop(span_id, None)
        if len(state.ended) < MAX_ENDED_PER_TRACE:
            state.ended.append(capture)
        else:
            self._count_untracked()
        return capture

    def forget(self, span_ids: list[int]) -> None:
        """Open spans that will never end (their run was evicted)."""
        for span_id in span_ids:
            capture = self.open.pop(span_id, None)
            if capture is not None and capture.no_local_parent:
                self.traces.pop(capture.trace_id, None)

    def clear(self) -> None:
        """Start afresh (in a forked child: the parent's spans are not ours)."""
        self.open.clear()
        self.traces.clear()
        self._lock = threading.Lock()


__all__ = ["MAX_ENDED_PER_TRACE", "LiveSpans", "Tally", "TraceState"]
