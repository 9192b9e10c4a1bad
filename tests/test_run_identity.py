"""Run identity, agent ids and call positions on the span shapes of real frameworks.

Each test rebuilds, with plain SDK spans, the shape one framework's instrumentation
produces (``facts.md``, "Span shapes of agent frameworks"): which attributes are set at
start and which only at end, which spans are current, where the tools sit. Each then
checks that the run is the one a user of that framework counts, under the agent's real
name, with every call stored, and that hints read before each model call name the same
agent and give that call's learned values.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

import otel_adaptive
from otel_adaptive import AdaptiveSpanProcessor, AgentHints
from spans import MS, make_processor, usage

AGENT_KIND = {"openinference.span.kind": "AGENT"}
CHAIN_KIND = {"openinference.span.kind": "CHAIN"}
LLM_KIND = {"openinference.span.kind": "LLM"}
TOOL_KIND = {"openinference.span.kind": "TOOL"}


class Shape:
    """Builds spans with explicit parents, optionally current, attributes at start or end."""

    def __init__(self, tracer: trace.Tracer, *, current: bool = True) -> None:
        self._tracer = tracer
        self._current = current
        self._stack: list[trace.Span] = []
        self.clock = 0
        self.hints: list[AgentHints | None] = []

    @contextmanager
    def span(
        self,
        name: str,
        start: Mapping[str, Any] | None = None,
        end: Mapping[str, Any] | None = None,
    ) -> Iterator[trace.Span]:
        self.clock += 1
        parent = self._stack[-1] if self._stack else None
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self._tracer.start_span(
            name, context=context, attributes=dict(start or {}), start_time=self.clock * MS
        )
        self._stack.append(span)
        try:
            if self._current:
                with trace.use_span(span, end_on_exit=False):
                    yield span
            else:
                yield span
        finally:
            self._stack.pop()
            for key, value in (end or {}).items():
                span.set_attribute(key, value)
            self.clock += 1
            span.end(end_time=self.clock * MS)

    def llm(self, tokens: int, start: Mapping[str, Any] = LLM_KIND, at_end: bool = False) -> None:
        """One model call; the hints are read just before it, as a client would."""
        if self._current:
            self.hints.append(otel_adaptive.current_hints())
        with self.span("chat m", None if at_end else start, {**usage(tokens), **start}):
            pass

    def tool(self, name: str, start: Mapping[str, Any] = TOOL_KIND, at_end: bool = False) -> None:
        with self.span(name, None if at_end else start, {**start, "tool.name": name}):
            pass


def learn_then_serve(
    processor: AdaptiveSpanProcessor,
    tracer: trace.Tracer,
    scenario: Callable[[Shape], None],
    *,
    current: bool = True,
    runs: int = 5,
) -> list[AgentHints | None]:
    for _ in range(runs):
        scenario(Shape(tracer, current=current))
        assert processor.force_flush(5000)
    served = Shape(tracer, current=current)
    scenario(served)
    assert processor.force_flush(5000)
    return served.hints


def osl(hints: list[AgentHints | None]) -> list[int | None]:
    return [None if h is None else h.osl for h in hints]


def totals(hints: list[AgentHints | None]) -> list[int | None]:
    return [None if h is None else h.total_requests for h in hints]


def prefixes(hints: list[AgentHints | None]) -> set[str | None]:
    return {None if h is None else h.prefix_id.rsplit("-d", 1)[0] for h in hints}


# --- LangGraph + OpenInference ----------------------------------------------------------------


def langgraph(graph: str, turns: int = 10, tools_per_turn: int = 2) -> Callable[[Shape], None]:
    """A ReAct graph: every attribute set at end; ``agent`` model nodes labelled AGENT and,
    beside them (siblings, not children), ``tools`` CHAIN nodes holding the tool spans."""

    def scenario(shape: Shape) -> None:
        with shape.span(graph, end=AGENT_KIND if "agent" in graph else CHAIN_KIND):
            for turn in range(turns):
                with shape.span("agent", end=AGENT_KIND):
                    shape.llm(10 + turn, at_end=True)
                with shape.span("tools", end=CHAIN_KIND):
                    for k in range(tools_per_turn):
                        shape.tool(f"tool_{k}", at_end=True)
            with shape.span("agent", end=AGENT_KIND):
                shape.llm(99, at_end=True)

    return scenario


def test_langgraph_chain_root_graph_is_one_run_with_every_tool() -> None:
    provider, processor, tracer = make_processor()
    langgraph("LangGraph")(Shape(tracer, current=False))
    assert processor.force_flush(5000)
    [run] = processor.store.list_runs("LangGraph")
    assert len(run.llm_calls()) == 11
    assert len(run.tool_calls()) == 20  # 20 of 20 tools stored
    stats = processor.stats()
    assert stats["runs_completed"] == 1
    assert stats["calls_outside_runs"] == stats["spans_outside_runs"] == 0
    assert processor.store.agents() == ["LangGraph"]
    provider.shutdown()


def test_langgraph_graphs_are_stored_under_their_own_names_not_under_the_node_name() -> None:
    provider, processor, tracer = make_processor()
    for graph in ("planner", "weather_agent", "LangGraph"):
        langgraph(graph, turns=2)(Shape(tracer, current=False))
    assert processor.force_flush(5000)
    assert processor.store.agents() == ["LangGraph", "planner", "weather_agent"]
    assert processor.stats()["calls_outside_runs"] == 0
    provider.shutdown()


def test_langgraph_hints_name_the_stored_graph_and_each_turns_position() -> None:
    # With a context bridge the nodes are current while they run, but still carry no
    # attribute before they end: the lookup only sees span names.
    provider, processor, tracer = make_processor()
    hints = learn_then_serve(processor, tracer, langgraph("LangGraph", turns=3))
    assert osl(hints) == [10, 11, 12, 99]
    assert totals(hints) == [4, 4, 4, 4]
    assert prefixes(hints) == {"LangGraph"}
    provider.shutdown()


def test_calls_in_no_run_are_counted() -> None:
    provider, processor, tracer = make_processor(run_root="agent")
    langgraph("LangGraph", turns=2)(Shape(tracer, current=False))
    assert processor.force_flush(5000)
    assert processor.store.agents() == []
    assert processor.stats()["calls_outside_runs"] == 3 + 4
    provider.shutdown()


# --- smolagents + OpenInference ---------------------------------------------------------------


def smolagents(shape: Shape) -> None:
    """A manager agent whose second step calls a managed agent; one ``Step N`` per step."""
    with shape.span("manager.run", AGENT_KIND):
        with shape.span("Step 1", CHAIN_KIND):
            shape.llm(30)
        with shape.span("Step 2", CHAIN_KIND):
            shape.llm(31)
            with shape.span("weather_agent", TOOL_KIND):
                with shape.span("weather_agent.run", AGENT_KIND):
                    with shape.span("Step 1", CHAIN_KIND):
                        shape.llm(40)
                    with shape.span("Step 2", CHAIN_KIND):
                        shape.llm(41)
        with shape.span("Step 3", CHAIN_KIND):
            shape.llm(32)


def test_smolagents_manager_run_is_stored_under_the_manager_with_its_managed_agent() -> None:
    provider, processor, tracer = make_processor()
    hints = learn_then_serve(processor, tracer, smolagents)
    assert processor.store.agents() == ["manager"]
    [run, *_] = processor.store.list_runs("manager")
    assert len(run.llm_calls()) == 5
    assert osl(hints) == [30, 31, 40, 41, 32]
    assert totals(hints) == [5] * 5
    assert prefixes(hints) == {"manager"}
    provider.shutdown()


# --- CrewAI + OpenInference -------------------------------------------------------------------


def crewai(shape: Shape) -> None:
    """A crew of two tasks; each task execution is an ``Agent._execute_core`` AGENT span."""
    with shape.span("Crew.kickoff", CHAIN_KIND):
        for role, tokens in (("researcher", (50, 51)), ("writer", (70,))):
            with shape.span("Agent._execute_core", {**AGENT_KIND, "graph.node.id": role}):
                for count in tokens:
                    shape.llm(count)


def test_crewai_task_executions_are_runs_of_the_named_agents() -> None:
    provider, processor, tracer = make_processor()
    hints = learn_then_serve(processor, tracer, crewai)
    assert processor.store.agents() == ["researcher", "writer"]
    assert osl(hints) == [50, 51, 70]
    assert totals(hints) == [2, 2, 1]
    assert [h.prefix_id if h else None for h in hints] == [
        "researcher-d1",
        "researcher-d1",
        "writer-d1",
    ]
    provider.shutdown()


def test_framework_suffixes_are_cut_from_agent_names_in_span_names() -> None:
    provider, processor, tracer = make_processor()

    def shape_run(shape: Shape) -> None:
        with shape.span("weather_agent._execute_core", AGENT_KIND):
            shape.llm(5)

    shape_run(Shape(tracer))
    assert processor.force_flush(5000)
    assert processor.store.agents() == ["weather_agent"]
    provider.shutdown()


# --- Traceloop SDK decorators -----------------------------------------------------------------


def traceloop(kind: str, name: str) -> dict[str, str]:
    return {"traceloop.span.kind": kind, "traceloop.entity.name": name}


def traceloop_run(shape: Shape) -> None:
    """``@workflow`` > ``@agent`` > one ``@task`` per LLM call."""
    with shape.span("trip.workflow", traceloop("workflow", "trip")):
        with shape.span("planner.agent", traceloop("agent", "planner")):
            for tokens in (20, 21, 22):
                with shape.span("call_llm.task", traceloop("task", "call_llm")):
                    shape.llm(tokens, {"llm.request.type": "chat"})


def test_traceloop_task_per_call_counts_positions_across_the_tasks() -> None:
    provider, processor, tracer = make_processor()
    hints = learn_then_serve(processor, tracer, traceloop_run)
    assert processor.store.agents() == ["planner"]
    assert osl(hints) == [20, 21, 22]
    assert totals(hints) == [3, 3, 3]
    provider.shutdown()


def test_traceloop_workflow_without_agent_is_named_after_the_workflow() -> None:
    provider, processor, tracer = make_processor()
    shape = Shape(tracer)
    with shape.span("trip.workflow", traceloop("workflow", "trip")):
        shape.llm(3, {"llm.request.type": "chat"})
    assert processor.force_flush(5000)
    assert processor.store.agents() == ["trip"]
    provider.shutdown()


# --- pydantic-ai: an agent used as a tool -----------------------------------------------------


def genai_agent(name: str) -> dict[str, str]:
    return {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}


GENAI_CHAT = {"gen_ai.operation.name": "chat"}


def agent_as_tool(shape: Shape) -> None:
    with shape.span("invoke_agent outer", genai_agent("outer")):
        shape.llm(11, GENAI_CHAT)
        with shape.span("execute_tool delegate", {"gen_ai.operation.name": "execute_tool"}):
            with shape.span("invoke_agent inner", genai_agent("inner")):
                shape.llm(18, GENAI_CHAT)
        shape.llm(5, GENAI_CHAT)


def test_agent_used_as_a_tool_is_part_of_the_outer_run_and_keeps_its_own_predictions() -> None:
    provider, processor, tracer = make_processor()
    hints = learn_then_serve(processor, tracer, agent_as_tool)
    assert processor.store.agents() == ["outer"]
    # The outer agent's first call gets its own 11 tokens, not the inner agent's 18.
    assert osl(hints) == [11, 18, 5]
    assert totals(hints) == [3, 3, 3]
    assert prefixes(hints) == {"outer"}
    provider.shutdown()


# --- OpenAI Agents SDK + OpenInference: a hand-off --------------------------------------------


def handoff(shape: Shape) -> None:
    """Two agents as siblings under the workflow span; ``agent.name`` only set at end."""
    with shape.span("flow", AGENT_KIND):
        with shape.span("flow", CHAIN_KIND):
            with shape.span("Triage", AGENT_KIND, {"agent.name": "Triage"}):
                with shape.span("turn", CHAIN_KIND):
                    shape.llm(4)
            with shape.span("Weather", AGENT_KIND, {"agent.name": "Weather"}):
                for tokens in (6, 8):
                    with shape.span("turn", CHAIN_KIND):
                        shape.llm(tokens)


def test_handoff_second_agents_calls_get_hints_from_the_stored_run() -> None:
    provider, processor, tracer = make_processor()
    hints = learn_then_serve(processor, tracer, handoff)
    assert processor.store.agents() == ["Triage"]
    assert osl(hints) == [4, 6, 8]
    assert totals(hints) == [3, 3, 3]
    assert prefixes(hints) == {"Triage"}
    provider.shutdown()


# --- the hot path under concurrency -----------------------------------------------------------


def test_sibling_spans_ending_together_on_many_threads_are_all_counted() -> None:
    provider, processor, tracer = make_processor(max_calls_per_run=4096)
    threads, per_thread = 16, 150
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with tracer.start_as_current_span("root", attributes=genai_agent("race")):
            with tracer.start_as_current_span("step", attributes=CHAIN_KIND) as step:
                context = trace.set_span_in_context(step)
                barrier = threading.Barrier(threads)

                def end_children() -> None:
                    children = [
                        tracer.start_span("chat m", context=context, attributes=GENAI_CHAT)
                        for _ in range(per_thread)
                    ]
                    barrier.wait()
                    for child in children:
                        child.end()

                workers = [threading.Thread(target=end_children) for _ in range(threads)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                [state] = processor._live.traces.values()
                assert len(state.ended) == threads * per_thread
                calls = processor.hints._tally(state)
                assert sum(calls.per_run.values()) == threads * per_thread
                assert list(calls.per_path.values()) == [threads * per_thread]
    finally:
        sys.setswitchinterval(previous)
    assert processor.force_flush(5000)
    [run] = processor.store.list_runs("race")
    assert len(run.llm_calls()) == threads * per_thread
    # Nothing is left behind once the trace's root ended.
    assert processor._live.traces == {} and processor._live.open == {}
    assert processor.stats()["hint_errors"] == 0
    provider.shutdown()


def test_a_failing_hint_lookup_answers_none_and_is_counted() -> None:
    provider, processor, tracer = make_processor()

    def broken(agent_id: str) -> None:
        raise RuntimeError("plan cache is broken")

    processor.cache.get = broken  # type: ignore[method-assign]
    with tracer.start_as_current_span("root", attributes=genai_agent("x")):
        assert otel_adaptive.current_hints() is None
    assert processor.stats()["hint_errors"] == 1
    provider.shutdown()


def test_hot_path_state_is_bounded_and_what_is_not_kept_is_counted() -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags

    from otel_adaptive._span_capture import SpanCapture, capture_start
    from otel_adaptive.live import MAX_ENDED_PER_TRACE, LiveSpans

    def start(trace_id: int, span_id: int, parent: int | None) -> SpanCapture:
        capture = capture_start(span(trace_id, span_id, parent))
        assert capture is not None
        return capture

    def span(trace_id: int, span_id: int, parent: int | None) -> ReadableSpan:
        def ctx(s: int) -> SpanContext:
            return SpanContext(trace_id, s, is_remote=False, trace_flags=TraceFlags(1))

        return ReadableSpan("s", ctx(span_id), None if parent is None else ctx(parent))

    live = LiveSpans(max_open=3, max_traces=1)
    live.started(start(1, 1, None))
    live.started(start(2, 1, None))  # a second trace: beyond max_traces
    assert list(live.traces) == [1] and live.untracked == 1
    for child in range(2, 2 + MAX_ENDED_PER_TRACE + 5):
        live.started(start(1, child, 1))
        live.ended(span(1, child, 1))
    assert len(live.traces[1].ended) == MAX_ENDED_PER_TRACE
    assert live.untracked == 1 + 5
    live.ended(span(1, 1, None))  # the local root ends: its trace's state goes
    assert live.traces == {} and live.open == {}
    for child in range(10, 15):  # more open spans than max_open: counted, not kept
        live.started(start(3, child, 99))
    assert len(live.open) == 3 and live.untracked == 1 + 5 + 2
