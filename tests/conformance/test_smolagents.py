"""smolagents (``ToolCallingAgent``) + ``openinference-instrumentation-smolagents``.

The model is smolagents' own ``OpenAIModel`` against the local fake OpenAI server; an
HTTP request hook on its client reads the hints right before each model request.
What the spans look like (smolagents 1.26, instrumentation 0.1.43): ``<name>.run``
``AGENT``, one ``Step N`` ``CHAIN`` per step holding the ``OpenAIModel.generate`` ``LLM``
span and that step's ``TOOL`` spans; the answer is a ``final_answer`` tool call; a
managed agent's ``<worker>.run`` nests inside the manager's step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conformance_helpers import Harness, group, require
from fake_openai_server import MODEL, FakeOpenAIServer, Reply, ToolCall
from two_turn_agent import (
    ANSWER,
    LEARNING_RUNS,
    QUESTION,
    TOOL_NAMES,
    TOOL_RESULTS,
    TOOLS_TURN,
    TURNS,
    ThreadRendezvous,
    Turn,
    expected_served,
    served,
)

require("smolagents", "openinference.instrumentation.smolagents", "httpx")

import httpx  # noqa: E402
from openinference.instrumentation.smolagents import SmolagentsInstrumentor  # noqa: E402
from smolagents import OpenAIModel, Tool, ToolCallingAgent  # noqa: E402

import otel_adaptive  # noqa: E402
from otel_adaptive import AgentHints  # noqa: E402

WORKER = "weather_agent"
MANAGER = "trip_agent"
# The manager's own turns: hand the question to the managed agent, then answer.
MANAGER_TURNS = (
    Turn(input_tokens=15, output_tokens=11, tool_calls=(WORKER,)),
    Turn(input_tokens=40, output_tokens=5),
)


@pytest.fixture(autouse=True)
def instrumented(harness: Harness) -> Iterator[None]:
    instrumentor = SmolagentsInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def _reply(turn: Turn) -> Reply:
    if not turn.tool_calls:  # smolagents' tool-calling agents answer through a tool
        calls = (ToolCall("final_answer", {"answer": ANSWER}),)
    elif turn.tool_calls == (WORKER,):
        calls = (ToolCall(WORKER, {"task": QUESTION}),)
    else:
        calls = tuple(ToolCall(name, {"city": "Paris"}) for name in turn.tool_calls)
    return Reply(tool_calls=calls, input_tokens=turn.input_tokens, output_tokens=turn.output_tokens)


class _CityTool(Tool):  # type: ignore[misc]
    inputs = {"city": {"type": "string", "description": "the city"}}  # noqa: RUF012
    output_type = "string"

    def __init__(self, name: str, scenario: _Scenario) -> None:
        self.name = name
        self.description = f"The {name.removeprefix('get_')} in a city."
        self._scenario = scenario
        super().__init__()

    def forward(self, city: str) -> str:
        self._scenario.rendezvous.wait()  # the agent runs the two calls on threads at once
        return TOOL_RESULTS[self.name]


class _Scenario:
    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.hints: list[AgentHints | None] = []
        self.rendezvous = ThreadRendezvous()

        def before_request(request: httpx.Request) -> None:
            self.hints.append(otel_adaptive.current_hints())

        model = OpenAIModel(
            model_id=MODEL,
            api_base=server.base_url,
            api_key="test-key",
            client_kwargs={
                "max_retries": 0,
                "http_client": httpx.Client(event_hooks={"request": [before_request]}),
            },
        )
        tools = [_CityTool(name, self) for name in TOOL_NAMES]
        self.worker = ToolCallingAgent(
            tools=tools,
            model=model,
            name=WORKER,
            description="Weather and time.",
            verbosity_level=0,
        )
        self.manager = ToolCallingAgent(
            tools=[], model=model, managed_agents=[self.worker], name=MANAGER, verbosity_level=0
        )

    def run(self, agent: Any, turns: tuple[Turn, ...]) -> str:
        self.server.script(*(_reply(turn) for turn in turns))
        self.rendezvous = ThreadRendezvous()
        return str(agent.run(QUESTION))


MANAGED_ORDER = (MANAGER_TURNS[0], *TURNS, MANAGER_TURNS[1])


def test_two_turn_agent_is_one_run_with_every_call(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    assert scenario.run(scenario.worker, TURNS) == ANSWER

    run = harness.only_run()
    assert run.agent_id == WORKER  # the agent's name, not the span's "weather_agent.run"
    llm_calls = run.llm_calls()
    assert [(c.output_tokens, c.prompt_tokens, c.tool_call_count) for c in llm_calls] == [
        (TOOLS_TURN.output_tokens, TOOLS_TURN.input_tokens, 2),
        (3, 30, 1),  # the answer is a call of the final_answer tool
    ]
    assert sorted(c.name for c in run.calls if c.kind == "tool") == sorted(
        [*TOOL_NAMES, "final_answer"]
    )
    assert group(*TOOL_NAMES) in harness.groups(WORKER)
    stats = harness.stats()
    assert stats["spans_outside_runs"] == stats["late_spans"] == 0


def test_hints_before_each_model_request_are_that_calls_learned_values(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    for _ in range(LEARNING_RUNS):
        scenario.run(scenario.worker, TURNS)
    harness.flush()
    scenario.hints.clear()
    scenario.run(scenario.worker, TURNS)

    assert len(harness.runs()[WORKER]) == LEARNING_RUNS + 1
    assert served(scenario.hints) == expected_served()


def test_managed_agent_is_part_of_the_managers_run(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    assert scenario.run(scenario.manager, MANAGED_ORDER) == ANSWER

    run = harness.only_run()
    assert run.agent_id == MANAGER  # not the managed agent's span name
    outputs = [c.output_tokens for c in run.llm_calls()]
    assert outputs == [t.output_tokens for t in MANAGED_ORDER]
    tools = sorted(c.name for c in run.calls if c.kind == "tool")
    assert tools == sorted([*TOOL_NAMES, "final_answer", "final_answer"])


def test_hints_for_the_manager_and_its_managed_agent(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    for _ in range(LEARNING_RUNS):
        scenario.run(scenario.manager, MANAGED_ORDER)
    harness.flush()
    scenario.hints.clear()
    scenario.run(scenario.manager, MANAGED_ORDER)

    assert set(harness.runs()) == {MANAGER}
    # Each call is served its own output tokens, and the run makes four LLM calls.
    assert served(scenario.hints) == expected_served(MANAGED_ORDER)
