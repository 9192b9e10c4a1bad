"""OpenAI Agents SDK + ``openinference-instrumentation-openai-agents``.

The scenario: an agent whose model asks for two function tools in one turn (run
concurrently by the SDK), then answers in a second turn. What the spans look like
(openai-agents 0.24, instrumentation 2.6): a trace root ``AGENT`` span named after the
workflow, a ``CHAIN`` span of the same name, the agent's ``AGENT`` span (its
``agent.name`` only set at end), one ``turn`` ``CHAIN`` span per turn holding the
``response`` ``LLM`` span and that turn's ``TOOL`` spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conformance_helpers import Harness, group, llm, require, summarise, tool
from fake_openai_server import MODEL, SERVED_MODEL, FakeOpenAIServer, Reply, text, tools

require(
    "agents", "openinference.instrumentation.openai_agents", "openinference.instrumentation.openai"
)

from agents import (  # noqa: E402
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    RunHooks,
    Runner,
    function_tool,
    set_trace_processors,
)
from openai import AsyncOpenAI  # noqa: E402
from openinference.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor  # noqa: E402

import otel_adaptive  # noqa: E402
from otel_adaptive import AgentHints  # noqa: E402

AGENT = "Assistant"
WORKFLOW = "weather-flow"
TURN_PATH = (WORKFLOW, WORKFLOW, AGENT, "turn")
TOOLS_TURN = tools("get_weather", "get_time", input_tokens=20, output_tokens=7)
ANSWER_TURN = text("sunny at noon", input_tokens=30, output_tokens=3)


@pytest.fixture
def agents_tracing(harness: Harness) -> Iterator[None]:
    # Nothing but OpenInference's processor may see the SDK's traces: the SDK's default
    # processor would try to upload them to OpenAI.
    set_trace_processors([])
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()
        set_trace_processors([])


@pytest.fixture
def client_tracing(harness: Harness) -> Iterator[None]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


class _Rendezvous:
    """Lets each tool finish only once both have started: their spans surely overlap."""

    def __init__(self, parties: int) -> None:
        self._parties = parties
        self._arrived = 0
        self._all_here = asyncio.Event()

    async def wait(self) -> None:
        self._arrived += 1
        if self._arrived == self._parties:
            self._all_here.set()
        # Bounded: a sequential tool runner fails the test instead of hanging it.
        await asyncio.wait_for(self._all_here.wait(), timeout=5)


class _Scenario:
    """The agent under test, against the fake server, with hooks that record hints."""

    def __init__(self, server: FakeOpenAIServer, *, chat_completions: bool = False) -> None:
        self.server = server
        self.hints_at_llm_start: list[AgentHints | None] = []
        self.hints_in_tools: list[AgentHints | None] = []
        self._rendezvous = _Rendezvous(2)
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        model: Any
        settings = ModelSettings()
        if chat_completions:
            model = OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
            settings = ModelSettings(include_usage=True)
        else:
            model = OpenAIResponsesModel(model=MODEL, openai_client=client)

        @function_tool
        async def get_weather(city: str = "Paris") -> str:
            """The weather in a city."""
            self.hints_in_tools.append(otel_adaptive.current_hints())
            await self._rendezvous.wait()
            return "sunny"

        @function_tool
        async def get_time(city: str = "Paris") -> str:
            """The local time in a city."""
            await self._rendezvous.wait()
            return "noon"

        self.agent = Agent(
            name=AGENT,
            instructions="Answer with the weather and the time.",
            tools=[get_weather, get_time],
            model=model,
            model_settings=settings,
        )

    def run(self, *replies: Reply, workflow: str = WORKFLOW, streamed: bool = False) -> str:
        self.server.script(*replies)
        self._rendezvous = _Rendezvous(2)
        scenario = self

        class Hooks(RunHooks[Any]):
            async def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
                scenario.hints_at_llm_start.append(otel_adaptive.current_hints())

        config = RunConfig(workflow_name=workflow)

        async def go() -> str:
            if streamed:
                result = Runner.run_streamed(
                    self.agent, "Weather and time in Paris?", hooks=Hooks(), run_config=config
                )
                async for _ in result.stream_events():
                    pass
                return str(result.final_output)
            done = await Runner.run(
                self.agent, "Weather and time in Paris?", hooks=Hooks(), run_config=config
            )
            return str(done.final_output)

        return asyncio.run(go())


def _expected_calls(
    path: tuple[str, ...] = TURN_PATH, name: str = "response", model: str = SERVED_MODEL
) -> list[Any]:
    return [
        llm(name, path, output=7, prompt=20, model=model, tool_calls=2),
        tool("get_weather", path),
        tool("get_time", path),
        llm(name, path, output=3, prompt=30, model=model, tool_calls=0),
    ]


def _assert_calls(got: list[Any], expected: list[Any]) -> None:
    # The two tools run concurrently, so their relative start order is not part of the
    # scenario: compare the LLM calls in order and the tools as a set between them.
    assert [got[0], got[3]] == [expected[0], expected[3]]
    assert {got[1], got[2]} == {expected[1], expected[2]}


@pytest.mark.usefixtures("agents_tracing")
def test_parallel_tools_then_answer(harness: Harness, fake_openai: FakeOpenAIServer) -> None:
    scenario = _Scenario(fake_openai)
    assert scenario.run(TOOLS_TURN, ANSWER_TURN) == "sunny at noon"

    run = harness.only_run()
    # Run root: the trace's outermost AGENT span (the workflow); agent id: the agent
    # named beneath it, whose name arrives only when its span ends.
    [root] = [s for s in harness.spans() if s.parent is None]
    assert root.name == WORKFLOW
    assert run.id.endswith(f"{root.context.span_id:016x}")
    assert (run.start_ns, run.end_ns) == (root.start_time, root.end_time)
    assert run.agent_id == AGENT
    _assert_calls(summarise(run), _expected_calls())
    assert harness.groups(AGENT) == {group("get_weather", "get_time")}
    stats = harness.stats()
    assert stats["spans_outside_runs"] == stats["late_spans"] == 0


@pytest.mark.usefixtures("agents_tracing")
def test_streamed_run_is_the_same_run(harness: Harness, fake_openai: FakeOpenAIServer) -> None:
    scenario = _Scenario(fake_openai)
    assert scenario.run(TOOLS_TURN, ANSWER_TURN, streamed=True) == "sunny at noon"

    run = harness.only_run()
    assert run.agent_id == AGENT
    _assert_calls(summarise(run), _expected_calls())
    assert harness.groups(AGENT) == {group("get_weather", "get_time")}


@pytest.mark.usefixtures("agents_tracing", "client_tracing")
def test_client_llm_span_inside_bridge_llm_span_is_one_call(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    scenario.run(TOOLS_TURN, ANSWER_TURN)

    llm_spans = [
        s for s in harness.spans() if (s.attributes or {}).get("openinference.span.kind") == "LLM"
    ]
    assert len(llm_spans) == 4  # two calls, each seen by the bridge and by the client
    run = harness.only_run()
    _assert_calls(summarise(run), _expected_calls())  # two calls, tokens counted once
    assert sum(c.output_tokens or 0 for c in run.llm_calls()) == 7 + 3


@pytest.mark.usefixtures("agents_tracing")
def test_chat_completions_model_streams_usage(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai, chat_completions=True)
    scenario.run(TOOLS_TURN, ANSWER_TURN, streamed=True)

    assert all(
        r.body.get("stream_options") == {"include_usage": True} for r in fake_openai.requests
    )
    run = harness.only_run()
    got = summarise(run)
    # The SDK's generation span records the requested model and the usage, but no output
    # messages: the tool-call count is unknown from the LLM span itself.
    assert [(c.kind, c.name, c.output_tokens, c.prompt_tokens, c.model_name) for c in got] == [
        ("llm", "generation", 7, 20, MODEL),
        ("tool", got[1].name, None, None, None),
        ("tool", got[2].name, None, None, None),
        ("llm", "generation", 3, 30, MODEL),
    ]
    assert harness.groups(AGENT) == {group("get_weather", "get_time")}


@pytest.mark.usefixtures("agents_tracing")
def test_chat_completions_tool_call_count_from_tool_spans_of_the_turn(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai, chat_completions=True)
    scenario.run(TOOLS_TURN, ANSWER_TURN, streamed=True)

    first, last = harness.only_run().llm_calls()
    assert (first.tool_call_count, last.tool_call_count) == (2, 0)


def _learn_then_serve(scenario: _Scenario, harness: Harness, workflow: str) -> None:
    for _ in range(20):
        scenario.run(TOOLS_TURN, ANSWER_TURN, workflow=workflow)
    harness.flush()  # the 21st run is served from what the first 20 taught
    scenario.hints_at_llm_start.clear()
    scenario.hints_in_tools.clear()
    scenario.run(TOOLS_TURN, ANSWER_TURN, workflow=workflow)


@pytest.mark.usefixtures("agents_tracing")
def test_hints_learned_over_20_runs_serve_the_21st_when_workflow_is_named_after_agent(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    _learn_then_serve(scenario, harness, workflow=AGENT)

    assert len(harness.runs()[AGENT]) == 21
    hints = scenario.hints_at_llm_start
    assert len(hints) == 2
    assert all(h is not None for h in hints), hints
    assert [h.total_requests for h in hints if h is not None] == [2, 2]
    assert [h.prefix_id for h in hints if h is not None] == [f"{AGENT}-d4"] * 2
    # Each turn's call is the run's k-th call at the turn path: turn 1 said 7, turn 2 said 3.
    assert [h.osl for h in hints if h is not None] == [7, 3]
    [in_tool] = scenario.hints_in_tools
    assert in_tool is not None and in_tool.total_requests == 2


@pytest.mark.usefixtures("agents_tracing")
def test_hints_learned_over_20_runs_serve_the_21st(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    _learn_then_serve(scenario, harness, workflow=WORKFLOW)

    assert len(harness.runs()[AGENT]) == 21
    hints = scenario.hints_at_llm_start
    # The workflow span names no agent at start; the agent's name arrives at end. The
    # lookup finds the stored agent through the alias published with the plans.
    assert [h.total_requests if h else None for h in hints] == [2, 2]
    assert [h.osl if h else None for h in hints] == [7, 3]
    assert [h.prefix_id if h else None for h in hints] == [f"{AGENT}-d4"] * 2


@pytest.mark.usefixtures("agents_tracing")
def test_total_requests_with_three_turns(harness: Harness, fake_openai: FakeOpenAIServer) -> None:
    scenario = _Scenario(fake_openai)
    script = (
        tools("get_weather", "get_time", output_tokens=7),
        tools("get_weather", "get_time", output_tokens=9),
        text(output_tokens=3),
    )
    for _ in range(20):
        scenario.run(*script, workflow=AGENT)
    harness.flush()
    scenario.hints_at_llm_start.clear()
    scenario.run(*script, workflow=AGENT)

    hints = scenario.hints_at_llm_start
    assert [h.total_requests if h else None for h in hints] == [3, 3, 3]
    assert [h.osl if h else None for h in hints] == [7, 9, 3]
