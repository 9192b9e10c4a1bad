"""The assembler's node states: the legal transitions, and runs over random interleavings.

Every change of a node's state goes through ``_run_tree.move``; an illegal one is refused
and counted, never raised. Over random interleavings of whole runs (calls that end after
their parent, as streams do, included) every node is always in a state consistent with
what it has seen, no transition is ever refused, and the runs equal those a
straightforward reference builds from the finished trees.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from otel_adaptive import _run_tree, conventions, identity
from otel_adaptive import assembler as assembler_module
from otel_adaptive._run_tree import (
    INITIAL_STATES,
    LEGAL_TRANSITIONS,
    Node,
    NodeState,
    move,
)
from otel_adaptive._span_capture import plain_attributes as _plain_attributes
from otel_adaptive.assembler import AssemblerCounters, RunAssembler
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.records import STRUCTURAL_SCOPES, CallRecord, RunRecord
from spans import LLM, agent_attrs, make_processor
from test_assembler import _Clock, _span, span_streams

ALL_PAIRS = list(itertools.product(NodeState, NodeState))


def _node(state: NodeState) -> Node:
    return Node(1, None, True, 1, "n", "n", state=state)


# --- the transition table ---------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=lambda s: s.name)
def test_move_allows_exactly_the_legal_transitions(old: NodeState, new: NodeState) -> None:
    counters = AssemblerCounters()
    node = _node(old)
    legal = new in LEGAL_TRANSITIONS[old]
    assert move(node, new, counters) is legal
    assert node.state is (new if legal else old)  # refused: left as it was
    assert counters.illegal_transitions == (0 if legal else 1)


def test_the_table_covers_every_state_and_ended_states_never_reopen() -> None:
    assert set(LEGAL_TRANSITIONS) == set(NodeState)
    assert {NodeState.OPEN, NodeState.DETACHED} == INITIAL_STATES
    for old, targets in LEGAL_TRANSITIONS.items():
        assert old not in targets
        if old >= NodeState.ENDED:
            assert all(new >= NodeState.ENDED for new in targets)


def test_refused_transitions_inside_the_assembler_are_counted_never_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a table that refuses everything, a run goes through without an exception
    reaching the caller, every refusal is counted, and memory still returns to zero."""
    monkeypatch.setattr(_run_tree, "LEGAL_TRANSITIONS", {s: frozenset() for s in NodeState})
    clock = _Clock()
    assembler = RunAssembler(AdaptiveConfig(run_timeout_seconds=1.0), clock=clock)
    for span_id, parent in ((1, None), (2, 1), (3, 1)):
        assembler.span_started(_span(span_id, parent, start=span_id))
    assembler.span_ended(_span(2, 1, "chat", CHAT, 2, 3))
    assembler.span_ended(_span(1, None, "agent", AGENT, 1, 4))
    assembler.span_ended(_span(3, 1, "chat", CHAT, 3, 5))
    assert assembler.counters.illegal_transitions >= 3
    clock.now += 2.0
    assembler.evict_idle()
    assert assembler.open_traces == 0


# --- the states the assembler puts nodes in --------------------------------------------------

AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 3}


def _states(assembler: RunAssembler) -> dict[int, NodeState]:
    return {
        span_id: node.state
        for tree in assembler._traces.values()
        for span_id, node in tree.nodes.items()
    }


def test_a_stream_read_after_its_run_ended_walks_through_every_state() -> None:
    clock = _Clock()
    assembler = RunAssembler(AdaptiveConfig(run_root="agent"), clock=clock)
    # 1 app span (not an agent) > 2 agent > 3 llm (ended), 4 llm (a stream, ends late)
    for span_id, parent in ((1, None), (2, 1), (3, 2), (4, 2)):
        assembler.span_started(_span(span_id, parent, start=span_id))
    assert set(_states(assembler).values()) == {NodeState.OPEN}
    assembler.span_ended(_span(3, 2, "chat", CHAT, 3, 5))
    assert _states(assembler)[3] is NodeState.ENDED
    assembler.span_ended(_span(2, 1, "agent", AGENT, 2, 6))
    assert _states(assembler) == {
        1: NodeState.OPEN_ABOVE_RUN,  # a run waits beneath it: it can root none
        2: NodeState.WAITING,
        3: NodeState.ENDED,
        4: NodeState.OPEN,
    }
    clock.now += AdaptiveConfig().run_grace_seconds + 1
    assembler.evict_idle()  # the grace time is up: emitted truncated, the stream detached
    [run] = assembler.take_completed()
    assert run.truncated
    assert _states(assembler) == {1: NodeState.OPEN_ABOVE_RUN, 4: NodeState.DETACHED}
    assembler.span_ended(_span(4, 2, "chat", CHAT, 4, 9))
    assert assembler.counters.late_spans == 1
    assert _states(assembler) == {1: NodeState.OPEN_ABOVE_RUN}
    assembler.span_ended(_span(1, None, "app", {}, 1, 10))
    assert assembler.open_traces == 0
    # The app span held a run: not counted as a span outside runs.
    assert assembler.counters.spans_outside_runs == 0
    assert assembler.counters.illegal_transitions == 0


def test_a_span_started_under_a_detached_span_is_born_detached() -> None:
    assembler = RunAssembler(AdaptiveConfig(run_grace_seconds=0), clock=_Clock())
    for span_id, parent in ((1, None), (2, 1), (3, 1)):
        assembler.span_started(_span(span_id, parent, start=span_id))
    assembler.span_ended(_span(2, 1, "chat", CHAT, 2, 3))
    assembler.span_ended(_span(1, None, "agent", AGENT, 1, 4))  # 3 still open
    assert _states(assembler) == {3: NodeState.DETACHED}
    assembler.span_started(_span(5, 3, start=5))
    assert _states(assembler)[5] is NodeState.DETACHED
    assert assembler.counters.illegal_transitions == 0


# --- hostile streams: states always agree with what a node has seen --------------------------


def _assert_consistent(assembler: RunAssembler) -> None:
    waiting = set(assembler._waiting)
    for trace_id, tree in assembler._traces.items():
        for span_id, node in tree.nodes.items():
            assert isinstance(node.state, NodeState)
            assert (node.state is NodeState.WAITING) == ((trace_id, span_id) in waiting)
            if node.state >= NodeState.ENDED:
                assert node.live is None
                assert isinstance(node.attributes, dict)
            else:
                assert node.attributes is None
    assert assembler.counters.illegal_transitions == 0


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(stream=span_streams(), policy=st.sampled_from(["agent_or_root", "agent"]))
def test_hostile_streams_never_need_an_illegal_transition(
    stream: list[tuple[str, ReadableSpan]], policy: str
) -> None:
    clock = _Clock()
    config = AdaptiveConfig(run_root=policy, run_timeout_seconds=1.0)  # type: ignore[arg-type]
    assembler = RunAssembler(config, clock=clock)
    for kind, span in stream:
        if kind == "start":
            assembler.span_started(span)
        else:
            assembler.span_ended(span)
        _assert_consistent(assembler)
    clock.now += 2.0
    assembler.evict_idle()
    _assert_consistent(assembler)
    assert assembler.open_traces == 0


# --- whole runs, randomly interleaved, against a reference ------------------------------------

CALL_ATTRIBUTES = st.sampled_from(
    [
        ("llm", {"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 5}),
        (
            "llm",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m",
                "gen_ai.usage.input_tokens": 7,
                "gen_ai.usage.output_tokens": 2,
                "gen_ai.response.finish_reasons": ("stop",),
            },
        ),
        ("llm", {"openinference.span.kind": "LLM", "llm.token_count.completion": "9"}),
        ("tool", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        ("tool", {"openinference.span.kind": "TOOL"}),
        ("function", {"openinference.span.kind": "CHAIN"}),
        ("unknown", {}),
    ]
)


@dataclass
class _Spec:
    """One span of a generated run."""

    span_id: int
    parent: int | None
    kind: str
    name: str
    attributes: dict[str, Any]
    children: list[int] = field(default_factory=list)
    start: int = 0
    end: int = 0


@dataclass
class _Run:
    trace_id: int
    specs: dict[int, _Spec]
    events: list[tuple[str, ReadableSpan]]


@st.composite
def _runs(draw: st.DrawFn, trace_id: int) -> _Run:
    """A run under an agent root, started before its children; a call may end after its
    parent (and after the root: a stream), everything else after its children."""
    count = draw(st.integers(min_value=1, max_value=12))
    root_attributes = {**AGENT, "gen_ai.agent.name": f"agent-{trace_id}"}
    specs = {1: _Spec(1, None, "agent", "invoke_agent", root_attributes)}
    for span_id in range(2, count + 2):
        # Parents are the root or an earlier structural span: calls are leaves.
        structural = [
            s for s, spec in specs.items() if spec.kind in ("agent", "function", "unknown")
        ]
        parent = draw(st.sampled_from(structural))
        kind, attributes = draw(CALL_ATTRIBUTES)
        specs[span_id] = _Spec(span_id, parent, kind, f"{kind}-{span_id}", dict(attributes))
        specs[parent].children.append(span_id)
    events: list[tuple[str, ReadableSpan]] = []
    late: list[int] = []
    ended_calls: list[int] = []
    clock = itertools.count(1)

    def ctx_span(spec: _Spec, ended: bool) -> ReadableSpan:
        if not ended:
            return _span(spec.span_id, spec.parent, "s", {}, spec.start, trace_id=trace_id)
        return _span(
            spec.span_id, spec.parent, spec.name, spec.attributes, spec.start, spec.end,
            trace_id=trace_id,
        )  # fmt: skip

    def walk(span_id: int) -> None:
        spec = specs[span_id]
        spec.start = next(clock)
        events.append(("start", ctx_span(spec, False)))
        for child in draw(st.permutations(spec.children)):
            walk(child)
        spec.end = next(clock)
        is_call = spec.kind in ("llm", "tool")
        # A run root is recognised by a call ended beneath it, so a stream is drawn only
        # once some call has ended in time.
        if is_call and ended_calls and draw(st.integers(0, 5)) == 0:
            late.append(span_id)  # a stream: read after its parent has ended
            spec.end += 10_000
        else:
            ended_calls.append(span_id) if is_call else None
            events.append(("end", ctx_span(spec, True)))

    walk(1)
    events.extend(("end", ctx_span(specs[s], True)) for s in late)
    return _Run(trace_id, specs, events)


@st.composite
def interleaved_runs(draw: st.DrawFn) -> tuple[list[_Run], list[tuple[str, ReadableSpan]]]:
    runs = [draw(_runs(0x100 + i)) for i in range(draw(st.integers(1, 4)))]
    cursors = [0] * len(runs)
    merged: list[tuple[str, ReadableSpan]] = []
    while True:
        open_runs = [i for i, run in enumerate(runs) if cursors[i] < len(run.events)]
        if not open_runs:
            return runs, merged
        i = draw(st.sampled_from(open_runs))
        merged.append(runs[i].events[cursors[i]])
        cursors[i] += 1


def _reference(run: _Run, policy: str) -> RunRecord | None:
    """The run as built by hand from its finished tree, with none of the streaming.

    An agent root with no call beneath is a run only under ``agent_or_root``."""
    specs = run.specs

    def scope(spec: _Spec) -> str:
        return conventions.classify(spec.attributes, spec.name)

    def below(span_id: int, path: tuple[str, ...]) -> Iterator[tuple[_Spec, tuple[str, ...]]]:
        spec = specs[span_id]
        yield spec, path
        inner = (*path, spec.name) if scope(spec) in STRUCTURAL_SCOPES else path
        for child in spec.children:
            yield from below(child, inner)

    calls = sorted(
        ((spec, path) for spec, path in below(1, ()) if scope(spec) in ("llm", "tool")),
        key=lambda item: (item[0].start, item[0].end),
    )
    if not calls and policy == "agent":
        return None
    has_tools = any(scope(spec) == "tool" for spec, _ in calls)
    records = []
    for i, (spec, path) in enumerate(calls):
        common = {
            "span_id": f"{spec.span_id:016x}",
            "parent_span_id": f"{spec.parent:016x}",
            "path": path,
            "start_ns": spec.start,
            "end_ns": spec.end,
        }
        if scope(spec) == "tool":
            name = conventions.tool_name(spec.attributes) or spec.name
            records.append(CallRecord(kind="tool", name=name, **common))
            continue
        details = conventions.read_call_details(spec.attributes)
        count = details.tool_call_count
        if count is None and has_tools:
            count = 0
            for later, _ in calls[i + 1 :]:
                if later.parent != spec.parent:
                    continue
                if scope(later) == "llm":
                    break
                count += later.start >= spec.end
        records.append(
            CallRecord(
                kind="llm",
                name=spec.name,
                output_tokens=details.output_tokens,
                prompt_tokens=details.prompt_tokens,
                total_tokens=details.total_tokens,
                model_name=details.model_name,
                tool_call_count=count,
                **common,
            )
        )
    root = specs[1]
    return RunRecord(
        id=f"{run.trace_id:032x}-{1:016x}",
        agent_id=identity.run_agent_id(
            "agent",
            root.name,
            root.attributes,
            first_inner_agent=None,
            graph_name=None,
            fallback="unused",
        ),
        trace_id=f"{run.trace_id:032x}",
        start_ns=root.start,
        end_ns=root.end,
        calls=tuple(records),
    )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(case=interleaved_runs(), policy=st.sampled_from(["agent_or_root", "agent"]))
def test_interleaved_runs_end_in_legal_states_and_equal_the_reference(
    case: tuple[list[_Run], list[tuple[str, ReadableSpan]]], policy: str
) -> None:
    runs, events = case
    config = AdaptiveConfig(run_root=policy)  # type: ignore[arg-type]
    assembler = RunAssembler(config, clock=_Clock())
    for kind, span in events:
        if kind == "start":
            assembler.span_started(span)
        else:
            assembler.span_ended(span)
        _assert_consistent(assembler)
    got = sorted(assembler.take_completed(), key=lambda run: run.id)
    expected = [run for run in (_reference(run, policy) for run in runs) if run is not None]
    assert got == sorted(expected, key=lambda run: run.id)
    assert assembler.open_traces == 0  # every node left its tree with its run
    assert assembler.counters.late_spans == assembler.counters.runs_truncated == 0


# --- the per-event path: attributes copied once, names and shapes remembered, bounded --------


def test_sdk_span_attributes_are_copied_into_a_plain_dict() -> None:
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("chat m", attributes=CHAT)
    span.set_attribute("gen_ai.request.model", "m")
    live = _plain_attributes(span)
    span.end()
    assert type(live) is dict
    assert live == {**CHAT, "gen_ai.request.model": "m"}
    live["mutated"] = 1  # a copy: the span is not changed through it
    assert "mutated" not in span.attributes


class _OwnAttributes(ReadableSpan):
    """A span class whose ``attributes`` is its own, not the SDK's view of ``_attributes``."""

    @property
    def attributes(self) -> Any:
        return _Unlistable(self._attributes or {})


class _Unlistable(dict[str, Any]):
    """A mapping that cannot be iterated (as if changed while iterated); lookups work."""

    def __iter__(self) -> Any:
        raise RuntimeError("changed while iterated")

    def keys(self) -> Any:
        raise RuntimeError("changed while iterated")


def test_other_span_classes_are_read_through_their_attributes_even_if_not_copyable() -> None:
    own = _OwnAttributes(
        name="chat",
        context=_span(2, None).context,
        parent=_span(1, None).context,
        attributes=CHAT,
        start_time=2,
        end_time=3,
    )
    attributes = _plain_attributes(own)
    assert type(attributes) is _Unlistable  # kept as is: not copyable, still readable
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    assembler.span_started(_span(1, None, start=1))
    assembler.span_ended(own)
    assembler.span_ended(_span(1, None, "agent", AGENT, 1, 4))
    [run] = assembler.take_completed()
    assert [(call.kind, call.output_tokens) for call in run.calls] == [("llm", 3)]


def test_name_memo_and_detail_shapes_stay_bounded() -> None:
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    for i in range(5000):
        assert assembler._cut(f"name-{i}") == f"name-{i}"
    long_name = "x" * 600
    assert assembler._cut(long_name) == long_name[: AdaptiveConfig().max_name_length]
    assert len(assembler._names) <= 4096
    assert long_name not in assembler._names
    for i in range(1000):
        details = conventions.read_call_details({f"k{i}": 1, "gen_ai.usage.output_tokens": i})
        assert details.output_tokens == i
    assert len(conventions._shape_cache) <= 512
    many_names = {f"k{i}": 1 for i in range(300)}
    assert conventions.read_call_details(many_names).output_tokens is None
    assert tuple(many_names) not in conventions._shape_cache  # too many names to keep


def test_emitted_members_and_damaged_traces_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(assembler_module, "_REMEMBERED_MEMBERS", 4)
    monkeypatch.setattr(assembler_module, "_REMEMBERED_DAMAGED", 4)
    assembler = RunAssembler(AdaptiveConfig(), clock=_Clock())
    for trace_id in range(1, 11):
        assembler.span_ended(_span(2, 1, "chat", CHAT, 2, 3, trace_id=trace_id))
        assembler.span_ended(_span(1, None, "agent", AGENT, 1, 4, trace_id=trace_id))
    assert len(assembler.take_completed()) == 10
    remembered = {**assembler._emitted_before, **assembler._emitted_members}
    # The most recent half of the bound at least, never more than it: the oldest go first.
    assert 2 <= len(remembered) <= 4
    assert assembler_module._member_key(10, 1) in remembered
    assert assembler_module._member_key(1, 1) not in remembered
    assert not any(gc.is_tracked(key) for key in remembered)
    assembler.mark_damaged(list(range(100, 110)))
    # Overflowing forgets the ids and marks every run in flight damaged instead.
    assert not assembler._damaged
    assert assembler._damaged_before_ns > 0


def test_a_refused_transition_is_counted_in_the_processor_stats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that may not wait (``ENDED -> WAITING`` refused) for its open stream is
    emitted truncated at once; the refusal shows in ``stats()`` and nothing raises."""
    no_waiting = {**LEGAL_TRANSITIONS, NodeState.ENDED: frozenset({NodeState.ENDED_ABOVE_RUN})}
    monkeypatch.setattr(_run_tree, "LEGAL_TRANSITIONS", no_waiting)
    provider, processor, tracer = make_processor(run_grace_seconds=30.0)
    try:
        root = tracer.start_span("invoke_agent refused", attributes=agent_attrs("refused"))
        inside = trace.set_span_in_context(root)
        tracer.start_span("chat m", inside, attributes=LLM).end()
        stream = tracer.start_span("chat m", inside, attributes=LLM)
        root.end()  # the stream is still open: the run would wait
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["illegal_transitions"] == 1
        assert stats["runs_truncated"] == stats["runs_completed"] == 1
        stream.end()
        assert processor.force_flush(10_000)
        assert processor.stats()["late_spans"] == 1
        assert processor.stats()["exporter_errors"] == 0
    finally:
        provider.shutdown()


def test_a_waiting_run_survives_the_end_of_the_local_root_above_it() -> None:
    """The local root above a waiting run ends first: it is discarded without the run
    beneath, which is then emitted whole when its stream ends."""
    clock = _Clock()
    assembler = RunAssembler(AdaptiveConfig(run_grace_seconds=5), clock=clock)
    for span_id, parent in ((1, None), (2, 1), (3, 2), (4, 2)):
        assembler.span_started(_span(span_id, parent, start=span_id))
    assembler.span_ended(_span(3, 2, "chat", CHAT, 3, 4))
    assembler.span_ended(_span(2, 1, "agent", AGENT, 2, 5))  # waits for the stream 4
    assembler.span_ended(_span(1, None, "request", None, 1, 6))
    assert assembler.take_completed() == []
    assembler.span_ended(_span(4, 2, "chat", CHAT, 4, 7))
    [run] = assembler.take_completed()
    assert [call.span_id for call in run.calls] == [f"{3:016x}", f"{4:016x}"]
    assert not run.truncated
    assert assembler.counters.late_spans == 0
    assert assembler.open_traces == 0


@given(
    pairs=st.lists(
        st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 2**66)), min_size=2, max_size=40
    )
)
def test_member_keys_tell_every_trace_and_span_apart(pairs: list[tuple[int, int]]) -> None:
    # Valid span ids (64 bits) give an int key; anything wider keeps both ids.
    keys = {assembler_module._member_key(trace_id, span_id) for trace_id, span_id in pairs}
    assert len(keys) == len(set(pairs))
    for trace_id, span_id in pairs:
        key = assembler_module._member_key(trace_id, span_id)
        assert isinstance(key, int) == (span_id < 2**64)
