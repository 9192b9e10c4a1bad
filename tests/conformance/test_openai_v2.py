"""The ``openai`` client + ``opentelemetry-instrumentation-openai-v2`` (GenAI semconv).

Two modes of the instrumentation are covered: its default (legacy) mode, which records
usage, models and finish reasons but no messages, and the latest experimental
conventions with content captured on spans, which adds ``gen_ai.output.messages``. The
instrumentation does not trace the Responses API, so only chat completions are used.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator

import pytest
from conformance_helpers import SERVICE_NAME, CallSummary, Harness, llm, require, summarise
from fake_openai_server import (
    CHAT_TOOLS,
    MESSAGES,
    MODEL,
    SERVED_MODEL,
    FakeOpenAIServer,
    text,
    tools,
)

require("openai", "opentelemetry.instrumentation.openai_v2")

from openai import OpenAI  # noqa: E402
from opentelemetry.instrumentation import _semconv  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402

LLM_NAME = f"chat {MODEL}"

LEGACY = "legacy"
CONTENT = "experimental-with-content"


@pytest.fixture(params=[LEGACY, CONTENT])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    stability = _semconv._OpenTelemetrySemanticConventionStability
    # The instrumentation reads its mode once per process; start each test from scratch
    # (monkeypatch puts the process-wide state back afterwards).
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    if request.param == CONTENT:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    else:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    return str(request.param)


@pytest.fixture
def client(harness: Harness, fake_openai: FakeOpenAIServer, mode: str) -> Iterator[OpenAI]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0)
    finally:
        instrumentor.uninstrument()


def _make_three_calls(client: OpenAI, server: FakeOpenAIServer) -> None:
    """A plain call asking for two tools, a streamed call asking for one (usage included),
    and a streamed text answer without usage."""
    server.script(
        tools("get_weather", "get_time", input_tokens=11, output_tokens=22),
        tools("get_weather", input_tokens=12, output_tokens=23),
        text("sunny", input_tokens=13, output_tokens=24),
    )
    client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=CHAT_TOOLS)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in stream:
        pass
    for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
        pass


def _expected(mode: str, path: tuple[str, ...]) -> list[CallSummary]:
    # Without messages, a finish reason can only tell "no tools" (and streams record
    # none in legacy mode), so tool-call counts are unknown there.
    counts = (2, 1, 0) if mode == CONTENT else (None, None, None)
    return [
        llm(LLM_NAME, path, output=22, prompt=11, model=SERVED_MODEL, tool_calls=counts[0]),
        llm(LLM_NAME, path, output=23, prompt=12, model=SERVED_MODEL, tool_calls=counts[1]),
        # The server sent no usage for the last stream: no tokens is the truth.
        llm(LLM_NAME, path, output=None, prompt=None, model=SERVED_MODEL, tool_calls=counts[2]),
    ]


def test_calls_inside_an_application_span_are_one_run(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer, mode: str
) -> None:
    with harness.app_span("handle-request"):
        _make_three_calls(client, fake_openai)

    run = harness.only_run()
    # No agent span: the local root is the run root and the service name the agent id.
    assert run.agent_id == SERVICE_NAME
    assert summarise(run) == _expected(mode, ("handle-request",))
    assert harness.groups(SERVICE_NAME) == set()


def test_calls_without_an_application_span_are_one_run_each(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer, mode: str
) -> None:
    _make_three_calls(client, fake_openai)

    runs = harness.runs()
    assert list(runs) == [SERVICE_NAME]
    # Each call is its own trace: the LLM span is the run root and has no scope above it.
    got = [summarise(run) for run in runs[SERVICE_NAME]]
    assert got == [[call] for call in _expected(mode, ())]


def test_configured_agent_id_names_runs_without_agent_spans(
    fake_openai: FakeOpenAIServer, mode: str
) -> None:
    harness = Harness(agent_id="billing-bot")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        client = OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0)
        with harness.app_span("handle-request"):
            _make_three_calls(client, fake_openai)
        assert list(harness.runs()) == ["billing-bot"]
    finally:
        instrumentor.uninstrument()
        harness.close()


def _abandon_a_stream(harness: Harness, client: OpenAI, server: FakeOpenAIServer) -> None:
    """One finished call, then a stream that is still being read when the request ends.

    Reading the rest of the stream leaves the request span current again (the
    instrumentation restores the context it saw when the stream started), so callers
    run this in a copied context unless they want that leak.
    """
    server.script(text("first", input_tokens=5, output_tokens=6), text("second", output_tokens=8))
    with harness.app_span("handle-request"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        next(iter(stream))
    for _ in stream:  # the stream's span ends now, after its parent
        pass


def test_stream_ending_after_its_parent_does_not_break_the_run(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer, mode: str
) -> None:
    contextvars.copy_context().run(_abandon_a_stream, harness, client, fake_openai)

    run = harness.only_run()
    first = run.llm_calls()[0]
    assert (first.output_tokens, first.prompt_tokens) == (6, 5)
    stats = harness.stats()
    assert stats["runs_completed"] == 1
    assert stats["open_runs"] == stats["runs_evicted"] == stats["live_spans"] == 0


def test_stream_ending_after_its_parent_is_counted_in_its_run(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer, mode: str
) -> None:
    contextvars.copy_context().run(_abandon_a_stream, harness, client, fake_openai)

    run = harness.only_run()
    assert [c.output_tokens for c in run.llm_calls()] == [6, 8]


def _request_after_a_leaked_stream(
    harness: Harness, client: OpenAI, server: FakeOpenAIServer
) -> None:
    _abandon_a_stream(harness, client, server)
    # The finished request span is current again: the next request's spans are its
    # children, in the same trace, although it ended long ago.
    server.script(text("third", output_tokens=9))
    with harness.app_span("next-request"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_instrumentation_leaves_the_ended_parent_current_after_a_late_stream(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer, mode: str
) -> None:
    contextvars.copy_context().run(_request_after_a_leaked_stream, harness, client, fake_openai)

    spans = {span.name: span for span in harness.spans()}
    parent = spans["next-request"].parent
    assert parent is not None
    assert parent.span_id == spans["handle-request"].context.span_id
    # The first run is intact, and the request that started under its finished span
    # does not wait for that span: it is a run of its own (nothing left open).
    assert [c.output_tokens for c in harness.runs()[SERVICE_NAME][0].llm_calls()][:1] == [6]
    assert harness.stats()["open_runs"] == 0


def test_request_after_a_leaked_stream_context_is_its_own_run(
    harness: Harness, client: OpenAI, fake_openai: FakeOpenAIServer, mode: str
) -> None:
    contextvars.copy_context().run(_request_after_a_leaked_stream, harness, client, fake_openai)

    runs = harness.runs()[SERVICE_NAME]
    assert len(runs) == 2
    assert [c.output_tokens for c in runs[1].llm_calls()] == [9]
