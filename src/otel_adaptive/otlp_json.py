"""Read exported traces as JSON: spans for :mod:`otel_adaptive.replay`.

Two input shapes are understood, and a file may mix them:

* **OTLP/JSON**, as the OpenTelemetry Collector's file exporter writes it: one
  ``ExportTraceServiceRequest`` object per line, ``resourceSpans[].scopeSpans[].spans[]``
  with hex ``traceId``/``spanId``/``parentSpanId``, ``startTimeUnixNano``/``endTimeUnixNano``
  (strings or integers) and ``attributes`` as ``[{"key", "value": {"stringValue" | ...}}]``.
  Snake-case field names and base64 ids (the generic protobuf JSON mapping) are accepted too.
* **SDK span objects**, the shape of ``ReadableSpan.to_json()`` (what the SDK's
  ``ConsoleSpanExporter`` prints): ``name``, ``context.trace_id``/``context.span_id``
  as ``"0x…"``, ``parent_id``, ``start_time``/``end_time`` as ISO 8601 strings (or
  integer nanoseconds), an ``attributes`` object and ``resource.attributes``. Either
  one object per line, a JSON array of them, or the console exporter's pretty-printed
  objects one after another.

Every malformed record is rejected with the line it starts on and the reason;
a bad record never stops the others. Parsing never raises on any input.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from otel_adaptive._json_stream import JsonRecords

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
# OTLP span flags: bit 8 says whether bit 9 ("parent is remote") is known.
_FLAG_HAS_IS_REMOTE: Final = 0x100
_FLAG_IS_REMOTE: Final = 0x200
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_OTLP_KINDS: Final[Mapping[int, SpanKind]] = {
    0: SpanKind.INTERNAL,  # unspecified
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_KIND_NAMES: Final[Mapping[str, SpanKind]] = {kind.name: kind for kind in SpanKind}
_OTLP_STATUS: Final[Mapping[int, StatusCode]] = {
    0: StatusCode.UNSET,
    1: StatusCode.OK,
    2: StatusCode.ERROR,
}
_STATUS_NAMES: Final[Mapping[str, StatusCode]] = {code.name: code for code in StatusCode}
_DOUBLE_WORDS: Final[Mapping[str, float]] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}

AttributeValue = str | bool | int | float | tuple[Any, ...]


class _Bad(Exception):
    """A record is malformed; the message says why."""


@dataclass(frozen=True)
class Rejection:
    """A record that was not replayed: where it starts and why."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(slots=True)
class SpanData:
    """One span as read, before it becomes a ReadableSpan."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    parent_remote: bool | None  # None: the input does not say
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    resource: Resource
    kind: SpanKind = SpanKind.INTERNAL
    status: Status = field(default_factory=Status)
    scope: InstrumentationScope | None = None


class SpanReader:
    """Collects spans from any number of texts or files, and the records it rejected.

    Whether a span's parent is remote is decided once everything is read: the
    OTLP flags say so when present; otherwise a parent is local when the input
    holds it with the same ``service.name``, and remote when it is absent or
    belongs to another service (as a live processor in that service would see it).
    """

    def __init__(self, on_span: Callable[[SpanData], None] | None = None) -> None:
        self._spans: list[SpanData] = []
        self._on_span = self._spans.append if on_span is None else on_span
        self.rejections: list[Rejection] = []
        self.records_read = 0
        """Top-level JSON values read (accepted or not)."""
        self.span_count = 0
        """Spans accepted."""
        self.attributes_skipped = 0
        """Attribute values with no span-attribute equivalent (maps, bytes, mixed arrays)."""

    def read_file(self, path: str | Path, on_record: Callable[[int], None] | None = None) -> None:
        """Read one file (gzip-compressed or not); an unreadable file is one rejection.

        ``on_record`` is called after each record with the bytes of the file read so far.
        """
        source = str(path)
        try:
            with open_input(path) as (stream, bytes_read):
                done = None if on_record is None else lambda: on_record(bytes_read())
                guarded = _StopOnReadError(stream)
                self.read_stream(guarded, source, done)  # type: ignore[arg-type]
                if guarded.error is not None:
                    raise guarded.error
        except (OSError, EOFError) as exc:  # also a truncated or corrupt gzip file
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            self.rejections.append(Rejection(source, 0, f"cannot read the file: {reason}"))

    def read_text(self, text: str, source: str = "<text>") -> None:
        """Read every JSON value in ``text``; values may span lines (pretty-printed)."""
        self.read_stream(io.StringIO(text), source)

    def read_stream(
        self, stream: TextIO, source: str, on_record: Callable[[], None] | None = None
    ) -> None:
        """Read every JSON value of ``stream``, holding only a bounded part of it."""
        for record in JsonRecords(stream):
            if record.element is None or record.element == 0:
                self.records_read += 1
            if record.error is not None:
                problems = [("" if record.element is None else f"[{record.element}]", record.error)]
            elif record.element is None:
                problems = self._read_value(record.value)
            else:
                problems = self._read_array_item(record.element, record.value)
            for where, problem in problems:
                prefix = f"{where}: " if where else ""
                self.rejections.append(Rejection(source, record.line, prefix + problem))
            if on_record is not None:
                on_record()

    def spans(self) -> list[ReadableSpan]:
        """Every accepted span, in input order (when no ``on_span`` took them)."""
        return build_spans(self._spans)

    # --- one top-level JSON value -------------------------------------------------------------

    def _read_value(self, value: object) -> list[tuple[str, str]]:
        """Read one top-level value; returns (location, reason) of each rejected part."""
        if isinstance(value, dict):
            if _has(value, "resourceSpans", "resource_spans"):
                return self._read_request(value)
            if "context" in value:
                return self._keep("", lambda: _sdk_span(value, self))
            if _has(value, "traceId", "trace_id"):
                return self._keep("", lambda: _otlp_span(value, _EMPTY_RESOURCE, None, self))
        elif isinstance(value, list):
            problems: list[tuple[str, str]] = []
            for index, item in enumerate(value):
                problems.extend(self._read_array_item(index, item))
            return problems
        return [
            (
                "",
                "not an OTLP ExportTraceServiceRequest (no resourceSpans), "
                "a span object or an array of spans",
            )
        ]

    def _read_array_item(self, index: int, item: object) -> list[tuple[str, str]]:
        where = f"[{index}]"
        if isinstance(item, dict) and "context" in item:
            return self._keep(where, lambda: _sdk_span(item, self))
        if isinstance(item, dict) and _has(item, "traceId", "trace_id"):
            return self._keep(where, lambda: _otlp_span(item, _EMPTY_RESOURCE, None, self))
        return [(where, "not a span object (no context or traceId)")]

    def _read_request(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        try:
            resource_spans = _list(
                _get(request, "resourceSpans", "resource_spans"), "resourceSpans"
            )
        except _Bad as exc:
            return [("", str(exc))]
        for r, raw_entry in enumerate(resource_spans):
            where = f"resourceSpans[{r}]"
            try:
                entry = _dict(raw_entry, where)
                resource = _otlp_resource(_get(entry, "resource"), self)
                scope_spans = _list(
                    _get(
                        entry,
                        "scopeSpans",
                        "scope_spans",
                        "instrumentationLibrarySpans",
                        "instrumentation_library_spans",
                    ),
                    f"{where}.scopeSpans",
                )
            except _Bad as exc:
                problems.append((where, str(exc)))
                continue
            for s, group in enumerate(scope_spans):
                problems.extend(self._read_scope_spans(f"{where}.scopeSpans[{s}]", group, resource))
        return problems

    def _read_scope_spans(
        self, where: str, group: object, resource: Resource
    ) -> list[tuple[str, str]]:
        try:
            group = _dict(group, where)
            scope = _otlp_scope(_get(group, "scope", "instrumentationLibrary"))
            spans = _list(_get(group, "spans"), f"{where}.spans")
        except _Bad as exc:
            return [(where, str(exc))]
        problems: list[tuple[str, str]] = []
        for index, raw in enumerate(spans):
            build = partial(_otlp_span, raw, resource, scope, self)
            problems.extend(self._keep(f"{where}.spans[{index}]", build))
        return problems

    def _keep(self, where: str, build: Callable[[], SpanData]) -> list[tuple[str, str]]:
        try:
            span = build()
        except _Bad as exc:
            return [(where, str(exc))]
        except (ValueError, TypeError, OverflowError) as exc:  # belt and braces: never raise
            return [(where, f"unreadable span ({type(exc).__name__}: {exc})")]
        self.span_count += 1
        self._on_span(span)
        return []


_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_EMPTY_RESOURCE: Final = Resource({})
_GZIP_MAGIC: Final = b"\x1f\x8b"


@contextmanager
def open_input(path: str | Path) -> Iterator[tuple[TextIO, Callable[[], int]]]:
    """``path`` as text, decompressed when it is gzip data (whatever its name), and a
    function giving the bytes of the file read so far."""
    with Path(path).open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        binary = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")) if compressed else raw
        with io.TextIOWrapper(binary, encoding="utf-8", errors="replace") as text:
            yield text, raw.tell


class _StopOnReadError:
    """A text stream that ends where reading fails, keeping the error: what was read
    before a corrupt or truncated part is still parsed."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.error: OSError | EOFError | None = None

    def read(self, size: int = -1) -> str:
        if self.error is not None:
            return ""
        try:
            return self._stream.read(size)
        except (OSError, EOFError) as exc:
            self.error = exc
            return ""


def build_spans(datas: Sequence[SpanData]) -> list[ReadableSpan]:
    """The spans of ``datas``; a parent is remote when ``datas`` lack it or it is of another
    service (unless the input's flags said)."""
    services = {(span.trace_id, span.span_id): _service(span.resource) for span in datas}
    built: list[ReadableSpan] = []
    for span in datas:
        parent: SpanContext | None = None
        if span.parent_id is not None:
            remote = span.parent_remote
            if remote is None:
                key = (span.trace_id, span.parent_id)
                remote = key not in services or services[key] != _service(span.resource)
            parent = SpanContext(
                span.trace_id, span.parent_id, is_remote=remote, trace_flags=_SAMPLED
            )
        built.append(
            ReadableSpan(
                name=span.name,
                context=SpanContext(
                    span.trace_id, span.span_id, is_remote=False, trace_flags=_SAMPLED
                ),
                parent=parent,
                resource=span.resource,
                attributes=span.attributes,
                kind=span.kind,
                status=span.status,
                start_time=span.start_ns,
                end_time=span.end_ns,
                instrumentation_scope=span.scope,
            )
        )
    return built


def _service(resource: Resource) -> object:
    return resource.attributes.get("service.name")


# --- OTLP/JSON ------------------------------------------------------------------------------


def _otlp_span(
    raw: object, resource: Resource, scope: InstrumentationScope | None, reader: SpanReader
) -> SpanData:
    span = _dict(raw, "span")
    name = _get(span, "name")
    if not isinstance(name, str):
        raise _Bad("name: expected a string")
    trace_id = _otlp_id(_get(span, "traceId", "trace_id"), 16, "traceId")
    span_id = _otlp_id(_get(span, "spanId", "span_id"), 8, "spanId")
    raw_parent = _get(span, "parentSpanId", "parent_span_id")
    parent_id = None if raw_parent in (None, "") else _otlp_id(raw_parent, 8, "parentSpanId")
    start = _unix_nano(_get(span, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano")
    end = _unix_nano(_get(span, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano")
    _check_times(start, end, "startTimeUnixNano", "endTimeUnixNano")
    flags = _get(span, "flags")
    parent_remote: bool | None = None
    if isinstance(flags, int) and not isinstance(flags, bool) and flags & _FLAG_HAS_IS_REMOTE:
        parent_remote = bool(flags & _FLAG_IS_REMOTE)
    return SpanData(
        name=name,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        parent_remote=parent_remote,
        start_ns=start,
        end_ns=end,
        attributes=_otlp_attributes(_get(span, "attributes"), reader),
        resource=resource,
        kind=_otlp_kind(_get(span, "kind")),
        status=_otlp_status(_get(span, "status")),
        scope=scope,
    )


def _otlp_resource(raw: object, reader: SpanReader) -> Resource:
    if raw is None:
        return _EMPTY_RESOURCE
    resource = _dict(raw, "resource")
    return Resource(_otlp_attributes(_get(resource, "attributes"), reader))


def _otlp_scope(raw: object) -> InstrumentationScope | None:
    if not isinstance(raw, dict):
        return None
    name = raw.get("name")
    version = raw.get("version")
    return InstrumentationScope(
        name if isinstance(name, str) else "",
        version if isinstance(version, str) and version else None,
    )


def _otlp_id(raw: object, size: int, what: str) -> int:
    if not isinstance(raw, str):
        raise _Bad(f"{what}: expected a hex string")
    if len(raw) == size * 2 and _HEX.fullmatch(raw):
        value = int(raw, 16)
    else:
        try:  # the generic protobuf JSON mapping writes bytes as base64
            decoded = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != size:
            raise _Bad(f"{what}: expected {size * 2} hex digits, got {raw[:40]!r}")
        value = int.from_bytes(decoded, "big")
    if value == 0:
        raise _Bad(f"{what}: all zeros is not a valid id")
    return value


def _unix_nano(raw: object, what: str) -> int:
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif raw is None:
        raise _Bad(f"{what}: missing")
    else:
        raise _Bad(f"{what}: expected an integer (or a string of digits), got {raw!r:.40}")
    if not 0 < value <= _INT64_MAX:
        raise _Bad(f"{what}: {value} is not a time after 1970 in nanoseconds")
    return value


def _check_times(start: int, end: int, start_name: str, end_name: str) -> None:
    if end < start:
        raise _Bad(f"{end_name} is before {start_name}")


def _otlp_attributes(raw: object, reader: SpanReader) -> dict[str, AttributeValue]:
    if raw is None:
        return {}
    entries = _list(raw, "attributes")
    attributes: dict[str, AttributeValue] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise _Bad(f"attributes[{index}]: expected {{'key': string, 'value': {{...}}}}")
        value = _any_value(entry.get("value"))
        if value is None or not entry["key"]:
            reader.attributes_skipped += 1
            continue
        attributes[entry["key"]] = value
    return attributes


def _any_value(raw: object) -> AttributeValue | None:
    """An OTLP ``AnyValue`` as a span attribute value; None when there is no equivalent."""
    if not isinstance(raw, dict):
        return None
    if "stringValue" in raw or "string_value" in raw:
        text = _get(raw, "stringValue", "string_value")
        return text if isinstance(text, str) else None
    if "boolValue" in raw or "bool_value" in raw:
        flag = _get(raw, "boolValue", "bool_value")
        return flag if isinstance(flag, bool) else None
    if "intValue" in raw or "int_value" in raw:
        return _int_value(_get(raw, "intValue", "int_value"))
    if "doubleValue" in raw or "double_value" in raw:
        return _double_value(_get(raw, "doubleValue", "double_value"))
    if "arrayValue" in raw or "array_value" in raw:
        return _array_value(_get(raw, "arrayValue", "array_value"))
    return None  # kvlistValue, bytesValue, empty: no span-attribute equivalent


def _int_value(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        text = raw[1:] if raw.startswith("-") else raw
        if not (text.isascii() and text.isdigit()):
            return None
        raw = int(raw)
    if isinstance(raw, int) and _INT64_MIN <= raw <= _INT64_MAX:
        return raw
    return None


def _double_value(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, float):
        return raw
    if isinstance(raw, int):
        try:
            return float(raw)
        except OverflowError:
            return None
    if isinstance(raw, str):
        return _DOUBLE_WORDS.get(raw)
    return None


def _array_value(raw: object) -> tuple[Any, ...] | None:
    if not isinstance(raw, dict):
        return None
    values = raw.get("values", [])
    if not isinstance(values, list):
        return None
    items = [_any_value(item) for item in values]
    return _homogeneous(items)


def _homogeneous(items: Sequence[object]) -> tuple[Any, ...] | None:
    """A tuple of primitives of one type (the only arrays span attributes hold), else None."""
    if any(item is None or isinstance(item, tuple) for item in items):
        return None
    if len({type(item) for item in items}) > 1:
        return None
    return tuple(items)


def _otlp_kind(raw: object) -> SpanKind:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _OTLP_KINDS.get(raw, SpanKind.INTERNAL)
    if isinstance(raw, str):
        return _KIND_NAMES.get(raw.removeprefix("SPAN_KIND_"), SpanKind.INTERNAL)
    return SpanKind.INTERNAL


def _otlp_status(raw: object) -> Status:
    if not isinstance(raw, dict):
        return Status()
    code_raw = raw.get("code")
    code = StatusCode.UNSET
    if isinstance(code_raw, int) and not isinstance(code_raw, bool):
        code = _OTLP_STATUS.get(code_raw, StatusCode.UNSET)
    elif isinstance(code_raw, str):
        code = _STATUS_NAMES.get(code_raw.removeprefix("STATUS_CODE_"), StatusCode.UNSET)
    message = raw.get("message")
    if code is StatusCode.ERROR and isinstance(message, str) and message:
        return Status(code, message)
    return Status(code)


# --- SDK span objects -----------------------------------------------------------------------


def _sdk_span(raw: dict[str, Any], reader: SpanReader) -> SpanData:
    name = raw.get("name")
    if not isinstance(name, str):
        raise _Bad("name: expected a string")
    context = _dict(raw.get("context"), "context")
    trace_id = _sdk_id(context.get("trace_id"), 16, "context.trace_id")
    span_id = _sdk_id(context.get("span_id"), 8, "context.span_id")
    raw_parent = raw.get("parent_id")
    parent_id = None if raw_parent in (None, "") else _sdk_id(raw_parent, 8, "parent_id")
    start = _sdk_time(raw.get("start_time"), "start_time")
    end = _sdk_time(raw.get("end_time"), "end_time")
    _check_times(start, end, "start_time", "end_time")
    resource = _EMPTY_RESOURCE
    raw_resource = raw.get("resource")
    if isinstance(raw_resource, dict):
        resource = Resource(_sdk_attributes(raw_resource.get("attributes"), reader, "resource"))
    return SpanData(
        name=name,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        parent_remote=None,
        start_ns=start,
        end_ns=end,
        attributes=_sdk_attributes(raw.get("attributes"), reader, "attributes"),
        resource=resource,
        kind=_sdk_kind(raw.get("kind")),
        status=_sdk_status(raw.get("status")),
    )


def _sdk_id(raw: object, size: int, what: str) -> int:
    if not isinstance(raw, str):
        raise _Bad(f"{what}: expected a hex string like 0x{'0' * (size * 2 - 1)}1")
    digits = raw[2:] if raw[:2].lower() == "0x" else raw
    if len(digits) != size * 2 or not _HEX.fullmatch(digits):
        raise _Bad(f"{what}: expected {size * 2} hex digits, got {raw[:40]!r}")
    value = int(digits, 16)
    if value == 0:
        raise _Bad(f"{what}: all zeros is not a valid id")
    return value


def _sdk_time(raw: object, what: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _unix_nano(raw, what)
    if not isinstance(raw, str):
        raise _Bad(f"{what}: expected an ISO 8601 timestamp")
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{what}: not an ISO 8601 timestamp: {raw[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # Integer arithmetic keeps every microsecond exact (a float would not).
    value = (moment - _EPOCH) // timedelta(microseconds=1) * 1000
    return _unix_nano(value, what)


def _sdk_attributes(raw: object, reader: SpanReader, what: str) -> dict[str, AttributeValue]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _Bad(f"{what}: expected an object")
    attributes: dict[str, AttributeValue] = {}
    for key, value in raw.items():
        converted = _plain_value(value)
        if converted is None or not key:
            reader.attributes_skipped += 1
            continue
        attributes[key] = converted
    return attributes


def _plain_value(value: object) -> AttributeValue | None:
    if isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if isinstance(value, list):
        return _homogeneous([_plain_value(item) for item in value])
    return None


def _sdk_kind(raw: object) -> SpanKind:
    if isinstance(raw, str):
        return _KIND_NAMES.get(raw.removeprefix("SpanKind."), SpanKind.INTERNAL)
    return SpanKind.INTERNAL


def _sdk_status(raw: object) -> Status:
    if not isinstance(raw, dict):
        return Status()
    code = raw.get("status_code")
    status_code = _STATUS_NAMES.get(code, StatusCode.UNSET) if isinstance(code, str) else None
    description = raw.get("description")
    if status_code is StatusCode.ERROR and isinstance(description, str) and description:
        return Status(status_code, description)
    return Status(status_code or StatusCode.UNSET)


# --- small typed accessors ------------------------------------------------------------------


def _get(obj: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


def _has(obj: Mapping[str, Any], *names: str) -> bool:
    return any(name in obj for name in names)


def _dict(raw: object, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Bad(f"{what}: expected an object")
    return raw


def _list(raw: object, what: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _Bad(f"{what}: expected an array")
    return raw


def read_files(paths: Iterable[str | Path]) -> SpanReader:
    """A reader that has read every file in ``paths``."""
    reader = SpanReader()
    for path in paths:
        reader.read_file(path)
    return reader


__all__ = [
    "Rejection",
    "SpanData",
    "SpanReader",
    "build_spans",
    "open_input",
    "read_files",
]
