"""pydantic-ai with its native OpenTelemetry GenAI spans (``Agent.instrument_all``).

The scenario runs offline on pydantic-ai's own ``FunctionModel``: the two-turn agent of
``two_turn_agent``, and the same agent used as a tool by an outer agent. What the spans
look like (pydantic-ai 2.x): ``invoke_agent <name>`` carrying ``gen_ai.agent.name``,
``chat <model>`` with the usage of each model request, ``execute_tool <name>``; the
chat span is current while the model function runs, and an agent used as a tool nests
its ``invoke_agent`` span under the outer agent's ``execute_tool`` span.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from conformance_helpers import Harness, group, llm, require, summarise, tool
from two_turn_agent import (
    ANSWER,
    ANSWER_TURN,
    LEARNING_RUNS,
    QUESTION,
    TOOL_NAMES,
    TOOL_RESULTS,
    TOOLS_TURN,
    TURNS,
    AsyncRendezvous,
    Turn,
    expected_served,
    served,
)

require("pydantic_ai")

from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.messages import (  # noqa: E402
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402
from pydantic_ai.models.instrumented import InstrumentationSettings  # noqa: E402
from pydantic_ai.usage import RequestUsage  # noqa: E402

import otel_adaptive  # noqa: E402
from otel_adaptive import AgentHints  # noqa: E402

AGENT = "weather_agent"
OUTER = "trip_agent"
MODEL = "function:answer:"
ROOT = f"invoke_agent {AGENT}"
OUTER_ROOT = f"invoke_agent {OUTER}"
# The outer agent's own turns: ask the inner agent (a tool), then answer.
OUTER_TURNS = (
    Turn(input_tokens=15, output_tokens=11, tool_calls=("ask_weather",)),
    Turn(input_tokens=40, output_tokens=5),
)


@pytest.fixture(autouse=True)
def instrumented(harness: Harness) -> Iterator[None]:
    Agent.instrument_all(InstrumentationSettings(tracer_provider=harness.provider))
    try:
        yield
    finally:
        Agent.instrument_all(False)


def _response(turn: Turn) -> ModelResponse:
    usage = RequestUsage(input_tokens=turn.input_tokens, output_tokens=turn.output_tokens)
    if turn.tool_calls:
        parts = [ToolCallPart(name, {"city": "Paris"}) for name in turn.tool_calls]
        return ModelResponse(parts=list(parts), usage=usage)
    return ModelResponse(parts=[TextPart(ANSWER)], usage=usage)


class _ScriptedModel:
    """A ``FunctionModel`` answering turn by turn, reading hints right before each answer."""

    def __init__(self, turns: Sequence[Turn], hints: list[AgentHints | None]) -> None:
        self._turns = turns
        self._hints = hints

    def model(self) -> FunctionModel:
        def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            self._hints.append(otel_adaptive.current_hints())
            responses_so_far = sum(isinstance(m, ModelResponse) for m in messages)
            return _response(self._turns[responses_so_far])

        return FunctionModel(answer)


class _Scenario:
    """The weather agent, and the trip agent that uses it as a tool."""

    def __init__(self) -> None:
        self.hints: list[AgentHints | None] = []
        self.rendezvous = AsyncRendezvous()
        self.weather = Agent(_ScriptedModel(TURNS, self.hints).model(), name=AGENT)
        for name in TOOL_RESULTS:
            self.weather.tool_plain(name=name)(self._tool(name))
        self.trip = Agent(_ScriptedModel(OUTER_TURNS, self.hints).model(), name=OUTER)

        @self.trip.tool_plain
        async def ask_weather(city: str) -> str:
            """Asks the weather agent."""
            return (await self.weather.run(f"Weather and time in {city}?")).output

    def _tool(self, name: str):  # type: ignore[no-untyped-def]
        async def run_tool(city: str) -> str:
            await self.rendezvous.wait()
            return TOOL_RESULTS[name]

        return run_tool

    def run(self, agent: Agent[None, str]) -> str:
        self.rendezvous = AsyncRendezvous()
        return agent.run_sync(QUESTION).output


def _learn_then_serve(scenario: _Scenario, agent: Agent[None, str], harness: Harness) -> None:
    for _ in range(LEARNING_RUNS):
        assert scenario.run(agent) == ANSWER
    harness.flush()  # the served run reads what the learning runs taught
    scenario.hints.clear()
    scenario.run(agent)


def test_two_turn_agent_is_one_run_with_every_call(harness: Harness) -> None:
    scenario = _Scenario()
    assert scenario.run(scenario.weather) == ANSWER

    run = harness.only_run()
    assert run.agent_id == AGENT
    got = summarise(run)
    path = (ROOT,)
    assert [got[0], got[3]] == [
        llm(f"chat {MODEL}", path, output=7, prompt=20, model=MODEL, tool_calls=2),
        llm(f"chat {MODEL}", path, output=3, prompt=30, model=MODEL, tool_calls=0),
    ]
    assert {got[1], got[2]} == {tool("get_weather", path), tool("get_time", path)}
    assert sum(c.output_tokens or 0 for c in run.llm_calls()) == 7 + 3  # tokens once
    assert harness.groups(AGENT) == {group(*TOOL_NAMES)}  # the two tools overlapped
    stats = harness.stats()
    assert stats["spans_outside_runs"] == stats["late_spans"] == 0


def test_hints_before_each_model_request_are_that_calls_learned_values(
    harness: Harness,
) -> None:
    scenario = _Scenario()
    _learn_then_serve(scenario, scenario.weather, harness)

    assert len(harness.runs()[AGENT]) == LEARNING_RUNS + 1
    assert served(scenario.hints) == expected_served()
    assert (TOOLS_TURN.output_tokens, ANSWER_TURN.output_tokens) == (7, 3)


def test_agent_used_as_a_tool_is_part_of_the_outer_run(harness: Harness) -> None:
    scenario = _Scenario()
    assert scenario.run(scenario.trip) == ANSWER

    run = harness.only_run()
    assert run.agent_id == OUTER
    got = summarise(run)
    outer = (OUTER_ROOT,)
    inner = (OUTER_ROOT, ROOT)  # tool spans are not scopes
    llm_calls = [(c.path, c.output_tokens, c.tool_call_count) for c in got if c.kind == "llm"]
    assert llm_calls == [(outer, 11, 1), (inner, 7, 2), (inner, 3, 0), (outer, 5, 0)]
    tools = sorted((c.name, c.path) for c in got if c.kind == "tool")
    assert tools == [("ask_weather", outer), ("get_time", inner), ("get_weather", inner)]


def test_hints_in_an_agent_used_as_a_tool(harness: Harness) -> None:
    scenario = _Scenario()
    _learn_then_serve(scenario, scenario.trip, harness)

    assert set(harness.runs()) == {OUTER}
    # Outer call 1, the inner agent's two calls, outer call 2: each is served its own
    # output tokens, and the run makes four LLM calls.
    order = (OUTER_TURNS[0], TOOLS_TURN, ANSWER_TURN, OUTER_TURNS[1])
    assert served(scenario.hints) == [(t.output_tokens, len(order)) for t in order]
