"""Typed records that flow from the assembler to the stores and learners.

Records are frozen ``msgspec`` structs: cheap to build, immutable once handed to
another stage, and stored in a compact, versioned binary form (a version byte, then
MessagePack with each struct as an array of its fields; see ``docs/storage.md``).
Runs stored earlier as JSON objects still decode.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: Version of the stored run-record layout; bumped on incompatible changes.
RUN_SCHEMA_VERSION = 1

ScopeType = Literal[
    "agent",
    "function",
    "llm",
    "tool",
    "retriever",
    "embedding",
    "reranker",
    "guardrail",
    "evaluator",
    "unknown",
]

#: Scope types whose names make up a call's scope path.
STRUCTURAL_SCOPES: frozenset[str] = frozenset({"agent", "function", "unknown"})

CallKind = Literal["llm", "tool"]


def clean_name(name: object, limit: int) -> str:
    """A name cut to ``limit`` characters that is always encodable as UTF-8.

    Lone surrogates (possible in Python strings, impossible in UTF-8) become
    ``?`` so that every stored name survives JSON and Redis.
    """
    text = (name if isinstance(name, str) else str(name))[:limit]
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class CallRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One LLM or tool call inside a run.

    ``path`` holds the names of the structural scopes from the run root
    (included) down to the call's parent. Times are epoch nanoseconds. Stored as an
    array in field order: new fields go at the end, with a default.
    """

    kind: CallKind
    name: str
    span_id: str
    parent_span_id: str | None
    path: tuple[str, ...]
    start_ns: int
    end_ns: int
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    total_tokens: int | None = None
    model_name: str | None = None
    tool_call_count: int | None = None

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


class RunRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One completed agent run: the LLM and tool calls under one run root.

    ``id`` is derived from the trace id and the run root's span id, so storing
    the same run twice (a retried write) is idempotent. ``truncated`` marks a run
    stored with spans still open beneath it (its grace time ran out): it is kept
    for inspection and never learned from.
    """

    id: str
    agent_id: str
    trace_id: str
    start_ns: int
    end_ns: int
    calls: tuple[CallRecord, ...]
    truncated: bool = False
    schema_version: int = RUN_SCHEMA_VERSION

    def llm_calls(self) -> list[CallRecord]:
        """LLM calls in start order."""
        return sorted((c for c in self.calls if c.kind == "llm"), key=_start_key)

    def tool_calls(self) -> list[CallRecord]:
        """Tool calls in start order."""
        return sorted((c for c in self.calls if c.kind == "tool"), key=_start_key)


def _start_key(call: CallRecord) -> tuple[int, int]:
    return (call.start_ns, call.end_ns)


class RunFormatError(ValueError):
    """A stored run whose encoding version this code does not know (written by a newer one)."""


#: First byte of a run in the binary form, version 1 (MessagePack arrays).
RUN_FORMAT_V1 = 0x01
_V1_PREFIX = bytes([RUN_FORMAT_V1])
# Runs stored as JSON objects (before the binary form) start with '{'.
_JSON_FIRST_BYTES = frozenset(b"{ \t\r\n")


class _JsonCall(CallRecord, frozen=True, array_like=False):
    """A call as the JSON object runs were once stored with (read only)."""


class _JsonRun(RunRecord, frozen=True, array_like=False):
    """A run as the JSON object it was once stored as (read only)."""

    calls: tuple[_JsonCall, ...]


_ENCODER = msgspec.msgpack.Encoder()
_RUN_DECODER = msgspec.msgpack.Decoder(RunRecord)
_JSON_RUN_DECODER = msgspec.json.Decoder(_JsonRun)


def encode_run(run: RunRecord) -> bytes:
    """Encode a run in the current binary form: the version byte, then MessagePack."""
    buffer = bytearray(_V1_PREFIX)
    _ENCODER.encode_into(run, buffer, 1)
    return bytes(buffer)


def decode_run(data: bytes | str) -> RunRecord:
    """Decode a run encoded by :func:`encode_run`, or a run stored earlier as JSON.

    Raises :class:`RunFormatError` for an encoding version this code does not know, and
    ``msgspec.DecodeError`` (a ``ValueError`` too) on corrupt data.
    """
    raw = data.encode() if isinstance(data, str) else data
    if not raw:
        raise msgspec.DecodeError("empty run record")
    first = raw[0]
    if first == RUN_FORMAT_V1:
        return _RUN_DECODER.decode(memoryview(raw)[1:])
    if first in _JSON_FIRST_BYTES:
        return _from_json_form(_JSON_RUN_DECODER.decode(raw))
    raise RunFormatError(f"unknown run encoding version {first}")


def _from_json_form(run: _JsonRun) -> RunRecord:
    """The record types proper (the JSON-form subclasses would not compare equal)."""
    calls = tuple(CallRecord(**msgspec.structs.asdict(call)) for call in run.calls)
    fields = msgspec.structs.asdict(run)
    fields["calls"] = calls
    return RunRecord(**fields)
