"""Per-run cost and Redis memory per agent as runs and distinct call sites grow.

For each number of distinct call sites (function scopes the LLM calls run under:
10, 100, 1,000), one agent's runs (5 LLM calls + 3 tools, 2 overlapping) go
through a TracerProvider and AdaptiveSpanProcessor (both learners on) into a
private ``redis-server``. At each checkpoint (1k, 10k, 100k runs so far) a window
of ``--window`` runs is timed, force_flush included so the exporter's work
counts: runs/s, exporter CPU and application-thread CPU per run, commands the
store sent and bytes clients sent to Redis per run. Then the agent's footprint
is read: ``MEMORY USAGE <key> SAMPLES 0`` of each of its keys (runs and their
index, applied batch ids, each learner's base hash and every writer's shard of
it) and the number of distinct learned trie fields, plus this process's resident
memory (the exporter mirrors learned state locally).

The baseline is the first checkpoint of the same series, measured in the same
run: ratios are cost at n runs / cost at the first checkpoint. Expected: cost
flat as runs grow; runs bounded by ``max_runs_per_agent``; applied batch ids by
the store's 10,000; learned state by the call sites seen (and the trie caps).

    python benchmarks/state_growth.py [--quick] [--sites 10 100 1000]
        [--checkpoints 1000 10000 100000] [--window 500] [--redis-url URL]

Output is a markdown table. ``--quick`` uses checkpoints 1,000 and 3,000, a window of
300 runs: well under a minute, a check rather than a figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from opentelemetry.sdk.trace import TracerProvider
from redis_throughput import given_redis, one_run, private_redis

from otel_adaptive import AdaptiveSpanProcessor
from otel_adaptive.store.redis import RedisKeyLayout, RedisStore

RESULTS = Path(__file__).parent / "results"
AGENT_ID = "throughput"  # the agent name one_run() gives its runs
LLM_CALLS = 5
# Runs made between two flushes while filling: keeps the queue far from full.
_FILL_CHUNK = 200


def _rss_mb() -> float | None:
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except OSError:
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _learned_keys(client: redis.Redis, layout: RedisKeyLayout, learner: str) -> list[str]:
    """The learner's base hash and every writer's shard: those listed and any other found."""
    writers = [_text(w) for w in client.hkeys(layout.writers(AGENT_ID))]
    keys = {layout.learned(AGENT_ID, learner)}
    keys |= {layout.shard(AGENT_ID, learner, writer) for writer in writers}
    pattern = _glob_escape(layout.shard(AGENT_ID, learner, "")) + "*"
    keys |= {_text(key) for key in client.scan_iter(match=pattern, count=1000)}
    return sorted(key for key in keys if client.exists(key))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _footprint(client: redis.Redis, store: RedisStore) -> dict[str, Any]:
    """Bytes Redis uses for each part of the agent's state, and how many entries they hold.

    Learned state lives in a base hash per learner plus one shard per writer process;
    all of them are counted, and the trie's fields are counted once however many
    shards hold them.
    """
    layout = store.keys
    fixed = {
        "runs": layout.runs(AGENT_ID),
        "run_index": layout.run_index(AGENT_ID),
        "batches": layout.batches(AGENT_ID),
        "meta": layout.meta(AGENT_ID),
        "writers": layout.writers(AGENT_ID),
    }
    learned = {name: _learned_keys(client, layout, name) for name in layout.learner_names}

    def size(key: str) -> int:
        return int(client.memory_usage(key, samples=0) or 0)

    sizes = {name: size(key) for name, key in fixed.items()}
    sizes.update({f"learned:{name}": sum(map(size, keys)) for name, keys in learned.items()})
    trie_fields: set[bytes] = set()
    for key in learned.get("trie", []):
        trie_fields.update(client.hkeys(key))
    return {
        "bytes": sizes,
        "total_bytes": sum(sizes.values()),
        "runs_kept": int(client.zcard(fixed["run_index"])),
        "batch_ids_kept": int(client.zcard(fixed["batches"])),
        "learned_keys": sum(len(keys) for keys in learned.values()),
        "trie_fields": len(trie_fields),
    }


def _window(
    processor: AdaptiveSpanProcessor, tracer: Any, runs: int, start: int, sites: int
) -> dict[str, float]:
    store = processor.store
    assert isinstance(store, RedisStore)
    sent0 = store.stats()["commands"]
    cpu0, wall0, app0 = time.process_time(), time.perf_counter(), time.thread_time()
    for i in range(start, start + runs):
        one_run(tracer, LLM_CALLS, i % sites)
    app = time.thread_time() - app0
    if not processor.force_flush(600_000):
        raise RuntimeError("force_flush did not finish: is Redis reachable?")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {
        "runs_per_s": runs / wall,
        "exporter_cpu_us_per_run": (cpu - app) / runs * 1e6,
        "app_cpu_us_per_run": app / runs * 1e6,
        "commands_sent_per_run": (store.stats()["commands"] - sent0) / runs,
    }


def series(url: str, sites: int, checkpoints: list[int], window: int) -> list[dict[str, Any]]:
    """Grow one agent to each checkpoint; time a window and read the footprint there."""
    processor = AdaptiveSpanProcessor(
        redis_url=url,
        key_prefix=f"bench:{uuid.uuid4().hex[:12]}:",
        max_queue_size=(window + _FILL_CHUNK) * 40,  # never full: nothing dropped
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    store = processor.store
    assert isinstance(store, RedisStore)
    client = redis.Redis.from_url(url)
    rows = []
    made = 0
    try:
        for checkpoint in checkpoints:
            while made < checkpoint - window:  # fill, flushing now and then
                chunk = min(_FILL_CHUNK, checkpoint - window - made)
                for i in range(made, made + chunk):
                    one_run(tracer, LLM_CALLS, i % sites)
                processor.force_flush(600_000)
                made += chunk
            net0 = int(client.info("stats")["total_net_input_bytes"])
            row: dict[str, Any] = {"sites": sites, "runs": checkpoint}
            row.update(_window(processor, tracer, checkpoint - made, made, sites))
            row["bytes_in_per_run"] = (
                int(client.info("stats")["total_net_input_bytes"]) - net0
            ) / (checkpoint - made)
            made = checkpoint
            row.update(_footprint(client, store))
            row["rss_mb"] = _rss_mb()
            stats = processor.stats()
            row["events_dropped"] = stats["events_dropped"]
            row["bad_data"] = store.stats()["bad_data"]
            rows.append(row)
            _print_row(row, rows[0])
    finally:
        provider.shutdown()
        client.close()
    return rows


HEADER = (
    "| sites | runs | runs/s | exp µs | app µs | sent | B in | cost x | agent KB | runs KB "
    "| batches KB | trie KB | plan B | learned keys | trie fields | runs kept | ids kept "
    "| RSS MB | bad |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _print_row(row: dict[str, Any], first: dict[str, Any]) -> None:
    sizes = row["bytes"]
    cost_ratio = row["exporter_cpu_us_per_run"] / first["exporter_cpu_us_per_run"]
    rss = row["rss_mb"]
    print(
        f"| {row['sites']} | {row['runs']} | {row['runs_per_s']:.0f} "
        f"| {row['exporter_cpu_us_per_run']:.0f} | {row['app_cpu_us_per_run']:.0f} "
        f"| {row['commands_sent_per_run']:.3f} | {row['bytes_in_per_run']:.0f} "
        f"| **{cost_ratio:.2f}** | {row['total_bytes'] / 1024:.0f} "
        f"| {(sizes['runs'] + sizes['run_index']) / 1024:.0f} | {sizes['batches'] / 1024:.0f} "
        f"| {sizes.get('learned:trie', 0) / 1024:.0f} "
        f"| {sizes.get('learned:tool_parallelism', 0)} | {row['learned_keys']} "
        f"| {row['trie_fields']} | {row['runs_kept']} | {row['batch_ids_kept']} "
        f"| {rss if rss is not None else float('nan'):.0f} | {row['bad_data']} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="checkpoints 1k and 3k runs")
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=None)
    parser.add_argument("--window", type=int, default=None, help="runs timed per checkpoint")
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    args = parser.parse_args()
    checkpoints = args.checkpoints or ([1000, 3000] if args.quick else [1000, 10_000, 100_000])
    window = args.window or (300 if args.quick else 500)
    if min(checkpoints) < window:
        parser.error("every checkpoint must be at least --window runs")
    logging.basicConfig(level=logging.ERROR)  # the 'bad' column counts what would be logged

    report: dict[str, Any] = {"checkpoints": checkpoints, "window": window, "results": {}}
    with ExitStack() as stack:
        if args.redis_url is not None:
            target = stack.enter_context(given_redis(args.redis_url))
        else:
            target = stack.enter_context(private_redis())
        print(
            "Per run: runs/s, exporter and app-thread CPU (µs), commands sent, bytes to Redis;"
            " cost x = exporter CPU / the series' first checkpoint's. Agent footprint in Redis:"
            " all its keys, runs + index, batch ids, trie (base + every writer's shard, KB);"
            " plan (bytes); learned-state keys (bases and shards), distinct trie fields, runs"
            " kept, batch ids kept; this process's RSS.\n"
        )
        print(HEADER)
        for count in args.sites:
            rows = series(target.url, count, sorted(checkpoints), window)
            report["results"][f"sites_{count}"] = rows
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "state_growth.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
