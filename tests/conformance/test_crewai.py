"""CrewAI + ``openinference-instrumentation-crewai`` (and OpenInference's OpenAI
instrumentation for the model requests), against the local fake OpenAI server.

CrewAI 1.15 needs ``openai`` 2.x while the suite pins 3.x, so this module runs from its
own venv (``.ci/run`` builds it from ``tests/frameworks/crewai-requirements.txt``);
in the main venv it is skipped. What the spans look like (crewai 1.15, instrumentation
1.1): ``Crew_<uuid>.kickoff`` ``CHAIN``, one ``<role>._execute_core`` ``AGENT`` span
per task execution carrying ``graph.node.id = <role>``, holding the model requests
(``ChatCompletion`` ``LLM``) and the tool runs (``<tool>.run`` ``TOOL``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from conformance_helpers import Harness, require
from fake_openai_server import MODEL, FakeOpenAIServer, Reply, ToolCall
from two_turn_agent import (
    ANSWER,
    LEARNING_RUNS,
    QUESTION,
    TOOL_NAMES,
    TOOL_RESULTS,
    TURNS,
    Turn,
    expected_served,
    served,
)

# CrewAI's own telemetry and trace upload must stay off: the tests are offline.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

require("crewai", "openinference.instrumentation.crewai", "openinference.instrumentation.openai")

import openai.resources.chat.completions as chat_completions  # noqa: E402
from crewai import LLM, Agent, Crew, Task  # noqa: E402
from crewai.tools import BaseTool  # noqa: E402
from openinference.instrumentation.crewai import CrewAIInstrumentor  # noqa: E402
from openinference.instrumentation.openai import OpenAIInstrumentor  # noqa: E402

import otel_adaptive  # noqa: E402
from otel_adaptive import AgentHints  # noqa: E402

AGENT = "weather_agent"
HINTS: list[AgentHints | None] = []


@pytest.fixture(autouse=True)
def instrumented(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    crew = CrewAIInstrumentor()
    client = OpenAIInstrumentor()
    crew.instrument(tracer_provider=harness.provider)
    client.instrument(tracer_provider=harness.provider)
    # Read the hints right before every model request, where an application would
    # send them: around the OpenAI client's create (outside its LLM span).
    create = chat_completions.Completions.create

    def create_with_hints(self: Any, *args: Any, **kwargs: Any) -> Any:
        HINTS.append(otel_adaptive.current_hints())
        return create(self, *args, **kwargs)

    monkeypatch.setattr(chat_completions.Completions, "create", create_with_hints)
    HINTS.clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        client.uninstrument()
        crew.uninstrument()


class _CityTool(BaseTool):  # type: ignore[misc]
    description: str = "Looks something up for a city."

    def _run(self, city: str = "Paris") -> str:
        return TOOL_RESULTS[self.name]


def _reply(turn: Turn) -> Reply:
    calls = tuple(ToolCall(name, {"city": "Paris"}) for name in turn.tool_calls)
    text = None if calls else ANSWER
    return Reply(
        text=text,
        tool_calls=calls,
        input_tokens=turn.input_tokens,
        output_tokens=turn.output_tokens,
    )


def _run(server: FakeOpenAIServer) -> str:
    server.script(*(_reply(turn) for turn in TURNS))
    llm = LLM(model=f"openai/{MODEL}", base_url=server.base_url, api_key="test-key")
    agent = Agent(
        role=AGENT,
        goal="Tell the weather and the time.",
        backstory="A concise assistant.",
        tools=[_CityTool(name=name) for name in TOOL_NAMES],
        llm=llm,
        verbose=False,
    )
    task = Task(description=QUESTION, expected_output="The weather and the time.", agent=agent)
    return str(Crew(agents=[agent], tasks=[task], verbose=False).kickoff())


def test_task_execution_is_one_run_with_every_call(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    assert _run(fake_openai) == ANSWER

    run = harness.only_run()
    assert run.agent_id == AGENT  # graph.node.id, not the span's "weather_agent._execute_core"
    llm_calls = run.llm_calls()
    assert [(c.output_tokens, c.prompt_tokens, c.tool_call_count) for c in llm_calls] == [
        (7, 20, 2),
        (3, 30, 0),
    ]
    assert sorted(c.name for c in run.calls if c.kind == "tool") == sorted(TOOL_NAMES)
    stats = harness.stats()
    assert stats["spans_outside_runs"] == stats["late_spans"] == 0


def test_hints_before_each_model_request_are_that_calls_learned_values(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    for _ in range(LEARNING_RUNS):
        _run(fake_openai)
    harness.flush()
    HINTS.clear()
    _run(fake_openai)

    assert len(harness.runs()[AGENT]) == LEARNING_RUNS + 1
    assert served(HINTS) == expected_served()
