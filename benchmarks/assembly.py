"""CPU time of run assembly alone, per run, for runs of 5 and of 20 LLM calls.

Spans are made once with the real SDK (a ``TracerProvider`` whose only processor
records what ``on_start`` and ``on_end`` receive, in order: the live span at start,
the read-only snapshot at end), then fed to a fresh ``RunAssembler`` in that order,
as the exporter thread does. Only the feeding is timed (``time.thread_time``), so
the figure is the assembler's own CPU per run: span events to ``RunRecord``.

A run is an agent span, a step span, N LLM spans carrying what GenAI
instrumentations set (operation, system, request and response model, token counts,
finish reasons, response id) and 3 tool spans, two of them overlapping.

    python benchmarks/assembly.py [--runs 1000] [--repeats 7] [--calls 5 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import Tracer

from otel_adaptive.assembler import RunAssembler
from otel_adaptive.config import AdaptiveConfig

RESULTS = Path(__file__).parent / "results"
MS = 1_000_000
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "assembly"}
STEP = {"openinference.span.kind": "CHAIN"}
LLM = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "server.address": "api.openai.com",
}
TOOL = {"gen_ai.operation.name": "execute_tool"}

_STARTED = 0
_ENDED = 1


class _Recorder(SpanProcessor):
    """Keeps what a processor is handed, in the order it is handed."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Any]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.events.append((_STARTED, span))

    def on_end(self, span: ReadableSpan) -> None:
        self.events.append((_ENDED, span))


def _one_run(tracer: Tracer, llm_calls: int) -> None:
    t0 = time.time_ns()
    with (
        tracer.start_as_current_span("invoke_agent assembly", attributes=AGENT, start_time=t0),
        tracer.start_as_current_span("plan", attributes=STEP, start_time=t0),
    ):
        for k in range(llm_calls):
            span = tracer.start_span("chat gpt-4o-mini", attributes=LLM, start_time=t0 + k * MS)
            span.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
            span.set_attribute("gen_ai.response.id", f"chatcmpl-{k}")
            span.set_attribute("gen_ai.usage.input_tokens", 100 + k)
            span.set_attribute("gen_ai.usage.output_tokens", 50 + k)
            span.set_attribute("gen_ai.response.finish_reasons", ("stop",))
            span.end(end_time=t0 + k * MS + MS // 2)
        base = t0 + llm_calls * MS
        for start, end, name in ((0, 30, "search"), (5, 25, "fetch"), (40, 50, "write")):
            tracer.start_span(
                f"execute_tool {name}",
                attributes={**TOOL, "gen_ai.tool.name": name},
                start_time=base + start * MS,
            ).end(end_time=base + end * MS)


def record_events(runs: int, llm_calls: int) -> list[tuple[int, Any]]:
    """The span events of ``runs`` runs, as a processor receives them."""
    recorder = _Recorder()
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("assembly-benchmark")
    for _ in range(runs):
        _one_run(tracer, llm_calls)
    provider.shutdown()
    return recorder.events


def assemble_us_per_run(events: list[tuple[int, Any]], runs: int, llm_calls: int) -> float:
    """Thread CPU µs per run to assemble ``events`` with a fresh assembler."""
    assembler = RunAssembler(AdaptiveConfig())
    started, ended = assembler.span_started, assembler.span_ended
    t0 = time.thread_time()
    for kind, span in events:
        if kind == _ENDED:
            ended(span)
        else:
            started(span)
    cpu = time.thread_time() - t0
    done = assembler.take_completed()
    # A benchmark that silently assembled nothing would look fast.
    assert len(done) == runs, (len(done), runs)
    assert all(len(run.calls) == llm_calls + 3 for run in done)
    return cpu / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--quick", action="store_true", help="200 runs, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.repeats = 200, 3
    report: dict[str, Any] = {"runs": args.runs, "repeats": args.repeats, "results": {}}
    print(f"Run assembly, thread CPU µs per run ({args.runs} runs, {args.repeats} repeats)\n")
    print("| LLM calls | span events/run | median µs/run | min | max | µs/event |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for llm_calls in args.calls:
        events = record_events(args.runs, llm_calls)
        assemble_us_per_run(events, args.runs, llm_calls)  # warm-up: caches, imports
        samples = [assemble_us_per_run(events, args.runs, llm_calls) for _ in range(args.repeats)]
        median = statistics.median(samples)
        per_run_events = len(events) / args.runs
        print(
            f"| {llm_calls} | {per_run_events:.0f} | **{median:.0f}** | {min(samples):.0f} "
            f"| {max(samples):.0f} | {median / per_run_events:.1f} |"
        )
        report["results"][f"llm_calls_{llm_calls}"] = {
            "median_us": median,
            "min_us": min(samples),
            "max_us": max(samples),
            "events_per_run": per_run_events,
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "assembly.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
