"""Hints inside LangChain and LangGraph runs traced by OpenInference.

OpenInference's LangChain instrumentation records a span per LangChain run but never
makes it the current OpenTelemetry span, so inside a LangGraph node, a tool or a chat
model ``trace.get_current_span()`` is invalid and :func:`otel_adaptive.current_hints`
cannot tell where the next LLM call sits. The functions here look up the span of the
LangChain run in progress (through OpenInference's ``get_current_span``, which reads
LangChain's own run context) and answer as if that span were current::

    from otel_adaptive.integrations import langchain as adaptive_langchain

    def call_model(state):                       # a LangGraph node, or a model's _generate
        hints = adaptive_langchain.current_hints()
        ...

Without LangChain or OpenInference installed (or not instrumented), they fall back to
the current OpenTelemetry span, exactly like the top-level functions.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

import otel_adaptive
from otel_adaptive.hints import AgentHints

__all__ = ["current_hints", "inject_hints", "langchain_run_span", "use_langchain_run_span"]


def langchain_run_span() -> trace.Span | None:
    """The OpenInference span of the LangChain run in progress, or None."""
    try:
        from openinference.instrumentation.langchain import (
            LangChainInstrumentor,
            get_current_span,
        )
    except ImportError:
        return None
    try:
        # Asking an uninstrumented OpenInference for a span prints a warning each time.
        if not LangChainInstrumentor().is_instrumented_by_opentelemetry:
            return None
        span = get_current_span()
    except Exception:  # a hint lookup must never break the application
        return None
    if span is None or not span.get_span_context().is_valid:
        return None
    return span


def _nested_in(current: trace.Span, run_span: trace.Span) -> bool:
    """Whether ``current`` (an open span) was opened inside ``run_span``'s lifetime."""
    current_context, run_context = current.get_span_context(), run_span.get_span_context()
    if not current_context.is_valid or current_context.trace_id != run_context.trace_id:
        return False
    if current_context.span_id == run_context.span_id:
        return True
    started = getattr(current, "start_time", None)
    run_started = getattr(run_span, "start_time", None)
    return isinstance(started, int) and isinstance(run_started, int) and started >= run_started


@contextmanager
def use_langchain_run_span() -> Iterator[None]:
    """Make the LangChain run's span current for the block, unless a span opened
    inside that run (by the application or another instrumentation) already is."""
    run_span = langchain_run_span()
    current = trace.get_current_span()
    if run_span is None or _nested_in(current, run_span):
        yield
        return
    with trace.use_span(
        run_span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        yield


def current_hints() -> AgentHints | None:
    """:func:`otel_adaptive.current_hints` for the LangChain run in progress."""
    with use_langchain_run_span():
        return otel_adaptive.current_hints()


def inject_hints(
    body: MutableMapping[str, Any] | None = None,
    headers: MutableMapping[str, str] | None = None,
) -> AgentHints | None:
    """:func:`otel_adaptive.inject_hints` for the LangChain run in progress."""
    with use_langchain_run_span():
        return otel_adaptive.inject_hints(body, headers)
