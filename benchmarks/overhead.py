"""Application-thread cost per span: no processor vs the SDK batch processor vs ours.

Each configuration is measured in this one run, interleaved over several
rounds, and reported as the median per-span cost (start + end) with its spread,
the cost added over no processor, and the ratio to the SDK's BatchSpanProcessor.
Queues are large enough and flushed between rounds, so nothing is dropped (drops
would make a processor look cheaper than it is); the drop counter is printed.

Two modes:

* ``hot-path``: the exporter threads stay asleep while spans are timed (their
  batch size is the queue size and their delay ten minutes), so the figure is
  what ``on_start``/``on_end`` cost the calling thread;
* ``sustained``: default batching, the exporter threads work while spans are
  made, so their competition for the GIL is included.

    python benchmarks/overhead.py [--spans 20000] [--rounds 7] [--threads 1 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_adaptive import AdaptiveSpanProcessor

RESULTS = Path(__file__).parent / "results"
LLM_ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
AGENT_ATTRS = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench"}


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


def _measure(
    make: Callable[[], SpanProcessor | None], spans: int, threads: int
) -> tuple[float, int]:
    """Per-span cost in µs on the application threads, and events dropped."""
    provider = TracerProvider()
    processor = make()
    if processor is not None:
        provider.add_span_processor(processor)
    per_thread = spans // threads
    barrier = threading.Barrier(threads + 1)
    elapsed: list[float] = []

    def worker() -> None:
        barrier.wait()
        t0 = time.perf_counter()
        _workload(provider, per_thread)
        elapsed.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    for t in pool:
        t.join()
    dropped = 0
    if isinstance(processor, AdaptiveSpanProcessor):
        processor.force_flush()
        dropped = processor.stats()["events_dropped"]
    provider.shutdown()
    # Threads run concurrently: cost per span is the wall time of the slowest thread
    # divided by the spans each thread made.
    return max(elapsed) / (per_thread // 5 * 5) * 1e6, dropped


def _configs(mode: str, spans: int) -> dict[str, Callable[[], SpanProcessor | None]]:
    queue = spans * 4  # events; never reached, so nothing is dropped
    if mode == "hot-path":
        batch, delay = queue, 600_000
    else:
        batch, delay = 512, 1000
    return {
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    report: dict[str, object] = {"spans": args.spans, "rounds": args.rounds, "results": {}}
    for mode, threads in [(m, t) for m in ("hot-path", "sustained") for t in args.threads]:
        configs = _configs(mode, args.spans)
        samples: dict[str, list[float]] = {name: [] for name in configs}
        drops = 0
        _measure(configs["AdaptiveSpanProcessor"], 2000, threads)  # warm-up
        for _ in range(args.rounds):
            for name, make in configs.items():  # interleaved: drift hits all alike
                cost, dropped = _measure(make, args.spans, threads)
                samples[name].append(cost)
                drops += dropped
        base = statistics.median(samples["no processor"])
        batch = statistics.median(samples["BatchSpanProcessor"])
        print(f"\n{mode}, {threads} thread(s), {args.spans} spans x {args.rounds} rounds (µs/span)")
        print(
            f"{'configuration':24} {'median':>8} {'min':>8} {'max':>8} {'added':>8} {'vs batch':>9}"
        )
        rows = {}
        for name, values in samples.items():
            median = statistics.median(values)
            added = median - base
            ratio = median / batch
            rows[name] = {
                "median_us": median,
                "min_us": min(values),
                "max_us": max(values),
                "added_us": added,
                "ratio_to_batch": ratio,
            }
            print(
                f"{name:24} {median:8.2f} {min(values):8.2f} {max(values):8.2f} "
                f"{added:8.2f} {ratio:9.2f}"
            )
        adaptive_added = rows["AdaptiveSpanProcessor"]["added_us"]
        batch_added = rows["BatchSpanProcessor"]["added_us"]
        print(
            f"added by AdaptiveSpanProcessor / added by BatchSpanProcessor: "
            f"{adaptive_added / batch_added:.2f}; events dropped: {drops}"
        )
        key = f"{mode}_threads_{threads}"
        report["results"][key] = {"rows": rows, "events_dropped": drops}  # type: ignore[index]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "overhead.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
