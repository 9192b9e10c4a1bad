"""``current_hints()`` latency on the application thread, with a learned trie of ~1,000 nodes.

Readers (1 and 8 threads) call ``current_hints()`` inside a 4-deep span chain (again
and again under one span, and once under each new span: a full resolution) while
another thread keeps finishing agent runs, so the exporter keeps publishing new
snapshots under the readers' feet. Reported: median and p99 latency per call, and
as a baseline measured in the same run, the cost of ``trace.get_current_span()``
alone (the first thing any hint lookup must do). Every answer is checked: a
reader must never see a partly built snapshot (it would get None or a wrong osl).

``--integration`` measures instead what the ``openai`` client integration adds to one
``chat.completions.create`` call against the local fake OpenAI server: CPU time of the
calling thread per call with the integration on and off (alternating blocks, same run),
and the integration's own work (reading the hints, merging them into ``extra_body`` /
``extra_headers``) timed alone.

    python benchmarks/hints.py [--calls 20000]
    python benchmarks/hints.py --integration [--calls 4000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

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


def _integration(calls: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
    from fake_openai_server import FakeOpenAIServer
    from openai import OpenAI

    from otel_adaptive.instrumentation import OpenAIInstrumentor
    from otel_adaptive.instrumentation.openai import _with_hints

    provider = TracerProvider()
    processor = AdaptiveSpanProcessor(schedule_delay_millis=20)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    for i in range(20):
        _run(tracer, i)
    processor.force_flush()
    server = FakeOpenAIServer().start()
    client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    instrumentor = OpenAIInstrumentor()
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    extra_body = {"nvext": {"greed_sampling": True}}
    samples: dict[str, list[int]] = {"off": [], "on": [], "manual": [], "alone": []}
    block = 200
    a, b, c = _path(7)
    with (
        tracer.start_as_current_span("agent", attributes=AGENT),
        tracer.start_as_current_span(a, attributes=CHAIN),
        tracer.start_as_current_span(b, attributes=CHAIN),
        tracer.start_as_current_span(c, attributes=CHAIN),
    ):
        # The same request with the hints written in by hand: what the bigger request
        # itself costs the client, apart from the integration.
        by_hand = _with_hints(
            client.chat.completions, {"model": "m", "messages": messages, "extra_body": extra_body}
        )
        plain = {"model": "m", "messages": messages, "extra_body": extra_body}
        modes = ("off", "on", "manual")
        for round_ in range(max(1, calls // (3 * block))):
            for mode in modes[round_ % 3 :] + modes[: round_ % 3]:
                if mode == "on":
                    instrumentor.instrument()
                else:
                    instrumentor.uninstrument()
                kwargs = by_hand if mode == "manual" else plain
                for _ in range(block):
                    t0 = time.thread_time_ns()
                    client.chat.completions.create(**kwargs)
                    samples[mode].append(time.thread_time_ns() - t0)
        instrumentor.instrument()
        kwargs = {"model": "m", "messages": messages, "extra_body": extra_body}
        resource = client.chat.completions
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            changed = _with_hints(resource, kwargs)
            samples["alone"].append(time.perf_counter_ns() - t0)
        assert changed["extra_body"]["nvext"]["agent_hints"]["osl"] == 107
        instrumentor.uninstrument()
    hinted = sum(1 for r in server.requests if "agent_hints" in r.body.get("nvext", {}))
    client.close()
    server.close()
    provider.shutdown()

    def stats(values: list[int]) -> tuple[float, float]:
        ordered = sorted(values)
        return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99)] / 1000

    report: dict[str, object] = {}
    print(f"{'what':44} {'median µs':>10} {'p99 µs':>8}")
    rows = {
        "create, integration off (CPU)": stats(samples["off"]),
        "create, integration on (CPU)": stats(samples["on"]),
        "create, off, same hints passed by hand (CPU)": stats(samples["manual"]),
        "integration's own work, timed alone": stats(samples["alone"]),
    }
    for what, (median, p99) in rows.items():
        print(f"{what:44} {median:10.2f} {p99:8.2f}")
        report[what] = {"median_us": median, "p99_us": p99}
    off, on = rows["create, integration off (CPU)"], rows["create, integration on (CPU)"]
    manual = rows["create, off, same hints passed by hand (CPU)"]
    print(f"{'added per create (on - off)':44} {on[0] - off[0]:10.2f} {on[1] - off[1]:8.2f}")
    print(
        f"{'added per create (on - by hand)':44} {on[0] - manual[0]:10.2f} {on[1] - manual[1]:8.2f}"
    )
    expected = len(samples["on"]) + len(samples["manual"])
    print(f"hinted requests: {hinted} (expected {expected}: integration on, or by hand)")
    report["added_median_us"] = on[0] - off[0]
    report["added_p99_us"] = on[1] - off[1]
    report["added_vs_by_hand_median_us"] = on[0] - manual[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hints_integration.json").write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--integration", action="store_true")
    args = parser.parse_args()
    if args.integration:
        _integration(args.calls)
        return

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
