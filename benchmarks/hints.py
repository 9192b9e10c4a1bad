"""``current_hints()`` latency on the application thread, with a learned trie of ~1,000 nodes.

Readers (1 and 8 threads) call ``current_hints()`` inside a 4-deep span chain (again
and again under one span, and once under each new span: a full resolution) while
another thread keeps finishing agent runs, so the exporter keeps publishing new
snapshots under the readers' feet. Reported: median and p99 latency per call, and
as a baseline measured in the same run, the cost of ``trace.get_current_span()``
alone (the first thing any hint lookup must do). Every answer is checked: a
reader must never see a partly built snapshot (it would get None or a wrong osl).

    python benchmarks/hints.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive import AdaptiveSpanProcessor, current_hints

RESULTS = Path(__file__).parent / "results"
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "hints-bench"}
CHAIN = {"openinference.span.kind": "CHAIN"}
LLM = {"gen_ai.operation.name": "chat"}
FANOUT = 10  # 10 x 10 x 10 leaves + inner nodes: ~1,100 trie nodes


def _path(i: int) -> tuple[str, str, str]:
    return (f"s{i % FANOUT}", f"t{i // FANOUT % FANOUT}", f"u{i // FANOUT**2 % FANOUT}")


def _run(tracer: trace.Tracer, i: int) -> None:
    a, b, c = _path(i)
    with (
        tracer.start_as_current_span("agent", attributes=AGENT),
        tracer.start_as_current_span(a, attributes=CHAIN),
        tracer.start_as_current_span(b, attributes=CHAIN),
        tracer.start_as_current_span(c, attributes=CHAIN),
        tracer.start_as_current_span("chat m", attributes=LLM) as span,
    ):
        span.set_attribute("gen_ai.usage.output_tokens", 100 + i % FANOUT**3)


def _read(tracer: trace.Tracer, calls: int, out: list[int], bad: list[int], mode: str) -> None:
    a, b, c = _path(7)
    with (
        tracer.start_as_current_span("agent", attributes=AGENT),
        tracer.start_as_current_span(a, attributes=CHAIN),
        tracer.start_as_current_span(b, attributes=CHAIN),
        tracer.start_as_current_span(c, attributes=CHAIN),
    ):
        for _ in range(calls):
            if mode == "base":
                t0 = time.perf_counter_ns()
                trace.get_current_span()
                out.append(time.perf_counter_ns() - t0)
            elif mode == "repeat":
                t0 = time.perf_counter_ns()
                hints = current_hints()
                out.append(time.perf_counter_ns() - t0)
                if hints is None or hints.osl != 107:
                    bad.append(1)
            else:  # first lookup under a span never seen before: full resolution
                with tracer.start_as_current_span("step", attributes=CHAIN):
                    t0 = time.perf_counter_ns()
                    hints = current_hints()
                    out.append(time.perf_counter_ns() - t0)
                if hints is None or hints.osl != 107:
                    bad.append(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()

    provider = TracerProvider()
    processor = AdaptiveSpanProcessor(schedule_delay_millis=20)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    for i in range(FANOUT**3):
        _run(tracer, i)
    processor.force_flush()
    envelope = processor.store.load_trie("hints-bench")
    assert envelope is not None
    nodes = _count_nodes(envelope["root"])

    stop = threading.Event()
    published_before = processor.cache.version

    def writer() -> None:
        i = 0
        while not stop.is_set():
            _run(tracer, i)
            i += 1

    report: dict[str, object] = {"trie_nodes": nodes, "results": {}}
    print(f"trie nodes: {nodes}")
    print(f"{'readers':>7} {'what':24} {'median µs':>10} {'p99 µs':>8} {'bad answers':>12}")
    for threads in (1, 8):
        for mode in ("base", "repeat", "first"):
            writer_thread = threading.Thread(target=writer)
            writer_thread.start()
            samples: list[list[int]] = [[] for _ in range(threads)]
            bad: list[int] = []
            readers = [
                threading.Thread(target=_read, args=(tracer, args.calls // threads, s, bad, mode))
                for s in samples
            ]
            for r in readers:
                r.start()
            for r in readers:
                r.join()
            stop.set()
            writer_thread.join()
            stop.clear()
            flat = sorted(x for s in samples for x in s)
            median = statistics.median(flat) / 1000
            p99 = flat[int(len(flat) * 0.99)] / 1000
            what = {
                "base": "get_current_span (base)",
                "repeat": "current_hints (repeat)",
                "first": "current_hints (new span)",
            }[mode]
            print(f"{threads:7} {what:24} {median:10.2f} {p99:8.2f} {len(bad):12}")
            report["results"][f"{threads}_{what}"] = {  # type: ignore[index]
                "median_us": median,
                "p99_us": p99,
                "bad_answers": len(bad),
            }
    processor.force_flush()
    published = processor.cache.version - published_before
    print(f"snapshots published while reading: {published}")
    report["snapshots_published"] = published
    provider.shutdown()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hints.json").write_text(json.dumps(report, indent=2))


def _count_nodes(node: dict[str, object]) -> int:
    children = node["children"]
    assert isinstance(children, dict)
    return 1 + sum(_count_nodes(child) for child in children.values())


if __name__ == "__main__":
    main()
