"""An agent traced with the OpenTelemetry API that asks for hints before each LLM call.

It sets up no provider and no processor: run it under ``opentelemetry-instrument``
with the README's zero-code variables and otel-adaptive is added at start-up. It
runs the agent until the first hints arrive in a request body (or gives up after
``--seconds``), prints them and exits 0; without otel-adaptive it exits 1.

    OTEL_ADAPTIVE_ENABLED=true \\
    OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
    opentelemetry-instrument python examples/zero_code_agent.py

The LLM and the tool are local functions that sleep for a few milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from opentelemetry import trace

from otel_adaptive import inject_hints

AGENT = "zero-code-agent"
tracer = trace.get_tracer("examples.zero_code_agent")


def llm(body: dict[str, Any], output_tokens: int) -> dict[str, Any] | None:
    with tracer.start_as_current_span(
        "chat sim-1", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "sim-1"}
    ) as span:
        inject_hints(body)  # what a client would send to the inference server
        time.sleep(0.002)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    hints: dict[str, Any] | None = body.get("nvext", {}).get("agent_hints")
    return hints


def run_agent() -> dict[str, Any] | None:
    with tracer.start_as_current_span(
        f"invoke_agent {AGENT}",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT},
    ):
        first = llm({"model": "sim-1", "messages": []}, 60)
        with tracer.start_as_current_span(
            "execute_tool lookup",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
        ):
            time.sleep(0.002)
        llm({"model": "sim-1", "messages": []}, 200)
    return first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    runs = 0
    while time.monotonic() < deadline:
        hints = run_agent()
        runs += 1
        if hints:
            print(f"hints served after {runs} runs: {json.dumps(hints, sort_keys=True)}")
            return 0
        time.sleep(0.1)  # learning happens off this thread, in the background
    print(f"no hints after {runs} runs: otel-adaptive is not active", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
