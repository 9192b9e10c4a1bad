"""Helpers to build tracer providers and timed spans in tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor
from otel_adaptive.store.base import Store

MS = 1_000_000
BASE_NS = 1_700_000_000_000_000_000


def make_processor(
    service_name: str = "test-service", store: Store | None = None, **config: Any
) -> tuple[TracerProvider, AdaptiveSpanProcessor, trace.Tracer]:
    """A provider with only an AdaptiveSpanProcessor (long schedule delay: tests flush)."""
    config.setdefault("schedule_delay_millis", 60_000)
    processor = AdaptiveSpanProcessor(AdaptiveConfig(**config), store=store)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    return provider, processor, provider.get_tracer("tests")


@contextmanager
def timed_span(
    tracer: trace.Tracer,
    name: str,
    start_ms: float,
    end_ms: float,
    attributes: Mapping[str, Any] | None = None,
    end_attributes: Mapping[str, Any] | None = None,
    base_ns: int = BASE_NS,
) -> Iterator[trace.Span]:
    """A current span with explicit start/end times; ``end_attributes`` are set just before end."""
    span = tracer.start_span(
        name, start_time=base_ns + int(start_ms * MS), attributes=dict(attributes or {})
    )
    with trace.use_span(span, end_on_exit=False):
        yield span
    for key, value in (end_attributes or {}).items():
        span.set_attribute(key, value)
    span.end(end_time=base_ns + int(end_ms * MS))


def agent_attrs(name: str) -> dict[str, Any]:
    return {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}


LLM = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "test-model"}
TOOL = {"gen_ai.operation.name": "execute_tool"}
CHAIN = {"openinference.span.kind": "CHAIN"}


def usage(output: int, prompt: int = 10) -> dict[str, Any]:
    return {"gen_ai.usage.output_tokens": output, "gen_ai.usage.input_tokens": prompt}
