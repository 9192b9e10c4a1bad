"""Application-thread cost per span: no processor vs the SDK batch processor vs ours.

Each configuration is measured in this one run, interleaved over several
rounds, and reported as the median per-span cost (start + end) with its spread,
the cost added over no processor, and the ratio to the SDK's BatchSpanProcessor.
Two figures per configuration: wall time (what the application waits, including
time lost to other threads holding the GIL) and the CPU time of the application
threads themselves (``time.thread_time``; summed over threads, per span).
Queues are large enough and flushed between rounds, so nothing is dropped (drops
would make a processor look cheaper than it is); the drop counter is printed.

Two modes:

* ``hot-path``: the exporter threads stay asleep while spans are timed (their
  batch size is the queue size and their delay ten minutes), so the figure is
  what ``on_start``/``on_end`` cost the calling thread;
* ``sustained``: default batching, the exporter threads work while spans are
  made, so their competition for the GIL is included. Here a fourth
  configuration has the exporter busy writing to Redis: AdaptiveSpanProcessor
  with ``redis_url`` pointing at a private ``redis-server`` the script starts
  (``--no-redis`` skips it, ``--redis-url`` uses another server).

    python benchmarks/overhead.py [--spans 20000] [--rounds 7] [--threads 1 8]
        [--no-redis | --redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from redis_throughput import given_redis, private_redis

from otel_adaptive import AdaptiveSpanProcessor

RESULTS = Path(__file__).parent / "results"
LLM_ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
AGENT_ATTRS = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench"}
REDIS_CONFIG = "AdaptiveSpanProcessor + Redis"


class _NoopExporter(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
        return SpanExportResult.SUCCESS


def _workload(provider: TracerProvider, spans: int) -> None:
    """Agent runs of 1 agent span + 3 LLM spans + 1 tool span (5 spans each)."""
    tracer = provider.get_tracer("bench")
    from opentelemetry import trace

    for _ in range(spans // 5):
        agent = tracer.start_span("agent", attributes=AGENT_ATTRS)
        with trace.use_span(agent, end_on_exit=True):
            for _ in range(3):
                s = tracer.start_span("chat m", attributes=LLM_ATTRS)
                s.set_attribute("gen_ai.usage.output_tokens", 42)
                s.end()
            tracer.start_span(
                "execute_tool t", attributes={"gen_ai.operation.name": "execute_tool"}
            ).end()


class Sample(NamedTuple):
    wall_us: float  # per span, slowest thread
    cpu_us: float  # per span, application threads' CPU summed
    dropped: int
    stored: int


def _measure(make: Callable[[], SpanProcessor | None], spans: int, threads: int) -> Sample:
    """Per-span cost on the application threads, events dropped and runs stored."""
    provider = TracerProvider()
    processor = make()
    if processor is not None:
        provider.add_span_processor(processor)
    per_thread = spans // threads
    barrier = threading.Barrier(threads + 1)
    elapsed: list[float] = []
    cpu: list[float] = []

    def worker() -> None:
        barrier.wait()
        t0, c0 = time.perf_counter(), time.thread_time()
        _workload(provider, per_thread)
        cpu.append(time.thread_time() - c0)
        elapsed.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    for t in pool:
        t.join()
    dropped = stored = 0
    if isinstance(processor, AdaptiveSpanProcessor):
        processor.force_flush()
        stats = processor.stats()
        dropped, stored = stats["events_dropped"], stats["runs_stored"]
    provider.shutdown()
    # Threads run concurrently: cost per span is the wall time of the slowest thread
    # divided by the spans each thread made; CPU is what all of them used, per span.
    made = per_thread // 5 * 5
    return Sample(max(elapsed) / made * 1e6, sum(cpu) / (made * threads) * 1e6, dropped, stored)


def _configs(
    mode: str, spans: int, redis_url: str | None
) -> dict[str, Callable[[], SpanProcessor | None]]:
    queue = spans * 4  # events; never reached, so nothing is dropped
    if mode == "hot-path":
        batch, delay = queue, 600_000
    else:
        batch, delay = 512, 1000
    configs: dict[str, Callable[[], SpanProcessor | None]] = {
        "no processor": lambda: None,
        "BatchSpanProcessor": lambda: BatchSpanProcessor(
            _NoopExporter(),
            max_queue_size=queue,
            max_export_batch_size=batch,
            schedule_delay_millis=delay,
        ),
        "AdaptiveSpanProcessor": lambda: AdaptiveSpanProcessor(
            max_queue_size=queue, max_export_batch_size=batch, schedule_delay_millis=delay
        ),
    }
    if mode == "sustained" and redis_url is not None:
        # A fresh key prefix per measurement: every round writes a new agent's state.
        configs[REDIS_CONFIG] = lambda: AdaptiveSpanProcessor(
            max_queue_size=queue,
            max_export_batch_size=batch,
            schedule_delay_millis=delay,
            redis_url=redis_url,
            key_prefix=f"bench:{uuid.uuid4().hex[:12]}:",
        )
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis configuration")
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    args = parser.parse_args()

    report: dict[str, object] = {"spans": args.spans, "rounds": args.rounds, "results": {}}
    with ExitStack() as stack:
        redis_url: str | None = None
        if args.redis_url is not None:
            redis_url = stack.enter_context(given_redis(args.redis_url)).url
        elif not args.no_redis:
            redis_url = stack.enter_context(private_redis()).url
        for mode, threads in [(m, t) for m in ("hot-path", "sustained") for t in args.threads]:
            key = f"{mode}_threads_{threads}"
            report["results"][key] = _run_mode(mode, threads, args, redis_url)  # type: ignore[index]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "overhead.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


def _run_mode(
    mode: str, threads: int, args: argparse.Namespace, redis_url: str | None
) -> dict[str, object]:
    configs = _configs(mode, args.spans, redis_url)
    samples: dict[str, list[Sample]] = {name: [] for name in configs}
    for name, make in configs.items():  # warm-up (and a first connection to Redis)
        if name != "no processor":
            _measure(make, 2000, threads)
    for _ in range(args.rounds):
        for name, make in configs.items():  # interleaved: drift hits all alike
            samples[name].append(_measure(make, args.spans, threads))
    base_wall = statistics.median(s.wall_us for s in samples["no processor"])
    base_cpu = statistics.median(s.cpu_us for s in samples["no processor"])
    batch_wall = statistics.median(s.wall_us for s in samples["BatchSpanProcessor"])
    batch_cpu = statistics.median(s.cpu_us for s in samples["BatchSpanProcessor"])
    print(f"\n{mode}, {threads} thread(s), {args.spans} spans x {args.rounds} rounds (µs/span)")
    print(
        f"{'configuration':30} {'wall':>7} {'min':>7} {'max':>7} {'added':>7} {'vs batch':>8}"
        f" | {'cpu':>7} {'added':>7} {'vs batch':>8} | {'stored':>7}"
    )
    rows: dict[str, dict[str, float]] = {}
    drops = 0
    for name, values in samples.items():
        wall = [s.wall_us for s in values]
        cpu = [s.cpu_us for s in values]
        drops += sum(s.dropped for s in values)
        row = {
            "median_us": statistics.median(wall),
            "min_us": min(wall),
            "max_us": max(wall),
            "added_us": statistics.median(wall) - base_wall,
            "ratio_to_batch": statistics.median(wall) / batch_wall,
            "cpu_median_us": statistics.median(cpu),
            "cpu_min_us": min(cpu),
            "cpu_max_us": max(cpu),
            "cpu_added_us": statistics.median(cpu) - base_cpu,
            "cpu_ratio_to_batch": statistics.median(cpu) / batch_cpu,
            "runs_stored": sum(s.stored for s in values),
        }
        rows[name] = row
        print(
            f"{name:30} {row['median_us']:7.2f} {row['min_us']:7.2f} {row['max_us']:7.2f} "
            f"{row['added_us']:7.2f} {row['ratio_to_batch']:8.2f} | {row['cpu_median_us']:7.2f} "
            f"{row['cpu_added_us']:7.2f} {row['cpu_ratio_to_batch']:8.2f} | "
            f"{row['runs_stored']:7.0f}"
        )
    batch_added = rows["BatchSpanProcessor"]["added_us"]
    for name in (n for n in rows if n.startswith("AdaptiveSpanProcessor")):
        print(
            f"added by {name} / added by BatchSpanProcessor: "
            f"{rows[name]['added_us'] / batch_added:.2f} (wall), "
            f"{rows[name]['cpu_added_us'] / rows['BatchSpanProcessor']['cpu_added_us']:.2f} (cpu)"
        )
    print(f"events dropped: {drops}")
    return {"rows": rows, "events_dropped": drops}


if __name__ == "__main__":
    main()
