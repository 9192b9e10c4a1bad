"""Typed records that flow from the assembler to the stores and learners.

Records are frozen ``msgspec`` structs: cheap to build and immutable once handed to
another stage. Runs are stored in a compact, versioned binary form (a version byte,
then MessagePack arrays; ``docs/storage.md`` describes it); runs stored earlier as
JSON objects still decode.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Literal

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


# ``gc=False``: records hold only strings, numbers and tuples of records, so they can
# never be part of a reference cycle; untracked, a backlog of them adds nothing to
# the garbage collector's passes (which run on application threads too).
class CallRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One LLM or tool call inside a run.

    ``path`` holds the names of the structural scopes from the run root
    (included) down to the call's parent. Times are epoch nanoseconds.
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


class RunRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
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
        return _in_start_order([c for c in self.calls if c.kind == "llm"])

    def tool_calls(self) -> list[CallRecord]:
        """Tool calls in start order."""
        return _in_start_order([c for c in self.calls if c.kind == "tool"])


# (start_ns, end_ns), read natively: runs are sorted by it for every learner.
_start_key: Callable[[CallRecord], tuple[int, int]] = operator.attrgetter("start_ns", "end_ns")


def _in_start_order(calls: list[CallRecord]) -> list[CallRecord]:
    # Sorted in place (stable: calls that start and end together keep their order);
    # the assembler emits calls in this order already, which timsort checks in one pass.
    calls.sort(key=_start_key)
    return calls


class RunFormatError(ValueError):
    """A stored run whose encoding version this code does not know (written by a newer one)."""


#: First byte of a run in the binary form, version 1.
RUN_FORMAT_V1 = 0x01
_V1_PREFIX = bytes([RUN_FORMAT_V1])
# Runs stored as JSON objects (before the binary form) start with '{'.
_JSON_FIRST_BYTES = frozenset(b"{ \t\r\n")
_KINDS: tuple[CallKind, CallKind] = ("llm", "tool")
_KIND_CODES = {kind: code for code, kind in enumerate(_KINDS)}
_Index = Annotated[int, msgspec.Meta(ge=0)]


class _WireCall(msgspec.Struct, frozen=True, array_like=True):
    """A call in the binary form: repeated values are indexes into the run's tables,
    times are relative to the run's start. New fields go at the end, with a default."""

    kind: Literal[0, 1]
    name: str
    span_id: str
    parent: _Index  # into _WireRun.parents
    path: _Index  # into _WireRun.paths
    start: int  # ns after the run's start
    duration: int  # ns
    output_tokens: int | None
    prompt_tokens: int | None
    total_tokens: int | None
    model: _Index  # into _WireRun.models
    tool_call_count: int | None


class _WireRun(msgspec.Struct, frozen=True, array_like=True):
    """A run in the binary form (see ``docs/storage.md``)."""

    id: str
    agent_id: str
    trace_id: str
    start_ns: int
    duration: int
    truncated: bool
    schema_version: int
    paths: list[tuple[str, ...]]
    parents: list[str | None]
    models: list[str | None]
    calls: list[_WireCall]


_ENCODER = msgspec.msgpack.Encoder()
_WIRE_DECODER = msgspec.msgpack.Decoder(_WireRun)
_JSON_RUN_DECODER = msgspec.json.Decoder(RunRecord)


def encode_run(run: RunRecord) -> bytes:
    """Encode a run in the current binary form: the version byte, then MessagePack."""
    start = run.start_ns
    paths: dict[tuple[str, ...], int] = {}
    parents: dict[str | None, int] = {}
    models: dict[str | None, int] = {}
    calls = [
        (
            _KIND_CODES[c.kind],
            c.name,
            c.span_id,
            parents.setdefault(c.parent_span_id, len(parents)),
            paths.setdefault(c.path, len(paths)),
            c.start_ns - start,
            c.end_ns - c.start_ns,
            c.output_tokens,
            c.prompt_tokens,
            c.total_tokens,
            models.setdefault(c.model_name, len(models)),
            c.tool_call_count,
        )
        for c in run.calls
    ]
    wire = (
        run.id,
        run.agent_id,
        run.trace_id,
        start,
        run.end_ns - start,
        run.truncated,
        run.schema_version,
        list(paths),
        list(parents),
        list(models),
        calls,
    )
    buffer = bytearray(_V1_PREFIX)
    _ENCODER.encode_into(wire, buffer, 1)
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
        return _from_wire(_WIRE_DECODER.decode(memoryview(raw)[1:]))
    if first in _JSON_FIRST_BYTES:
        return _JSON_RUN_DECODER.decode(raw)
    raise RunFormatError(f"unknown run encoding version {first}")


def _from_wire(wire: _WireRun) -> RunRecord:
    start = wire.start_ns
    try:
        calls = tuple(
            CallRecord(
                kind=_KINDS[c.kind],
                name=c.name,
                span_id=c.span_id,
                parent_span_id=wire.parents[c.parent],
                path=wire.paths[c.path],
                start_ns=start + c.start,
                end_ns=start + c.start + c.duration,
                output_tokens=c.output_tokens,
                prompt_tokens=c.prompt_tokens,
                total_tokens=c.total_tokens,
                model_name=wire.models[c.model],
                tool_call_count=c.tool_call_count,
            )
            for c in wire.calls
        )
    except IndexError:
        raise msgspec.DecodeError("run record refers to a table entry it does not hold") from None
    return RunRecord(
        id=wire.id,
        agent_id=wire.agent_id,
        trace_id=wire.trace_id,
        start_ns=start,
        end_ns=start + wire.duration,
        calls=calls,
        truncated=wire.truncated,
        schema_version=wire.schema_version,
    )
