"""The exporter pipeline: whole runs or nothing, coalesced learning, separate failure
paths for runs and learned state, incremental refresh, bounded agents, exact counters."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

from otel_adaptive._logs import RateLimitedLog
from otel_adaptive.learners.trie import ANY_INDEX, PredictionTrieLearner, encode_field_key
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import AgentDelta
from otel_adaptive.store.memory import MemoryStore
from spans import BASE_NS, LLM, MS, agent_attrs, make_processor, usage

ROOT = encode_field_key((), ANY_INDEX)


def _interleaved_runs(tracer: trace.Tracer, shapes: list[int], order: list[int]) -> None:
    """Start every run, then emit their calls interleaved as ``order`` says, then end them.

    Run ``i`` belongs to agent ``calls-<n>`` and makes ``n = shapes[i]`` LLM calls, so a
    stored run is complete exactly when it holds ``n`` calls.
    """
    roots = []
    for i, calls in enumerate(shapes):
        roots.append(
            tracer.start_span(
                f"run {i}", attributes=agent_attrs(f"calls-{calls}"), start_time=BASE_NS
            )
        )
    made = [0] * len(shapes)
    pending = [i for i, calls in enumerate(shapes) for _ in range(calls)]
    picks = [pending.pop(choice % len(pending)) for choice in order[: len(pending)]] + pending
    for i in picks:
        k = made[i]
        made[i] += 1
        start = BASE_NS + (k * 10 + 1) * MS
        llm = tracer.start_span(
            "chat m", trace.set_span_in_context(roots[i]), attributes=LLM, start_time=start
        )
        llm.set_attributes(usage(5 + k))
        llm.end(end_time=start + 5 * MS)
    for i, root in enumerate(roots):
        root.end(end_time=BASE_NS + (shapes[i] * 10 + 5) * MS)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    shapes=st.lists(st.integers(1, 5), min_size=1, max_size=12),
    order=st.lists(st.integers(0, 1000), max_size=60),
    queue=st.integers(4, 24),
)
def test_under_a_full_queue_only_whole_runs_are_stored_and_exactly_they_are_learned(
    shapes: list[int], order: list[int], queue: int
) -> None:
    provider, processor, tracer = make_processor(
        max_queue_size=queue, max_export_batch_size=queue, run_grace_seconds=0
    )
    try:
        _interleaved_runs(tracer, shapes, order)
        processor.force_flush(10_000)
        stats = processor.stats()
        store = processor.store
        stored: list[RunRecord] = []
        for agent in store.agents():
            runs = store.list_runs(agent)
            expected = int(agent.split("-")[1])
            assert [len(run.calls) for run in runs] == [expected] * len(runs)
            stored += runs
        assert stats["runs_stored"] == len(stored)
        assert stats["runs_completed"] + stats["runs_dropped_overload"] <= len(shapes)
        if stats["events_dropped"] == 0:
            assert len(stored) == len(shapes)
        # What was learned is exactly what the stored runs teach.
        oracle = PredictionTrieLearner().learn(stored)
        for agent in store.agents():
            learned = store.load_fields(agent, "trie")
            assert sorted(learned) == sorted(oracle.get(agent, {}))
            for key, value in learned.items():
                expected_value = oracle[agent][key]
                assert value.remaining_calls.count == expected_value.remaining_calls.count
                assert value.remaining_calls.mean == pytest.approx(
                    expected_value.remaining_calls.mean
                )
                assert value.output_tokens.count == expected_value.output_tokens.count
    finally:
        provider.shutdown()


def test_a_trace_that_lost_an_event_is_dropped_whole_and_counted() -> None:
    provider, processor, tracer = make_processor(max_queue_size=4, max_export_batch_size=4)
    try:
        # 3 runs of 2 calls: 18 events into a queue of 4 with the exporter asleep until
        # the batch size is reached; whatever is dropped takes its whole run along.
        _interleaved_runs(tracer, [2, 2, 2], [])
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["events_dropped"] > 0
        runs = processor.store.list_runs("calls-2")
        assert all(len(run.calls) == 2 for run in runs)
        assert stats["runs_stored"] == len(runs) < 3
        # A run that lost a call is dropped whole; one that lost its root's end stays
        # open until evicted: either way it is never stored.
        assert stats["runs_dropped_overload"] + len(runs) + stats["open_runs"] == 3
    finally:
        provider.shutdown()


def test_runs_are_learned_once_per_interval_and_flush_learns_at_once() -> None:
    provider, processor, tracer = make_processor(
        schedule_delay_millis=20, learn_interval_millis=60_000
    )
    try:
        for _ in range(3):
            _interleaved_runs(tracer, [2], [])
        deadline = time.monotonic() + 10
        while processor.stats()["runs_pending_learning"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = processor.stats()
        assert stats["runs_pending_learning"] == 3  # waits for the interval
        assert stats["batches_merged"] == 0
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["runs_pending_learning"] == 0
        assert stats["runs_learned"] == stats["runs_stored"] == 3
        assert stats["batches_merged"] == 1  # the three runs, one coalesced delta
        learned = processor.store.load_fields("calls-2", "trie")
        assert learned[ROOT].remaining_calls.count == 6
    finally:
        provider.shutdown()


class _RejectingStore(MemoryStore):
    """Raises (not an outage) on one run id, or on every merge."""

    def __init__(self, *, bad_run_agent: str | None = None, bad_merges: bool = False) -> None:
        super().__init__()
        self.bad_run_agent = bad_run_agent
        self.bad_merges = bad_merges

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        if any(run.agent_id == self.bad_run_agent for run in runs):
            raise TypeError("cannot encode this run")
        return super().save_runs(runs)

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        if self.bad_merges:
            raise TypeError("cannot encode this delta")
        return super().merge(batch_id, deltas)


def test_one_unstorable_run_blocks_neither_the_other_runs_nor_learning() -> None:
    store = _RejectingStore(bad_run_agent="calls-3")
    provider, processor, tracer = make_processor(store=store)
    try:
        _interleaved_runs(tracer, [1, 3, 2], [])
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["runs_unstorable"] == 1
        assert stats["runs_stored"] == 2
        assert store.run_count("calls-1") == store.run_count("calls-2") == 1
        assert store.run_count("calls-3") == 0
        assert stats["runs_learned"] == 3
        assert stats["batches_merged"] == 1
        assert store.load_fields("calls-3", "trie")[ROOT].remaining_calls.count == 3
    finally:
        provider.shutdown()


def test_an_unstorable_learned_batch_never_holds_runs_back() -> None:
    store = _RejectingStore(bad_merges=True)
    provider, processor, tracer = make_processor(store=store)
    try:
        _interleaved_runs(tracer, [1, 2], [])
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert (stats["batches_unstorable"], stats["batches_merged"]) == (1, 0)
        assert stats["runs_stored"] == 2
        assert stats["batches_pending_store"] == 0
    finally:
        provider.shutdown()


class _SharedMemoryStore(MemoryStore):
    """An in-process store that behaves like a shared one (others may write it)."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def load_fields(self, agent_id: str, learner: str) -> dict[str, object]:  # type: ignore[override]
        self.loads.append(agent_id)
        return super().load_fields(agent_id, learner)


def test_refresh_rereads_only_agents_whose_stored_state_changed() -> None:
    store = _SharedMemoryStore()
    provider, processor, tracer = make_processor(store=store, learners=("trie",))
    try:
        _interleaved_runs(tracer, [1, 2], [])
        assert processor.force_flush(10_000)
        exporter = processor._exporter
        exporter.refresh()  # catches up with our own writes
        store.loads.clear()
        exporter.refresh()
        assert store.loads == []  # nothing changed: nothing read
        # Another process writes one agent.
        delta = store.load_fields("calls-2", "trie")
        store.merge("elsewhere:1", [AgentDelta("calls-2", "trie", delta)])
        store.loads.clear()
        before = processor.stats()["agents_refreshed"]
        exporter.refresh()
        assert store.loads == ["calls-2"]
        assert processor.stats()["agents_refreshed"] == before + 1
        plan = processor.cache.get("calls-2")
        assert plan is not None and plan.trie.root_any().remaining_calls.sample_count == 4
    finally:
        provider.shutdown()


def test_spans_after_shutdown_are_not_queued_and_are_counted() -> None:
    provider, processor, tracer = make_processor()
    processor.shutdown()
    with tracer.start_as_current_span("late", attributes=agent_attrs("late")):
        pass
    stats = processor.stats()
    assert stats["spans_after_shutdown"] == 2
    assert stats["queue_depth"] == 0
    assert stats["events_dropped"] == 0
    provider.shutdown()


def test_log_rate_limits_are_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("otel_adaptive.test"), interval=60.0)
    with caplog.at_level(logging.WARNING, logger="otel_adaptive.test"):
        log.report("store", "store away", traceback=False)
        log.report("store", "store away again", traceback=False)
        log.report("learner", "learner broke", traceback=False)
    assert [record.getMessage() for record in caplog.records] == [
        "store away",
        "learner broke",
    ]
