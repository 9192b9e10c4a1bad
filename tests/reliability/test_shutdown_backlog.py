"""``shutdown()`` with 20,000 runs still queued: store them all in time, or say how many not."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest
from reliability_helpers import EVENTS_PER_ONE_CALL_RUN, agent_run, root_samples, wait_for

from otel_adaptive.learners import build_learners
from otel_adaptive.store.redis import RedisStore
from spans import make_processor

BACKLOG_RUNS = 20_000
BACKLOG_EVENTS = BACKLOG_RUNS * EVENTS_PER_ONE_CALL_RUN
_REPORT = re.compile(
    r"(\d+) span events still queued, (\d+) completed runs and (\d+) learned batches not stored"
)


def _processor_with_backlog(redis_url: str, key_prefix: str, shutdown_millis: int) -> Any:
    # The exporter wakes only when a batch of 90,000 events is queued (never here) or
    # on its one-minute schedule and learning interval: at shutdown the whole backlog is
    # still waiting.
    provider, processor, tracer = make_processor(
        redis_url=redis_url,
        key_prefix=key_prefix,
        max_queue_size=100_000,
        max_export_batch_size=90_000,
        schedule_delay_millis=60_000,
        learn_interval_millis=60_000,
        shutdown_timeout_millis=shutdown_millis,
        max_runs_per_agent=BACKLOG_RUNS,
        redis_socket_timeout_seconds=10.0,
    )
    for _ in range(BACKLOG_RUNS):
        agent_run(tracer, "backlog", llm_calls=1)
    stats = processor.stats()
    assert stats["queue_depth"] == BACKLOG_EVENTS
    assert stats["events_dropped"] == 0
    return provider, processor


def _reader(redis_url: str, key_prefix: str) -> RedisStore:
    return RedisStore.from_url(redis_url, key_prefix=key_prefix, learners=build_learners(["trie"]))


def _shutdown(provider: Any, caplog: pytest.LogCaptureFixture) -> tuple[float, list[int] | None]:
    with caplog.at_level(logging.WARNING, logger="otel_adaptive.processor"):
        started = time.monotonic()
        provider.shutdown()
        elapsed = time.monotonic() - started
    found = [_REPORT.search(record.getMessage()) for record in caplog.records]
    reports = [[int(n) for n in match.groups()] for match in found if match is not None]
    assert len(reports) <= 1
    return elapsed, reports[0] if reports else None


def test_a_generous_timeout_stores_every_queued_run(
    redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    timeout = 60.0
    provider, processor = _processor_with_backlog(redis_url, key_prefix, int(timeout * 1000))
    elapsed, report = _shutdown(provider, caplog)
    assert elapsed < timeout
    assert report is None  # nothing to report: everything was stored
    stats = processor.stats()
    assert stats["runs_completed"] == stats["runs_stored"] == BACKLOG_RUNS
    assert stats["queue_depth"] == stats["runs_pending_store"] == 0
    reader = _reader(redis_url, key_prefix)
    try:
        assert reader.run_count("backlog") == BACKLOG_RUNS
        assert root_samples(reader, "backlog") == BACKLOG_RUNS
    finally:
        reader.close()


def test_a_short_timeout_returns_in_time_and_reports_what_is_not_stored(
    redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    timeout = 0.1
    provider, processor = _processor_with_backlog(redis_url, key_prefix, int(timeout * 1000))
    elapsed, report = _shutdown(provider, caplog)
    assert elapsed < timeout + 0.4
    assert report is not None
    queued, runs, batches = report
    # Nothing was stored yet, so every run is in the report: as the 4 span events it
    # still is, or as a completed run. (The exporter keeps going while the two numbers
    # are read, which can hide the few hundred events it handles in between.)
    reported = queued + EVENTS_PER_ONE_CALL_RUN * runs
    assert BACKLOG_EVENTS - 1_000 <= reported <= BACKLOG_EVENTS
    assert batches <= 1
    # The exporter is a daemon thread: it goes on until the process exits. Here the
    # process lives on, so everything still arrives, once.
    reader = _reader(redis_url, key_prefix)
    try:
        wait_for(
            lambda: reader.run_count("backlog") == BACKLOG_RUNS,
            "the rest of the backlog to be stored after shutdown returned",
            timeout=60,
        )
        wait_for(
            lambda: root_samples(reader, "backlog") == BACKLOG_RUNS,
            "the backlog's learned batch",
            timeout=30,
        )
    finally:
        reader.close()
    assert processor.stats()["runs_stored"] == BACKLOG_RUNS
