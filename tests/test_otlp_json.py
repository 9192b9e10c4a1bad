"""Reading OTLP/JSON and SDK-shaped JSON spans, and replaying them through the processor."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor
from otel_adaptive.otlp_json import SpanReader, read_files
from otel_adaptive.replay import replay_spans

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
TRACE = "5b8efff798038103d269b633813fc60c"


# --- a small OTLP/JSON encoder (the shape the Collector's file exporter writes) -------------


def otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        if math.isinf(value):
            return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [otlp_value(item) for item in value]}}


def otlp_attributes(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": otlp_value(value)} for key, value in attributes.items()]


def otlp_span(span: ReadableSpan) -> dict[str, Any]:
    assert span.context is not None
    encoded: dict[str, Any] = {
        "traceId": f"{span.context.trace_id:032x}",
        "spanId": f"{span.context.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": otlp_attributes(span.attributes or {}),
        "status": {},
    }
    if span.parent is not None:
        encoded["parentSpanId"] = f"{span.parent.span_id:016x}"
        encoded["flags"] = 0x100 | (0x200 if span.parent.is_remote else 0) | 1
    return encoded


def otlp_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """One ExportTraceServiceRequest, one resourceSpans entry per distinct resource."""
    groups: dict[int, tuple[Resource, list[ReadableSpan]]] = {}
    for span in spans:
        groups.setdefault(id(span.resource), (span.resource, []))[1].append(span)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": otlp_attributes(resource.attributes)},
                "scopeSpans": [
                    {"scope": {"name": "tests"}, "spans": [otlp_span(s) for s in group]}
                ],
            }
            for resource, group in groups.values()
        ]
    }


def make_span(
    name: str,
    span_id: int,
    start_ms: float,
    end_ms: float,
    parent_id: int | None = None,
    attributes: Mapping[str, Any] | None = None,
    resource: Resource | None = None,
    trace_id: int = int(TRACE, 16),
    parent_remote: bool = False,
) -> ReadableSpan:
    parent = None
    if parent_id is not None:
        parent = SpanContext(trace_id, parent_id, is_remote=parent_remote)
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1)),
        parent=parent,
        resource=resource or Resource({"service.name": "svc"}),
        attributes=dict(attributes or {}),
        start_time=T0 + int(start_ms * MS),
        end_time=T0 + int(end_ms * MS),
    )


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "replayed"}
LLM = {"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 42}
TOOL = {"gen_ai.operation.name": "execute_tool"}


def agent_run(trace_id: int, offset_ms: float = 0.0) -> list[ReadableSpan]:
    """An agent span, an LLM call, two tools in parallel, a second LLM call."""

    def at(ms: float) -> float:
        return offset_ms + ms

    return [
        make_span("agent", 1, at(0), at(100), None, AGENT, trace_id=trace_id),
        make_span("chat", 2, at(1), at(20), 1, LLM, trace_id=trace_id),
        make_span(
            "search",
            3,
            at(21),
            at(50),
            1,
            {**TOOL, "gen_ai.tool.name": "search"},
            trace_id=trace_id,
        ),
        make_span(
            "lookup",
            4,
            at(22),
            at(45),
            1,
            {**TOOL, "gen_ai.tool.name": "lookup"},
            trace_id=trace_id,
        ),
        make_span("chat", 5, at(60), at(100), 1, LLM, trace_id=trace_id),
    ]


def read(text: str) -> SpanReader:
    reader = SpanReader()
    reader.read_text(text, "input.jsonl")
    return reader


def by_span_id(spans: Sequence[ReadableSpan]) -> dict[int, ReadableSpan]:
    result = {}
    for span in spans:
        assert span.context is not None
        result[span.context.span_id] = span
    return result


# --- OTLP/JSON ------------------------------------------------------------------------------


def test_an_otlp_request_line_becomes_spans_with_resource_scope_ids_times_and_attributes() -> None:
    line = json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "openinference", "version": "1.2"},
                            "spans": [
                                {
                                    "traceId": TRACE,
                                    "spanId": "eee19b7ec3c1b174",
                                    "parentSpanId": "eee19b7ec3c1b173",
                                    "name": "chat",
                                    "kind": 3,
                                    "startTimeUnixNano": "1544712660000000001",
                                    "endTimeUnixNano": 1544712661000000002,
                                    "attributes": [
                                        {"key": "s", "value": {"stringValue": "x"}},
                                        {"key": "i", "value": {"intValue": "-7"}},
                                        {"key": "d", "value": {"doubleValue": 0.5}},
                                        {"key": "b", "value": {"boolValue": True}},
                                        {
                                            "key": "a",
                                            "value": {
                                                "arrayValue": {
                                                    "values": [
                                                        {"stringValue": "p"},
                                                        {"stringValue": "q"},
                                                    ]
                                                }
                                            },
                                        },
                                        {"key": "m", "value": {"kvlistValue": {"values": []}}},
                                    ],
                                    "status": {"code": 2, "message": "boom"},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )
    reader = read(line)
    assert reader.rejections == []
    [span] = reader.spans()
    assert span.name == "chat"
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == int(TRACE, 16)
    assert span.context.span_id == 0xEEE19B7EC3C1B174
    assert span.parent.span_id == 0xEEE19B7EC3C1B173
    assert span.parent.is_remote  # not in the input: it lives in another process
    assert span.start_time == 1544712660000000001
    assert span.end_time == 1544712661000000002
    assert dict(span.attributes or {}) == {"s": "x", "i": -7, "d": 0.5, "b": True, "a": ("p", "q")}
    assert reader.attributes_skipped == 1  # the kvlist has no span-attribute equivalent
    assert span.resource.attributes["service.name"] == "api"
    assert span.kind is SpanKind.CLIENT
    assert span.status.description == "boom"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "openinference"


def test_snake_case_names_and_base64_ids_of_the_generic_protobuf_mapping_are_read() -> None:
    line = json.dumps(
        {
            "resource_spans": [
                {
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": "W47/95gDgQPSabYzgT/GDA==",
                                    "span_id": "7uGbfsPBsXQ=",
                                    "name": "x",
                                    "start_time_unix_nano": 5,
                                    "end_time_unix_nano": 6,
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    reader = read(line)
    assert reader.rejections == []
    [span] = reader.spans()
    assert span.context is not None
    assert span.context.trace_id == int(TRACE, 16)
    assert span.context.span_id == 0xEEE19B7EC3C1B174


def test_a_parent_is_local_only_when_the_input_holds_it_for_the_same_service() -> None:
    gateway = Resource({"service.name": "gateway"})
    agents = Resource({"service.name": "agents"})
    spans = [
        make_span("edge", 1, 0, 10, None, resource=gateway),
        make_span("agent", 2, 1, 9, 1, AGENT, resource=agents),
        make_span("chat", 3, 2, 8, 2, LLM, resource=agents),
        make_span("orphan", 4, 2, 8, 99, LLM, resource=agents),
    ]
    request = otlp_request(spans)
    for group in request["resourceSpans"]:
        for span in group["scopeSpans"][0]["spans"]:
            span.pop("flags", None)  # older SDKs do not say whether the parent is remote
    parsed = by_span_id(read(json.dumps(request)).spans())
    assert parsed[1].parent is None
    remote = {span_id: parsed[span_id].parent.is_remote for span_id in (2, 3, 4)}  # type: ignore[union-attr]
    assert remote == {2: True, 3: False, 4: True}


def test_otlp_flags_say_whether_the_parent_is_remote_when_they_can() -> None:
    spans = [
        make_span("a", 1, 0, 10),
        make_span("b", 2, 1, 9, 1, parent_remote=True),
        make_span("c", 3, 1, 9, 77, parent_remote=False),
    ]
    parsed = by_span_id(read(json.dumps(otlp_request(spans))).spans())
    assert parsed[2].parent is not None and parsed[2].parent.is_remote
    assert parsed[3].parent is not None and not parsed[3].parent.is_remote


def _otlp_line(span: dict[str, Any]) -> str:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


def _good_span(**changes: Any) -> dict[str, Any]:
    span = {
        "traceId": TRACE,
        "spanId": "00000000000000aa",
        "name": "ok",
        "startTimeUnixNano": "10",
        "endTimeUnixNano": "20",
    }
    span.update(changes)
    return {k: v for k, v in span.items() if v is not None}


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("this is not json", "not valid JSON"),
        ('{"resourceSpans": [', "not valid JSON"),
        ('{"resourceSpans": []} trailing', "unexpected text after the JSON value"),
        ('{"hello": "world"}', "not an OTLP ExportTraceServiceRequest"),
        ("42", "not an OTLP ExportTraceServiceRequest"),
        ('{"resourceSpans": {"not": "a list"}}', "resourceSpans: expected an array"),
        (_otlp_line(_good_span(traceId="xyz")), "traceId: expected 32 hex digits"),
        (_otlp_line(_good_span(traceId="0" * 32)), "traceId: all zeros"),
        (_otlp_line(_good_span(spanId=None)), "spanId: expected a hex string"),
        (_otlp_line(_good_span(parentSpanId="12")), "parentSpanId: expected 16 hex digits"),
        (_otlp_line(_good_span(name=3)), "name: expected a string"),
        (_otlp_line(_good_span(startTimeUnixNano=None)), "startTimeUnixNano: missing"),
        (
            _otlp_line(_good_span(startTimeUnixNano="soon")),
            "startTimeUnixNano: expected an integer",
        ),
        (
            _otlp_line(_good_span(endTimeUnixNano="5")),
            "endTimeUnixNano is before startTimeUnixNano",
        ),
        (_otlp_line(_good_span(attributes={"k": "v"})), "attributes: expected an array"),
        (_otlp_line(_good_span(attributes=[{"value": {}}])), "attributes[0]: expected"),
    ],
)
def test_a_malformed_line_is_rejected_with_its_number_and_reason_and_the_rest_is_read(
    bad_line: str, reason: str
) -> None:
    good = _otlp_line(_good_span())
    reader = read("\n".join([good, bad_line, good.replace("aa", "bb")]) + "\n")
    assert [(r.source, r.line) for r in reader.rejections] == [("input.jsonl", 2)]
    assert reason in reader.rejections[0].reason
    assert reader.span_count == 2


def test_one_bad_span_rejects_only_itself_and_names_where_it_is() -> None:
    request = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [_good_span(), _good_span(spanId="nope")]}]},
        ]
    }
    reader = read("\n\n" + json.dumps(request))
    [rejection] = reader.rejections
    assert rejection.line == 3
    assert rejection.reason.startswith("resourceSpans[0].scopeSpans[0].spans[1]: spanId")
    assert reader.span_count == 1


def test_an_unreadable_file_is_one_rejection_and_other_files_are_still_read(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(_otlp_line(_good_span()) + "\n")
    reader = read_files([tmp_path / "missing.jsonl", good])
    assert [(Path(r.source).name, r.line) for r in reader.rejections] == [("missing.jsonl", 0)]
    assert "cannot read the file" in reader.rejections[0].reason
    assert reader.span_count == 1


# --- SDK span objects -----------------------------------------------------------------------


def _sdk_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-shape"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("agent", attributes=AGENT):
        with tracer.start_as_current_span("chat", attributes={**LLM, "tags": ["a", "b"]}):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _assert_same_spans(parsed: Sequence[ReadableSpan], original: Sequence[ReadableSpan]) -> None:
    got = by_span_id(parsed)
    want = by_span_id(original)
    assert got.keys() == want.keys()
    for span_id, span in want.items():
        twin = got[span_id]
        assert twin.name == span.name
        assert twin.context is not None and span.context is not None
        assert twin.context.trace_id == span.context.trace_id
        assert (twin.parent.span_id if twin.parent else None) == (
            span.parent.span_id if span.parent else None
        )
        assert dict(twin.attributes or {}) == dict(span.attributes or {})
        assert dict(twin.resource.attributes) == dict(span.resource.attributes)
        # to_json keeps microseconds only.
        assert abs((twin.start_time or 0) - (span.start_time or 0)) <= 1000
        assert abs((twin.end_time or 0) - (span.end_time or 0)) <= 1000


def test_the_console_exporters_pretty_printed_spans_are_read_one_after_another() -> None:
    original = _sdk_spans()
    reader = read("\n".join(span.to_json() for span in original) + "\n")
    assert reader.rejections == []
    assert reader.records_read == 2
    _assert_same_spans(reader.spans(), original)
    child = next(s for s in reader.spans() if s.parent is not None)
    assert child.parent is not None and not child.parent.is_remote


def test_json_arrays_of_spans_are_read_on_one_line_or_pretty_printed_over_many() -> None:
    original = _sdk_spans()
    objects = [json.loads(span.to_json()) for span in original]
    for text in (json.dumps(objects), json.dumps(objects, indent=2)):
        reader = read(text)
        assert reader.rejections == []
        _assert_same_spans(reader.spans(), original)


def test_a_bad_span_in_an_array_is_rejected_by_its_index() -> None:
    objects = [json.loads(span.to_json()) for span in _sdk_spans()]
    objects[1]["context"]["span_id"] = "0x12"
    objects.append("not a span")
    reader = read(json.dumps(objects))
    reasons = [r.reason for r in reader.rejections]
    assert reasons[0].startswith("[1]: context.span_id: expected 16 hex digits")
    assert reasons[1].startswith("[2]: not a span object")
    assert reader.span_count == 1


def test_after_a_broken_pretty_printed_object_reading_resumes_at_the_next_object() -> None:
    first, second = (span.to_json() for span in _sdk_spans())
    broken = first.replace('"name"', "name", 1)  # invalid JSON on its second line
    reader = read(broken + "\n" + second + "\n")
    assert [r.line for r in reader.rejections] == [1]
    assert reader.span_count == 1


# --- replay -----------------------------------------------------------------------------------


def _processor(**config: Any) -> AdaptiveSpanProcessor:
    config.setdefault("schedule_delay_millis", 60_000)
    return AdaptiveSpanProcessor(AdaptiveConfig(**config))


def test_replayed_runs_are_learned_as_if_they_had_just_happened() -> None:
    spans = agent_run(0xA1) + agent_run(0xA2, offset_ms=500)
    reader = read(json.dumps(otlp_request(spans)))
    processor = _processor()
    try:
        assert replay_spans(reader.spans(), processor)
        runs = processor.store.list_runs("replayed")
        assert len(runs) == 2
        run = runs[0]
        assert [c.kind for c in run.calls] == ["llm", "tool", "tool", "llm"]
        assert run.calls[0].output_tokens == 42
        plan = processor.store.load_plan("replayed")
        assert [g.tool_names for g in plan.groups] == [("lookup", "search")]
        assert processor.stats()["late_spans"] == 0
    finally:
        processor.shutdown()


def test_a_child_ending_with_its_parent_is_replayed_before_the_parent_ends() -> None:
    spans = [
        make_span("chat", 2, 5, 10, 1, LLM),  # listed first, ends at the same time as the root
        make_span("agent", 1, 0, 10, None, AGENT),
    ]
    processor = _processor()
    try:
        replay_spans(spans, processor)
        [run] = processor.store.list_runs("replayed")
        assert [c.name for c in run.calls] == ["chat"]
        assert processor.stats()["late_spans"] == 0
    finally:
        processor.shutdown()


def test_replay_flushes_as_it_goes_so_a_small_queue_drops_nothing() -> None:
    spans = [span for n in range(40) for span in agent_run(0x100 + n, offset_ms=n * 200)]
    processor = _processor(max_queue_size=16, max_export_batch_size=8)
    try:
        assert replay_spans(spans, processor)
        stats = processor.stats()
        assert stats["events_dropped"] == 0
        assert processor.store.run_count("replayed") == 40
    finally:
        processor.shutdown()


# --- properties -------------------------------------------------------------------------------

_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_primitive = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    _int64,
    st.floats(allow_nan=False),
)
_attribute_value = st.one_of(
    _primitive,
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
    st.lists(_int64, max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(st.floats(allow_nan=False), max_size=3).map(tuple),
)
_attributes = st.dictionaries(st.text(min_size=1, max_size=10), _attribute_value, max_size=6)
_ids = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def span_batches(draw: st.DrawFn) -> list[ReadableSpan]:
    resource = Resource({"service.name": draw(st.text(min_size=1, max_size=8))})
    trace_id = draw(st.integers(min_value=1, max_value=2**128 - 1))
    span_ids = draw(st.lists(_ids, min_size=1, max_size=5, unique=True))
    spans = []
    for span_id in span_ids:
        # From 1970 + 12 days to 2043: to_json's float seconds stay within a microsecond.
        start = draw(st.integers(min_value=10**15, max_value=2**61))
        end = start + draw(st.integers(min_value=0, max_value=10**12))
        parent_id = draw(st.one_of(st.none(), _ids))
        parent = (
            None
            if parent_id is None
            else SpanContext(trace_id, parent_id, is_remote=draw(st.booleans()))
        )
        spans.append(
            ReadableSpan(
                name=draw(st.text(max_size=20)),
                context=SpanContext(trace_id, span_id, is_remote=False),
                parent=parent,
                resource=resource,
                attributes=draw(_attributes),
                kind=draw(st.sampled_from(list(SpanKind))),
                start_time=start,
                end_time=end,
            )
        )
    return spans


@settings(max_examples=60, deadline=None)
@given(span_batches())
def test_otlp_round_trip_keeps_every_field_the_processor_reads(spans: list[ReadableSpan]) -> None:
    reader = read(json.dumps(otlp_request(spans)))
    assert reader.rejections == []
    parsed = by_span_id(reader.spans())
    for span in spans:
        assert span.context is not None
        twin = parsed[span.context.span_id]
        assert twin.name == span.name
        assert twin.context is not None and twin.context.trace_id == span.context.trace_id
        assert twin.start_time == span.start_time and twin.end_time == span.end_time
        assert dict(twin.attributes or {}) == dict(span.attributes or {})
        assert dict(twin.resource.attributes) == dict(span.resource.attributes)
        assert twin.kind == span.kind
        if span.parent is None:
            assert twin.parent is None
        else:
            assert twin.parent is not None
            assert (twin.parent.span_id, twin.parent.is_remote) == (
                span.parent.span_id,
                span.parent.is_remote,
            )


@settings(max_examples=40, deadline=None)
@given(span_batches())
def test_sdk_to_json_round_trip(spans: list[ReadableSpan]) -> None:
    reader = read("\n".join(span.to_json() for span in spans))
    assert reader.rejections == []
    _assert_same_spans(reader.spans(), spans)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=60), _json.map(json.dumps)), max_size=6))
def test_reading_never_raises_on_arbitrary_text_or_json(lines: list[str]) -> None:
    reader = read("\n".join(lines))
    reader.spans()
    for rejection in reader.rejections:
        assert rejection.line >= 1 and rejection.reason


def _containers(document: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) slot in a JSON document."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield document, key
            yield from _containers(value)
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield document, index
            yield from _containers(value)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_reading_never_raises_when_any_part_of_a_valid_request_is_replaced(
    data: st.DataObject,
) -> None:
    document = otlp_request(agent_run(0xBEEF))
    slots = list(_containers(document))
    container, key = data.draw(st.sampled_from(slots))
    container[key] = data.draw(_json)
    reader = read(json.dumps(document))
    assert len(reader.spans()) <= 5
    assert all(rejection.line == 1 for rejection in reader.rejections)
