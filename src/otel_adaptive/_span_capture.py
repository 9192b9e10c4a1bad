"""What the exporter needs of a span, taken on the hot path into one untracked object.

The processor used to queue the SDK's span objects themselves: the live span at its
start and the read-only snapshot at its end. Each keeps about a dozen objects the
garbage collector tracks (attribute maps, event and link lists, contexts), and a
queue of them between two exporter batches made the collector run often and scan
them repeatedly: in a tight span loop that cost about a third of what the plugin
adds. A :class:`SpanCapture` is one object the collector never tracks. It is made at
the span's start, filled in at its end (the attributes are the ended span's own plain
dict, not a copy: the SDK refuses changes after the end), and the same object goes
into the queue for both events; it holds the live span only while the span is open, so the span's
objects go as soon as the application lets go of them.

The fields are written on the application's thread and read on the exporter's,
each with one assignment: the end writes its fields first and sets ``ended`` last,
so a reader that sees ``ended`` sees them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import msgspec
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext


class ParentRef(NamedTuple):
    """A capture's parent as hint lookups read a span's ``parent`` context."""

    span_id: int
    is_remote: bool


#: The ``ReadableSpan`` properties a capture reads. A class that keeps every one of them
#: as the SDK defines it (the SDK's live spans and snapshots) answers them from its own
#: ``_context``, ``_name``... fields, which are then read directly: an attribute load
#: instead of a Python property call, a dozen times per span on the application thread.
_SDK_FIELDS: Final = ("context", "parent", "name", "start_time", "end_time", "resource",
                      "attributes")  # fmt: skip
#: Span classes seen -> whether they keep the SDK's properties (few; bounded anyway).
_sdk_classes: dict[type, bool] = {}
_SDK_CLASSES_KEPT: Final = 64


def _reads_sdk_fields(cls: type) -> bool:
    """Whether spans of ``cls`` answer the properties above from the SDK's own fields."""
    known = _sdk_classes.get(cls)
    if known is None:
        known = all(getattr(cls, f, None) is getattr(ReadableSpan, f) for f in _SDK_FIELDS)
        if len(_sdk_classes) < _SDK_CLASSES_KEPT:
            _sdk_classes[cls] = known
    return known


def _indexed_span_context() -> type[SpanContext] | None:
    """``SpanContext`` if it is the tuple ``(trace_id, span_id, is_remote, ...)`` it is
    today, so its ids are read by index, not through a property each; else ``None``."""
    try:
        probe = SpanContext(trace_id=1, span_id=2, is_remote=True)
        if isinstance(probe, tuple) and probe[:3] == (1, 2, True):
            return SpanContext
    except Exception:  # a future layout: the properties are read instead
        pass
    return None


_INDEXED_CONTEXT: Final = _indexed_span_context()


# ``gc=False``: a capture holds ids, times, names, a plain dict of the attributes
# (strings, numbers and tuples of them), the resource (which never refers back to a
# capture) and, while open, the live span (which does not either): no cycle can pass
# through it, so the collector need not know it.
class SpanCapture(msgspec.Struct, gc=False):
    """One span's start and, once it ended, its end, as the assembler reads them."""

    trace_id: int
    span_id: int
    #: The parent span id (``None`` for a span without a parent).
    parent_id: int | None
    #: The parent is in another process: with no parent, the top of the trace here.
    parent_remote: bool
    #: Name and start time as the span started (times are validated by the reader).
    start_name: Any
    start_time: Any
    #: The live span while it is open (late attributes are read from it), then None.
    live: Any = None
    ended: bool = False
    end_name: Any = None
    end_time: Any = None
    #: At the end: a plain dict (see :func:`capture_end`).
    attributes: Mapping[str, Any] | None = None
    resource: Any = None

    @property
    def no_local_parent(self) -> bool:
        """No parent in this process (none, or a remote one): the top of the trace here."""
        return self.parent_id is None or self.parent_remote

    # Hint lookups walk a trace's open spans (the SDK's) and its ended ones (these
    # captures) alike: the few span accessors they use, read from the capture.

    @property
    def name(self) -> Any:
        return self.end_name if self.ended else self.start_name

    @property
    def is_valid(self) -> bool:
        return bool(self.trace_id and self.span_id)

    def get_span_context(self) -> SpanCapture:
        return self  # it has the span id and ``is_valid`` a span context has

    @property
    def parent(self) -> ParentRef | None:
        return None if self.parent_id is None else ParentRef(self.parent_id, self.parent_remote)


# Queue events are untracked too: a tuple per event would be the one object the
# collector counts, and a queue of them made it run every few runs in a busy loop.
class SpanEnded(msgspec.Struct, gc=False):
    """A span's end as queued for the exporter (its start is queued as the capture itself)."""

    capture: SpanCapture


def span_ids(span: ReadableSpan) -> tuple[int, int] | None:
    """``span``'s (trace id, span id), or ``None`` when it has no context."""
    context = span._context if _reads_sdk_fields(type(span)) else span.context
    if context is None:
        return None
    if type(context) is _INDEXED_CONTEXT:
        return context[0], context[1]
    return context.trace_id, context.span_id


def capture_start(span: ReadableSpan) -> SpanCapture | None:
    """The start of ``span`` (``None`` when it has no context to place it by)."""
    if _reads_sdk_fields(type(span)):
        context, parent = span._context, span._parent
        name, start_time = span._name, span._start_time
    else:
        context, parent = span.context, span.parent
        name, start_time = span.name, span.start_time
    if context is None:
        return None
    if type(context) is _INDEXED_CONTEXT:
        trace_id, span_id = context[0], context[1]
    else:
        trace_id, span_id = context.trace_id, context.span_id
    if parent is None:
        parent_id, remote = None, False
    elif type(parent) is _INDEXED_CONTEXT:
        parent_id, remote = parent[1], bool(parent[2])
    else:
        parent_id, remote = parent.span_id, bool(parent.is_remote)
    return SpanCapture(trace_id, span_id, parent_id, remote, name, start_time, span)


def capture_end(span: ReadableSpan, capture: SpanCapture) -> SpanCapture:
    """``capture`` (the start of ``span``) with ``span``'s end."""
    if _reads_sdk_fields(type(span)):
        capture.end_name = span._name
        capture.end_time = span._end_time
        capture.attributes = _sdk_attributes(span)
        capture.resource = span._resource
    else:
        capture.end_name = span.name
        capture.end_time = span.end_time
        capture.attributes = plain_attributes(span)
        capture.resource = span.resource
    capture.ended = True  # last: the fields above are complete when this is seen
    capture.live = None
    return capture


def _sdk_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """An ended SDK span's attributes: the plain dict behind them, else a copy.

    An ended SDK span refuses new attributes, so the dict behind its mapping stays as
    it is and is read as it is, not copied.
    """
    inner = _backing_dict(getattr(span, "_attributes", None))
    return plain_attributes(span) if inner is None else inner


def _backing_dict(raw: object) -> dict[str, Any] | None:
    """The plain dict an SDK span keeps its attributes in (``None`` if it is not one)."""
    if type(raw) is BoundedAttributes:
        inner = getattr(raw, "_dict", None)
        return inner if type(inner) is dict else None
    return raw if type(raw) is dict else None


def plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as a plain dict, copied once for every later reader.

    The SDK's spans hand out a read-only view of a ``BoundedAttributes`` whose every
    lookup runs Python code (a miss raises and catches ``KeyError``); its backing
    dict is copied in C instead. Other spans' mappings are copied generically; one
    that cannot be iterated is kept as is (the convention readers tolerate any).
    """
    sdk = _reads_sdk_fields(type(span))
    inner = _backing_dict(getattr(span, "_attributes", None)) if sdk else None
    if inner is not None:
        return inner.copy()
    attributes = span.attributes
    if not attributes:
        return {}
    try:
        return dict(attributes)
    except Exception:  # changed while iterated, or odd keys
        return attributes


__all__ = [
    "ParentRef",
    "SpanCapture",
    "capture_end",
    "capture_start",
    "plain_attributes",
    "span_ids",
]
