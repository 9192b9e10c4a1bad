"""The run assembler against hostile span streams (property-based) and edge cases."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from otel_adaptive import assembler as assembler_module
from otel_adaptive.assembler import RunAssembler
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.records import encode_run

TRACE = 0xABC
RESOURCE = Resource.create({"service.name": "prop"})


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ctx(span_id: int, remote: bool = False, trace_id: int = TRACE) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(1))


def _span(
    span_id: int,
    parent: int | None,
    name: str = "s",
    attributes: dict[str, Any] | None = None,
    start: int = 0,
    end: int | None = None,
    remote_parent: bool = False,
    trace_id: int = TRACE,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=_ctx(span_id, trace_id=trace_id),
        parent=None if parent is None else _ctx(parent, remote_parent, trace_id),
        attributes=attributes or {},
        start_time=start,
        end_time=end,
        resource=RESOURCE,
    )


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.text(max_size=3), st.floats()),
)
KEYS = st.sampled_from(
    [
        "gen_ai.operation.name",
        "openinference.span.kind",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.input_tokens",
        "llm.token_count.completion",
        "gen_ai.agent.name",
        "gen_ai.tool.name",
        "traceloop.span.kind",
        "gen_ai.output.messages",
        "adaptive.scope.type",
        "random.key",
    ]
)
KIND_ATTRS = st.sampled_from(
    [
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"},
        {"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 5},
        {"gen_ai.operation.name": "execute_tool"},
        {"openinference.span.kind": "CHAIN"},
        {"openinference.span.kind": "LLM"},
        {},
    ]
)


class HostileSpan(NamedTuple):
    """What a hostile stream draws for one span (its names are the stream's own)."""

    span_id: int
    parent: int | None
    attributes: dict[str, Any]
    start: int
    end: int  # may precede the start
    trace_id: int
    remote: bool

    def started(self, name: str) -> ReadableSpan:
        return _span(self.span_id, self.parent, name, {}, self.start, None, self.remote,
                     self.trace_id)  # fmt: skip

    def ended(self, name: str) -> ReadableSpan:
        return _span(self.span_id, self.parent, name, self.attributes, self.start, self.end,
                     self.remote, self.trace_id)  # fmt: skip


@st.composite
def hostile_spans(draw: st.DrawFn, ids: st.SearchStrategy[int]) -> HostileSpan:
    """An id from ``ids`` (a small pool: duplicates), a random parent (missing, remote,
    cycles), a kind's attributes with odd values beside them, odd times."""
    attributes = dict(draw(KIND_ATTRS))
    attributes.update(draw(st.dictionaries(KEYS, ODD_VALUES, max_size=3)))
    start = draw(st.integers(min_value=0, max_value=10**6))
    return HostileSpan(
        span_id=draw(ids),
        parent=draw(st.one_of(st.none(), ids)),
        attributes=attributes,
        start=start,
        end=start + draw(st.integers(min_value=-10, max_value=10**6)),
        trace_id=draw(st.sampled_from([TRACE, TRACE + 1])),
        remote=draw(st.booleans()),
    )


@st.composite
def span_streams(draw: st.DrawFn) -> list[tuple[str, ReadableSpan]]:
    """Hostile spans (see ``hostile_spans``), renamed at their end, with starts/ends
    dropped or in any order."""
    count = draw(st.integers(min_value=1, max_value=25))
    ids = st.integers(min_value=1, max_value=30)
    events: list[tuple[str, ReadableSpan]] = []
    for _ in range(count):
        drawn = draw(hostile_spans(ids))
        live = drawn.started("s")
        done = drawn.ended(draw(st.text(max_size=5)))
        if draw(st.integers(0, 9)) > 0:  # now and then a start is lost
            events.append(("start", live))
        if draw(st.integers(0, 9)) > 0:  # ... or a span never ends
            events.append(("end", done))
    return draw(st.permutations(events))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(stream=span_streams(), policy=st.sampled_from(["agent_or_root", "agent"]))
def test_any_span_stream_is_survived_with_bounded_state(
    stream: list[tuple[str, ReadableSpan]], policy: str
) -> None:
    clock = _Clock()
    config = AdaptiveConfig(run_root=policy, max_calls_per_run=8, run_timeout_seconds=1.0)  # type: ignore[arg-type]
    assembler = RunAssembler(config, clock=clock)
    for kind, span in stream:
        if kind == "start":
            assembler.span_started(span)
        else:
            assembler.span_ended(span)
    runs = assembler.take_completed()
    # A span is one call of a run (ids may be reused later; the run id then repeats
    # too, so a store keeps one copy); calls are LLM or tool calls in start order.
    for run in runs:
        assert len(run.calls) <= 8
        assert len({call.span_id for call in run.calls}) == len(run.calls)
        assert all(call.kind in ("llm", "tool") for call in run.calls)
        assert list(run.calls) == sorted(run.calls, key=lambda c: (c.start_ns, c.end_ns))
    assert assembler.counters.runs_completed == len(runs)
    # Whatever was left open is evicted once idle: memory returns to zero.
    clock.now += 2.0
    assembler.evict_idle()
    assert assembler.open_traces == 0


CALL_KINDS = st.sampled_from(
    [
        ("llm", {"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 5}),
        ("tool", {"gen_ai.operation.name": "execute_tool"}),
        ("function", {"openinference.span.kind": "CHAIN"}),
        ("unknown", {}),
    ]
)


@st.composite
def well_formed_runs(draw: st.DrawFn) -> tuple[list[tuple[str, ReadableSpan]], int, int]:
    """One agent run as real instrumentations emit it: a tree under an agent root, every
    span started before its children and ended after them (at start or at end: attributes
    may arrive late), siblings interleaved in any order. Returns the events, the number
    of LLM and of tool spans (none nested in an LLM span)."""
    count = draw(st.integers(min_value=1, max_value=20))
    kinds: dict[int, tuple[str, dict[str, Any]]] = {}
    parents: dict[int, int] = {}
    for span_id in range(2, count + 2):
        # Parents are the root or an earlier structural span: calls are leaves.
        structural = [1] + [s for s, (k, _) in kinds.items() if k in ("function", "unknown")]
        parents[span_id] = draw(st.sampled_from(structural))
        kinds[span_id] = draw(CALL_KINDS)
    root_attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "prop"}
    children: dict[int, list[int]] = {}
    for span_id, parent in parents.items():
        children.setdefault(parent, []).append(span_id)

    events: list[tuple[str, ReadableSpan]] = []
    clock = [0]

    def emit(span_id: int) -> None:
        parent = parents.get(span_id)
        _, attrs = kinds.get(span_id, ("agent", root_attrs))
        clock[0] += 1
        start = clock[0]
        late = draw(st.booleans())
        events.append(("start", _span(span_id, parent, "s", {} if late else attrs, start)))
        below = list(children.get(span_id, []))
        for child in draw(st.permutations(below)):
            emit(child)
        clock[0] += 1
        events.append(("end", _span(span_id, parent, f"n{span_id}", attrs, start, clock[0])))

    emit(1)
    llm = sum(1 for k, _ in kinds.values() if k == "llm")
    tools = sum(1 for k, _ in kinds.values() if k == "tool")
    return events, llm, tools


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(case=well_formed_runs())
def test_every_well_formed_run_is_emitted_once_with_every_call(
    case: tuple[list[tuple[str, ReadableSpan]], int, int],
) -> None:
    events, llm, tools = case
    assembler = RunAssembler(AdaptiveConfig(max_calls_per_run=64), clock=_Clock())
    for kind, span in events:
        if kind == "start":
            assembler.span_started(span)
        else:
            assembler.span_ended(span)
    [run] = assembler.take_completed()
    assert run.agent_id == "prop"
    assert (len(run.llm_calls()), len(run.tool_calls())) == (llm, tools)
    assert assembler.counters.calls_outside_runs == assembler.counters.spans_outside_runs == 0
    assert assembler.open_traces == 0


def test_parent_cycle_does_not_hang() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    a = _span(1, 2, "a", {"gen_ai.operation.name": "invoke_agent"}, 0, 10)
    b = _span(2, 1, "b", {"gen_ai.operation.name": "invoke_agent"}, 0, 10)
    for s in (a, b):
        assembler.span_started(s)
    assembler.span_ended(a)
    assembler.span_ended(b)
    assembler.take_completed()  # no hang, no exception is the assertion


def test_self_parented_span_is_a_local_root() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    span = _span(5, 5, "loop", {"gen_ai.operation.name": "chat"}, 0, 10)
    assembler.span_started(span)
    assembler.span_ended(span)
    assert assembler.open_traces == 0


def test_remote_parent_local_root_makes_a_run_but_an_unknown_local_parent_does_not() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    remote = _span(1, 99, "server", {}, 0, 10, remote_parent=True)
    call = _span(2, 1, "chat m", {"gen_ai.operation.name": "chat"}, 1, 5)
    for s in (remote, call):
        assembler.span_started(s)
    assembler.span_ended(call)
    assembler.span_ended(remote)
    [run] = assembler.take_completed()
    assert run.agent_id == "prop"
    assert [c.name for c in run.calls] == ["chat m"]


def test_span_with_unknown_local_parent_waits_for_it_then_is_evicted() -> None:
    clock = _Clock()
    assembler = RunAssembler(AdaptiveConfig(run_timeout_seconds=1.0), clock=clock)
    lost = _span(3, 77, "orphan", {"gen_ai.operation.name": "chat"}, 0, 10)
    assembler.span_ended(lost)
    assert assembler.take_completed() == []
    assert assembler.open_traces == 1
    clock.now += 2.0
    assembler.evict_idle()
    assert assembler.open_traces == 0
    assert assembler.counters.runs_evicted == 1


def test_child_ending_after_its_run_is_counted_late_when_runs_do_not_wait() -> None:
    assembler = RunAssembler(AdaptiveConfig(run_grace_seconds=0), clock=_Clock())
    root = _span(1, None, "agent", {"gen_ai.operation.name": "invoke_agent"}, 0, 10)
    stream = _span(2, 1, "chat m", {"gen_ai.operation.name": "chat"}, 1, 50)
    assembler.span_started(root)
    assembler.span_started(stream)
    assembler.span_ended(root)
    [run] = assembler.take_completed()
    assert run.calls == ()
    assembler.span_ended(stream)
    assert assembler.counters.late_spans == 1
    assert assembler.open_traces == 0


def test_stream_ending_after_its_run_root_joins_the_run() -> None:
    clock = _Clock()
    assembler = RunAssembler(AdaptiveConfig(run_grace_seconds=5), clock=clock)
    server = _span(9, None, "POST /chat", {}, 0, 12)
    root = _span(1, 9, "agent", {"gen_ai.operation.name": "invoke_agent"}, 0, 10)
    stream = _span(2, 1, "chat m", {"gen_ai.operation.name": "chat"}, 1, 50)
    for s in (server, root, stream):
        assembler.span_started(s)
    assembler.span_ended(root)
    assembler.span_ended(server)  # the request ends too: its run still waits
    assert assembler.take_completed() == []
    assembler.span_ended(stream)
    [run] = assembler.take_completed()
    assert [c.end_ns for c in run.calls] == [50]
    assert assembler.counters.late_spans == 0
    assert assembler.open_traces == 0


def test_run_waiting_for_a_stream_that_never_ends_is_emitted_after_the_grace_time() -> None:
    clock = _Clock()
    assembler = RunAssembler(AdaptiveConfig(run_grace_seconds=5), clock=clock)
    root = _span(1, None, "agent", {"gen_ai.operation.name": "invoke_agent"}, 0, 10)
    done = _span(3, 1, "chat m", {"gen_ai.operation.name": "chat"}, 1, 5)
    abandoned = _span(2, 1, "chat m", {"gen_ai.operation.name": "chat"}, 6, None)
    for s in (root, done, abandoned):
        assembler.span_started(s)
    assembler.span_ended(done)
    assembler.span_ended(root)
    clock.now += 4
    assembler.evict_idle()
    assert assembler.take_completed() == []
    clock.now += 2
    assembler.evict_idle()
    [run] = assembler.take_completed()
    assert len(run.calls) == 1


def test_end_without_start_is_still_assembled() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    root = _span(
        1, None, "agent", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "x"}, 0, 10
    )
    call = _span(2, 1, "chat m", {"gen_ai.operation.name": "chat"}, 1, 5)
    assembler.span_ended(call)
    assembler.span_ended(root)
    [run] = assembler.take_completed()
    assert (run.agent_id, len(run.calls)) == ("x", 1)


def test_duplicate_span_ids_are_counted_not_merged() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    root = _span(1, None, "agent", {"gen_ai.operation.name": "invoke_agent"}, 0, 10)
    call = _span(2, 1, "chat m", {"gen_ai.operation.name": "chat"}, 1, 5)
    assembler.span_started(root)
    assembler.span_started(call)
    assembler.span_started(call)
    assembler.span_ended(call)
    assembler.span_ended(call)
    assembler.span_ended(root)
    [run] = assembler.take_completed()
    assert len(run.calls) == 1
    assert assembler.counters.duplicate_spans == 2


def test_open_traces_are_capped() -> None:
    assembler = RunAssembler(AdaptiveConfig(max_open_traces=3), clock=_Clock())
    for trace_id in range(1, 11):
        assembler.span_started(_span(1, None, "agent", {}, 0, None, trace_id=trace_id))
    assert assembler.open_traces == 3
    assert assembler.counters.traces_evicted_capacity == 7
    assert len(assembler.take_evicted_span_ids()) == 7


def test_nested_agent_is_part_of_the_outer_run() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    outer = _span(
        1,
        None,
        "outer",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "boss"},
        0,
        100,
    )
    inner = _span(
        2,
        1,
        "inner",
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper"},
        1,
        50,
    )
    call = _span(3, 2, "chat m", {"gen_ai.operation.name": "chat"}, 2, 40)
    for s in (outer, inner, call):
        assembler.span_started(s)
    for s in (call, inner, outer):
        assembler.span_ended(s)
    [run] = assembler.take_completed()
    assert run.agent_id == "boss"
    assert run.calls[0].path == ("outer", "inner")


def test_names_with_lone_surrogates_are_made_encodable() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    root = _span(1, None, "agent\ud800", {"gen_ai.operation.name": "invoke_agent"}, 0, 10)
    call = _span(2, 1, "chat\udfff", {"gen_ai.operation.name": "chat"}, 1, 5)
    for s in (root, call):
        assembler.span_started(s)
    for s in (call, root):
        assembler.span_ended(s)
    [run] = assembler.take_completed()
    encode_run(run)  # raises on unencodable text
    assert run.agent_id == "agent?"
    assert run.calls[0].path == ("agent?",)


def _feed(assembler: RunAssembler, spans: list[ReadableSpan], end_order: list[int]) -> None:
    for span in spans:
        assembler.span_started(span)
    for index in end_order:
        assembler.span_ended(spans[index])


def test_agent_labelled_step_without_calls_stays_inside_the_run_around_it() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    spans = [
        _span(1, None, "pipeline", {"openinference.span.kind": "CHAIN"}, 0, 100),
        _span(2, 1, "format agent scratchpad", {"openinference.span.kind": "AGENT"}, 1, 2),
        _span(3, 1, "chat m", {"gen_ai.operation.name": "chat"}, 3, 50),
    ]
    _feed(assembler, spans, [1, 2, 0])
    [run] = assembler.take_completed()
    assert run.agent_id == "prop"
    assert [c.name for c in run.calls] == ["chat m"]


@pytest.mark.parametrize("remembered", [65536, 4], ids=["newer generation", "older generation"])
def test_span_started_under_a_finished_run_member_is_a_run_of_its_own(
    remembered: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a bound of 4 the two members fill the newer half: they are asked of the older.
    monkeypatch.setattr(assembler_module, "_REMEMBERED_MEMBERS", remembered)
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    first = [
        _span(1, None, "handle", {}, 0, 10),
        _span(2, 1, "chat m", {"gen_ai.operation.name": "chat"}, 1, 5),
    ]
    _feed(assembler, first, [1, 0])
    # An instrumentation left span 1 current after it ended: the next request starts under it.
    late = _span(3, 1, "chat m", {"gen_ai.operation.name": "chat"}, 20, 30)
    _feed(assembler, [late], [0])
    runs = assembler.take_completed()
    assert [len(r.calls) for r in runs] == [1, 1]
    assert assembler.open_traces == 0


def test_unknown_tool_call_count_comes_from_the_tool_spans_of_the_turn() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    chat = {"gen_ai.operation.name": "chat"}
    tool = {"gen_ai.operation.name": "execute_tool"}
    spans = [
        _span(1, None, "agent", {"gen_ai.operation.name": "invoke_agent"}, 0, 100),
        _span(2, 1, "chat m", chat, 1, 10),
        _span(3, 1, "execute_tool a", tool, 11, 20),
        _span(4, 1, "execute_tool b", tool, 12, 20),
        _span(5, 1, "chat m", chat, 21, 30),
        _span(6, 1, "chat m", {**chat, "gen_ai.response.finish_reasons": ("stop",)}, 31, 40),
    ]
    _feed(assembler, spans, [1, 2, 3, 4, 5, 0])
    [run] = assembler.take_completed()
    assert [c.tool_call_count for c in run.llm_calls()] == [2, 0, 0]


def test_agent_id_falls_back_to_the_inner_agents_span_name_before_the_roots() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    agent = {"openinference.span.kind": "AGENT"}
    spans = [
        _span(1, None, "Agent workflow", agent, 0, 100),
        _span(2, 1, "Assistant", agent, 1, 99),
        _span(3, 2, "chat m", {"gen_ai.operation.name": "chat"}, 2, 50),
    ]
    _feed(assembler, spans, [2, 1, 0])
    [run] = assembler.take_completed()
    assert run.agent_id == "Assistant"


def test_span_ids_reused_in_another_trace_do_not_look_finished() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    chat = {"gen_ai.operation.name": "chat"}
    first = [_span(1, None, "root", {}, 0, 10), _span(2, 1, "chat m", chat, 1, 5)]
    _feed(assembler, first, [1, 0])
    second = [
        _span(1, None, "root", {}, 0, 10, trace_id=TRACE + 1),
        _span(2, 1, "chat m", chat, 1, 5, trace_id=TRACE + 1),
    ]
    _feed(assembler, second, [1, 0])
    assert [len(r.calls) for r in assembler.take_completed()] == [1, 1]


@pytest.mark.parametrize(
    ("given_start", "stored_start"),
    [
        (1_700_000_000_000_000_000, 1_700_000_000_000_000_000),
        (1.7e18, 1_700_000_000_000_000_000),  # a float time in range: its integer part
        (-5, 0),  # before the epoch: not a span time
        (-5.0, 0),
        (float("nan"), 0),
        (float("inf"), 0),
        (2**63, 0),  # beyond OTLP's 64 bits
        (True, 0),
        ("1700", 0),
    ],
)
def test_a_span_time_that_is_not_one_is_replaced_never_stored(
    given_start: object, stored_start: int
) -> None:
    assembler = RunAssembler(AdaptiveConfig())
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}
    chat = {"gen_ai.operation.name": "chat"}
    end = 1_800_000_000_000_000_000
    for span in (
        _span(1, None, "invoke_agent a", {}, 1, None),
        _span(2, 1, "chat m", {}, given_start, None),  # type: ignore[arg-type]
    ):
        assembler.span_started(span)
    assembler.span_ended(_span(2, 1, "chat m", chat, given_start, end))  # type: ignore[arg-type]
    assembler.span_ended(_span(1, None, "invoke_agent a", agent, 1, end))
    [run] = assembler.take_completed()
    [call] = run.calls
    assert (call.start_ns, call.end_ns) == (stored_start, end)
    encode_run(run)  # and it stores
