"""Traceloop SDK decorators (``@workflow``, ``@agent``, ``@task``, ``@tool``) with
OpenLLMetry's OpenAI instrumentation, against the local fake OpenAI server.

``traceloop-sdk`` 0.62.4 pins instrumentations that conflict with the suite's, so CI
installs it with ``--no-deps`` plus the few packages it imports
(``tests/frameworks/traceloop-requirements.txt``). ``Traceloop.init`` would build its
own provider and exporters; the decorators only need a tracer, so the fixture hands
them the test's provider instead. What the spans look like: ``traceloop.span.kind`` =
workflow / agent / task / tool with ``traceloop.entity.name``, span names
``<name>.workflow``, ``.agent``, ``.task``, ``.tool``; here each model request runs in
its own ``@task`` span, with OpenLLMetry's ``openai.chat`` span inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conformance_helpers import Harness, group, require
from fake_openai_server import CHAT_TOOLS, MODEL, FakeOpenAIServer, Reply, ToolCall
from two_turn_agent import (
    ANSWER,
    LEARNING_RUNS,
    QUESTION,
    TOOL_NAMES,
    TOOL_RESULTS,
    TURNS,
    AsyncRendezvous,
    Turn,
    expected_served,
    served,
)

require("traceloop.sdk.decorators", "opentelemetry.instrumentation.openai", "openai", "httpx")

import httpx  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from opentelemetry.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from traceloop.sdk.decorators import agent, task, tool, workflow  # noqa: E402
from traceloop.sdk.tracing.tracing import TracerWrapper  # noqa: E402

import otel_adaptive  # noqa: E402
from otel_adaptive import AgentHints  # noqa: E402

WORKFLOW = "trip_planner"
AGENT = "weather_agent"


@pytest.fixture(autouse=True)
def instrumented(harness: Harness) -> Iterator[None]:
    # The decorators ask TracerWrapper for a tracer; give them one of the test's provider
    # without Traceloop.init (which would start network exporters).
    wrapper = object.__new__(TracerWrapper)
    wrapper._TracerWrapper__tracer_provider = harness.provider  # type: ignore[attr-defined]
    TracerWrapper.instance = wrapper  # type: ignore[attr-defined]
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()
        del TracerWrapper.instance  # type: ignore[attr-defined]


def _reply(turn: Turn) -> Reply:
    calls = tuple(ToolCall(name, {"city": "Paris"}) for name in turn.tool_calls)
    text = None if calls else ANSWER
    return Reply(
        text=text,
        tool_calls=calls,
        input_tokens=turn.input_tokens,
        output_tokens=turn.output_tokens,
    )


class _Scenario:
    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.hints: list[AgentHints | None] = []
        self.rendezvous = AsyncRendezvous()

    async def _main(self) -> str:
        async def before_request(request: httpx.Request) -> None:
            self.hints.append(otel_adaptive.current_hints())

        http = httpx.AsyncClient(event_hooks={"request": [before_request]})
        client = AsyncOpenAI(
            base_url=self.server.base_url, api_key="test-key", max_retries=0, http_client=http
        )

        def city_tool(name: str) -> Any:
            @tool(name=name)
            async def run(city: str) -> str:
                await self.rendezvous.wait()
                return TOOL_RESULTS[name]

            return run

        tools = {name: city_tool(name) for name in TOOL_NAMES}

        @task(name="ask_model")
        async def ask_model(messages: list[Any]) -> Any:
            return await client.chat.completions.create(
                model=MODEL, messages=messages, tools=CHAT_TOOLS
            )

        @agent(name=AGENT)
        async def weather_agent(question: str) -> str:
            messages: list[Any] = [{"role": "user", "content": question}]
            while True:
                message = (await ask_model(messages)).choices[0].message
                if not message.tool_calls:
                    return str(message.content)
                messages.append(message.model_dump())
                results = await asyncio.gather(
                    *(tools[c.function.name](city="Paris") for c in message.tool_calls)
                )
                for call, result in zip(message.tool_calls, results, strict=True):
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})

        @workflow(name=WORKFLOW)
        async def plan(question: str) -> str:
            return await weather_agent(question)

        try:
            return await plan(QUESTION)
        finally:
            await http.aclose()

    def run(self) -> str:
        self.server.script(*(_reply(turn) for turn in TURNS))
        self.rendezvous = AsyncRendezvous()
        return asyncio.run(self._main())


def test_decorated_agent_is_one_run_with_every_call(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    assert _Scenario(fake_openai).run() == ANSWER

    run = harness.only_run()
    assert run.agent_id == AGENT  # traceloop.entity.name, not the span's "weather_agent.agent"
    llm_calls = run.llm_calls()
    assert [(c.output_tokens, c.prompt_tokens, c.tool_call_count) for c in llm_calls] == [
        (7, 20, 2),
        (3, 30, 0),
    ]
    assert sorted(c.name for c in run.calls if c.kind == "tool") == sorted(TOOL_NAMES)
    assert harness.groups(AGENT) == {group(*TOOL_NAMES)}
    stats = harness.stats()
    assert stats["spans_outside_runs"] == stats["late_spans"] == 0


def test_hints_before_each_model_request_are_that_calls_learned_values(
    harness: Harness, fake_openai: FakeOpenAIServer
) -> None:
    scenario = _Scenario(fake_openai)
    for _ in range(LEARNING_RUNS):
        scenario.run()
    harness.flush()
    scenario.hints.clear()
    scenario.run()

    assert len(harness.runs()[AGENT]) == LEARNING_RUNS + 1
    # Every model request sits in its own @task span: the call's position is counted
    # in the run, not among the task span's children.
    assert served(scenario.hints) == expected_served()
