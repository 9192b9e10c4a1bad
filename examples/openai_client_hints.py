"""An app using the ``openai`` client whose requests carry learned agent hints.

Runs offline: it starts a tiny OpenAI-compatible server on 127.0.0.1 (a thread
answering ``/v1/chat/completions`` with a canned reply and token usage) and
points the client at it. Each agent run plans with one request and answers with
a second. The application code calls the client as usual: ``OpenAIInstrumentor``
adds ``nvext.agent_hints`` (the ``dynamo`` profile: ``priority`` and ``osl``) and
an ``x-dynamo-session-id`` header to every request once the processor has
learned something, and the fake server shows what it received. Its ``nvext``
keeps the application's own ``greed_sampling`` key.

    pip install 'otel-adaptive[examples]'
    python examples/openai_client_hints.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openai import OpenAI
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive import AdaptiveSpanProcessor
from otel_adaptive.instrumentation import OpenAIInstrumentor

MODEL = "fake-model"
AGENT = "support-bot"


# --- the fake OpenAI-compatible server ------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _FakeOpenAI

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        self.server.record(body, self.headers.get("x-dynamo-session-id"))
        # Answers use half the tokens the request allows, so the learning is predictable.
        completion_tokens = int(body.get("max_tokens", 100)) // 2
        self._send(
            200,
            {
                "id": f"chatcmpl-{len(self.server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", MODEL),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 20,
                    "completion_tokens": completion_tokens,
                    "total_tokens": 20 + completion_tokens,
                },
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the example's output readable


class _FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.session_ids: list[str | None] = []
        self._lock = threading.Lock()

    def record(self, body: dict[str, Any], session_id: str | None) -> None:
        with self._lock:
            self.requests.append(body)
            self.session_ids.append(session_id)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"


@contextmanager
def fake_openai_server() -> Iterator[_FakeOpenAI]:
    server = _FakeOpenAI()
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# --- the application ------------------------------------------------------------------------


def run_agent(client: OpenAI, tracer: Any, question: str) -> None:
    with tracer.start_as_current_span(
        "support", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT}
    ):
        for step, max_tokens in (("plan", 64), ("answer", 512)):
            with tracer.start_as_current_span(
                step, attributes={"openinference.span.kind": "CHAIN"}
            ):
                ask(client, tracer, f"{step}: {question}", max_tokens)


def ask(client: OpenAI, tracer: Any, prompt: str, max_tokens: int) -> str:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL}
    with tracer.start_as_current_span(f"chat {MODEL}", attributes=attributes) as span:
        # Nothing about hints here: the instrumentor merges them in at call time.
        response = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            extra_body={"nvext": {"greed_sampling": False}},
        )
        if response.usage is not None:
            span.set_attribute("gen_ai.usage.output_tokens", response.usage.completion_tokens)
            span.set_attribute("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
        return response.choices[0].message.content or ""


def main(argv: Sequence[str] | None = None) -> list[tuple[dict[str, Any], str | None]]:
    """Run the example; returns the (body, session header) of every request received."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    provider = TracerProvider(resource=Resource.create({"service.name": "openai-example"}))
    processor = AdaptiveSpanProcessor(schedule_delay_millis=50)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("examples.openai_client_hints")
    instrumentor = OpenAIInstrumentor()
    try:
        with fake_openai_server() as server:
            client = OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
            instrumentor.instrument()  # one line; also covers clients built earlier
            for number in range(1, args.runs + 1):
                run_agent(client, tracer, f"question {number}")
                processor.force_flush()  # let the next run see what this one taught
            client.close()
            requests = list(zip(server.requests, server.session_ids, strict=True))
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    for number, (body, session_id) in enumerate(requests, start=1):
        hints = body["nvext"].get("agent_hints", "none learned yet")
        print(f"request {number} ({body['messages'][0]['content']}): {hints} {session_id or ''}")
    return requests


if __name__ == "__main__":
    main()
