"""Typed records that flow from the assembler to the stores and learners.

Records are frozen ``msgspec`` structs: cheap to build, immutable once handed to
another stage, and encoded to compact JSON for storage without a schema layer of
our own.
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
        return sorted((c for c in self.calls if c.kind == "llm"), key=_start_key)

    def tool_calls(self) -> list[CallRecord]:
        """Tool calls in start order."""
        return sorted((c for c in self.calls if c.kind == "tool"), key=_start_key)


def _start_key(call: CallRecord) -> tuple[int, int]:
    return (call.start_ns, call.end_ns)


_ENCODER = msgspec.json.Encoder()
_RUN_DECODER = msgspec.json.Decoder(RunRecord)


def encode_run(run: RunRecord) -> bytes:
    """Encode a run as compact JSON."""
    return _ENCODER.encode(run)


def decode_run(data: bytes | str) -> RunRecord:
    """Decode a run encoded by :func:`encode_run`.

    Raises ``msgspec.DecodeError`` (a ``ValueError``) on corrupt or foreign data.
    """
    return _RUN_DECODER.decode(data)
