"""The hot path queues one untracked capture per span, never the SDK's span objects."""

from __future__ import annotations

import gc
import weakref

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

import otel_adaptive
from otel_adaptive import _span_capture as span_capture
from otel_adaptive._span_capture import SpanCapture, SpanEnded, capture_end, capture_start
from otel_adaptive.assembler import RunAssembler
from otel_adaptive.config import AdaptiveConfig
from spans import LLM, agent_attrs, make_processor, timed_span, usage


def test_queued_events_are_untracked_and_keep_no_sdk_span_alive() -> None:
    provider, processor, tracer = make_processor(max_export_batch_size=512)
    try:
        root = tracer.start_span("invoke_agent a", attributes=agent_attrs("a"))
        with trace.use_span(root, end_on_exit=True):
            chat = tracer.start_span("chat m", attributes=LLM)
            chat.set_attribute("gen_ai.usage.output_tokens", 7)  # set after the start
            chat.end()
        spans = [weakref.ref(root), weakref.ref(chat)]
        del root, chat
        gc.collect()
        # The exporter has not run yet (long schedule delay): all four events wait.
        events = list(processor._queue)
        assert [type(event) for event in events] == [SpanCapture] * 2 + [SpanEnded] * 2
        # Neither the events nor what they hold are the collector's to track.
        assert not any(gc.is_tracked(event) for event in events)
        assert not any(gc.is_tracked(event.capture) for event in events[2:])
        assert [ref() for ref in spans] == [None, None]  # the queue let the spans go
        assert processor.force_flush(10_000)
        [run] = processor.store.list_runs("a")
        assert [(call.kind, call.output_tokens) for call in run.calls] == [("llm", 7)]
    finally:
        provider.shutdown()


def test_an_ancestor_that_ended_in_the_application_is_read_from_its_captured_end() -> None:
    """The outer span becomes an agent only at its end, which the application reached
    before the assembler saw the inner agent end: the run is the outer agent's."""
    tracer = TracerProvider().get_tracer("t")
    outer = tracer.start_span("outer")
    outer_start = capture_start(outer)
    inner = tracer.start_span(
        "invoke_agent inner",
        attributes=agent_attrs("inner"),
        context=trace.set_span_in_context(outer),
    )
    inner_start = capture_start(inner)
    chat = tracer.start_span("chat m", attributes=LLM, context=trace.set_span_in_context(inner))
    chat_start = capture_start(chat)
    assert outer_start is not None and inner_start is not None and chat_start is not None
    chat.end()
    inner.end()
    outer.set_attributes(agent_attrs("outer"))
    outer.end()
    for span, captured in ((chat, chat_start), (inner, inner_start), (outer, outer_start)):
        capture_end(span, captured)
    assert outer_start.live is None and outer_start.ended  # only its end is left

    assembler = RunAssembler(AdaptiveConfig())
    for captured in (outer_start, inner_start, chat_start):
        assembler.span_started(captured)
    assembler.span_ended(chat_start)
    assembler.span_ended(inner_start)  # the outer node is still open here
    assert assembler.take_completed() == []
    assembler.span_ended(outer_start)
    assert [run.agent_id for run in assembler.take_completed()] == ["outer"]


def test_an_open_trace_counts_its_ended_calls_from_captures_and_lets_the_spans_go() -> None:
    """Hint lookups count the calls that ended in an open trace: from the captures, so
    the SDK's snapshot of an ended span goes at once, not when its trace ends."""
    provider, processor, tracer = make_processor()
    snapshots: list[weakref.ref[ReadableSpan]] = []

    class Watcher(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:  # the snapshot the plugin gets too
            snapshots.append(weakref.ref(span))

    provider.add_span_processor(Watcher())
    try:
        for _ in range(3):  # learn: the second call of a run makes 90 output tokens
            with timed_span(tracer, "solver", 0, 100, agent_attrs("solver")):
                for k in (1, 2):
                    with timed_span(tracer, "chat m", k * 10, k * 10 + 5, LLM,
                                    end_attributes=usage(45 * k)):  # fmt: skip
                        pass
        assert processor.force_flush(10_000)
        snapshots.clear()
        with timed_span(tracer, "solver", 0, 100, agent_attrs("solver")):
            with timed_span(tracer, "chat m", 10, 15, LLM, end_attributes=usage(45)):
                pass
            gc.collect()
            [snapshot] = snapshots
            assert snapshot() is None  # its trace is still open
            [state] = processor._live.traces.values()
            [capture] = state.ended
            assert type(capture) is SpanCapture and capture.ended and capture.live is None
            assert capture.name == "chat m" and capture.attributes is not None
            hints = otel_adaptive.current_hints()
            assert hints is not None and hints.osl == 90  # the next call is the second
    finally:
        provider.shutdown()


# --- reading the SDK's span fields directly --------------------------------------------------


def _public_view(span: ReadableSpan, capture: SpanCapture) -> tuple[object, ...]:
    """What the capture says, next to what the span's public properties say."""
    context, parent = span.context, span.parent
    assert context is not None
    return (
        (capture.trace_id, capture.span_id, capture.parent_id, capture.parent_remote),
        (
            context.trace_id,
            context.span_id,
            None if parent is None else parent.span_id,
            bool(parent is not None and parent.is_remote),
        ),
        (capture.start_name, capture.start_time, capture.end_name, capture.end_time),
        (span.name, span.start_time, span.name, span.end_time),
        (dict(capture.attributes or {}), capture.resource),
        (dict(span.attributes or {}), span.resource),
    )


class _Renamed(ReadableSpan):
    """A span class answering ``name`` itself: its fields are not the SDK's to read."""

    @property
    def name(self) -> str:
        return "renamed"


def _sdk_spans() -> list[ReadableSpan]:
    recorded: list[ReadableSpan] = []

    class Recorder(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            recorded.append(span)

    provider = TracerProvider()
    provider.add_span_processor(Recorder())
    tracer = provider.get_tracer("capture")
    remote = trace.SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=trace.TraceFlags(1))
    with tracer.start_as_current_span("outer", context=trace.set_span_in_context(
        trace.NonRecordingSpan(remote))):  # fmt: skip
        tracer.start_span("chat m", attributes={**LLM, **usage(3)}).end()
    provider.shutdown()
    return recorded


def test_captures_of_sdk_spans_say_what_their_public_properties_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = _sdk_spans()
    # The SDK's own classes take the direct path; that is what is checked against.
    assert all(span_capture._reads_sdk_fields(type(span)) for span in spans)
    assert span_capture._INDEXED_CONTEXT is trace.SpanContext
    for indexed in (True, False):  # span contexts read by index, and through properties
        if not indexed:
            monkeypatch.setattr(span_capture, "_INDEXED_CONTEXT", None)
        for span in spans:
            start = capture_start(span)
            assert start is not None
            view = _public_view(span, capture_end(span, start))
            assert view[0] == view[1] and view[2] == view[3] and view[4] == view[5]
    inner, outer = spans
    assert outer.parent is not None and outer.parent.is_remote  # both kinds of parent
    assert inner.parent is not None and not inner.parent.is_remote


def test_a_span_class_with_its_own_properties_is_read_through_them() -> None:
    [chat, _] = _sdk_spans()
    odd = _Renamed(
        name="chat m", context=chat.context, parent=chat.parent,
        attributes=dict(chat.attributes or {}), start_time=chat.start_time,
        end_time=chat.end_time, resource=chat.resource,
    )  # fmt: skip
    assert not span_capture._reads_sdk_fields(_Renamed)
    start = capture_start(odd)
    assert start is not None and start.start_name == "renamed"
    assert capture_end(odd, start).end_name == "renamed"
    assert chat.context is not None
    assert span_capture.span_ids(odd) == (chat.context.trace_id, chat.context.span_id)
