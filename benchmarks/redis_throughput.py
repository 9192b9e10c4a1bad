"""Sustained runs/s into Redis, Redis commands and new connections per run.

Agent runs of N LLM calls + 3 tools (2 of them overlapping) go through a real
TracerProvider and AdaptiveSpanProcessor (both learners on) into Redis. The same
workload with the in-memory store is measured in the same run as the baseline.
Then the agent's learned state is grown tenfold (many more call sites) and the
Redis workload is measured again: per-run cost must not grow with state size.

Commands and connections are read from the server's ``INFO commandstats`` and
``INFO stats``; by default the script starts its own ``redis-server`` on a free
port so that nothing else is counted.

    python benchmarks/redis_throughput.py [--runs 3000] [--llm-calls 5 20] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive import AdaptiveSpanProcessor

RESULTS = Path(__file__).parent / "results"
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "throughput"}
LLM = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
TOOL = {"gen_ai.operation.name": "execute_tool"}
CHAIN = {"openinference.span.kind": "CHAIN"}
MS = 1_000_000


@contextmanager
def private_redis() -> Iterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not on PATH: pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.shutdown(nosave=True)
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def server_counters(url: str) -> tuple[int, int]:
    """(commands executed, connections accepted) so far, server-wide."""
    with redis.Redis.from_url(url) as client:
        commands = sum(int(v["calls"]) for v in client.info("commandstats").values())
        connections = int(client.info("stats")["total_connections_received"])
    return commands, connections


def one_run(tracer: trace.Tracer, llm_calls: int, site: int) -> None:
    """One agent run; ``site`` picks the function scope (distinct call sites grow the trie)."""
    t0 = time.time_ns()
    with tracer.start_as_current_span("agent", attributes=AGENT, start_time=t0):
        with tracer.start_as_current_span(f"step-{site}", attributes=CHAIN, start_time=t0):
            for k in range(llm_calls):
                s = tracer.start_span("chat m", attributes=LLM, start_time=t0 + k * 10 * MS)
                s.set_attribute("gen_ai.usage.output_tokens", 50 + k)
                s.end(end_time=t0 + k * 10 * MS + 8 * MS)
            base = t0 + llm_calls * 10 * MS
            for start, end, name in ((0, 30, "search"), (5, 25, "fetch"), (40, 50, "write")):
                tracer.start_span(
                    f"execute_tool {name}", attributes={**TOOL, "gen_ai.tool.name": name},
                    start_time=base + start * MS,
                ).end(end_time=base + end * MS)  # fmt: skip


def measure(
    url: str | None, runs: int, llm_calls: int, sites: int, warm_sites: int = 0
) -> dict[str, Any]:
    prefix = f"bench:{uuid.uuid4().hex}:"
    options: dict[str, Any] = {"max_runs_per_agent": 1000}
    if url is not None:
        options.update(redis_url=url, key_prefix=prefix)
    processor = AdaptiveSpanProcessor(**options)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    for site in range(warm_sites):  # grow the learned state before measuring
        one_run(tracer, llm_calls, site)
    processor.force_flush()
    before = server_counters(url) if url else (0, 0)
    stored_before = processor.stats()["runs_stored"]
    cpu0, wall0, app_cpu0 = time.process_time(), time.perf_counter(), time.thread_time()
    for i in range(runs):
        one_run(tracer, llm_calls, i % sites)
    app_cpu = time.thread_time() - app_cpu0
    ok = processor.force_flush(600_000)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    after = server_counters(url) if url else (0, 0)
    stats = processor.stats()
    provider.shutdown()
    stored = stats["runs_stored"] - stored_before
    return {
        "flushed": ok,
        "runs": runs,
        "runs_stored": stored,
        "runs_per_s": runs / wall,
        "commands_per_run": (after[0] - before[0]) / runs,
        "new_connections_per_run": (after[1] - before[1]) / runs,
        "exporter_cpu_us_per_run": (cpu - app_cpu) / runs * 1e6,
        "app_cpu_us_per_run": app_cpu / runs * 1e6,
        "events_dropped": stats["events_dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--llm-calls", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    args = parser.parse_args()
    report: dict[str, Any] = {"runs": args.runs, "results": {}}
    with private_redis() if args.redis_url is None else _given(args.redis_url) as url:
        header = (f"{'LLM calls':>9} {'store / state':24} {'runs/s':>8} {'cmds/run':>9} "
                  f"{'conns/run':>9} {'exporter CPU µs/run':>20} {'stored':>7}")  # fmt: skip
        print(header)
        for llm_calls in args.llm_calls:
            cases = {
                "memory (baseline)": measure(None, args.runs, llm_calls, sites=10),
                "redis, 10 call sites": measure(url, args.runs, llm_calls, sites=10),
                "redis, 100 call sites": measure(
                    url, args.runs, llm_calls, sites=100, warm_sites=100
                ),
            }
            for name, row in cases.items():
                print(
                    f"{llm_calls:9} {name:24} {row['runs_per_s']:8.0f} "
                    f"{row['commands_per_run']:9.3f} {row['new_connections_per_run']:9.4f} "
                    f"{row['exporter_cpu_us_per_run']:20.0f} {row['runs_stored']:7}"
                )
            base = cases["memory (baseline)"]["runs_per_s"]
            redis_rate = cases["redis, 10 call sites"]["runs_per_s"]
            big = cases["redis, 100 call sites"]["runs_per_s"]
            print(f"{'':9} redis / memory runs/s: {redis_rate / base:.2f}; "
                  f"10x state / 1x state: {big / redis_rate:.2f}")  # fmt: skip
            report["results"][f"llm_calls_{llm_calls}"] = cases
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis_throughput.json").write_text(json.dumps(report, indent=2))


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
