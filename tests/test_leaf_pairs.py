"""A span's start with its end queued right behind it is assembled in one step.

The exporter hands such a pair to ``RunAssembler.span_started_and_ended``; whatever
the stream (duplicate ids, lost starts or ends, cycles, odd attributes, runs that
wait for streams), the result must be exactly what the two events give one by one:
the same runs, the same counters, the same open state.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from otel_adaptive import AdaptiveSpanProcessor
from otel_adaptive._span_capture import SpanCapture, capture_end, capture_start
from otel_adaptive.assembler import RunAssembler
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.exporter import FlushRequest
from otel_adaptive.records import encode_run
from spans import LLM, agent_attrs
from test_assembler import _Clock, hostile_spans

#: One queued event: ("start" | "end", the index of its span's capture).
_Event = tuple[str, int]


@st.composite
def capture_streams(draw: st.DrawFn) -> tuple[list[SpanCapture], list[_Event]]:
    """Spans from a small id pool (duplicates, cycles), each start and end maybe lost,
    in any order; many ends moved right behind their start, as leaf spans queue them."""
    count = draw(st.integers(min_value=1, max_value=20))
    ids = st.integers(min_value=1, max_value=12)
    captures: list[SpanCapture] = []
    events: list[_Event] = []
    ends: list[ReadableSpan | None] = []
    for i in range(count):
        drawn = draw(hostile_spans(ids))
        name = draw(st.sampled_from(["s", "agent", "chat m", "tool"]))
        capture = capture_start(drawn.started(name))
        assert capture is not None
        captures.append(capture)
        done = drawn.ended(name)
        ends.append(done if draw(st.integers(0, 9)) > 0 else None)  # now and then never ends
        if draw(st.integers(0, 9)) > 0:  # ... or its start is lost
            events.append(("start", i))
        if ends[i] is not None:
            events.append(("end", i))
    order: list[_Event] = list(draw(st.permutations(events)))
    for i in draw(st.sets(st.integers(0, count - 1))):
        if ("start", i) in order and ("end", i) in order:
            order.remove(("end", i))
            order.insert(order.index(("start", i)) + 1, ("end", i))
    for capture, done in zip(captures, ends, strict=True):
        if done is not None:  # ended in the application before the exporter looks
            capture_end(done, capture)
    return captures, order


def _feed(
    captures: list[SpanCapture], order: list[_Event], *, pairs: bool, policy: str, cap: int
) -> tuple[Any, ...]:
    clock = _Clock()
    config = AdaptiveConfig(
        run_root=policy,  # type: ignore[arg-type]
        run_timeout_seconds=1.0,
        max_spans_per_trace=cap,
    )
    assembler = RunAssembler(config, clock=clock)
    paired = 0
    i = 0
    while i < len(order):
        kind, index = order[i]
        i += 1
        capture = captures[index]
        if kind == "end":
            assembler.span_ended(capture)
        elif pairs and i < len(order) and order[i] == ("end", index):
            i += 1
            paired += 1
            assembler.span_started_and_ended(capture)
        else:
            assembler.span_started(capture)
    runs = [encode_run(run) for run in assembler.take_completed()]
    open_state = {
        trace_id: sorted((span_id, node.state) for span_id, node in trace.nodes.items())
        for trace_id, trace in assembler._traces.items()
    }
    clock.now += 2.0
    assembler.evict_idle()
    runs += [encode_run(run) for run in assembler.take_completed()]
    return runs, asdict(assembler.counters), open_state, paired


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    stream=capture_streams(),
    policy=st.sampled_from(["agent_or_root", "agent"]),
    cap=st.sampled_from([3, 4096]),  # 3: traces evicted at capacity mid-stream
)
def test_a_start_and_end_in_one_step_equal_the_two_events_one_by_one(
    stream: tuple[list[SpanCapture], list[_Event]], policy: str, cap: int
) -> None:
    captures, order = stream
    one_by_one = _feed(captures, order, pairs=False, policy=policy, cap=cap)
    in_pairs = _feed(captures, order, pairs=True, policy=policy, cap=cap)
    assert in_pairs[:3] == one_by_one[:3]


def test_the_exporter_takes_leaf_pairs_in_one_step_within_the_batch_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Leaf spans go through the one-step path; a batch never takes more than its size."""
    pairs = 0
    original = RunAssembler.span_started_and_ended

    def counting(self: RunAssembler, capture: SpanCapture) -> None:
        nonlocal pairs
        pairs += 1
        original(self, capture)

    monkeypatch.setattr(RunAssembler, "span_started_and_ended", counting)
    # Batches of 3 events: a pair that straddles two batches goes as two events.
    processor = AdaptiveSpanProcessor(max_export_batch_size=3, schedule_delay_millis=60_000)
    taken: list[int] = []
    exporter = processor._exporter
    take = exporter._take_batch

    def recording(flushes: list[FlushRequest]) -> int:
        took = take(flushes)
        taken.append(took)
        return took

    monkeypatch.setattr(exporter, "_take_batch", recording)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("pairs")
    with tracer.start_as_current_span("agent", attributes=agent_attrs("pairs")):
        for _ in range(4):
            tracer.start_span("chat m", attributes=LLM).end()
    assert processor.force_flush(10_000)
    runs = processor.store.list_runs("pairs")
    assert len(runs) == 1 and len(runs[0].calls) == 4
    stats = processor.stats()
    assert stats["spans_started"] == stats["spans_ended"] == 5
    assert pairs >= 1
    assert max(taken) <= 3
    provider.shutdown()
