"""An agent instrumented with the OpenTelemetry API only: no provider, no processor.

Nothing in this file mentions otel-adaptive. Run it under ``opentelemetry-instrument``
and the adaptive processor is added from environment variables alone:

    OTEL_ADAPTIVE_ENABLED=true OTEL_ADAPTIVE_REDIS_URL=redis://127.0.0.1:6379/0 \\
    OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
    opentelemetry-instrument python examples/plain_agent.py --runs 5

    otel-adaptive inspect --agent trip-planner --redis-url redis://127.0.0.1:6379/0

(``OTEL_*_EXPORTER=none`` only because this example has nowhere to send telemetry.)
The LLM and the tools are local functions that sleep for a few milliseconds.
"""

from __future__ import annotations

import argparse
import contextvars
import random
import time
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace

AGENT = "trip-planner"
TOOLS = ("find_flights", "find_hotels")

tracer = trace.get_tracer("examples.plain_agent")


def llm(output_tokens: int) -> None:
    with tracer.start_as_current_span(
        "chat sim-1", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "sim-1"}
    ) as span:
        time.sleep(random.uniform(0.001, 0.003))
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)


def tool(name: str) -> None:
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
    ):
        time.sleep(random.uniform(0.003, 0.005))


def run_agent(pool: ThreadPoolExecutor) -> None:
    with tracer.start_as_current_span(
        "plan trip",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT},
    ):
        llm(80)
        # Both searches run at once; each thread carries the current context along.
        futures = [pool.submit(contextvars.copy_context().run, tool, name) for name in TOOLS]
        for future in futures:
            future.result()
        llm(300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with ThreadPoolExecutor(max_workers=len(TOOLS)) as pool:
        for _ in range(args.runs):
            run_agent(pool)
    # The SDK's provider shuts its processors down (and so flushes them) at exit.
    print(f"ran {args.runs} runs of {AGENT!r}")


if __name__ == "__main__":
    main()
