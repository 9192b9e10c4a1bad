"""Redis crashes (SIGKILL) in the middle of a workload and comes back."""

from __future__ import annotations

import statistics

import pytest
from reliability_helpers import agent_run, flushed, kill_server, root_samples, wait_for

from redis_servers import RedisServer
from spans import make_processor

RUNS_BEFORE, RUNS_AFTER, LLM_CALLS = 40, 20, 2


@pytest.mark.parametrize(
    ("buffer_runs", "outage_runs"),
    [(200, 40), (15, 40)],
    ids=["outage-within-buffer", "outage-overflowing-buffer"],
)
def test_redis_killed_and_restarted_mid_workload(
    aof_redis: RedisServer, key_prefix: str, buffer_runs: int, outage_runs: int
) -> None:
    provider, processor, tracer = make_processor(
        redis_url=aof_redis.url,
        key_prefix=key_prefix,
        schedule_delay_millis=20,
        max_export_batch_size=64,
        retry_buffer_runs=buffer_runs,
        redis_socket_timeout_seconds=0.5,
        redis_connect_timeout_seconds=0.5,
    )
    agent = "crash"
    before = [agent_run(tracer, agent, LLM_CALLS) for _ in range(RUNS_BEFORE // 2)]
    wait_for(lambda: processor.stats()["runs_stored"] > 0, "a first write", timeout=10)
    before += [agent_run(tracer, agent, LLM_CALLS) for _ in range(RUNS_BEFORE // 2)]
    # No flush: the exporter is busy with these when the server dies.
    kill_server(aof_redis)
    during = [agent_run(tracer, agent, LLM_CALLS) for _ in range(outage_runs)]
    assert not processor.force_flush(2_000)  # nothing can be stored: it says so at once
    assert processor.stats()["store_errors"] >= 1
    aof_redis.start()
    for _ in range(RUNS_AFTER):
        agent_run(tracer, agent, LLM_CALLS)
    wait_for(flushed(processor), "the backlog to reach the restarted server", timeout=30)

    total = RUNS_BEFORE + outage_runs + RUNS_AFTER
    stats = processor.stats()
    stored = processor.store.run_count(agent)
    dropped = stats["runs_dropped_buffer_full"]
    assert stats["runs_pending_store"] == 0
    if total <= buffer_runs:
        # Nothing lost, nothing twice: retried writes replace runs by id.
        assert dropped == 0
        assert stored == stats["runs_stored"] == total
    else:
        assert dropped >= outage_runs - buffer_runs
        # Every run is stored or counted as dropped. A write the crash cut off may have
        # been applied before its reply was lost; if its runs are dropped later they are
        # counted as dropped yet stored: at most the runs not acknowledged at the crash.
        assert total <= stored + dropped <= total + RUNS_BEFORE
        assert stats["runs_stored"] <= stored
    # Learned state waits in its own buffer: every LLM call is learned exactly once,
    # even for writes whose reply the crash swallowed (retried, then deduplicated).
    assert root_samples(processor.store, agent) == total * LLM_CALLS
    assert stats["batches_dropped_buffer_full"] == 0
    # The application never waited for the dead server.
    assert statistics.median(during) < statistics.median(before) * 3 + 0.005
    assert max(during) < 0.25
    provider.shutdown()
