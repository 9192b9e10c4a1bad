"""A provider with an ``AdaptiveSpanProcessor`` and helpers to read what it assembled."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor, RunRecord
from otel_adaptive.learners.parallelism import ExecutionPlan, group_id_for

SERVICE_NAME = "conformance-svc"


#: Set by CI: a conformance module whose framework is missing fails instead of skipping.
STRICT_ENV = "OTEL_ADAPTIVE_CONFORMANCE_STRICT"


def require(*modules: str) -> None:
    """Skip the calling test module unless every optional dependency imports
    (fail instead, when ``OTEL_ADAPTIVE_CONFORMANCE_STRICT=1``)."""
    for module in modules:
        if os.environ.get(STRICT_ENV) == "1":
            try:
                importlib.import_module(module)
            except ImportError as error:
                pytest.fail(f"{STRICT_ENV}=1 and {module} does not import: {error}")
        pytest.importorskip(module, reason=f"conformance extra not installed ({module})")


@contextmanager
def restoring_class_attributes(module_prefix: str) -> Iterator[None]:
    """Put back every class attribute in modules under ``module_prefix`` when done.

    For instrumentors whose ``uninstrument`` leaves their wrappers in place: the
    patched methods of the library's classes are restored to what they were before.
    """

    def inside(module_name: str) -> bool:
        return module_name == module_prefix or module_name.startswith(module_prefix + ".")

    def classes() -> list[type]:
        found: dict[int, type] = {}
        for name, module in list(sys.modules.items()):
            if module is None or not inside(name):
                continue
            for _, value in inspect.getmembers(module, inspect.isclass):
                if inside(value.__module__):
                    found[id(value)] = value
        return list(found.values())

    saved = {cls: dict(vars(cls)) for cls in classes()}
    try:
        yield
    finally:
        for cls, attributes in saved.items():
            for attribute, value in attributes.items():
                if vars(cls).get(attribute) is not value:
                    setattr(cls, attribute, value)


@dataclass(frozen=True)
class CallSummary:
    """The fields of a call that a scenario determines (times and ids aside)."""

    kind: str
    name: str
    path: tuple[str, ...]
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    model_name: str | None = None
    tool_call_count: int | None = None


def summarise(run: RunRecord) -> list[CallSummary]:
    """Calls in start order, reduced to what scenarios assert."""
    return [
        CallSummary(
            kind=call.kind,
            name=call.name,
            path=call.path,
            output_tokens=call.output_tokens,
            prompt_tokens=call.prompt_tokens,
            model_name=call.model_name,
            tool_call_count=call.tool_call_count,
        )
        for call in sorted(run.calls, key=lambda c: (c.start_ns, c.end_ns))
    ]


def llm(
    name: str,
    path: tuple[str, ...],
    *,
    output: int | None,
    prompt: int | None,
    model: str | None,
    tool_calls: int | None,
) -> CallSummary:
    return CallSummary("llm", name, path, output, prompt, model, tool_calls)


def tool(name: str, path: tuple[str, ...]) -> CallSummary:
    return CallSummary("tool", name, path)


def group(*tool_names: str) -> tuple[str, tuple[str, ...]]:
    """A parallel group as (id, sorted member names), the way the learner names it."""
    return group_id_for(tool_names), tuple(sorted(tool_names))


class Harness:
    """One test's provider: the adaptive processor plus an in-memory copy of every span."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("schedule_delay_millis", 60_000)  # tests flush explicitly
        self.processor = AdaptiveSpanProcessor(AdaptiveConfig(**config))
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("conformance-app")

    def close(self) -> None:
        self.provider.shutdown()

    def flush(self) -> None:
        assert self.processor.force_flush(10_000), "the adaptive processor did not flush"

    def runs(self) -> dict[str, list[RunRecord]]:
        """Every stored run, by agent id, oldest first."""
        self.flush()
        store = self.processor.store
        return {agent: store.list_runs(agent) for agent in store.agents()}

    def only_run(self) -> RunRecord:
        """The single run stored so far (fails, showing the spans, if there is not one)."""
        runs = self.runs()
        found = [run for agent_runs in runs.values() for run in agent_runs]
        assert len(found) == 1, f"expected one run, got {runs}\n{self.describe_spans()}"
        return found[0]

    def plan(self, agent_id: str) -> ExecutionPlan:
        self.flush()
        return self.processor.store.load_plan(agent_id)

    def groups(self, agent_id: str) -> set[tuple[str, tuple[str, ...]]]:
        return {(g.group_id, tuple(sorted(g.tool_names))) for g in self.plan(agent_id).groups}

    def stats(self) -> dict[str, int]:
        return self.processor.stats()

    def spans(self) -> list[ReadableSpan]:
        return sorted(self.exporter.get_finished_spans(), key=lambda s: s.start_time or 0)

    def describe_spans(self) -> str:
        """The raw spans, indented by parent, for failure messages."""
        spans = self.spans()
        by_id = {s.context.span_id: s for s in spans if s.context is not None}
        lines = []
        for span in spans:
            depth = 0
            parent = span.parent
            while parent is not None and parent.span_id in by_id and depth < 20:
                depth += 1
                parent = by_id[parent.span_id].parent
            kinds = {
                k: v
                for k, v in (span.attributes or {}).items()
                if "kind" in k or "operation" in k or k.endswith(".name")
            }
            lines.append(f"{'  ' * depth}{span.name} {kinds}")
        return "\n".join(lines)

    @contextmanager
    def app_span(self, name: str, **attributes: Any) -> Iterator[None]:
        with self.tracer.start_as_current_span(name, attributes=attributes):
            yield
