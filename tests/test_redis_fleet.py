"""A fleet of processes writing one agent: exact, nothing lost, no work redone.

Four spawned processes each run 1,000 agent runs through a real processor into
the same agent, on a standalone server and on a three-node cluster. Every run
is stored, every LLM call learned exactly once, and no process ever retried a
merge because of another (each writes its own shard). CPU per run with four
writers against one is measured in ``benchmarks/redis_throughput.py``.
"""

from __future__ import annotations

import multiprocessing

import pytest

from fleet import run_agent_fleet_worker
from otel_adaptive.learners import PredictionTrieLearner, ToolParallelismLearner
from otel_adaptive.learners.trie import ANY_INDEX, encode_field_key
from otel_adaptive.store.redis import RedisStore

PROCESSES, RUNS, LLM_CALLS = 4, 1000, 3


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_four_processes_write_one_agent_exactly_without_redoing_work(
    topology: str, redis_url: str, redis_cluster: str, key_prefix: str
) -> None:
    url, cluster = (redis_url, False) if topology == "standalone" else (redis_cluster, True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(
            run_agent_fleet_worker,
            [(url, key_prefix, cluster, RUNS, LLM_CALLS)] * PROCESSES,
        )
    for stats in results:
        assert stats["flushed"]
        assert stats["runs_stored"] == RUNS
        assert stats["events_dropped"] == stats["store_errors"] == 0
        assert stats["store_merge_retries"] == 0  # no work redone because of another writer
        assert stats["store_batches_skipped"] == stats["store_runs_skipped"] == 0
        assert stats["store_runs_replaced"] == 0
    assert sum(s["store_runs_saved"] for s in results) == PROCESSES * RUNS

    store = RedisStore.from_url(
        url,
        cluster=cluster,
        key_prefix=key_prefix,
        learners={"trie": PredictionTrieLearner(), "tool_parallelism": ToolParallelismLearner()},
        max_runs_per_agent=100_000,
    )
    try:
        total = PROCESSES * RUNS
        assert store.agents() == ["fleet"]
        assert store.run_count("fleet") == total
        root = store.load_fields("fleet", "trie")[encode_field_key((), ANY_INDEX)]
        # Every call of every run, once: remaining calls are sampled per call.
        assert root.remaining_calls.count == LLM_CALLS * total  # type: ignore[attr-defined]
        assert store.load_plan("fleet").runs_observed == total
        assert len(store.load_fields("fleet", "trie")) > 0
    finally:
        store.close()
