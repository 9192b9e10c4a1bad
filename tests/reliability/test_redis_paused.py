"""Redis stops answering (CLIENT PAUSE ... ALL) for longer than a command may take."""

from __future__ import annotations

import logging
import re
import statistics
import time

import pytest
from reliability_helpers import agent_run, flushed, root_samples, wait_for

from otel_adaptive.learners import build_learners
from otel_adaptive.store.redis import RedisStore
from redis_servers import RedisServer
from spans import make_processor

PAUSE_MILLIS = 2_500
#: An agent span and two LLM spans, each started and ended.
EVENTS_PER_RUN = 6
_REPORT = re.compile(
    r"(\d+) span events still queued, (\d+) completed runs and (\d+) learned batches not stored"
)


def _pause(server: RedisServer) -> None:
    with server.admin() as client:
        client.execute_command("CLIENT", "PAUSE", PAUSE_MILLIS, "ALL")


def _wait_out_pause(server: RedisServer) -> None:
    # A PING is held back like every other command until the pause ends.
    with server.admin(socket_timeout=PAUSE_MILLIS / 1000 + 5) as client:
        client.ping()


def test_a_pause_longer_than_the_command_timeout_never_hangs_the_exporter(
    redis_server: RedisServer, key_prefix: str
) -> None:
    provider, processor, tracer = make_processor(
        redis_url=redis_server.url,
        key_prefix=key_prefix,
        schedule_delay_millis=20,
        redis_socket_timeout_seconds=0.3,
    )
    before = [agent_run(tracer, "paused") for _ in range(10)]
    assert processor.force_flush(5_000)
    _pause(redis_server)
    during = [agent_run(tracer, "paused") for _ in range(20)]
    started = time.monotonic()
    assert not processor.force_flush(1_500)
    assert time.monotonic() - started < 1.7  # the flush gave up within its own timeout
    assert processor.stats()["store_errors"] >= 1
    _wait_out_pause(redis_server)
    # The exporter was not wedged by the dead connection: it stores everything afterwards.
    wait_for(flushed(processor), "the runs made during the pause to be stored", timeout=15)
    assert processor.store.run_count("paused") == 30
    assert root_samples(processor.store, "paused") == 60
    assert processor.stats()["runs_dropped_buffer_full"] == 0
    assert statistics.median(during) < statistics.median(before) * 3 + 0.005
    assert max(during) < 0.25
    provider.shutdown()


@pytest.mark.parametrize(
    ("socket_timeout", "shutdown_millis"),
    [(0.2, 1_500), (2.0, 500)],
    ids=["commands-time-out-within-shutdown", "one-command-outlasts-shutdown"],
)
def test_shutdown_during_a_pause_returns_in_time_and_reports_what_was_not_stored(
    redis_server: RedisServer,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
    socket_timeout: float,
    shutdown_millis: int,
) -> None:
    provider, processor, tracer = make_processor(
        redis_url=redis_server.url,
        key_prefix=key_prefix,
        redis_socket_timeout_seconds=socket_timeout,
        shutdown_timeout_millis=shutdown_millis,
    )
    for _ in range(10):
        agent_run(tracer, "stuck")
    assert processor.force_flush(5_000)
    _pause(redis_server)
    for _ in range(15):  # queued only: the exporter wakes at shutdown
        agent_run(tracer, "stuck")
    with caplog.at_level(logging.WARNING, logger="otel_adaptive.processor"):
        started = time.monotonic()
        provider.shutdown()
        elapsed = time.monotonic() - started
    assert elapsed < shutdown_millis / 1000 + 0.3
    reports = [_REPORT.search(r.getMessage()) for r in caplog.records]
    [report] = [r for r in reports if r is not None]
    queued, runs, batches = (int(n) for n in report.groups())
    if socket_timeout < shutdown_millis / 1000:
        assert (queued, runs, batches) == (0, 15, 1)
    else:
        # The exporter may still have been stuck in a periodic read when shutdown
        # began: the runs are then reported as the span events they still are.
        assert (queued, runs, batches) in {(0, 15, 1), (15 * EVENTS_PER_RUN, 0, 0)}
    _wait_out_pause(redis_server)
    if socket_timeout < shutdown_millis / 1000:
        # The exporter finished (every write failed) and stopped: what it reported is
        # exactly what is missing, and nothing arrives later.
        stats = processor.stats()
        assert stats["runs_pending_store"] == 15
        assert stats["batches_pending_store"] == 1
        reader = RedisStore.from_url(
            redis_server.url, key_prefix=key_prefix, learners=build_learners(["trie"])
        )
        try:
            assert reader.run_count("stuck") == 10
            assert root_samples(reader, "stuck") == 20
        finally:
            reader.close()
