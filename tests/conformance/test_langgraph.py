"""LangGraph (``langgraph.prebuilt.create_react_agent``) + OpenInference's LangChain
instrumentation, with a scripted chat model.

What the spans look like (langgraph 1.2, instrumentation 0.1.80): every attribute is
set when a run ends; the graph's root span is named after the graph (``AGENT`` when the
name contains "agent", else ``CHAIN``; an unnamed graph is ``LangGraph``); the model
node is a span literally named ``agent`` and labelled ``AGENT`` whatever the graph is
called; the two tools run on threads under two ``tools`` ``CHAIN`` spans that are
siblings of the ``agent`` nodes; none of these spans is ever made current, so inside a
node ``trace.get_current_span()`` is invalid and hints come through
``otel_adaptive.integrations.langchain``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from conformance_helpers import Harness, group, require
from two_turn_agent import (
    ANSWER,
    LEARNING_RUNS,
    QUESTION,
    TOOL_NAMES,
    TOOL_RESULTS,
    TURNS,
    ThreadRendezvous,
    Turn,
    expected_served,
    served,
)

require("langgraph", "langchain_core", "openinference.instrumentation.langchain")

from langchain_core.callbacks import CallbackManagerForLLMRun  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.tools import BaseTool, StructuredTool  # noqa: E402
from openinference.instrumentation.langchain import LangChainInstrumentor  # noqa: E402
from opentelemetry import trace  # noqa: E402

import otel_adaptive  # noqa: E402
from otel_adaptive import AgentHints  # noqa: E402
from otel_adaptive.integrations import langchain as adaptive_langchain  # noqa: E402

with warnings.catch_warnings():  # create_react_agent moved to langchain.agents in 1.x
    warnings.simplefilter("ignore")
    from langgraph.prebuilt import create_react_agent

NAMED = "weather_agent"
UNNAMED = "LangGraph"  # LangGraph's own name for a graph given none


@pytest.fixture(autouse=True)
def instrumented(harness: Harness) -> Iterator[None]:
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def _message(turn: Turn) -> AIMessage:
    usage: Any = {
        "input_tokens": turn.input_tokens,
        "output_tokens": turn.output_tokens,
        "total_tokens": turn.input_tokens + turn.output_tokens,
    }
    calls: Any = [
        {"name": name, "args": {"city": "Paris"}, "id": f"call_{name}"} for name in turn.tool_calls
    ]
    return AIMessage(content="" if calls else ANSWER, tool_calls=calls, usage_metadata=usage)


class ScriptedChatModel(BaseChatModel):
    """Answers turn by turn; right before answering it reads the hints, as a client
    sending them to the model server would."""

    turns: Sequence[Turn] = TURNS
    hints: list[AgentHints | None] = []  # noqa: RUF012 (a pydantic field: copied per model)
    plain_hints: list[AgentHints | None] = []  # noqa: RUF012

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.plain_hints.append(otel_adaptive.current_hints())
        self.hints.append(adaptive_langchain.current_hints())
        answered = sum(isinstance(m, AIMessage) for m in messages)
        return ChatResult(generations=[ChatGeneration(message=_message(self.turns[answered]))])


def _tools(rendezvous: ThreadRendezvous) -> list[BaseTool]:
    def make(name: str) -> BaseTool:
        def run(city: str) -> str:
            rendezvous.wait()  # ToolNode runs the two calls on threads at once
            return TOOL_RESULTS[name]

        return StructuredTool.from_function(run, name=name, description=f"{name} of a city")

    return [make(name) for name in TOOL_NAMES]


class _Scenario:
    def __init__(self, name: str | None) -> None:
        self.model = ScriptedChatModel(hints=[], plain_hints=[])
        self.name = name

    def run(self) -> str:
        extra = {} if self.name is None else {"name": self.name}
        graph = create_react_agent(self.model, _tools(ThreadRendezvous()), **extra)
        out = graph.invoke({"messages": [("user", QUESTION)]})
        return str(out["messages"][-1].content)


GRAPHS = [pytest.param(NAMED, NAMED, id="named"), pytest.param(None, UNNAMED, id="unnamed")]


@pytest.mark.parametrize(("name", "agent_id"), GRAPHS)
def test_react_graph_is_one_run_with_every_call(
    harness: Harness, name: str | None, agent_id: str
) -> None:
    assert _Scenario(name).run() == ANSWER

    runs = harness.runs()
    # One graph invocation is one run, stored under the graph's name: not under the
    # model node's generic name "agent", and not split per model node.
    assert list(runs) == [agent_id], f"{runs}\n{harness.describe_spans()}"
    [run] = runs[agent_id]
    [root] = [s for s in harness.spans() if s.parent is None]
    assert (run.start_ns, run.end_ns) == (root.start_time, root.end_time)
    llm_calls = run.llm_calls()
    assert [(c.output_tokens, c.prompt_tokens, c.tool_call_count) for c in llm_calls] == [
        (7, 20, 2),
        (3, 30, 0),
    ]
    assert len({c.path for c in llm_calls}) == 1  # the same model node both times
    assert sorted(c.name for c in run.calls if c.kind == "tool") == sorted(TOOL_NAMES)
    assert harness.groups(agent_id) == {group(*TOOL_NAMES)}
    stats = harness.stats()
    assert stats["spans_outside_runs"] == stats["late_spans"] == 0


@pytest.mark.parametrize(("name", "agent_id"), GRAPHS)
def test_graphs_are_told_apart(harness: Harness, name: str | None, agent_id: str) -> None:
    other = "travel_agent" if name is not None else "planner"
    _Scenario(name).run()
    _Scenario(other).run()
    assert sorted(harness.runs()) == sorted([agent_id, other])


@pytest.mark.parametrize(("name", "agent_id"), GRAPHS)
def test_hints_inside_the_model_node_are_that_calls_learned_values(
    harness: Harness, name: str | None, agent_id: str
) -> None:
    scenario = _Scenario(name)
    for _ in range(LEARNING_RUNS):
        scenario.run()
    harness.flush()
    scenario.model.hints.clear()
    scenario.model.plain_hints.clear()
    scenario.run()

    assert len(harness.runs()[agent_id]) == LEARNING_RUNS + 1
    assert served(scenario.model.hints) == expected_served()


def test_langchain_spans_are_never_current_without_the_bridge(harness: Harness) -> None:
    current: list[bool] = []

    class Probe(ScriptedChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            current.append(trace.get_current_span().get_span_context().is_valid)
            return super()._generate(*args, **kwargs)

    scenario = _Scenario(NAMED)
    scenario.model = Probe(hints=[], plain_hints=[])
    scenario.run()
    # Why the bridge exists: the top-level lookup sees no span inside a node.
    assert current == [False, False]
    assert scenario.model.plain_hints == [None, None]
