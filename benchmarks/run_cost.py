"""CPU the plugin adds per agent run, as a multiple of the SDK's own CPU for those spans.

In one process, interleaved rounds of the same runs (``redis_throughput.one_run``:
an agent span, a step span, N LLM calls and 3 tools) are made with no processor
and with ``AdaptiveSpanProcessor`` writing to a private ``redis-server``. Process
CPU (``time.process_time``: every thread, so the exporter's work counts) is taken
from the first span to the end of ``force_flush``. Reported per run:

    ratio = (CPU with the plugin - CPU with no processor) / CPU with no processor

and the Redis server's own CPU per run (``INFO cpu`` delta, user + system).

    python benchmarks/run_cost.py [--runs 2000] [--rounds 5] [--calls 5 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import redis
from opentelemetry.sdk.trace import TracerProvider
from redis_throughput import one_run, private_redis

from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor


def _server_cpu(url: str) -> float:
    with redis.Redis.from_url(url) as client:
        info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _round(runs: int, calls: int, redis_url: str | None) -> tuple[float, float]:
    """Process CPU seconds and Redis server CPU seconds for ``runs`` runs."""
    provider = TracerProvider()
    processor = None
    if redis_url is not None:
        processor = AdaptiveSpanProcessor(
            AdaptiveConfig(
                redis_url=redis_url,
                key_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
                max_queue_size=1_000_000,  # nothing dropped: drops would look cheap
            )
        )
        provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    one_run(tracer, calls, 0)  # warm-up: scripts loaded, connections open
    if processor is not None:
        assert processor.force_flush(60_000)
    server_before = _server_cpu(redis_url) if redis_url else 0.0
    started = time.process_time()
    for i in range(runs):
        one_run(tracer, calls, i % 8)
    if processor is not None:
        assert processor.force_flush(120_000)
        assert processor.stats()["events_dropped"] == 0
    cpu = time.process_time() - started
    server = (_server_cpu(redis_url) - server_before) if redis_url else 0.0
    provider.shutdown()
    return cpu, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, nargs="+", default=[5, 20])
    args = parser.parse_args()
    with private_redis() as target:
        print("| LLM calls | SDK alone µs/run | plugin adds µs/run | ratio | Redis CPU µs/run |")
        print("| --- | --- | --- | --- | --- |")
        for calls in args.calls:
            bare: list[float] = []
            added: list[float] = []
            server: list[float] = []
            for _ in range(args.rounds):
                base, _ = _round(args.runs, calls, None)
                with_plugin, redis_cpu = _round(args.runs, calls, target.url)
                bare.append(base / args.runs * 1e6)
                added.append((with_plugin - base) / args.runs * 1e6)
                server.append(redis_cpu / args.runs * 1e6)
            ratios = [a / b for a, b in zip(added, bare, strict=True)]
            print(
                f"| {calls} | {statistics.median(bare):.0f} | {statistics.median(added):.0f} "
                f"| **{statistics.median(ratios):.2f}** (min {min(ratios):.2f}, "
                f"max {max(ratios):.2f}) | {statistics.median(server):.0f} |"
            )


if __name__ == "__main__":
    main()
