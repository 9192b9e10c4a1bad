"""Replay finished spans through an :class:`AdaptiveSpanProcessor` as if they were live.

:func:`replay_spans` replays a list at once. :class:`TraceReplayer` takes spans
as they are read and replays them trace by trace, so a file of any size is
replayed in bounded memory. Exporters write spans roughly in the order they
end, a batch at a time, so a trace is replayed once its root span was read and
a span ending :data:`LATE_SPAN_GRACE_SECONDS` after the root was read too (its
children, which end before it, have been written by then); the oldest traces
are replayed early when too many spans wait, and all the rest at the end.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Final, cast

from opentelemetry.sdk.trace import ReadableSpan, Span

from otel_adaptive.otlp_json import SpanData, build_spans
from otel_adaptive.processor import AdaptiveSpanProcessor

#: Spans held while waiting for their trace's root, at most.
MAX_BUFFERED_SPANS: Final = 50_000
#: How much later than a root's end a span must end before the root's trace is replayed.
LATE_SPAN_GRACE_SECONDS: Final = 60
_FLUSH_TIMEOUT_MILLIS: Final = 60_000


class _Feeder:
    """Hands events to a processor, flushing whenever half its queue is used."""

    def __init__(self, processor: AdaptiveSpanProcessor, timeout_millis: int) -> None:
        self._processor = processor
        self._timeout = timeout_millis
        self._room = max(processor.config.max_queue_size // 2, 1)
        self._queued = 0

    def feed(self, spans: Sequence[ReadableSpan]) -> None:
        """Starts and ends on one timeline (starts by start time, ends by end time; at
        equal times parents start before and end after their children)."""
        depths = _depths(spans)
        events: list[tuple[int, int, int, int]] = []
        for index, span in enumerate(spans):
            start = span.start_time or 0
            end = max(span.end_time or start, start)
            events.append((start, 0, depths[index], index))
            events.append((end, 1, -depths[index], index))
        events.sort()
        for _, is_end, _, index in events:
            span = spans[index]
            if is_end:
                self._processor.on_end(span)
            else:
                # The processor reads a live span only through the ReadableSpan interface.
                self._processor.on_start(cast(Span, span))
            self._queued += 1
            if self._queued >= self._room:
                self._processor.force_flush(self._timeout)
                self._queued = 0

    def flush(self) -> bool:
        self._queued = 0
        return self._processor.force_flush(self._timeout)


def replay_spans(
    spans: Sequence[ReadableSpan],
    processor: AdaptiveSpanProcessor,
    *,
    timeout_millis: int = _FLUSH_TIMEOUT_MILLIS,
) -> bool:
    """Feed finished spans to ``processor`` as if they were happening now, then flush.

    The processor sees the stream a live application would have produced, and no
    event is dropped. Returns the final ``force_flush`` result: True when every
    completed run reached the store.
    """
    feeder = _Feeder(processor, timeout_millis)
    feeder.feed(spans)
    return feeder.flush()


class TraceReplayer:
    """Replays spans trace by trace as they are read (see the module docstring).

    Call :meth:`add` for each span read, :meth:`end_of_record` after each record and
    :meth:`finish` at the end. A span read after its trace was replayed is replayed
    with the spans that come after it: its parent is then remote, as it is to a
    process that sees only part of a trace.
    """

    def __init__(
        self,
        processor: AdaptiveSpanProcessor,
        *,
        max_buffered_spans: int = MAX_BUFFERED_SPANS,
        timeout_millis: int = _FLUSH_TIMEOUT_MILLIS,
    ) -> None:
        self._feeder = _Feeder(processor, timeout_millis)
        self._max_buffered = max_buffered_spans
        self._traces: dict[int, list[SpanData]] = {}  # oldest first
        self._roots: list[tuple[int, int]] = []  # a heap of (root end, trace id)
        self._latest_end = 0
        self._buffered = 0
        self.spans_replayed = 0
        self.traces_replayed = 0
        self.traces_replayed_early = 0
        """Traces replayed before their root was read, to keep memory bounded."""

    def add(self, span: SpanData) -> None:
        self._traces.setdefault(span.trace_id, []).append(span)
        self._buffered += 1
        self._latest_end = max(self._latest_end, span.end_ns)
        if span.parent_id is None:
            heapq.heappush(self._roots, (span.end_ns, span.trace_id))

    def end_of_record(self) -> None:
        """Replay the traces that are complete, and the oldest while too many spans wait."""
        horizon = self._latest_end - LATE_SPAN_GRACE_SECONDS * 1_000_000_000
        while self._roots and self._roots[0][0] <= horizon:
            self._replay(heapq.heappop(self._roots)[1])
        while self._buffered > self._max_buffered:
            self._replay(next(iter(self._traces)))
            self.traces_replayed_early += 1

    def finish(self) -> bool:
        """Replay every trace still waiting and flush; True when all reached the store."""
        for trace_id in list(self._traces):
            self._replay(trace_id)
        self._roots.clear()
        return self._feeder.flush()

    def _replay(self, trace_id: int) -> None:
        datas = self._traces.pop(trace_id, None)
        if not datas:
            return
        self._buffered -= len(datas)
        self._feeder.feed(build_spans(datas))
        self.spans_replayed += len(datas)
        self.traces_replayed += 1


def _depths(spans: Sequence[ReadableSpan]) -> list[int]:
    """Each span's depth below its outermost local ancestor present in ``spans``."""
    parents: dict[tuple[int, int], int | None] = {}
    for span in spans:
        context = span.context
        if context is None:
            continue
        parent = span.parent
        parents[(context.trace_id, context.span_id)] = (
            parent.span_id if parent is not None and not parent.is_remote else None
        )
    memo: dict[tuple[int, int], int] = {}
    return [
        0
        if span.context is None
        else _depth_of((span.context.trace_id, span.context.span_id), parents, memo)
        for span in spans
    ]


def _depth_of(
    key: tuple[int, int],
    parents: Mapping[tuple[int, int], int | None],
    memo: dict[tuple[int, int], int],
) -> int:
    chain: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    current: tuple[int, int] | None = key
    base = 0
    while current is not None:
        if current in memo:
            base = memo[current] + 1
            break
        if current in seen or current not in parents:
            break
        seen.add(current)
        chain.append(current)
        parent_id = parents[current]
        current = None if parent_id is None else (current[0], parent_id)
    for depth, node in enumerate(reversed(chain), start=base):
        memo[node] = depth
    return memo.get(key, 0)


__all__ = ["MAX_BUFFERED_SPANS", "TraceReplayer", "replay_spans"]
