"""Sustained runs/s into Redis; Redis commands, bytes and new connections per run.

Agent runs of N LLM calls + 3 tools (2 of them overlapping) go through a real
TracerProvider and AdaptiveSpanProcessor (both learners on) into Redis, from 1
and from 4 processes at once (all writing the same agent), into a standalone
server and into a three-node Redis Cluster that the script starts itself. The
same workload with the in-memory store, measured in the same run, is the
baseline. Then the agent's learned state is grown tenfold (ten times as many
call sites) and the single-process standalone case is measured again: per-run
cost must not grow with state size.

Every process warms up (connections open, scripts loaded) before the measured
window, so the figures are steady state. Columns, per run:

* ``sent`` / ``trips``: commands and round trips the Redis store sent (its own
  client-side counters);
* ``exec``: commands the server executed (``INFO commandstats`` summed over the
  nodes, the script's own INFO calls left out), which also counts every command
  a Lua script runs;
* ``conns``: new connections (``total_connections_received``, the script's own
  counter connections left out);
* ``B in`` / ``B out``: bytes clients sent to Redis / Redis sent back
  (``total_net_input_bytes`` / ``total_net_output_bytes``);
* ``exp µs`` / ``app µs``: process CPU outside / inside the application thread;
* ``srv µs``: Redis server CPU (``INFO cpu``, user + sys, summed over nodes);
* ``retry``: merges a store sent again (compare-and-set conflicts), all processes;
* ``stored`` / ``drop``: runs stored and span events dropped (must be 0: the
  queue is sized to hold the whole case, since runs are made as fast as the
  application thread can, faster than the exporter drains them);
* ``bad``: stored values the store could not decode (must be 0).

Each case is repeated ``--rounds`` times; medians are printed with the spread
of runs/s. Library warnings are silenced in the workers (``bad`` counts them).

    python benchmarks/redis_throughput.py [--quick] [--runs 3000] [--llm-calls 5 20]
        [--processes 1 4] [--topologies standalone cluster] [--rounds 3]

Output is a markdown table. ``--quick`` (300 runs per process, one
round) checks that the script works in about a minute; its figures are not ones to quote.

Requires ``redis-server`` (and ``redis-cli`` for the cluster) on PATH. Other
benchmarks import the server helpers below.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

RESULTS = Path(__file__).parent / "results"
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "throughput"}
LLM = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
TOOL = {"gen_ai.operation.name": "execute_tool"}
CHAIN = {"openinference.span.kind": "CHAIN"}
MS = 1_000_000
# Commands the benchmark itself sends to read the counters; not the workload's.
_OWN_COMMANDS = frozenset({"info", "config|resetstat"})


# --- throwaway Redis servers --------------------------------------------------------------------


@dataclass(frozen=True)
class RedisTarget:
    """Where the workload writes: a URL for the client and every node to read counters from."""

    url: str
    cluster: bool
    nodes: tuple[str, ...]


def _free_port(with_bus: bool = False) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not with_bus:
            return port
        # A cluster node also listens on port + 10000, which must fit in 16 bits.
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port (pair) on 127.0.0.1")


def _wait_for_ping(url: str, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        client.close()


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(
            f"{name} is not on PATH: install Redis (e.g. apt-get install redis-server)"
        )
    return found


@contextmanager
def _server(workdir: str, port: int, *extra: str) -> Iterator[str]:
    process = subprocess.Popen(
        [_executable("redis-server"), "--bind", "127.0.0.1", "--port", str(port),
         "--save", "", "--appendonly", "no", "--dir", workdir, *extra],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}"
    try:
        _wait_for_ping(url)
        yield url
    finally:
        try:
            with redis.Redis.from_url(url) as client:
                client.shutdown(nosave=True)
        except redis.RedisError:
            process.terminate()
        process.wait(10)


@contextmanager
def private_redis() -> Iterator[RedisTarget]:
    """A standalone redis-server on a free 127.0.0.1 port, no persistence, removed afterwards."""
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    try:
        with _server(workdir, _free_port()) as url:
            yield RedisTarget(url=f"{url}/0", cluster=False, nodes=(url,))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def private_cluster(nodes: int = 3) -> Iterator[RedisTarget]:
    """A Redis Cluster of ``nodes`` masters (no replicas) on free 127.0.0.1 ports."""
    workdir = tempfile.mkdtemp(prefix="bench-cluster-")
    try:
        with ExitStack() as stack:
            urls = []
            for _ in range(nodes):
                port = _free_port(with_bus=True)
                urls.append(
                    stack.enter_context(
                        _server(workdir, port, "--cluster-enabled", "yes",
                                "--cluster-config-file", f"nodes-{port}.conf",
                                "--cluster-node-timeout", "5000")
                    )
                )  # fmt: skip
            addresses = [url.removeprefix("redis://") for url in urls]
            subprocess.run(
                [_executable("redis-cli"), "--cluster", "create", *addresses,
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, timeout=60,
            )  # fmt: skip
            _wait_for_cluster(urls)
            yield RedisTarget(url=f"{urls[0]}?cluster=true", cluster=True, nodes=tuple(urls))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_cluster(urls: Sequence[str], timeout: float = 30.0) -> None:
    """Until every node sees the whole cluster and a write to every node's slots succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = []
            for url in urls:
                with redis.Redis.from_url(url) as node:
                    states.append(node.execute_command("CLUSTER INFO")["cluster_state"])
            if all(state == "ok" for state in states):
                client = redis.RedisCluster.from_url(urls[0])
                try:
                    for i in range(32):  # spread over slots, so every master is reached
                        client.set(f"bench-ready:{i}", "1", ex=5)
                    return
                finally:
                    client.close()
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis Cluster did not become ready")
        time.sleep(0.1)


@contextmanager
def given_redis(url: str, cluster: bool = False) -> Iterator[RedisTarget]:
    """An existing server (counters then include other clients' traffic)."""
    yield RedisTarget(url=url, cluster=cluster, nodes=(url.split("?", maxsplit=1)[0],))


@dataclass(frozen=True)
class ServerCounters:
    """Server-wide totals so far, summed over nodes, the benchmark's own traffic left out."""

    commands: int = 0
    connections: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    by_command: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # INFO cpu: used_cpu_user + used_cpu_sys

    def minus(self, before: ServerCounters) -> ServerCounters:
        names = set(self.by_command) | set(before.by_command)
        return ServerCounters(
            commands=self.commands - before.commands,
            # Each reading opens one connection of its own: leave ours out.
            connections=self.connections - before.connections - len(self._nodes_read),
            bytes_in=self.bytes_in - before.bytes_in,
            bytes_out=self.bytes_out - before.bytes_out,
            by_command={
                name: self.by_command.get(name, 0) - before.by_command.get(name, 0)
                for name in sorted(names)
                if self.by_command.get(name, 0) != before.by_command.get(name, 0)
            },
            cpu_seconds=self.cpu_seconds - before.cpu_seconds,
        )

    _nodes_read: tuple[str, ...] = ()


def server_counters(target: RedisTarget | None) -> ServerCounters:
    """Read commands (by name), connections and bytes from every node of ``target``."""
    if target is None:
        return ServerCounters()
    commands = connections = bytes_in = bytes_out = 0
    cpu_seconds = 0.0
    by_command: dict[str, int] = {}
    for url in target.nodes:
        with redis.Redis.from_url(url) as client:
            for name, value in client.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                if command in _OWN_COMMANDS:
                    continue
                by_command[command] = by_command.get(command, 0) + int(value["calls"])
                commands += int(value["calls"])
            stats = client.info("stats")
            connections += int(stats["total_connections_received"])
            bytes_in += int(stats["total_net_input_bytes"])
            bytes_out += int(stats["total_net_output_bytes"])
            cpu = client.info("cpu")
            cpu_seconds += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return ServerCounters(
        commands,
        connections,
        bytes_in,
        bytes_out,
        by_command,
        cpu_seconds=cpu_seconds,
        _nodes_read=target.nodes,
    )


# --- the workload -------------------------------------------------------------------------------


def one_run(tracer: trace.Tracer, llm_calls: int, site: int) -> None:
    """One agent run; ``site`` picks the function scope (distinct call sites grow the trie)."""
    t0 = time.time_ns()
    with (
        tracer.start_as_current_span("agent", attributes=AGENT, start_time=t0),
        tracer.start_as_current_span(f"step-{site}", attributes=CHAIN, start_time=t0),
    ):
        for k in range(llm_calls):
            s = tracer.start_span("chat m", attributes=LLM, start_time=t0 + k * 10 * MS)
            s.set_attribute("gen_ai.usage.output_tokens", 50 + k)
            s.set_attribute("gen_ai.usage.input_tokens", 100)
            s.end(end_time=t0 + k * 10 * MS + 8 * MS)
        base = t0 + llm_calls * 10 * MS
        for start, end, name in ((0, 30, "search"), (5, 25, "fetch"), (40, 50, "write")):
            tracer.start_span(
                f"execute_tool {name}", attributes={**TOOL, "gen_ai.tool.name": name},
                start_time=base + start * MS,
            ).end(end_time=base + end * MS)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One measured configuration; ``processes`` workers each make ``runs`` runs."""

    name: str
    target: RedisTarget | None
    runs: int
    llm_calls: int
    processes: int = 1
    sites: int = 10
    warm_sites: int = 0
    warmup_runs: int = 50


def _worker(case: Case, prefix: str, ready: Any, go: Any, results: Any) -> None:
    from otel_adaptive import AdaptiveSpanProcessor

    logging.basicConfig(level=logging.ERROR)

    # The queue holds every event of the case: runs are made faster than the exporter
    # drains them, and the figure wanted is how fast it drains, without drops.
    events = (case.runs + max(case.warm_sites, case.warmup_runs)) * 2 * (case.llm_calls + 5)
    options: dict[str, Any] = {"max_runs_per_agent": 1000, "max_queue_size": events + 1024}
    if case.target is not None:
        options.update(redis_url=case.target.url, key_prefix=prefix)
    processor = AdaptiveSpanProcessor(**options)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    # Warm-up: connections opened, scripts loaded, learned state grown if asked.
    for site in range(max(case.warm_sites, case.warmup_runs)):
        one_run(tracer, case.llm_calls, site % max(case.warm_sites, case.sites))
    processor.force_flush(600_000)
    stored_before = processor.stats()["runs_stored"]
    store_before = _store_counters(processor.store)
    ready.wait()
    go.wait()
    cpu0, start, app_cpu0 = time.process_time(), time.monotonic(), time.thread_time()
    for i in range(case.runs):
        one_run(tracer, case.llm_calls, i % case.sites)
    app_cpu = time.thread_time() - app_cpu0
    flushed = processor.force_flush(600_000)
    end = time.monotonic()
    cpu = time.process_time() - cpu0
    stats = processor.stats()
    store_after = _store_counters(processor.store)
    provider.shutdown()
    results.put(
        {
            **{f"store_{k}": v - store_before.get(k, 0) for k, v in store_after.items()},
            "flushed": flushed,
            "start": start,
            "end": end,
            "cpu": cpu,
            "app_cpu": app_cpu,
            "runs_stored": stats["runs_stored"] - stored_before,
            "events_dropped": stats["events_dropped"],
            "store_errors": stats["store_errors"],
        }
    )


def _store_counters(store: object) -> dict[str, int]:
    """The Redis store's client-side counters (commands and round trips it sent)."""
    stats = getattr(store, "stats", None)
    return dict(stats()) if callable(stats) else {}


def measure(case: Case) -> dict[str, Any]:
    """Run ``case`` in fresh processes (same code path for 1 and for 4) and total it up."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Barrier(case.processes + 1), ctx.Event(), ctx.Queue()
    prefix = f"bench:{uuid.uuid4().hex[:12]}:"
    workers = [
        ctx.Process(target=_worker, args=(case, prefix, ready, go, results))
        for _ in range(case.processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=600)
    before = server_counters(case.target)
    go.set()
    rows = [results.get(timeout=3600) for _ in workers]
    for worker in workers:
        worker.join(60)
    delta = server_counters(case.target).minus(before)
    total = case.runs * case.processes
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    cpu, app_cpu = sum(r["cpu"] for r in rows), sum(r["app_cpu"] for r in rows)
    return {
        "flushed": all(r["flushed"] for r in rows),
        "runs": total,
        "runs_stored": sum(r["runs_stored"] for r in rows),
        "runs_per_s": total / wall,
        # Sent by the clients, counted by the store; executed, counted by the server
        # (every command a Lua script runs counts there too).
        "commands_sent_per_run": _total(rows, "store_commands") / total,
        "round_trips_per_run": _total(rows, "store_round_trips") / total,
        "commands_executed_per_run": delta.commands / total,
        "new_connections_per_run": delta.connections / total,
        "bytes_in_per_run": delta.bytes_in / total,
        "bytes_out_per_run": delta.bytes_out / total,
        "exporter_cpu_us_per_run": (cpu - app_cpu) / total * 1e6,
        "app_cpu_us_per_run": app_cpu / total * 1e6,
        # Redis's own CPU (all nodes): what one Redis thread can sustain for a fleet.
        "server_cpu_us_per_run": delta.cpu_seconds / total * 1e6,
        "events_dropped": sum(r["events_dropped"] for r in rows),
        "store_errors": sum(r["store_errors"] for r in rows),
        "merge_retries": _total(rows, "store_merge_retries"),
        "bad_data": _total(rows, "store_bad_data"),
        "commands": delta.by_command,
    }


def _total(rows: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in rows)


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every figure over the rounds, plus the spread of runs/s."""
    summary: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, bool):
            summary[key] = all(r[key] for r in rounds)
        elif isinstance(value, (int, float)):
            summary[key] = statistics.median(r[key] for r in rounds)
    rates = [r["runs_per_s"] for r in rounds]
    summary["runs_per_s_min"], summary["runs_per_s_max"] = min(rates), max(rates)
    summary["commands"] = rounds[-1]["commands"]
    return summary


def _cases(args: argparse.Namespace, llm_calls: int, targets: dict[str, RedisTarget]) -> list[Case]:
    cases = [Case("memory (baseline), 1 proc", None, args.runs, llm_calls)]
    for topology, target in targets.items():
        for processes in args.processes:
            label = f"{topology}, {processes} proc"
            cases.append(Case(label, target, args.runs, llm_calls, processes=processes))
    if "standalone" in targets:
        cases.append(
            Case("standalone, 1 proc, 10x state", targets["standalone"], args.runs, llm_calls,
                 sites=100, warm_sites=100)
        )  # fmt: skip
    return cases


HEADER = (
    "| calls | store, processes, state | runs/s | (min-max) | sent | trips | exec | conns "
    "| B in | B out | exp µs | app µs | srv µs | retry | stored | drop | bad |\n"
    "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: | ---: | ---: |"
)


def _print_row(llm_calls: int, name: str, row: dict[str, Any]) -> None:
    print(
        f"| {llm_calls} | {name} | **{row['runs_per_s']:.0f}** "
        f"| {row['runs_per_s_min']:.0f}-{row['runs_per_s_max']:.0f} "
        f"| {row['commands_sent_per_run']:.3f} | {row['round_trips_per_run']:.3f} "
        f"| {row['commands_executed_per_run']:.2f} | {row['new_connections_per_run']:.3f} "
        f"| {row['bytes_in_per_run']:.0f} | {row['bytes_out_per_run']:.0f} "
        f"| {row['exporter_cpu_us_per_run']:.0f} | {row['app_cpu_us_per_run']:.0f} "
        f"| {row['server_cpu_us_per_run']:.1f} | {row['merge_retries']:.0f} "
        f"| {row['runs_stored']:.0f} | {row['events_dropped']:.0f} | {row['bad_data']:.0f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="300 runs per process, 1 round: a check that the script works",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per process per round")
    parser.add_argument("--llm-calls", type=int, nargs="+", default=None)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--topologies", nargs="+", default=["standalone", "cluster"],
        choices=["standalone", "cluster"],
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--redis-url", default=None, help="use this server, not a private one")
    args = parser.parse_args()
    args.runs = args.runs or (300 if args.quick else 3000)
    args.llm_calls = args.llm_calls or [5, 20]
    args.rounds = args.rounds or (1 if args.quick else 3)

    report: dict[str, Any] = {"args": vars(args), "results": {}}
    with ExitStack() as stack:
        targets: dict[str, RedisTarget] = {}
        if args.redis_url is not None:
            targets["standalone"] = stack.enter_context(given_redis(args.redis_url))
        elif "standalone" in args.topologies:
            targets["standalone"] = stack.enter_context(private_redis())
        if "cluster" in args.topologies:
            targets["cluster"] = stack.enter_context(private_cluster())
        print(
            f"{args.runs} runs per process x {args.rounds} round(s); per run: commands sent, "
            "round trips, commands executed, new connections, bytes in/out, exporter/app/"
            "server CPU µs (see the docstring); medians over rounds\n"
        )
        for llm_calls in args.llm_calls:
            print(HEADER)  # one table per run size: the ratios line ends each
            rows: dict[str, dict[str, Any]] = {}
            for case in _cases(args, llm_calls, targets):
                rows[case.name] = summarize([measure(case) for _ in range(args.rounds)])
                _print_row(llm_calls, case.name, rows[case.name])
            _print_ratios(rows)
            report["results"][f"llm_calls_{llm_calls}"] = rows
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "redis_throughput.json"
    out.write_text(json.dumps(report, indent=2, default=_jsonable))
    print(f"\nwrote {out}")


def _print_ratios(rows: dict[str, dict[str, Any]]) -> None:
    rate = {name: row["runs_per_s"] for name, row in rows.items()}
    base = rate["memory (baseline), 1 proc"]
    parts = [f"{name} / memory {value / base:.2f}" for name, value in rate.items()
             if not name.startswith("memory")]  # fmt: skip
    big, small = rate.get("standalone, 1 proc, 10x state"), rate.get("standalone, 1 proc")
    if big and small:
        parts.append(f"10x state / 1x state {big / small:.2f}")
    print("\nruns/s ratios: " + "; ".join(parts) + "\n", flush=True)


def _jsonable(value: object) -> object:
    if isinstance(value, RedisTarget):
        return asdict(value)
    return str(value)


if __name__ == "__main__":
    main()
