"""The processor with a real Redis behind it: fleets, outages, start-up and visibility."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
import redis as redis_py

from fleet import run_agent_fleet_worker
from otel_adaptive import AdaptiveSpanProcessor
from redis_servers import RedisServer, find_redis_server, free_port
from spans import LLM, agent_attrs, make_processor, timed_span, usage


def _root_samples(processor: AdaptiveSpanProcessor, agent: str) -> int:
    envelope = processor.store.load_trie(agent)
    assert envelope is not None
    count: int = envelope["root"]["predictions_any_index"]["output_tokens"]["sample_count"]
    return count


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll a condition that only a periodic background task can make true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _one_run(tracer: object, agent: str = "resilient", tokens: int = 7) -> float:
    started = time.perf_counter()
    with timed_span(tracer, "run", 0, 100, agent_attrs(agent)):  # type: ignore[arg-type]
        for k in range(2):
            with timed_span(
                tracer, "chat m", k * 10, k * 10 + 5, LLM, end_attributes=usage(tokens)
            ):  # type: ignore[arg-type]
                pass
    return time.perf_counter() - started


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_four_processes_learn_one_agent_without_losing_a_sample(
    topology: str, request: pytest.FixtureRequest, key_prefix: str
) -> None:
    url = request.getfixturevalue("redis_url" if topology == "standalone" else "redis_cluster")
    cluster = topology == "cluster"
    runs, llm_calls, workers = 250, 2, 4
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        results = pool.starmap(
            run_agent_fleet_worker, [(url, key_prefix, cluster, runs, llm_calls)] * workers
        )
    assert all(r["flushed"] for r in results), results
    assert sum(r["runs_stored"] for r in results) == runs * workers
    reader = AdaptiveSpanProcessor(redis_url=url, redis_cluster=cluster, key_prefix=key_prefix)
    try:
        assert reader.store.run_count("fleet") == runs * workers
        assert _root_samples(reader, "fleet") == runs * workers * llm_calls
        plan = reader.store.load_plan("fleet")
        assert plan.runs_observed == runs * workers
    finally:
        reader.shutdown()


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A server that keeps its data across a restart (append-only file, fsync always)."""
    executable = find_redis_server()
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable, extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_redis_outage_mid_workload_loses_no_run_and_does_not_slow_the_app(
    durable_redis: RedisServer, key_prefix: str
) -> None:
    redis_server = durable_redis
    provider, processor, tracer = make_processor(
        redis_url=redis_server.url,
        key_prefix=key_prefix,
        schedule_delay_millis=20,
        redis_socket_timeout_seconds=0.5,
        redis_connect_timeout_seconds=0.5,
    )
    before = [_one_run(tracer) for _ in range(30)]
    assert processor.force_flush(10_000)
    redis_server.stop()
    during = [_one_run(tracer) for _ in range(30)]
    assert not processor.force_flush(3_000)  # nothing can be stored now: it says so
    # Let the exporter hit the dead server for a while as the runs keep coming.
    during += [_one_run(tracer) for _ in range(30)]
    assert not processor.force_flush(3_000)
    stats = processor.stats()
    assert stats["runs_pending_store"] == 60
    assert stats["store_errors"] >= 1
    # Hints keep working from what was learned locally during the outage.
    with timed_span(tracer, "run", 0, 100, agent_attrs("resilient")):
        assert processor.current_hints() is not None
    redis_server.start()
    assert _wait_for(lambda: processor.force_flush(2_000), timeout=30)
    # 90 runs, and the one that asked for hints during the outage.
    assert processor.store.run_count("resilient") == 91
    assert _root_samples(processor, "resilient") == 180  # that one made no LLM call
    assert processor.stats()["runs_dropped_buffer_full"] == 0
    # Application-side cost per run did not grow with Redis gone (no blocking).
    assert statistics.median(during) < statistics.median(before) * 3 + 0.005
    assert max(during) < 0.25  # far below one command timeout
    provider.shutdown()


def test_outage_longer_than_the_buffer_drops_oldest_and_counts(
    redis_server: RedisServer, key_prefix: str
) -> None:
    provider, processor, tracer = make_processor(
        redis_url=redis_server.url,
        key_prefix=key_prefix,
        retry_buffer_runs=10,
        redis_socket_timeout_seconds=0.5,
        redis_connect_timeout_seconds=0.5,
    )
    redis_server.stop()
    for _ in range(25):
        _one_run(tracer, agent="overflow")
    assert not processor.force_flush(3_000)
    stats = processor.stats()
    assert stats["runs_pending_store"] == 10
    assert stats["runs_dropped_buffer_full"] == 15
    redis_server.start()
    assert _wait_for(lambda: processor.force_flush(2_000), timeout=30)
    assert processor.store.run_count("overflow") == 10
    # Learned state is kept in full: deltas are buffered apart from run records.
    assert _root_samples(processor, "overflow") == 50
    provider.shutdown()


def test_processor_starts_with_redis_down_and_stores_once_it_is_up(key_prefix: str) -> None:
    executable = find_redis_server()
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable, port=free_port())  # not started yet
    try:
        provider, processor, tracer = make_processor(
            redis_url=server.url,
            key_prefix=key_prefix,
            redis_socket_timeout_seconds=0.5,
            redis_connect_timeout_seconds=0.5,
        )
        for _ in range(5):
            _one_run(tracer, agent="late-redis")
        assert not processor.force_flush(2_000)
        server.start()
        assert _wait_for(lambda: processor.force_flush(2_000), timeout=30)
        assert processor.store.run_count("late-redis") == 5
        provider.shutdown()
    finally:
        server.close()


def test_what_another_process_learned_reaches_this_processes_hints(
    redis_url: str, key_prefix: str
) -> None:
    common = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "refresh_interval_seconds": 0.1,
        "schedule_delay_millis": 20,
    }
    writer_provider, writer, writer_tracer = make_processor(**common)
    reader_provider, reader, reader_tracer = make_processor(**common)
    for _ in range(3):
        _one_run(writer_tracer, agent="shared", tokens=321)
    assert writer.force_flush(10_000)

    def reader_sees_it() -> bool:
        with timed_span(reader_tracer, "run", 0, 100, agent_attrs("shared")):
            hints = reader.current_hints()
        return hints is not None and hints.osl == 321

    assert _wait_for(reader_sees_it, timeout=10)
    assert reader.stats()["refreshes"] >= 1
    writer_provider.shutdown()
    reader_provider.shutdown()


def test_a_corrupted_state_key_is_counted_and_the_exporter_keeps_working(
    redis_url: str, key_prefix: str
) -> None:
    provider, processor, tracer = make_processor(redis_url=redis_url, key_prefix=key_prefix)
    _one_run(tracer, agent="corrupt")
    assert processor.force_flush(10_000)
    store = processor.store
    key = store.keys.shard("corrupt", "trie", store._writer)  # type: ignore[attr-defined]
    with redis_py.Redis.from_url(redis_url) as client:
        client.delete(key)
        client.set(key, b"not a hash")
    _one_run(tracer, agent="corrupt")
    processor.force_flush(10_000)
    assert store.bad_data_count >= 1  # type: ignore[attr-defined]
    _one_run(tracer, agent="other")
    assert processor.force_flush(10_000)
    assert store.run_count("other") == 1
    assert processor.stats()["exporter_errors"] == 0
    provider.shutdown()
