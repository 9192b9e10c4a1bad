"""The ``openai`` client + ``openinference-instrumentation-openai``.

OpenInference names client spans ``ChatCompletion`` and ``Response``, sets the span kind
at start and everything else (usage, model, flattened output messages) at end. It traces
chat completions, streams and the Responses API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from conformance_helpers import SERVICE_NAME, CallSummary, Harness, llm, require, summarise
from fake_openai_server import (
    MESSAGES,
    MODEL,
    RESPONSE_TOOLS,
    SERVED_MODEL,
    FakeOpenAIServer,
    chat_calls,
    text,
    tools,
)

require("openai", "openinference.instrumentation.openai")

from openai import AsyncOpenAI, OpenAI  # noqa: E402
from openinference.instrumentation.openai import OpenAIInstrumentor  # noqa: E402


@pytest.fixture
def instrumented(harness: Harness) -> Iterator[None]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.fixture
def client(instrumented: None, fake_openai: FakeOpenAIServer) -> OpenAI:
    return OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0)


def _chat_calls(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(
        tools("get_weather", "get_time", input_tokens=11, output_tokens=22),
        tools("get_weather", input_tokens=12, output_tokens=23),
        text("sunny", input_tokens=13, output_tokens=24),
    )
    chat_calls(client)


def _expected_chat(path: tuple[str, ...]) -> list[CallSummary]:
    name = "ChatCompletion"
    return [
        llm(name, path, output=22, prompt=11, model=SERVED_MODEL, tool_calls=2),
        llm(name, path, output=23, prompt=12, model=SERVED_MODEL, tool_calls=1),
        # No usage was streamed for the last call: its tokens are unknown.
        llm(name, path, output=None, prompt=None, model=SERVED_MODEL, tool_calls=0),
    ]


def test_chat_calls_in_an_application_span(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer
) -> None:
    with harness.app_span("handle-request"):
        _chat_calls(client, fake_openai)

    run = harness.only_run()
    assert run.agent_id == SERVICE_NAME
    assert summarise(run) == _expected_chat(("handle-request",))


def test_chat_calls_without_an_application_span(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer
) -> None:
    _chat_calls(client, fake_openai)

    runs = harness.runs()[SERVICE_NAME]
    assert [summarise(run) for run in runs] == [[call] for call in _expected_chat(())]


def test_responses_api_plain_and_streamed(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.script(
        tools("get_weather", "get_time", input_tokens=14, output_tokens=25),
        text("sunny", input_tokens=15, output_tokens=26),
    )
    with harness.app_span("handle-request"):
        client.responses.create(model=MODEL, input="Weather?", tools=RESPONSE_TOOLS)
        for _ in client.responses.create(model=MODEL, input="Weather?", stream=True):
            pass

    path = ("handle-request",)
    assert summarise(harness.only_run()) == [
        llm("Response", path, output=25, prompt=14, model=SERVED_MODEL, tool_calls=2),
        llm("Response", path, output=26, prompt=15, model=SERVED_MODEL, tool_calls=0),
    ]


def test_concurrent_async_calls_keep_their_own_tokens(
    harness: Harness, instrumented: None, fake_openai: FakeOpenAIServer
) -> None:
    client = AsyncOpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0)
    fake_openai.script(*(text(f"answer {i}", output_tokens=100 + i) for i in range(4)))

    async def fan_out() -> None:
        with harness.app_span("fan-out"):
            await asyncio.gather(
                *(client.chat.completions.create(model=MODEL, messages=MESSAGES) for _ in range(4))
            )

    asyncio.run(fan_out())

    run = harness.only_run()
    # Same span name, overlapping in time: each call keeps the tokens of its own response.
    assert sorted(c.output_tokens or 0 for c in run.llm_calls()) == [100, 101, 102, 103]
    assert {c.path for c in run.calls} == {("fan-out",)}
