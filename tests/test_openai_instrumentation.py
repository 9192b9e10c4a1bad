"""The ``openai`` client integration, against the local fake OpenAI server.

Hints are learned from plain SDK spans; then real ``openai`` clients (sync and async,
streaming and not, chat completions and responses) call the fake server, which shows
exactly what went over the wire.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai", reason="the integration needs the openai client (examples extra)")

from openai import AsyncOpenAI, OpenAI
from openai.resources.chat.completions import AsyncCompletions, Completions
from openai.resources.responses import AsyncResponses, Responses
from opentelemetry.sdk.trace import TracerProvider

import otel_adaptive
from conformance.fake_openai_server import MODEL, FakeOpenAIServer, ReceivedRequest
from otel_adaptive import AdaptiveSpanProcessor, profiles
from otel_adaptive.instrumentation import OpenAIInstrumentor
from spans import LLM, agent_attrs, make_processor, timed_span, usage

AGENT = "oa-bot"
CLASSES = (Completions, AsyncCompletions, Responses, AsyncResponses)
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    fake = FakeOpenAIServer().start()
    yield fake
    fake.close()


@pytest.fixture
def fake(server: FakeOpenAIServer) -> FakeOpenAIServer:
    server.reset()
    return server


@pytest.fixture
def instrumentor() -> Iterator[OpenAIInstrumentor]:
    originals = {cls: cls.__dict__["create"] for cls in CLASSES}
    instrumentor = OpenAIInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()
    assert {cls: cls.__dict__["create"] for cls in CLASSES} == originals


Learned = tuple[TracerProvider, AdaptiveSpanProcessor, Any]


@pytest.fixture
def learned() -> Iterator[Learned]:
    """A processor that learned runs of ``oa-bot``: a short first call (so it is the most
    latency-tolerant: priority 0), then a long one on the critical path."""
    provider, processor, tracer = make_processor()
    for _ in range(3):
        with timed_span(tracer, "bot", 0, 100, agent_attrs(AGENT)):
            with timed_span(tracer, "chat m", 0, 5, LLM, end_attributes=usage(64)):
                pass
            with timed_span(tracer, "chat m", 10, 95, LLM, end_attributes=usage(8)):
                pass
        assert processor.force_flush(5000)
    yield provider, processor, tracer
    provider.shutdown()


def _client(fake: FakeOpenAIServer, **kwargs: Any) -> OpenAI:
    return OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, **kwargs)


def _hints_of(request: ReceivedRequest) -> Any:
    return request.body.get("nvext", {}).get("agent_hints")


def test_a_client_built_before_instrument_sends_the_dynamo_profile(
    fake: FakeOpenAIServer, learned: Learned, instrumentor: OpenAIInstrumentor
) -> None:
    _, _, tracer = learned
    client = _client(fake)  # built before instrument()
    instrumentor.instrument()
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)) as root:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
        trace_id = root.get_span_context().trace_id
    (request,) = fake.requests
    assert set(request.body["nvext"]) == {"agent_hints"}
    hints = _hints_of(request)
    assert set(hints) == {"priority", "osl"}
    assert hints["osl"] == 64
    assert type(hints["priority"]) is int and hints["priority"] >= 0
    assert request.headers["x-dynamo-session-id"] == f"{AGENT}-{trace_id:032x}"
    assert "x-dynamo-parent-session-id" not in request.headers
    client.close()


def test_instrument_twice_is_once_and_uninstrument_restores_the_methods(
    instrumentor: OpenAIInstrumentor,
) -> None:
    originals = {cls: cls.__dict__["create"] for cls in CLASSES}
    assert instrumentor.instrument()
    wrapped = {cls: cls.__dict__["create"] for cls in CLASSES}
    assert all(wrapped[cls] is not originals[cls] for cls in CLASSES)
    assert all(wrapped[cls].__wrapped__ is originals[cls] for cls in CLASSES)
    assert OpenAIInstrumentor().instrument()
    assert {cls: cls.__dict__["create"] for cls in CLASSES} == wrapped
    instrumentor.uninstrument()
    assert {cls: cls.__dict__["create"] for cls in CLASSES} == originals
    assert not instrumentor.is_instrumented
    instrumentor.uninstrument()  # a second time changes nothing
    assert {cls: cls.__dict__["create"] for cls in CLASSES} == originals


def test_nothing_learned_sends_the_request_unchanged(
    fake: FakeOpenAIServer, instrumentor: OpenAIInstrumentor
) -> None:
    provider, _, tracer = make_processor()
    client = _client(fake)
    body_extra = {"nvext": {"greed_sampling": True}}

    def call() -> ReceivedRequest:
        with tracer.start_as_current_span("bot", attributes=agent_attrs("never-seen")):
            client.chat.completions.create(
                model=MODEL, messages=MESSAGES, extra_body=body_extra, extra_headers={"x-a": "1"}
            )
        return fake.requests[-1]

    plain = call()
    instrumentor.instrument()
    hinted = call()
    assert hinted.body == plain.body == {"messages": MESSAGES, "model": MODEL, **body_extra}
    assert _without_volatile(hinted.headers) == _without_volatile(plain.headers)
    client.close()
    provider.shutdown()


def _without_volatile(headers: dict[str, str]) -> dict[str, str]:
    # The client numbers its retries; trace-context headers (added by any HTTP
    # instrumentation another test left on) differ per span by design.
    volatile = {"x-stainless-retry-count", "traceparent", "tracestate", "baggage"}
    return {k: v for k, v in headers.items() if k.lower() not in volatile}


def test_the_callers_nvext_keys_and_headers_win_and_their_dicts_are_not_modified(
    fake: FakeOpenAIServer, learned: Learned, instrumentor: OpenAIInstrumentor
) -> None:
    _, _, tracer = learned
    client = _client(fake, default_headers={"X-Dynamo-Parent-Session-Id": "from-client"})
    instrumentor.instrument()
    extra_body = {"nvext": {"greed_sampling": True, "agent_hints": {"priority": 9}}, "top_k": 3}
    extra_headers = {"X-Dynamo-Session-Id": "mine"}
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_body=extra_body, extra_headers=extra_headers
        )
    (request,) = fake.requests
    assert request.body["nvext"] == {
        "greed_sampling": True,
        "agent_hints": {"priority": 9, "osl": 64},
    }
    assert request.body["top_k"] == 3
    assert request.headers["x-dynamo-session-id"] == "mine"
    assert request.headers["x-dynamo-parent-session-id"] == "from-client"
    assert extra_body == {
        "nvext": {"greed_sampling": True, "agent_hints": {"priority": 9}},
        "top_k": 3,
    }
    assert extra_headers == {"X-Dynamo-Session-Id": "mine"}
    client.close()


def test_hints_come_from_the_span_the_call_is_made_under_at_call_time(
    fake: FakeOpenAIServer, learned: Learned, instrumentor: OpenAIInstrumentor
) -> None:
    _, _, tracer = learned
    client = _client(fake)
    instrumentor.instrument()
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
        with tracer.start_as_current_span("urgent"):
            assert otel_adaptive.set_latency_sensitivity(5)
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)  # no span: no hints
    first, urgent, outside = fake.requests
    assert (_hints_of(first)["priority"], _hints_of(urgent)["priority"]) == (0, 4)
    assert "nvext" not in outside.body
    client.close()


def test_sync_async_streaming_chat_and_responses_all_carry_hints(
    fake: FakeOpenAIServer, learned: Learned, instrumentor: OpenAIInstrumentor
) -> None:
    _, _, tracer = learned
    client = _client(fake)
    aclient = AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
    instrumentor.instrument()

    async def async_calls() -> None:
        await aclient.chat.completions.create(model=MODEL, messages=MESSAGES)
        async for _ in await aclient.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        ):
            pass
        await aclient.responses.create(model=MODEL, input="hi")
        async for _ in await aclient.responses.create(model=MODEL, input="hi", stream=True):
            pass

    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            pass
        client.responses.create(model=MODEL, input="hi")
        for _ in client.responses.create(model=MODEL, input="hi", stream=True):
            pass
        asyncio.run(async_calls())
    assert len(fake.requests) == 7
    for request in fake.requests:
        assert set(_hints_of(request)) == {"priority", "osl"}, request.path
        assert request.headers["x-dynamo-session-id"].startswith(AGENT + "-")
    client.close()
    asyncio.run(aclient.close())


def test_a_blocked_body_path_warns_once_and_sends_the_callers_request(
    fake: FakeOpenAIServer,
    learned: Learned,
    instrumentor: OpenAIInstrumentor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, tracer = learned
    client = _client(fake)
    instrumentor.instrument()
    with (
        caplog.at_level(logging.WARNING),
        tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)),
    ):
        for _ in range(2):
            client.chat.completions.create(
                model=MODEL, messages=MESSAGES, extra_body={"nvext": "flat"}
            )
    assert [r.body["nvext"] for r in fake.requests] == ["flat", "flat"]
    assert all("x-dynamo-session-id" not in r.headers for r in fake.requests)
    assert len([r for r in caplog.records if "not an object" in r.getMessage()]) == 1
    client.close()


def test_a_failure_inside_the_integration_never_reaches_the_application(
    fake: FakeOpenAIServer,
    learned: Learned,
    instrumentor: OpenAIInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, tracer = learned
    client = _client(fake)
    instrumentor.instrument()

    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(profiles, "merged_body", broken)
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        response = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_body={"seed": 1}
        )
    assert response.choices
    (request,) = fake.requests
    assert request.body == {"messages": MESSAGES, "model": MODEL, "seed": 1}
    client.close()


def test_uninstrument_keeps_a_wrapper_added_on_top_and_ours_passes_through(
    fake: FakeOpenAIServer, learned: Learned, instrumentor: OpenAIInstrumentor
) -> None:
    _, _, tracer = learned
    client = _client(fake)
    instrumentor.instrument()
    ours = Completions.__dict__["create"]
    seen: list[str] = []

    def theirs(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append("theirs")
        return ours(self, *args, **kwargs)

    Completions.create = theirs  # type: ignore[method-assign]
    try:
        instrumentor.uninstrument()
        assert Completions.__dict__["create"] is theirs
        with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert seen == ["theirs"]
        assert "nvext" not in fake.requests[-1].body
        instrumentor.instrument()  # ours beneath theirs comes back to life, not twice
        assert Completions.__dict__["create"] is theirs
        with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert "agent_hints" in fake.requests[-1].body["nvext"]
    finally:
        instrumentor.uninstrument()
        Completions.create = ours.__wrapped__  # type: ignore[method-assign]
        instrumentor.instrument()  # lets the fixture's uninstrument find everything in place
    client.close()


def test_langchain_chat_openai_built_before_instrument_is_covered(
    fake: FakeOpenAIServer, learned: Learned, instrumentor: OpenAIInstrumentor
) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    _, _, tracer = learned
    model = langchain_openai.ChatOpenAI(
        model=MODEL, base_url=fake.base_url, api_key="k", max_retries=0
    )
    assert model.client is not None  # its openai client and resources exist already
    instrumentor.instrument()
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        model.invoke("hi")
    (hinted,) = fake.requests
    assert set(_hints_of(hinted)) == {"priority", "osl"}
    assert hinted.headers["x-dynamo-session-id"].startswith(AGENT + "-")


# --- zero-code: OTEL_ADAPTIVE_INSTRUMENT_OPENAI under opentelemetry-instrument ----------------

_APP = """
import json, sys
from openai import OpenAI
from opentelemetry import trace
from otel_adaptive import autoload

tracer = trace.get_tracer("app")
agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "zero-code"}
chat = {"gen_ai.operation.name": "chat"}
for _ in range(2):
    with tracer.start_as_current_span("agent", attributes=agent):
        with tracer.start_as_current_span("chat m", attributes=chat) as s:
            s.set_attribute("gen_ai.usage.output_tokens", 42)
    processor = autoload.installed()
    if processor is not None:
        processor.force_flush()
client = OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)
with tracer.start_as_current_span("agent", attributes=agent):
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
"""


@pytest.mark.parametrize("switch", ["true", "false"])
def test_the_setting_instruments_the_client_under_opentelemetry_instrument(
    fake: FakeOpenAIServer, tmp_path: Any, switch: str
) -> None:
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    if not launcher.exists():
        pytest.skip("opentelemetry-instrument is not installed (pip install opentelemetry-distro)")
    app = tmp_path / "app.py"
    app.write_text(_APP, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="*",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_ADAPTIVE_ENABLED="true",
        OTEL_ADAPTIVE_INSTRUMENT_OPENAI=switch,
    )
    result = subprocess.run(
        [str(launcher), sys.executable, str(app), fake.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (request,) = fake.requests
    if switch == "true":
        assert _hints_of(request) == {"priority": 2, "osl": 42}
        assert request.headers["x-dynamo-session-id"].startswith("zero-code-")
    else:
        assert "nvext" not in request.body


def test_the_openai_agents_sdk_is_covered(
    fake: FakeOpenAIServer, learned: Learned, instrumentor: OpenAIInstrumentor
) -> None:
    agents = pytest.importorskip("agents")
    agents.set_trace_processors([])  # the SDK's own tracing would try to upload
    _, _, tracer = learned
    client = AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
    agent = agents.Agent(
        name="helper",
        instructions="be brief",
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
    )
    instrumentor.instrument()
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        result = agents.Runner.run_sync(agent, "hi")
    assert result.final_output
    (request,) = fake.requests
    assert set(_hints_of(request)) == {"priority", "osl"}
    assert request.headers["x-dynamo-session-id"].startswith(AGENT + "-")
