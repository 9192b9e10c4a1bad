"""A small simulated agent, instrumented with the plain OpenTelemetry SDK.

Runs offline: the "LLM" and the tools are local functions that sleep for a few
milliseconds. Each run plans with an LLM call, fans out to three tools in
parallel, then writes an answer with a second LLM call. After a few runs the
processor has learned the agent's shape, and every LLM request carries hints.

    python examples/simulated_agent.py --runs 30
"""

from __future__ import annotations

import argparse
import contextvars
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive import AdaptiveSpanProcessor, inject_hints

AGENT = "research-assistant"
TOOLS = ("search_web", "search_docs", "get_weather")

provider = TracerProvider(resource=Resource.create({"service.name": "example"}))
processor = AdaptiveSpanProcessor(schedule_delay_millis=100)
provider.add_span_processor(processor)
tracer = provider.get_tracer("examples.simulated_agent")


def fake_llm(step: str, output_tokens: int) -> dict[str, Any]:
    """Stands in for an LLM request: builds the body, injects hints, 'answers'."""
    body: dict[str, Any] = {"model": "sim-1", "messages": [{"role": "user", "content": step}]}
    with tracer.start_as_current_span(
        "chat sim-1", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "sim-1"}
    ) as span:
        inject_hints(body)  # merges body["nvext"]["agent_hints"] in once something was learned
        time.sleep(random.uniform(0.002, 0.004))
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens + random.randint(-5, 5))
        span.set_attribute("gen_ai.usage.input_tokens", 120)
    return body


def tool(name: str) -> str:
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
    ):
        time.sleep(random.uniform(0.003, 0.005))
        return f"{name}: ok"


def run_agent(pool: ThreadPoolExecutor) -> list[dict[str, Any]]:
    """One agent run; returns the request bodies it sent."""
    bodies = []
    with tracer.start_as_current_span(
        "research", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT}
    ):
        with tracer.start_as_current_span("plan", attributes={"openinference.span.kind": "CHAIN"}):
            bodies.append(fake_llm("plan the research", output_tokens=60))
        with tracer.start_as_current_span(
            "gather", attributes={"openinference.span.kind": "CHAIN"}
        ):
            # Tools run in parallel threads; each carries the current context along.
            futures = [pool.submit(contextvars.copy_context().run, tool, name) for name in TOOLS]
            [f.result() for f in futures]
        with tracer.start_as_current_span(
            "answer", attributes={"openinference.span.kind": "CHAIN"}
        ):
            bodies.append(fake_llm("write the answer", output_tokens=400))
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    with ThreadPoolExecutor(max_workers=len(TOOLS)) as pool:
        for i in range(args.runs):
            bodies = run_agent(pool)
            if i in (0, args.runs - 1):
                print(f"run {i + 1}: hints sent with the 'answer' call:")
                print("   ", bodies[-1].get("nvext", {}).get("agent_hints", "none learned yet"))
            processor.force_flush()  # let the next run see what this one taught

    runs = processor.store.list_runs(AGENT)
    last = runs[-1]
    print(f"\nstored {len(runs)} runs of {AGENT!r}; the last one:")
    for call in last.calls:
        duration_ms = (call.end_ns - call.start_ns) / 1e6
        tokens = "" if call.output_tokens is None else f", {call.output_tokens} output tokens"
        print(
            f"  {call.kind:4} {call.name:22} {'/'.join(call.path):20} {duration_ms:5.1f} ms{tokens}"
        )
    plan = processor.store.load_plan(AGENT)
    for group in plan.groups:
        print(
            f"parallel group {group.group_id}: {', '.join(group.tool_names)} "
            f"(seen in {group.support} of {plan.runs_observed} runs)"
        )
    provider.shutdown()


if __name__ == "__main__":
    main()
