"""CPU the plugin adds per agent run, as a multiple of the SDK's own CPU for those spans.

In one process, interleaved rounds of the same runs (an agent span, a step span,
N LLM calls and 3 tools, 2 of them overlapping) go through a fresh
``TracerProvider`` per measurement with:

* ``SDK alone``: no processor (the baseline);
* ``plugin, memory`` / ``plugin, Redis``: ``AdaptiveSpanProcessor`` with the
  in-memory store / writing to a private ``redis-server`` this script starts on
  a free port (``--store`` picks them);
* ``BSP + OTLP/HTTP``: the SDK's ``BatchSpanProcessor`` with the real
  ``OTLPSpanExporter`` posting to ``otlp_sink.py``, a local sink run as a
  subprocess so its CPU is not counted. Skipped, with a message, when
  ``opentelemetry-exporter-otlp-proto-http`` is not installed.

Process CPU (``time.process_time``: every thread, so exporter threads count) is
taken from the first timed span to the end of ``force_flush``, after a warm-up.
Queues are sized so nothing is dropped, and what arrived is checked (runs stored,
spans received by the sink). Each case with a processor is measured right after
the SDK alone on the same runs, its own baseline for that round (the machine's speed
drifts between measurements). Reported per run, medians over rounds of per-round
ratios:

* added ÷ SDK = (CPU with the processor - CPU with no processor) / CPU with no processor;
* plugin ÷ (BSP + OTLP) = CPU the plugin adds / CPU the batch processor and exporter add;
* Redis server CPU per run (``INFO cpu`` used_cpu_user + used_cpu_sys delta / runs),
  and what it means for a fleet: runs/s one Redis shard sustains at one core;
* where the added CPU goes: the thread making the spans (its CPU with the processor
  minus without: the hot path, and what sharing the interpreter with busy worker
  threads costs it) and the worker threads (the exporter: assembly, learning, store);
* per-run cost with 10x the learned state / with 1x: the agent is pre-warmed with
  10x as many distinct call sites (``step-<i>`` scopes), then timed on the same
  runs as the 1x case. ``--wide`` also makes the trees wider: every LLM call runs
  under one of several sibling ``branch-<k>`` scopes of its step.

    python benchmarks/run_cost.py [--quick] [--runs 2000] [--rounds 5] [--calls 5 20]
        [--store memory redis] [--wide]

``--quick`` (400 runs, 3 rounds) finishes in well under a minute on an idle
machine: a check that the script works, not a figure to quote.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from redis_throughput import (
    AGENT,
    CHAIN,
    LLM,
    MS,
    TOOL,
    RedisTarget,
    one_run,
    private_redis,
    server_counters,
)

from otel_adaptive import AdaptiveSpanProcessor

RESULTS = Path(__file__).parent / "results"
AGENT_ID = AGENT["gen_ai.agent.name"]
SDK = "SDK alone"
MEMORY = "plugin, memory"
REDIS = "plugin, Redis"
OTLP = "BSP + OTLP/HTTP"
SITES = 10  # distinct call sites of the timed runs (and of the 1x learned state)
STATE_FACTOR = 10
WIDE_BRANCHES = 3  # sibling scopes per step in --wide runs

Workload = Callable[[trace.Tracer, int, int], None]


# --- the workload ------------------------------------------------------------------------------


def wide_run(tracer: trace.Tracer, llm_calls: int, site: int) -> None:
    """Like ``one_run``, with each LLM call under one of ``WIDE_BRANCHES`` sibling scopes."""
    t0 = time.time_ns()
    with (
        tracer.start_as_current_span("agent", attributes=AGENT, start_time=t0),
        tracer.start_as_current_span(f"step-{site}", attributes=CHAIN, start_time=t0),
    ):
        for k in range(llm_calls):
            start = t0 + k * 10 * MS
            branch = tracer.start_span(f"branch-{k % WIDE_BRANCHES}", attributes=CHAIN,
                                       start_time=start)  # fmt: skip
            with trace.use_span(branch, end_on_exit=False):
                s = tracer.start_span("chat m", attributes=LLM, start_time=start)
                s.set_attribute("gen_ai.usage.output_tokens", 50 + k)
                s.set_attribute("gen_ai.usage.input_tokens", 100)
                s.end(end_time=start + 8 * MS)
            branch.end(end_time=start + 9 * MS)
        base = t0 + llm_calls * 10 * MS
        for begin, end, name in ((0, 30, "search"), (5, 25, "fetch"), (40, 50, "write")):
            tracer.start_span(
                f"execute_tool {name}", attributes={**TOOL, "gen_ai.tool.name": name},
                start_time=base + begin * MS,
            ).end(end_time=base + end * MS)  # fmt: skip


def spans_per_run(llm_calls: int, wide: bool) -> int:
    """Agent + step + LLM calls (+ one branch scope each when wide) + 3 tools."""
    return 2 + llm_calls * (2 if wide else 1) + 3


# --- the local OTLP sink -----------------------------------------------------------------------


def otlp_exporter_class() -> type[Any] | None:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return None
    return OTLPSpanExporter


@dataclass
class Sink:
    endpoint: str  # the traces URL the exporter posts to
    count_url: str

    def spans(self) -> int | None:
        with urllib.request.urlopen(self.count_url, timeout=10) as reply:
            return json.loads(reply.read())["spans"]  # type: ignore[no-any-return]


@contextmanager
def otlp_sink() -> Iterator[Sink]:
    """``otlp_sink.py`` in a subprocess on a free port; stopped afterwards."""
    script = Path(__file__).with_name("otlp_sink.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 2 or line[0] != "port":
            raise RuntimeError(f"otlp_sink.py did not start (said {line!r})")
        base = f"http://127.0.0.1:{line[1]}"
        yield Sink(endpoint=f"{base}/v1/traces", count_url=f"{base}/count")
    finally:
        process.terminate()
        process.wait(10)


# --- one measurement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One configuration to time; ``warm_sites`` call sites are learned before timing."""

    name: str
    config: str  # SDK, MEMORY, REDIS or OTLP
    llm_calls: int
    warm_sites: int = SITES


@dataclass
class Sample:
    cpu_us: float  # process CPU per run
    app_us: float = 0.0  # CPU of the thread making the spans, per run (the rest: workers)
    server_us: float = 0.0  # Redis server CPU per run
    complete: bool = True  # every run stored / every span received
    fields: int | None = None  # learned trie fields of the agent after the window


@dataclass
class Bench:
    runs: int
    workload: Workload
    wide: bool
    redis: RedisTarget | None = None
    sink: Sink | None = None
    exporter_class: type[Any] | None = None
    notes: list[str] = field(default_factory=list)

    def processor(self, config: str, llm_calls: int, expected_runs: int) -> SpanProcessor | None:
        # Queues hold every span (and event) of the measurement: drops would look cheap.
        queue = expected_runs * spans_per_run(llm_calls, self.wide) * 2 + 4096
        if config == SDK:
            return None
        if config == OTLP:
            assert self.sink is not None and self.exporter_class is not None
            return BatchSpanProcessor(
                self.exporter_class(endpoint=self.sink.endpoint), max_queue_size=queue
            )
        options: dict[str, Any] = {"max_queue_size": queue, "max_runs_per_agent": 100_000}
        if config == REDIS:
            assert self.redis is not None
            options.update(redis_url=self.redis.url, key_prefix=f"runcost:{uuid.uuid4().hex[:12]}:")
        return AdaptiveSpanProcessor(**options)

    def measure(self, case: Case) -> Sample:
        warmup = max(30, 3 * case.warm_sites)
        processor = self.processor(case.config, case.llm_calls, warmup + self.runs)
        provider = TracerProvider()
        if processor is not None:
            provider.add_span_processor(processor)
        tracer = provider.get_tracer("bench")
        try:
            for i in range(warmup):  # connections open, scripts loaded, state learned
                self.workload(tracer, case.llm_calls, i % case.warm_sites)
            _flush(processor)
            before = self._counts(processor)
            server0 = self._server_cpu() if case.config == REDIS else 0.0
            gc.collect()
            started = time.process_time()
            app_started = time.thread_time()
            for i in range(self.runs):
                self.workload(tracer, case.llm_calls, i % SITES)
            app = time.thread_time() - app_started
            _flush(processor)
            cpu = time.process_time() - started
            server = self._server_cpu() - server0 if case.config == REDIS else 0.0
            arrived = self._counts(processor) - before
            dropped = _dropped(processor)
            expected = self.runs * (
                spans_per_run(case.llm_calls, self.wide) if case.config == OTLP else 1
            )
            fields = _trie_fields(processor) if case.config in (MEMORY, REDIS) else None
            self._note_capped(case, processor)
        finally:
            provider.shutdown()
        complete = case.config == SDK or (arrived == expected and not dropped)
        if not complete:
            what = "runs stored" if case.config in (MEMORY, REDIS) else "spans received"
            self.notes.append(
                f"{case.name}: {arrived} of {expected} {what}, {dropped} events dropped"
            )
        per_run = 1e6 / self.runs
        return Sample(cpu * per_run, app * per_run, server * per_run, complete, fields)

    def _note_capped(self, case: Case, processor: SpanProcessor | None) -> None:
        """A state past the per-agent field cap is not the size the row claims: say so."""
        if isinstance(processor, AdaptiveSpanProcessor):
            dropped = processor.stats().get("learned_fields_dropped", 0)
            if dropped:
                self.notes.append(f"{case.name}: {dropped} learned fields dropped at the cap")

    def _server_cpu(self) -> float:
        return server_counters(self.redis).cpu_seconds

    def _counts(self, processor: SpanProcessor | None) -> int:
        """Runs stored (plugin) or spans received by the sink (OTLP), so far."""
        if isinstance(processor, AdaptiveSpanProcessor):
            return int(processor.stats()["runs_stored"])
        if processor is not None and self.sink is not None:
            return self.sink.spans() or 0
        return 0


def _flush(processor: SpanProcessor | None) -> None:
    if processor is not None and not processor.force_flush(600_000):
        raise RuntimeError(f"{type(processor).__name__}.force_flush did not finish")


def _dropped(processor: SpanProcessor | None) -> int:
    """Events (or whole runs, under overload) the plugin dropped since it started."""
    if not isinstance(processor, AdaptiveSpanProcessor):
        return 0
    stats = processor.stats()
    return int(stats["events_dropped"]) + int(stats.get("runs_dropped_overload", 0))


def _trie_fields(processor: SpanProcessor | None) -> int | None:
    if not isinstance(processor, AdaptiveSpanProcessor):
        return None
    return len(processor.store.load_fields(AGENT_ID, "trie"))


# --- rounds and report -------------------------------------------------------------------------


def cases(calls: list[int], stores: list[str], with_otlp: bool) -> list[Case]:
    out: list[Case] = []
    wanted = {SDK: True, MEMORY: "memory" in stores, REDIS: "redis" in stores, OTLP: with_otlp}
    configs = [config for config, on in wanted.items() if on]
    for n in calls:
        out.extend(Case(f"{n} calls, {c}", c, n) for c in configs)
    # The learned-state ratio on the first run size only: it is about state, not runs.
    for c in (MEMORY, REDIS):
        if c in configs:
            out.append(Case(f"{calls[0]} calls, {c}, 10x state", c, calls[0],
                            warm_sites=SITES * STATE_FACTOR))  # fmt: skip
    return out


def _paired(name: str) -> str:
    """Where the SDK-alone samples measured just before the case ``name`` are kept."""
    return f"{name} (its {SDK} baseline)"


def run_rounds(bench: Bench, todo: list[Case], rounds: int) -> dict[str, list[Sample]]:
    """Every case once per round, the order rotated each round so drift hits all alike.

    Each case with a processor is measured right after a measurement of the SDK alone
    on the same runs, its own baseline: the machine's speed drifts within a round (on
    a shared machine by tens of percent), so a baseline taken next to the case makes
    its ratio steadier than one taken elsewhere in the round.
    """
    samples: dict[str, list[Sample]] = {case.name: [] for case in todo}
    for case in todo:
        if case.config != SDK:
            samples[_paired(case.name)] = []
    for r in range(rounds):
        shift = r % len(todo)
        for case in todo[shift:] + todo[:shift]:
            if case.config != SDK:
                baseline = Case(f"{case.llm_calls} calls, {SDK}", SDK, case.llm_calls)
                samples[_paired(case.name)].append(bench.measure(baseline))
            samples[case.name].append(bench.measure(case))
    return samples


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _baseline(samples: dict[str, list[Sample]], name: str) -> list[Sample]:
    """The SDK alone measured just before each round's measurement of ``name``."""
    return samples[_paired(name)]


def _added(samples: dict[str, list[Sample]], name: str) -> list[float]:
    """Per round: CPU per run this case adds over the SDK alone (its own baseline)."""
    baseline = _baseline(samples, name)
    return [s.cpu_us - b.cpu_us for s, b in zip(samples[name], baseline, strict=True)]


def _spread(values: list[float]) -> str:
    return f"**{_median(values):.2f}** ({min(values):.2f}-{max(values):.2f})"


def report(samples: dict[str, list[Sample]], todo: list[Case]) -> tuple[list[str], dict[str, Any]]:
    lines = [
        "| LLM calls | configuration | CPU µs/run | added µs/run | added ÷ SDK "
        "| plugin ÷ (BSP + OTLP) | Redis server µs/run | fleet ceiling per Redis shard "
        "| complete |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    summary: dict[str, Any] = {}
    for case in (c for c in todo if c.warm_sites == SITES):
        rows = samples[case.name]
        entry: dict[str, Any] = {"cpu_us": _median([s.cpu_us for s in rows])}
        cells = ["-", "-", "-", "-", "-"]
        if case.config != SDK:
            added = _added(samples, case.name)
            sdk = [s.cpu_us for s in _baseline(samples, case.name)]
            ratio = [a / b for a, b in zip(added, sdk, strict=True)]
            entry.update(added_us=_median(added), added_over_sdk=_median(ratio))
            cells[0], cells[1] = f"{_median(added):.0f}", _spread(ratio)
        otlp = f"{case.llm_calls} calls, {OTLP}"
        if case.config in (MEMORY, REDIS) and otlp in samples:
            versus = [a / b for a, b in zip(added, _added(samples, otlp), strict=True)]
            entry["plugin_over_otlp"] = _median(versus)
            cells[2] = _spread(versus)
        if case.config == REDIS:
            server = _median([s.server_us for s in rows])
            entry.update(server_us=server, fleet_runs_per_s=1e6 / server if server else None)
            cells[3] = f"{server:.1f}"
            cells[4] = f"{1e6 / server:,.0f} runs/s" if server else "-"
        complete = all(s.complete for s in rows)
        entry["complete"] = complete
        summary[case.name] = entry
        lines.append(
            f"| {case.llm_calls} | {case.config} | {entry['cpu_us']:.0f} | "
            + " | ".join(cells)
            + f" | {'yes' if complete else '**no**'} |"
        )
    lines += ["", *_state_table(samples, todo, summary)]
    lines += ["", *_thread_table(samples, todo, summary)]
    return lines, summary


def _thread_table(
    samples: dict[str, list[Sample]], todo: list[Case], summary: dict[str, Any]
) -> list[str]:
    """Where the added CPU goes: the thread making the spans, and the worker threads."""
    lines = [
        "| LLM calls | configuration | app thread added µs/run | worker threads µs/run |",
        "| ---: | --- | ---: | ---: |",
    ]
    for case in (c for c in todo if c.warm_sites == SITES and c.config != SDK):
        base = _baseline(samples, case.name)
        rows = samples[case.name]
        app = _median([s.app_us - b.app_us for s, b in zip(rows, base, strict=True)])
        workers = _median([s.cpu_us - s.app_us for s in rows])
        summary[case.name].update(app_added_us=app, worker_us=workers)
        lines.append(f"| {case.llm_calls} | {case.config} | {app:.0f} | {workers:.0f} |")
    return lines


def _state_table(
    samples: dict[str, list[Sample]], todo: list[Case], summary: dict[str, Any]
) -> list[str]:
    lines = [
        "| store | LLM calls | trie fields 1x | 10x | added µs/run 1x | 10x | 10x ÷ 1x |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for big in (c for c in todo if c.warm_sites != SITES):
        small = f"{big.llm_calls} calls, {big.config}"
        added_small, added_big = _added(samples, small), _added(samples, big.name)
        ratio = [b / s for b, s in zip(added_big, added_small, strict=True)]
        fields_small = samples[small][-1].fields
        fields_big = samples[big.name][-1].fields
        summary[big.name] = {"added_us": _median(added_big), "state_ratio": _median(ratio),
                             "fields": fields_big, "fields_1x": fields_small}  # fmt: skip
        lines.append(
            f"| {big.config.removeprefix('plugin, ')} | {big.llm_calls} | {fields_small} | "
            f"{fields_big} | {_median(added_small):.0f} | {_median(added_big):.0f} | "
            f"{_spread(ratio)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 runs, 3 rounds")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--store", nargs="+", default=["memory", "redis"],
                        choices=["memory", "redis"])  # fmt: skip
    parser.add_argument("--wide", action="store_true", help="wider trees (sibling scopes)")
    args = parser.parse_args()
    runs = args.runs or (400 if args.quick else 2000)
    rounds = args.rounds or (3 if args.quick else 5)
    logging.basicConfig(level=logging.ERROR)

    exporter_class = otlp_exporter_class()
    if exporter_class is None:
        print(
            "opentelemetry-exporter-otlp-proto-http is not installed: the BSP + OTLP/HTTP row "
            "is skipped (pip install -e '.[benchmarks]')\n"
        )
    bench = Bench(runs, wide_run if args.wide else one_run, args.wide,
                  exporter_class=exporter_class)  # fmt: skip
    todo = cases(args.calls, args.store, exporter_class is not None)
    started = time.monotonic()
    with ExitStack() as stack:
        if "redis" in args.store:
            bench.redis = stack.enter_context(private_redis())
        if exporter_class is not None:
            bench.sink = stack.enter_context(otlp_sink())
        samples = run_rounds(bench, todo, rounds)
    lines, summary = report(samples, todo)
    shape = f"wide ({WIDE_BRANCHES} branch scopes per step)" if args.wide else "default"
    print(
        f"{runs} runs x {rounds} interleaved rounds per case, {shape} trees; runs of N LLM "
        f"calls + 3 tools over {SITES} call sites; medians (min-max over rounds); "
        f"{time.monotonic() - started:.0f} s\n"
    )
    print("\n".join(lines))
    for note in bench.notes:
        print(f"\nWARNING: {note}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("run_cost_wide.json" if args.wide else "run_cost.json")
    raw = {name: [vars(s) for s in values] for name, values in samples.items()}
    out.write_text(json.dumps({"args": vars(args), "summary": summary, "samples": raw}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
