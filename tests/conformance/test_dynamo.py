"""Hints through a live NVIDIA Dynamo frontend (``../shared/dynamo/run_dynamo.sh``).

The harness runs Dynamo's real OpenAI-compatible frontend with an echo engine that
logs every request the frontend forwards (``$DYNAMO_STATE/run/traces/echo_requests.jsonl``),
so the test sees what Dynamo parsed out of our hints: ``routing.priority``,
``routing.expected_output_tokens`` and the session ids in ``agent_context``.

It needs the harness set up once (``DYNAMO_STATE=... run_dynamo.sh setup``); without it
the module is skipped, unless ``OTEL_ADAPTIVE_REQUIRE_DYNAMO=1`` (as CI sets) turns the
skip into a failure. The frontend is started on free ports for this module and stopped
after it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai", reason="the Dynamo test needs the openai client")

from openai import BadRequestError, OpenAI
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import otel_adaptive
from otel_adaptive.instrumentation import OpenAIInstrumentor
from spans import LLM, agent_attrs, make_processor, timed_span, usage

REPO = Path(__file__).resolve().parents[2]
REQUIRE_VARIABLE = "OTEL_ADAPTIVE_REQUIRE_DYNAMO"
MODEL = "tiny-echo"
AGENT = "dyn-bot"
LEARNED_OSL = 64
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_VARIABLE, "").strip() == "1":
        pytest.fail(f"live Dynamo required ({REQUIRE_VARIABLE}=1) but unavailable: {reason}")
    pytest.skip(f"live Dynamo unavailable: {reason}")


def _harness_script() -> Path | None:
    explicit = os.environ.get("OTEL_ADAPTIVE_DYNAMO_HARNESS")
    candidates = (
        [Path(explicit)]
        if explicit
        else [
            # The shared folder is the clone's sibling; a worktree sits one level deeper.
            REPO.parent / "shared" / "dynamo" / "run_dynamo.sh",
            REPO.parent.parent / "shared" / "dynamo" / "run_dynamo.sh",
        ]
    )
    return next((path for path in candidates if path.is_file()), None)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Dynamo:
    base_url: str
    echo_log: Path

    def engine_requests_during(self, call: Any) -> list[dict[str, Any]]:
        """Run ``call()``; return what the echo engine received meanwhile."""
        before = self._lines()
        call()
        deadline = time.monotonic() + 10
        while True:
            lines = self._lines()
            if len(lines) > len(before) or time.monotonic() > deadline:
                return [json.loads(line)["request"] for line in lines[len(before) :]]
            time.sleep(0.05)

    def _lines(self) -> list[str]:
        if not self.echo_log.exists():
            return []
        return self.echo_log.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def dynamo() -> Iterator[Dynamo]:
    script = _harness_script()
    if script is None:
        _unavailable("run_dynamo.sh not found (set OTEL_ADAPTIVE_DYNAMO_HARNESS)")
    assert script is not None
    state = Path(os.environ.get("DYNAMO_STATE", "/tmp/otel-adaptive-dynamo"))
    if not (state / "venv" / "bin" / "python").exists():
        _unavailable(f"no harness venv in {state}; run: DYNAMO_STATE={state} {script} setup")
    http, xsub, xpub = _free_ports(3)
    env = {
        **os.environ,
        "DYNAMO_STATE": str(state),
        "DYN_HTTP_PORT": str(http),
        "BROKER_XSUB_PORT": str(xsub),
        "BROKER_XPUB_PORT": str(xpub),
    }

    def harness(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    started = harness("start")
    try:
        if started.returncode != 0:
            _unavailable(f"run_dynamo.sh start failed:\n{started.stdout[-2000:]}{started.stderr}")
        yield Dynamo(
            f"http://127.0.0.1:{http}/v1", state / "run" / "traces" / "echo_requests.jsonl"
        )
    finally:
        harness("stop")


@pytest.fixture
def instrumentor() -> Iterator[OpenAIInstrumentor]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()


def _learned(**config: Any) -> tuple[Any, Any]:
    """Runs of ``dyn-bot`` learned from plain SDK spans: a short first call (the most
    latency-tolerant, priority 0) answering 64 tokens, then a long one."""
    provider, processor, tracer = make_processor(**config)
    for _ in range(3):
        with timed_span(tracer, "bot", 0, 100, agent_attrs(AGENT)):
            with timed_span(tracer, "chat m", 0, 5, LLM, end_attributes=usage(LEARNED_OSL)):
                pass
            with timed_span(tracer, "chat m", 10, 95, LLM, end_attributes=usage(8)):
                pass
        assert processor.force_flush(5000)
    return provider, tracer


def _chat(client: OpenAI, *, stream: bool = False, **kwargs: Any) -> int:
    """One chat completion read to the end; returns the HTTP status."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=4, stream=stream, **kwargs
    )
    parsed = raw.parse()
    if stream:
        for _ in parsed:
            pass
    return raw.status_code


# Profiles documented as accepted by Dynamo >= 1.3.
STRICT_DYNAMO_PROFILES = {
    "dynamo": {},
    "custom-priority-osl": {"hint_profile": "custom", "hint_fields": "priority,osl"},
}


@pytest.mark.parametrize("config", STRICT_DYNAMO_PROFILES.values(), ids=STRICT_DYNAMO_PROFILES)
def test_hinted_requests_are_accepted_and_the_engine_sees_priority_osl_and_session(
    dynamo: Dynamo, instrumentor: OpenAIInstrumentor, config: dict[str, Any]
) -> None:
    provider, tracer = _learned(**config)
    client = OpenAI(base_url=dynamo.base_url, api_key="none", max_retries=0)
    statuses: list[int] = []
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)) as root:
        session = f"{AGENT}-{root.get_span_context().trace_id:032x}"
        plain = dynamo.engine_requests_during(lambda: statuses.append(_chat(client)))
        streamed = dynamo.engine_requests_during(
            lambda: statuses.append(_chat(client, stream=True))
        )
        with tracer.start_as_current_span("urgent"):
            assert otel_adaptive.set_latency_sensitivity(5)
            urgent = dynamo.engine_requests_during(
                lambda: statuses.append(_chat(client, stream=True))
            )
    assert statuses == [200, 200, 200]
    for received in (plain, streamed, urgent):
        (request,) = received
        assert request["routing"]["expected_output_tokens"] == LEARNED_OSL
        assert isinstance(request["routing"]["priority"], int)
        assert request["agent_context"]["session_id"] == session
    assert plain[0]["routing"]["priority"] == streamed[0]["routing"]["priority"] == 0
    assert urgent[0]["routing"]["priority"] == 4
    assert urgent[0]["routing"]["priority"] > plain[0]["routing"]["priority"]
    client.close()
    provider.shutdown()


def test_the_callers_own_nvext_keys_survive(
    dynamo: Dynamo, instrumentor: OpenAIInstrumentor
) -> None:
    provider, tracer = _learned()
    client = OpenAI(base_url=dynamo.base_url, api_key="none", max_retries=0)
    caller_nvext = {"annotations": ["caller:kept"], "agent_hints": {"priority": 2}}
    statuses: list[int] = []
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        (request,) = dynamo.engine_requests_during(
            lambda: statuses.append(_chat(client, stream=True, extra_body={"nvext": caller_nvext}))
        )
    assert statuses == [200]
    assert request["annotations"] == ["caller:kept"]
    assert request["routing"]["priority"] == 2  # the caller's, not our 0
    assert request["routing"]["expected_output_tokens"] == LEARNED_OSL  # ours, merged in
    assert caller_nvext == {"annotations": ["caller:kept"], "agent_hints": {"priority": 2}}
    client.close()
    provider.shutdown()


def test_a_run_with_a_remote_parent_sends_the_parent_session(
    dynamo: Dynamo, instrumentor: OpenAIInstrumentor
) -> None:
    provider, tracer = _learned()
    client = OpenAI(base_url=dynamo.base_url, api_key="none", max_retries=0)
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("bot", context=parent, attributes=agent_attrs(AGENT)):
        (request,) = dynamo.engine_requests_during(lambda: _chat(client))
    assert request["agent_context"]["session_id"] == f"{AGENT}-{remote.trace_id:032x}"
    assert request["agent_context"]["parent_session_id"] == (
        "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"
    )
    client.close()
    provider.shutdown()


def test_the_nat_profile_is_rejected_by_strict_dynamo_as_documented(
    dynamo: Dynamo, instrumentor: OpenAIInstrumentor
) -> None:
    provider, tracer = _learned(hint_profile="nat")
    client = OpenAI(base_url=dynamo.base_url, api_key="none", max_retries=0)
    with tracer.start_as_current_span("bot", attributes=agent_attrs(AGENT)):
        with pytest.raises(BadRequestError) as rejected:
            _chat(client)
    assert rejected.value.status_code == 400
    assert "unknown field" in str(rejected.value)
    client.close()
    provider.shutdown()
