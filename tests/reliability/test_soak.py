"""A soak: 200,000 spans, 1 % never ended, every structural span named by a fresh uuid.

Memory in the process and in Redis must stay within fixed bounds however many
spans go through, and the counters must account for every span and every run.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from reliability_helpers import root_samples, rss_bytes, wait_for

from redis_servers import RedisServer
from spans import CHAIN, LLM, TOOL, agent_attrs, make_processor, usage

# About 40 s on a 2-vCPU machine; room for slower CI runners.
pytestmark = pytest.mark.timeout(300)

SPANS = 200_000
SPANS_PER_RUN = 4  # agent > step > (LLM call, tool call)
NEVER_ENDED = 0.01
FLUSH_EVERY_RUNS = 500  # paces the workload to the exporter, so no event is dropped
WARM_SPANS = 60_000  # the field bound is long reached; remembered span ids fill at ~66,000
MB = 1024 * 1024
#: Bounds documented in docs/reliability.md (measured: see there).
RSS_GROWTH_AFTER_WARM_UP = 32 * MB
REDIS_MEMORY_GROWTH = 16 * MB
MAX_TRIE_FIELDS = 2048


@dataclass
class _Tally:
    spans: int = 0
    ended: int = 0
    runs_with_agent_ended: int = 0
    runs_with_agent_open: int = 0
    llm_calls_learned: int = 0
    runs_truncated: int = 0


def _one_run(tracer: trace.Tracer, rng: random.Random, tally: _Tally) -> None:
    tracer_span = tracer.start_span
    agent = tracer_span(uuid.uuid4().hex, attributes=agent_attrs("soak"))
    step = tracer_span(uuid.uuid4().hex, trace.set_span_in_context(agent), attributes=CHAIN)
    inside = trace.set_span_in_context(step)
    llm = tracer_span("chat m", inside, attributes={**LLM, **usage(5)})
    tool = tracer_span(
        "execute_tool lookup", inside, attributes={**TOOL, "gen_ai.tool.name": "lookup"}
    )
    ended = {}
    for name, span in (("llm", llm), ("tool", tool), ("step", step), ("agent", agent)):
        ended[name] = rng.random() >= NEVER_ENDED
        if ended[name]:
            span.end()
    tally.spans += SPANS_PER_RUN
    tally.ended += sum(ended.values())
    if ended["agent"]:
        tally.runs_with_agent_ended += 1
        # A run stored with a span still open is truncated: stored, never learned.
        if all(ended.values()):
            tally.llm_calls_learned += 1
        else:
            tally.runs_truncated += 1
    else:
        tally.runs_with_agent_open += 1


def test_soak_memory_is_bounded_and_every_span_is_accounted_for(
    redis_server: RedisServer, key_prefix: str
) -> None:
    admin = redis_server.admin()
    redis_baseline = admin.info("memory")["used_memory"]
    provider, processor, tracer = make_processor(
        redis_url=redis_server.url,
        key_prefix=key_prefix,
        schedule_delay_millis=50,
        # One batch per pacing flush: plan rebuilds are paid per batch, and this test
        # is about bounds, not speed.
        max_export_batch_size=FLUSH_EVERY_RUNS * SPANS_PER_RUN * 2,
        run_timeout_seconds=1.0,
        run_grace_seconds=0.05,
        redis_socket_timeout_seconds=10.0,
    )
    rng = random.Random(20240607)
    tally = _Tally()
    rss_warm = rss_peak = 0
    while tally.spans < SPANS:
        _one_run(tracer, rng, tally)
        if (tally.spans // SPANS_PER_RUN) % FLUSH_EVERY_RUNS == 0:
            assert processor.force_flush(60_000)
            if tally.spans >= WARM_SPANS:
                rss_now = rss_bytes()
                rss_warm = rss_warm or rss_now
                rss_peak = max(rss_peak, rss_now)

    # Abandoned runs are evicted once idle for run_timeout_seconds; then nothing is open.
    def all_settled() -> bool:
        processor.force_flush(10_000)
        stats = processor.stats()
        return bool(stats["open_runs"] == 0 and stats["live_spans"] == 0)

    wait_for(all_settled, "abandoned runs to be evicted", timeout=30)
    stats = processor.stats()

    # Every span and every run is accounted for, exactly.
    assert stats["spans_started"] == tally.spans == SPANS
    assert stats["spans_ended"] == tally.ended
    assert stats["events_dropped"] == stats["hot_path_errors"] == 0
    assert stats["runs_completed"] == tally.runs_with_agent_ended
    assert stats["runs_evicted"] == tally.runs_with_agent_open
    assert stats["runs_stored"] == stats["runs_completed"]
    assert stats["runs_truncated"] == tally.runs_truncated
    assert stats["runs_dropped_overload"] == 0
    assert stats["spans_outside_runs"] == stats["late_spans"] == stats["duplicate_spans"] == 0
    assert stats["traces_evicted_capacity"] == 0
    assert stats["exporter_errors"] == stats["learner_errors"] == stats["store_errors"] == 0
    assert root_samples(processor.store, "soak") == tally.llm_calls_learned

    # Memory: the process stops growing once its bounded structures are full.
    assert rss_peak - rss_warm < RSS_GROWTH_AFTER_WARM_UP, (rss_warm, rss_peak)
    # Redis: one agent's keys, each bounded by retention or the learned-field cap.
    store_keys = processor.store.keys  # type: ignore[attr-defined]
    assert stats["learned_fields_dropped"] > 0  # the uuid names did hit the cap
    writer = processor.store._writer  # type: ignore[attr-defined]
    assert admin.hlen(store_keys.shard("soak", "trie", writer)) <= MAX_TRIE_FIELDS
    assert admin.zcard(store_keys.run_index("soak")) == processor.config.max_runs_per_agent
    assert admin.hlen(store_keys.runs("soak")) == processor.config.max_runs_per_agent
    # registry, meta, runs, run index, batch ids, writers, one shard per learner
    assert sum(1 for _ in admin.scan_iter(match=f"{key_prefix}*")) == 8
    redis_growth = admin.info("memory")["used_memory"] - redis_baseline
    assert redis_growth < REDIS_MEMORY_GROWTH, redis_growth
    print(
        f"soak: RSS {rss_warm / MB:.1f} MB after warm-up, peak {rss_peak / MB:.1f} MB; "
        f"Redis +{redis_growth / MB:.1f} MB; {stats['learned_fields_dropped']} fields dropped"
    )
    admin.close()
    provider.shutdown()
