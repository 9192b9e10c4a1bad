"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for offline conformance tests.

The test decides what the "model" answers: it queues :class:`Reply` objects, and each
request to ``/v1/chat/completions`` or ``/v1/responses`` takes the next one (a plain
text answer when the queue is empty). A reply either asks for tool calls or answers
with text, and carries the token usage the server reports, so tests can assert the
exact counts an instrumentation should have recorded.

Supported: chat completions (plain and streamed as SSE chunks, with a final usage
chunk when ``stream_options.include_usage`` is set) and the Responses API (plain and
streamed as typed events), both with function calls. Only the standard library is
used, so importing this module never needs the optional conformance dependencies.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Suffix the server appends to the requested model, as OpenAI answers with a dated
#: snapshot name: tests can tell the response model from the request model.
RESPONSE_MODEL_SUFFIX = "-2025-01-01"

# What every scenario asks of the fake model, and the model name it answers with.
MODEL = "fake-gpt"
SERVED_MODEL = MODEL + RESPONSE_MODEL_SUFFIX
CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_weather", "get_time")
]
RESPONSE_TOOLS: list[Any] = [
    {"type": "function", "name": name, "parameters": {"type": "object"}}
    for name in ("get_weather", "get_time")
]
MESSAGES: list[Any] = [{"role": "user", "content": "Weather and time in Paris?"}]


def chat_calls(client: Any) -> None:
    """The chat scenario: a plain call with tools, a stream with usage, a stream without."""
    client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=CHAT_TOOLS)
    for _ in client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    ):
        pass
    for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
        pass


_CREATED = 1_700_000_000


@dataclass(frozen=True)
class ToolCall:
    """One function call the model requests."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """What the fake model answers to one request."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 10
    output_tokens: int = 5

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def tools(*names: str, input_tokens: int = 10, output_tokens: int = 5) -> Reply:
    """A reply that requests one call of each named tool (no arguments)."""
    return Reply(
        tool_calls=tuple(ToolCall(name) for name in names),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def text(answer: str = "done", *, input_tokens: int = 10, output_tokens: int = 5) -> Reply:
    """A reply that answers with text and requests no tools."""
    return Reply(text=answer, input_tokens=input_tokens, output_tokens=output_tokens)


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class FakeOpenAIServer:
    """The server; start with :meth:`start`, stop with :meth:`close`."""

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[ReceivedRequest] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-openai", daemon=True
        )

    @property
    def base_url(self) -> str:
        """Base URL for OpenAI clients (``.../v1``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order by the next requests."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        """Replies queued and not yet used."""
        with self._lock:
            return len(self._replies)

    # --- called by the handler ---------------------------------------------------------------

    def _next(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._replies.popleft() if self._replies else text()

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}_{next(self._ids):06d}"


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send_json(400, {"error": {"message": "invalid JSON"}})
                return
            path = self.path.split("?", 1)[0]
            request = ReceivedRequest(path, body, {k.lower(): v for k, v in self.headers.items()})
            if path.endswith("/chat/completions"):
                reply = server._next(request)
                chat = _Chat(server, body, reply)
                if body.get("stream"):
                    self._send_events(chat.chunks())
                else:
                    self._send_json(200, chat.completion())
            elif path.endswith("/responses"):
                reply = server._next(request)
                responses = _Responses(server, body, reply)
                if body.get("stream"):
                    self._send_events(responses.events())
                else:
                    self._send_json(200, responses.response())
            else:
                self._send_json(404, {"error": {"message": f"no route {path}"}})

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_events(self, events: Iterator[tuple[str | None, dict[str, Any] | str]]) -> None:
            # HTTP/1.0 without a length: the stream ends when the connection closes.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for event, data in events:
                payload = data if isinstance(data, str) else json.dumps(data)
                prefix = f"event: {event}\n" if event else ""
                self.wfile.write(f"{prefix}data: {payload}\n\n".encode())
                self.wfile.flush()

    return Handler


def _response_model(body: dict[str, Any]) -> str:
    return str(body.get("model") or "fake-model") + RESPONSE_MODEL_SUFFIX


class _Chat:
    """A chat completion (or its stream of chunks) for one reply."""

    def __init__(self, server: FakeOpenAIServer, body: dict[str, Any], reply: Reply) -> None:
        self._reply = reply
        self._body = body
        self._id = server._new_id("chatcmpl")
        self._call_ids = [server._new_id("call") for _ in reply.tool_calls]
        self._model = _response_model(body)

    def _finish_reason(self) -> str:
        return "tool_calls" if self._reply.tool_calls else "stop"

    def _usage(self) -> dict[str, Any]:
        reply = self._reply
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.total_tokens,
        }

    def _tool_calls(self) -> list[dict[str, Any]]:
        return [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call_id, call in zip(self._call_ids, self._reply.tool_calls, strict=True)
        ]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self._reply.text}
        if self._reply.tool_calls:
            message["tool_calls"] = self._tool_calls()
        return {
            "id": self._id,
            "object": "chat.completion",
            "created": _CREATED,
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self._finish_reason(),
                    "logprobs": None,
                }
            ],
            "usage": self._usage(),
        }

    def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None
    ) -> tuple[None, dict[str, Any]]:
        return None, {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def chunks(self) -> Iterator[tuple[str | None, dict[str, Any] | str]]:
        yield self._chunk({"role": "assistant", "content": ""})
        if self._reply.text:
            # Two content chunks, as real streams split text.
            middle = len(self._reply.text) // 2
            for piece in (self._reply.text[:middle], self._reply.text[middle:]):
                if piece:
                    yield self._chunk({"content": piece})
        for index, call in enumerate(self._tool_calls()):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            yield self._chunk({"tool_calls": [head]})
            arguments = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
            yield self._chunk({"tool_calls": [arguments]})
        yield self._chunk({}, self._finish_reason())
        options = self._body.get("stream_options") or {}
        if options.get("include_usage"):
            yield (
                None,
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": _CREATED,
                    "model": self._model,
                    "choices": [],
                    "usage": self._usage(),
                },
            )
        yield None, "[DONE]"


class _Responses:
    """A Responses API response (or its stream of events) for one reply."""

    def __init__(self, server: FakeOpenAIServer, body: dict[str, Any], reply: Reply) -> None:
        self._reply = reply
        self._body = body
        self._id = server._new_id("resp")
        self._items = self._output_items(server)
        self._sequence = itertools.count()

    def _output_items(self, server: FakeOpenAIServer) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if self._reply.text is not None:
            items.append(
                {
                    "type": "message",
                    "id": server._new_id("msg"),
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": self._reply.text, "annotations": []}
                    ],
                }
            )
        for call in self._reply.tool_calls:
            items.append(
                {
                    "type": "function_call",
                    "id": server._new_id("fc"),
                    "call_id": server._new_id("call"),
                    "name": call.name,
                    "arguments": json.dumps(call.arguments),
                    "status": "completed",
                }
            )
        return items

    def response(self, *, status: str = "completed", final: bool = True) -> dict[str, Any]:
        reply = self._reply
        return {
            "id": self._id,
            "object": "response",
            "created_at": _CREATED,
            "status": status,
            "model": _response_model(self._body),
            "output": self._items if final else [],
            "parallel_tool_calls": bool(self._body.get("parallel_tool_calls", True)),
            "tool_choice": self._body.get("tool_choice") or "auto",
            "tools": self._body.get("tools") or [],
            "instructions": self._body.get("instructions"),
            "error": None,
            "incomplete_details": None,
            "metadata": {},
            "temperature": self._body.get("temperature"),
            "top_p": self._body.get("top_p"),
            "usage": {
                "input_tokens": reply.input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": reply.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": reply.total_tokens,
            }
            if final
            else None,
        }

    def _event(self, kind: str, **payload: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, "sequence_number": next(self._sequence), **payload}

    def events(self) -> Iterator[tuple[str | None, dict[str, Any] | str]]:
        yield self._event(
            "response.created", response=self.response(status="in_progress", final=False)
        )
        for index, item in enumerate(self._items):
            yield self._event("response.output_item.added", output_index=index, item=item)
            if item["type"] == "message":
                text_value = item["content"][0]["text"]
                yield self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=text_value,
                    logprobs=[],
                )
                yield self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text_value,
                    logprobs=[],
                )
            yield self._event("response.output_item.done", output_index=index, item=item)
        yield self._event("response.completed", response=self.response())
