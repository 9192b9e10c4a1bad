"""Side by side with the reference (nemo-relay's adaptive runtime): one workload, one Redis.

The workload is agent runs of 5 LLM calls with token usage and 3 tools, 2 of
which overlap, made in real time on the application thread:

* **reference**: ``nemo_relay`` scopes, ``llm.call``/``call_end`` (usage in the
  annotated response) and ``tools.call``/``call_end``, with
  ``nemo_relay.adaptive.AdaptiveRuntime`` registered: Redis state backend, its
  learners ``latency_sensitivity`` (the prediction trie) and ``tool_parallelism``;
* **otel-adaptive**: OpenTelemetry spans with GenAI attributes through a
  ``TracerProvider`` with ``AdaptiveSpanProcessor(redis_url=...)``, both learners on.

Both write, one after the other, into the same private ``redis-server`` that the
script starts (each measurement under its own key prefix). Every measurement
runs in a fresh process. Reported per implementation (medians over ``--rounds``
with the spread of runs/s):

* runs/s into Redis: runs made / time from the first run to the last one stored
  (reference: ``subscribers.flush()`` and ``wait_for_idle()``; otel-adaptive:
  ``force_flush()``), after a warm-up, the two implementations alternating round
  by round; stored runs are counted in Redis on both sides (each one's run index:
  ``LLEN <prefix>runs_index:<agent>`` / ``ZCARD`` of ours) over every round, and
  the runs not found are reported as lost %;
* Redis commands per run executed by the server (``INFO commandstats``; this
  counts the commands inside otel-adaptive's Lua scripts too, so the commands
  otel-adaptive sent, from its store's own counter, are shown beside it; the
  reference runs no scripts, so for it both are the same), new connections per
  run (``total_connections_received``) and bytes sent to Redis per run;
* app-thread overhead: CPU time (``time.thread_time``) and wall time of the
  application thread per run with the adaptive layer active, divided by the same
  instrumentation without it (reference: no ``AdaptiveRuntime`` registered;
  otel-adaptive: a ``TracerProvider`` with no processor), measured in the same
  process just before;
* learned counts with concurrent writers: ``W`` processes each make
  ``--writer-runs`` runs of the same agent into the same Redis; then the sample
  count at the trie root (reference: the root accumulator's ``all_output_tokens``
  count in ``<prefix>accumulators:<agent>``; otel-adaptive: the root's any-index
  ``output_tokens.sample_count`` from ``store.load_trie``) is compared with the
  LLM calls issued (samples lost %), and the runs stored with the runs made.

Output is markdown tables; ``--quick`` (300 runs x 2 rounds, writers of 100 runs)
takes well under a minute.

The reference is installed only in the benchmark's own environment, never as a
project dependency::

    python -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -e . nemo-relay==0.10.4
    /tmp/bench-venv/bin/python benchmarks/compare_reference.py [--quick] [--runs 1000]
        [--rounds 3] [--warmup 50] [--writers 2 4] [--writer-runs 500]

Without ``nemo_relay`` importable, only the otel-adaptive half runs (and the
script says so).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis_throughput import RedisTarget, private_redis, server_counters

RESULTS = Path(__file__).parent / "results"
AGENT = "compare"
LLM_CALLS = 5
REFERENCE = "reference (nemo-relay)"
_QUEUE_EVENTS = 2**21
# The reference's names for its prediction-trie and tool-parallelism learners.
REFERENCE_LEARNERS = ["latency_sensitivity", "tool_parallelism"]
OURS = "otel-adaptive"


# --- the workload, twice ------------------------------------------------------------------------


class _OtelWorkload:
    """The runs as OpenTelemetry spans; ``active`` adds the AdaptiveSpanProcessor."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url, self._prefix = url, prefix
        self._agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT}
        self._llm = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
        self._tools = {
            name: {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
            for name in ("search", "fetch", "write")
        }
        self._processor: Any = None
        self._provider: Any = None
        self._tracer: Any = None
        self._client = redis.Redis.from_url(url)
        self._run_index = _our_run_index(prefix)

    def set_active(self, active: bool) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        from otel_adaptive import AdaptiveSpanProcessor

        if self._provider is not None:
            self._provider.shutdown()
        self._provider = TracerProvider()
        self._processor = None
        if active:
            # Runs are made as fast as the thread can, faster than any exporter drains
            # them: the queue holds them all (the reference's queue is unbounded).
            self._processor = AdaptiveSpanProcessor(
                redis_url=self._url,
                key_prefix=self._prefix,
                max_runs_per_agent=100_000,
                max_queue_size=_QUEUE_EVENTS,
            )
            self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("compare")

    def run(self) -> None:
        from opentelemetry import trace

        tracer = self._tracer
        with tracer.start_as_current_span("agent", attributes=self._agent):
            for k in range(LLM_CALLS):
                span = tracer.start_span("chat m", attributes=self._llm)
                with trace.use_span(span, end_on_exit=True):
                    span.set_attribute("gen_ai.usage.input_tokens", 100)
                    span.set_attribute("gen_ai.usage.output_tokens", 50 + k)
            search = tracer.start_span("execute_tool search", attributes=self._tools["search"])
            fetch = tracer.start_span("execute_tool fetch", attributes=self._tools["fetch"])
            fetch.end()
            search.end()
            tracer.start_span("execute_tool write", attributes=self._tools["write"]).end()

    def wait_stored(self, expected: int) -> int:
        if not self._processor.force_flush(600_000):
            raise RuntimeError("otel-adaptive: force_flush did not finish")
        return self.stored()

    def stored(self) -> int:
        # Counted in Redis, not from the processor's counters: what a reader would find.
        return int(self._client.zcard(self._run_index))

    def sent_commands(self) -> int | None:
        return int(self._processor.store.stats()["commands"])

    def dropped(self) -> int | None:
        return int(self._processor.stats()["events_dropped"])

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
        self._client.close()


class _ReferenceWorkload:
    """The runs through nemo_relay; ``active`` registers its AdaptiveRuntime on Redis."""

    def __init__(self, url: str, prefix: str) -> None:
        import nemo_relay

        self._nr = nemo_relay
        self._url, self._prefix = url, prefix
        self._request = nemo_relay.LLMRequest(
            {}, {"messages": [{"role": "user", "content": "hi"}], "model": "m"}
        )
        self._responses = [
            nemo_relay.AnnotatedLLMResponse(
                model="m",
                usage={
                    "prompt_tokens": 100,
                    "completion_tokens": 50 + k,
                    "total_tokens": 150 + k,
                },
            )
            for k in range(LLM_CALLS)
        ]
        self._result = nemo_relay.ToolExecutionResult({"ok": True})
        self._runtime: Any = None
        self._runs_index = f"{prefix}runs_index:{AGENT}"
        self._client = redis.Redis.from_url(url)

    def set_active(self, active: bool) -> None:
        from nemo_relay import adaptive

        if self._runtime is not None:
            _run_coroutine(self._runtime.shutdown)
            self._runtime = None
        if not active:
            return
        config = adaptive.AdaptiveConfig(
            agent_id=AGENT,
            state=adaptive.StateConfig(adaptive.BackendSpec.redis(self._url, self._prefix)),
            telemetry=adaptive.TelemetryConfig(
                learners=["latency_sensitivity", "tool_parallelism"]
            ),
            adaptive_hints=adaptive.AdaptiveHintsConfig(),
            tool_parallelism=adaptive.ToolParallelismConfig(),
        )
        problems = list(adaptive.validate_config(config)["diagnostics"])
        if problems:
            raise RuntimeError(f"reference config rejected: {problems}")
        # The native runtime takes the canonical JSON document, not the dataclass.
        self._runtime = adaptive.AdaptiveRuntime(config.to_dict())
        _run_coroutine(self._runtime.register)

    def run(self) -> None:
        nr = self._nr
        with nr.scope.scope(AGENT, nr.ScopeType.Agent):
            for k in range(LLM_CALLS):
                call = nr.llm.call("chat", self._request, model_name="m")
                nr.llm.call_end(call, {"ok": True}, annotated_response=self._responses[k])
            search = nr.tools.call("search", {"q": "x"})
            fetch = nr.tools.call("fetch", {"q": "x"})
            nr.tools.call_end(fetch, self._result)
            nr.tools.call_end(search, self._result)
            write = nr.tools.call("write", {"q": "x"})
            nr.tools.call_end(write, self._result)

    def wait_stored(self, expected: int) -> int:
        self._nr.subscribers.flush()
        self._runtime.wait_for_idle()
        # Its drain reports idle once events are processed; poll until every run is
        # listed, or until the count stops moving (a lost run must not hang the script).
        last, still_since = -1, time.monotonic()
        while (stored := self.stored()) < expected:
            if stored != last:
                last, still_since = stored, time.monotonic()
            elif time.monotonic() - still_since > 5.0:
                break
            time.sleep(0.01)
        return stored

    def stored(self) -> int:
        return int(self._client.llen(self._runs_index))

    def sent_commands(self) -> int | None:
        return None  # no client-side counter; it runs no scripts, so the server count is it

    def dropped(self) -> int | None:
        return None  # its queue is unbounded: it never drops, it grows

    def close(self) -> None:
        self.set_active(False)
        self._client.close()


def _run_coroutine(factory: Callable[[], Any]) -> None:
    async def wrapper() -> None:  # the runtime needs a running loop when called
        await factory()

    asyncio.run(wrapper())


_Workload = _OtelWorkload | _ReferenceWorkload


def _our_run_index(prefix: str) -> str:
    from otel_adaptive.learners import LEARNER_TYPES
    from otel_adaptive.store.redis import RedisKeyLayout

    return RedisKeyLayout(prefix, LEARNER_TYPES).run_index(AGENT)


def _workload(impl: str, url: str, prefix: str) -> _Workload:
    return _ReferenceWorkload(url, prefix) if impl == REFERENCE else _OtelWorkload(url, prefix)


# --- measurements, each in a fresh process ------------------------------------------------------


def _timed(workload: _Workload, runs: int) -> tuple[float, float]:
    """(wall, app-thread CPU) seconds for ``runs`` runs."""
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for _ in range(runs):
        workload.run()
    return time.perf_counter() - wall0, time.thread_time() - cpu0


def _throughput_worker(impl: str, target: RedisTarget, args: dict[str, int], out: Any) -> None:
    logging.basicConfig(level=logging.ERROR)
    runs, warmup = args["runs"], args["warmup"]
    workload = _workload(impl, target.url, f"cmp:{uuid.uuid4().hex[:12]}:")
    try:
        workload.set_active(False)
        base_wall, base_cpu = _timed(workload, runs)
        workload.set_active(True)
        _timed(workload, warmup)
        workload.wait_stored(warmup)
        stored0, sent0 = workload.stored(), workload.sent_commands()
        before = server_counters(target)
        start = time.perf_counter()
        wall, cpu = _timed(workload, runs)
        stored = workload.wait_stored(stored0 + runs) - stored0
        elapsed = time.perf_counter() - start
        delta = server_counters(target).minus(before)
        sent1 = workload.sent_commands()
        out.put(
            {
                "runs": runs,
                "runs_stored": stored,
                "runs_per_s": runs / elapsed,
                "commands_per_run": delta.commands / runs,
                "commands_sent_per_run": (
                    (sent1 - sent0) / runs if sent0 is not None and sent1 is not None else None
                ),
                "new_connections_per_run": delta.connections / runs,
                "bytes_in_per_run": delta.bytes_in / runs,
                "app_cpu_us_per_run": cpu / runs * 1e6,
                "app_wall_us_per_run": wall / runs * 1e6,
                "baseline_app_cpu_us_per_run": base_cpu / runs * 1e6,
                "baseline_app_wall_us_per_run": base_wall / runs * 1e6,
                "app_cpu_overhead_ratio": cpu / base_cpu,
                "app_wall_overhead_ratio": wall / base_wall,
                "events_dropped": workload.dropped(),
                "commands": delta.by_command,
            }
        )
    finally:
        workload.close()


def _writer_worker(
    impl: str, url: str, prefix: str, runs: int, ready: Any, go: Any, out: Any
) -> None:
    logging.basicConfig(level=logging.ERROR)
    workload = _workload(impl, url, prefix)
    try:
        workload.set_active(True)
        ready.wait()
        go.wait()
        _timed(workload, runs)
        workload.wait_stored(runs)
        out.put(workload.dropped() or 0)
    finally:
        workload.close()


def _in_process(target: Callable[..., None], *args: Any) -> Any:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, out))
    process.start()
    try:
        return out.get(timeout=3600)
    finally:
        process.join(60)


def throughput(
    impls: list[str], target: RedisTarget, runs: int, warmup: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """Each implementation once per round, alternating, so drift hits both alike."""
    samples: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    for r in range(rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        for impl in order:
            samples[impl].append(
                _in_process(_throughput_worker, impl, target, {"runs": runs, "warmup": warmup})
            )
    return {impl: _summarize(values) for impl, values in samples.items()}


def _summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key, value in samples[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            summary[key] = statistics.median(s[key] for s in samples)
    rates = [s["runs_per_s"] for s in samples]
    summary["runs_per_s_min"], summary["runs_per_s_max"] = min(rates), max(rates)
    # Runs are counted over every round, not as a median: one lost run anywhere shows.
    summary["runs_total"] = sum(s["runs"] for s in samples)
    summary["runs_stored_total"] = sum(s["runs_stored"] for s in samples)
    summary["runs_lost_percent"] = (
        100.0 * (summary["runs_total"] - summary["runs_stored_total"]) / summary["runs_total"]
    )
    sent = [s["commands_sent_per_run"] for s in samples]
    summary["commands_sent_per_run"] = None if None in sent else statistics.median(sent)
    dropped = [s["events_dropped"] for s in samples]
    summary["events_dropped"] = None if None in dropped else sum(dropped)
    summary["commands"] = samples[-1]["commands"]
    return summary


def learned_counts(impl: str, url: str, writers: int, runs: int) -> dict[str, Any]:
    """``writers`` processes learn the same agent at once; count what the root learned."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Barrier(writers + 1), ctx.Event(), ctx.Queue()
    prefix = f"cmp:{uuid.uuid4().hex[:12]}:"
    processes = [
        ctx.Process(target=_writer_worker, args=(impl, url, prefix, runs, ready, go, out))
        for _ in range(writers)
    ]
    for process in processes:
        process.start()
    ready.wait(timeout=600)
    go.set()
    replies = [out.get(timeout=3600) for _ in processes]
    for process in processes:
        process.join(60)
    issued = writers * runs * LLM_CALLS
    learned = _root_count(impl, url, prefix)
    stored = _stored_total(impl, url, prefix)
    return {
        "writers": writers,
        "runs": writers * runs,
        "runs_stored": stored,
        "events_dropped": sum(replies),
        "runs_lost_percent": 100.0 * (writers * runs - stored) / (writers * runs),
        "llm_calls_issued": issued,
        "root_sample_count": learned,
        "lost_percent": 100.0 * (issued - learned) / issued,
    }


def _root_count(impl: str, url: str, prefix: str) -> int:
    """The sample count at the root of the agent's trie, as a reader gets it from Redis."""
    if impl == REFERENCE:
        with redis.Redis.from_url(url) as client:
            raw = client.get(f"{prefix}accumulators:{AGENT}")
        if raw is None:
            return 0
        root = json.loads(raw)["nodes"].get("", {})
        return int(root.get("all_output_tokens", {}).get("count", 0))
    with _our_store(url, prefix) as store:
        trie = store.load_trie(AGENT)
    if trie is None or trie["root"]["predictions_any_index"] is None:
        return 0
    return int(trie["root"]["predictions_any_index"]["output_tokens"]["sample_count"])


def _stored_total(impl: str, url: str, prefix: str) -> int:
    """Runs of the agent stored in Redis, by every writer together."""
    if impl == REFERENCE:
        with redis.Redis.from_url(url) as client:
            return int(client.llen(f"{prefix}runs_index:{AGENT}"))
    with _our_store(url, prefix) as store:
        return int(store.run_count(AGENT))


@contextmanager
def _our_store(url: str, prefix: str) -> Iterator[Any]:
    from otel_adaptive.learners import LEARNER_TYPES, build_learners
    from otel_adaptive.store.redis import RedisStore

    store = RedisStore.from_url(
        url, key_prefix=prefix, learners=build_learners(LEARNER_TYPES), max_runs_per_agent=100_000
    )
    try:
        yield store
    finally:
        store.close()


# --- report -------------------------------------------------------------------------------------


def throughput_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| implementation | runs/s | (min-max) | runs | stored | lost % | cmds/run | sent/run "
        "| conns/run | B in/run | app µs/run | (base) | cpu x | wall x | dropped |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        sent = row["commands_sent_per_run"]
        lines.append(
            f"| {name} | **{row['runs_per_s']:.0f}** "
            f"| {row['runs_per_s_min']:.0f}-{row['runs_per_s_max']:.0f} "
            f"| {row['runs_total']} | {row['runs_stored_total']} "
            f"| {row['runs_lost_percent']:.1f} | {row['commands_per_run']:.3f} "
            f"| {sent if sent is not None else row['commands_per_run']:.3f} "
            f"| {row['new_connections_per_run']:.3f} | {row['bytes_in_per_run']:.0f} "
            f"| {row['app_cpu_us_per_run']:.0f} | {row['baseline_app_cpu_us_per_run']:.0f} "
            f"| {row['app_cpu_overhead_ratio']:.2f} | {row['app_wall_overhead_ratio']:.2f} "
            f"| {_or_dash(row['events_dropped'])} |"
        )
    if REFERENCE in rows and OURS in rows:
        ours, ref = rows[OURS], rows[REFERENCE]
        lines += [
            "",
            f"otel-adaptive / reference: runs/s **{ours['runs_per_s'] / ref['runs_per_s']:.1f}x**"
            f"; commands per run {ours['commands_per_run'] / ref['commands_per_run']:.4f}x "
            f"(sent {ours['commands_sent_per_run'] / ref['commands_per_run']:.4f}x); "
            f"app-thread CPU per run {ours['app_cpu_us_per_run'] / ref['app_cpu_us_per_run']:.2f}x",
        ]
    return lines


def counts_table(counts: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| implementation | writers | runs | stored | runs lost % | LLM calls | root count "
        "| samples lost % | dropped |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in counts:
        impl = row["implementation"]
        dropped = row["events_dropped"] if impl == OURS else "-"
        lines.append(
            f"| {impl} | {row['writers']} | {row['runs']} | {row['runs_stored']} "
            f"| {row['runs_lost_percent']:.1f} | {row['llm_calls_issued']} "
            f"| {row['root_sample_count']} | {row['lost_percent']:.1f} | {dropped} |"
        )
    return lines


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="300 runs x 2 rounds, writers 2 and 4 of 100 runs")  # fmt: skip
    parser.add_argument("--runs", type=int, default=None, help="timed runs per round")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--writer-runs", type=int, default=None, help="runs per writer process")
    args = parser.parse_args()
    args.runs = args.runs or (300 if args.quick else 1000)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.writer_runs = args.writer_runs or (100 if args.quick else 500)

    impls = [OURS]
    if importlib.util.find_spec("nemo_relay") is None:
        print(
            "nemo_relay is not installed in this environment: running the otel-adaptive half "
            "only. Install the reference into the benchmark's own venv (see the docstring).\n"
        )
    else:
        impls.insert(0, REFERENCE)
    report: dict[str, Any] = {"args": vars(args), "implementations": impls}
    started = time.monotonic()
    with private_redis() as target:
        rows = throughput(impls, target, args.runs, args.warmup, args.rounds)
        report["throughput"] = rows
        counts = []
        for writers in args.writers:
            for impl in impls:
                row = {"implementation": impl, **learned_counts(impl, target.url, writers,
                                                                 args.writer_runs)}  # fmt: skip
                counts.append(row)
        report["learned_counts"] = counts
    print(
        f"One process, {args.runs} runs x {args.rounds} alternating rounds of {LLM_CALLS} LLM "
        f"calls + 3 tools (2 overlapping), one private redis-server; runs counted in Redis; "
        f"{time.monotonic() - started:.0f} s\n"
    )
    print("\n".join(throughput_table(rows)))
    print(f"\nLearned counts: {args.writer_runs} runs per writer process, one agent\n")
    print("\n".join(counts_table(counts)))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "compare_reference.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
