"""How right the hints are: ``osl`` and ``total_requests`` against what each call then did.

Two agents, made of OpenTelemetry spans with GenAI attributes through a real
``TracerProvider`` and ``AdaptiveSpanProcessor``:

* ``stochastic``: 1 to 6 turns (uniform), each turn in a ``turn`` span of its own
  with one LLM call whose output tokens are drawn from a normal distribution that
  depends on the turn (mean 40 + 30·k, sd 8); in turn 2 the agent also calls a
  helper agent as a tool (``execute_tool`` > ``invoke_agent helper``), which makes
  two LLM calls of its own (mean 200 and 120, sd 15);
* ``deterministic``: always 3 turns with fixed token counts (20, 35, 50).

For each agent: ``--learn`` runs to learn from, then ``--serve`` runs in which the
hints are read just before every LLM call, as a client would. For each served call
the absolute error of ``osl`` against the call's actual output tokens and of
``total_requests`` against the run's actual LLM call count is recorded, next to an
*oracle* that knows each (path, call index)'s true distribution: ``osl`` = the true
p90 of that call's tokens, ``total_requests`` = calls made + 1 + the true expected
number of calls remaining given the position (estimated from 200,000 runs of the
generator). Reported: mean absolute errors, ours / oracle, and the share of calls
whose ``total_requests`` was exact.

    python benchmarks/hint_accuracy.py [--learn 500] [--serve 200] [--seed 1]

The reference (nemo-relay) is not driven here: its hints are read through its own
scope API, not from OpenTelemetry spans, and this script does not install it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive import AdaptiveSpanProcessor, AgentHints, current_hints

RESULTS = Path(__file__).parent / "results"
_Z90 = 1.2815515655446004  # the standard normal's 90th percentile
_TURN_SD = 8.0
_HELPER_TOKENS = ((200.0, 15.0), (120.0, 15.0))
_DETERMINISTIC_TOKENS = (20, 35, 50)
_ORACLE_RUNS = 200_000

#: One planned LLM call: (path, mean tokens, sd); the path is the call's scope path.
Call = tuple[tuple[str, ...], float, float]


def _turn_mean(turn: int) -> float:
    return 40.0 + 30.0 * turn


def stochastic_plan(rng: random.Random) -> list[Call]:
    """The LLM calls of one run of the stochastic agent, in order."""
    calls: list[Call] = []
    for turn in range(1, rng.randint(1, 6) + 1):
        calls.append((("stochastic", "turn"), _turn_mean(turn), _TURN_SD))
        if turn == 2:
            for mean, sd in _HELPER_TOKENS:
                calls.append((("stochastic", "turn", "invoke_agent helper"), mean, sd))
    return calls


def deterministic_plan(rng: random.Random) -> list[Call]:
    return [(("deterministic", "turn"), float(t), 0.0) for t in _DETERMINISTIC_TOKENS]


@dataclass
class _Served:
    osl_errors: list[float] = field(default_factory=list)
    total_errors: list[float] = field(default_factory=list)
    oracle_osl_errors: list[float] = field(default_factory=list)
    oracle_total_errors: list[float] = field(default_factory=list)
    missing: int = 0


def _positions(plan: list[Call]) -> list[tuple[tuple[str, ...], int]]:
    """(path, call index at that path) of each call."""
    seen: dict[tuple[str, ...], int] = defaultdict(int)
    out = []
    for path, _, _ in plan:
        seen[path] += 1
        out.append((path, seen[path]))
    return out


def oracle_remaining(
    make_plan: Callable[[random.Random], list[Call]], seed: int
) -> dict[tuple[tuple[str, ...], int], float]:
    """The true expected number of calls after the call at (path, index), by simulation."""
    rng = random.Random(seed)
    sums: dict[tuple[tuple[str, ...], int], float] = defaultdict(float)
    counts: dict[tuple[tuple[str, ...], int], int] = defaultdict(int)
    for _ in range(_ORACLE_RUNS):
        plan = make_plan(rng)
        for position, key in enumerate(_positions(plan)):
            sums[key] += len(plan) - 1 - position
            counts[key] += 1
    return {key: sums[key] / counts[key] for key in sums}


def _one_run(
    tracer: trace.Tracer,
    agent: str,
    plan: list[Call],
    rng: random.Random,
    record: Callable[[AgentHints | None, int, int], None] | None,
) -> None:
    """Spans for ``plan``; ``record(hints, actual_tokens, made)`` for each call if given."""
    tokens = [max(1, round(rng.gauss(mean, sd))) if sd else round(mean) for _, mean, sd in plan]
    made = 0

    def llm() -> None:
        nonlocal made
        if record is not None:
            record(current_hints(), tokens[made], made)
        with tracer.start_as_current_span(
            "chat m", attributes={"gen_ai.operation.name": "chat"}
        ) as span:
            span.set_attribute("gen_ai.usage.output_tokens", tokens[made])
        made += 1

    agent_attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
    with tracer.start_as_current_span(agent, attributes=agent_attrs):
        index = 0
        while index < len(plan):
            with tracer.start_as_current_span(
                "turn", attributes={"openinference.span.kind": "CHAIN"}
            ):
                llm()
                index += 1
                if index < len(plan) and len(plan[index][0]) == 3:  # the agent as a tool
                    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "ask"}
                    inner = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "h"}
                    with (
                        tracer.start_as_current_span("execute_tool ask", attributes=tool),
                        tracer.start_as_current_span("invoke_agent helper", attributes=inner),
                    ):
                        while index < len(plan) and len(plan[index][0]) == 3:
                            llm()
                            index += 1


def measure(
    agent: str,
    make_plan: Callable[[random.Random], list[Call]],
    learn: int,
    serve: int,
    seed: int,
) -> dict[str, Any]:
    provider = TracerProvider(resource=Resource.create({"service.name": "hint-accuracy"}))
    processor = AdaptiveSpanProcessor(schedule_delay_millis=50, max_queue_size=2**20)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("hint-accuracy")
    rng = random.Random(seed)
    try:
        for _ in range(learn):
            _one_run(tracer, agent, make_plan(rng), rng, None)
        assert processor.force_flush(60_000)
        remaining = oracle_remaining(make_plan, seed + 1)
        served = _Served()
        for _ in range(serve):
            plan = make_plan(rng)
            positions = _positions(plan)

            def record(
                hints: AgentHints | None,
                actual: int,
                made: int,
                plan: list[Call] = plan,
                positions: list[tuple[tuple[str, ...], int]] = positions,
            ) -> None:
                path, call_index = positions[made]
                _, mean, sd = plan[made]
                oracle_osl = round(mean + _Z90 * sd)
                oracle_total = made + 1 + round(remaining[(path, call_index)])
                served.oracle_osl_errors.append(abs(oracle_osl - actual))
                served.oracle_total_errors.append(abs(oracle_total - len(plan)))
                if hints is None:
                    served.missing += 1
                    return
                served.osl_errors.append(abs(hints.osl - actual))
                served.total_errors.append(abs(hints.total_requests - len(plan)))

            _one_run(tracer, agent, plan, rng, record)
        stats = processor.stats()
    finally:
        provider.shutdown()

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    ours_osl, oracle_osl = mean(served.osl_errors), mean(served.oracle_osl_errors)
    ours_total, oracle_total = mean(served.total_errors), mean(served.oracle_total_errors)
    return {
        "agent": agent,
        "served_calls": len(served.oracle_osl_errors),
        "calls_without_hints": served.missing,
        "osl_mae": ours_osl,
        "osl_mae_oracle": oracle_osl,
        "total_requests_mae": ours_total,
        "total_requests_mae_oracle": oracle_total,
        "total_requests_exact": (
            sum(1 for e in served.total_errors if e == 0) / len(served.total_errors)
            if served.total_errors
            else float("nan")
        ),
        "hint_errors": stats.get("hint_errors", 0),
        "calls_outside_runs": stats.get("calls_outside_runs", 0),
    }


def _ratio(ours: float, oracle: float) -> str:
    if oracle == 0:
        return "exact" if ours == 0 else "∞"
    return f"{ours / oracle:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learn", type=int, default=500)
    parser.add_argument("--serve", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = [
        measure("stochastic", stochastic_plan, args.learn, args.serve, args.seed),
        measure("deterministic", deterministic_plan, args.learn, args.serve, args.seed),
    ]
    print(
        "| agent | served calls | without hints | osl MAE (oracle) | ratio "
        "| total_requests MAE (oracle) | ratio | total_requests exact |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['agent']} | {r['served_calls']} | {r['calls_without_hints']} "
            f"| {r['osl_mae']:.2f} ({r['osl_mae_oracle']:.2f}) "
            f"| {_ratio(r['osl_mae'], r['osl_mae_oracle'])} "
            f"| {r['total_requests_mae']:.3f} ({r['total_requests_mae_oracle']:.3f}) "
            f"| {_ratio(r['total_requests_mae'], r['total_requests_mae_oracle'])} "
            f"| {r['total_requests_exact']:.1%} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hint_accuracy.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
