"""Every counter documented in ``docs/operations.md`` exists, and a test asserts it exactly.

Three parts: the documented tables are compared both ways with what ``stats()``
returns; :data:`EXACT_TESTS` names, for every documented counter, a test that asserts
its exact value (checked against that test's source); and the scenarios below assert
the counters no other test pins down. Scenarios drive real spans through a real
``TracerProvider`` and processor, and use real Redis servers.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from redis.cluster import RedisCluster

from otel_adaptive import _learned_state
from otel_adaptive._store_writer import MAX_PENDING_BATCHES
from otel_adaptive.learners.base import Mergeable
from otel_adaptive.learners.parallelism import ToolParallelismLearner
from otel_adaptive.learners.trie import PredictionTrieLearner
from otel_adaptive.live import MAX_ENDED_PER_TRACE
from otel_adaptive.processor import AdaptiveSpanProcessor
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import AgentDelta, StoreUnavailableError
from otel_adaptive.store.memory import MemoryStore
from otel_adaptive.store.redis import RedisStore
from redis_helpers import Tally, learners, make_run, tally_delta
from redis_servers import RedisClusterServers
from spans import LLM, TOOL, agent_attrs
from spans import make_processor as _make_processor

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
PROCESSOR = "processor.stats()"
REDIS_STORE = "store.stats()"


def make_processor(
    **config: Any,
) -> tuple[TracerProvider, AdaptiveSpanProcessor, trace.Tracer]:
    """A processor that learns and writes only when flushed: counts do not depend on timing."""
    config.setdefault("learn_interval_millis", 60_000)
    return _make_processor(**config)


# --- the documented tables --------------------------------------------------------------------


def documented_counters() -> dict[str, list[str]]:
    """The counter names of each table under ``## Counters``, by whose ``stats()`` they are."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Counters\n", 1)[1].split("\n## ", 1)[0]
    tables: list[list[str]] = []
    in_table = False
    for line in section.splitlines():
        row = re.fullmatch(r"\| `([a-z_]+)` \| .+ \|", line.strip())
        if line.startswith("|"):
            if not in_table:
                tables.append([])
                in_table = True
            if row:
                tables[-1].append(row.group(1))
        else:
            in_table = False
    assert len(tables) == 2, "expected the processor's table and the Redis store's table"
    return {PROCESSOR: tables[0], REDIS_STORE: tables[1]}


def test_the_documented_tables_have_no_duplicates() -> None:
    for owner, names in documented_counters().items():
        assert len(names) == len(set(names)), owner
        assert len(names) >= 10, owner  # the parser found the rows


def _compare(owner: str, actual: set[str]) -> None:
    documented = set(documented_counters()[owner])
    assert sorted(documented - actual) == [], f"documented but missing from {owner}"
    assert sorted(actual - documented) == [], f"in {owner} but not documented"


def test_processor_stats_match_the_documented_table_with_the_memory_store() -> None:
    provider, processor, _ = make_processor()
    try:
        assert isinstance(processor.store, MemoryStore)
        _compare(PROCESSOR, set(processor.stats()))
        # The in-memory store keeps no counters of its own: the second table is Redis's.
        assert not hasattr(processor.store, "stats")
    finally:
        provider.shutdown()


def test_processor_and_store_stats_match_the_documented_tables_with_redis(
    redis_url: str, key_prefix: str
) -> None:
    provider, processor, _ = make_processor(redis_url=redis_url, key_prefix=key_prefix)
    try:
        assert isinstance(processor.store, RedisStore)
        # The processor's counters do not depend on the store: same keys as in memory.
        _compare(PROCESSOR, set(processor.stats()))
        _compare(REDIS_STORE, set(processor.store.stats()))
    finally:
        provider.shutdown()


# --- which test asserts which counter exactly -------------------------------------------------

#: Test module -> test function -> the (whose stats, counter) it asserts exactly.
_ASSERTED_BY: dict[str, dict[str, list[tuple[str, str]]]] = {
    "test_processor": {
        "test_full_queue_never_blocks_the_application_and_counts_drops": [
            (PROCESSOR, "spans_started"),
            (PROCESSOR, "spans_ended"),
        ],
        "test_never_ended_run_is_evicted_and_counted": [
            (PROCESSOR, "live_spans"),
            (PROCESSOR, "runs_evicted"),
        ],
        "test_one_run_with_overlapping_same_name_calls_is_assembled_exactly": [
            (PROCESSOR, "runs_completed"),
            (PROCESSOR, "runs_stored"),
        ],
        "test_calls_beyond_the_cap_are_truncated_and_counted": [
            (PROCESSOR, "calls_truncated"),
        ],
        "test_agent_only_policy_ignores_traces_without_agents": [
            (PROCESSOR, "spans_outside_runs"),
        ],
    },
    "test_counters_exact": {
        "test_a_full_queue_drops_events_and_their_runs_whole": [
            (PROCESSOR, "events_dropped"),
            (PROCESSOR, "queue_depth"),
            (PROCESSOR, "runs_dropped_overload"),
        ],
        "test_spans_beyond_the_live_bounds_are_counted_untracked": [
            (PROCESSOR, "live_spans_untracked"),
        ],
        "test_errors_on_the_hot_path_are_swallowed_and_counted": [
            (PROCESSOR, "hot_path_errors"),
        ],
        "test_a_run_with_open_spans_is_stored_truncated_and_its_late_span_counted": [
            (PROCESSOR, "runs_truncated"),
            (PROCESSOR, "late_spans"),
            (PROCESSOR, "runs_learned"),
        ],
        "test_traces_beyond_the_capacity_are_evicted_and_counted": [
            (PROCESSOR, "traces_evicted_capacity"),
        ],
        "test_span_events_seen_twice_are_counted_once_each": [
            (PROCESSOR, "duplicate_spans"),
        ],
        "test_runs_and_batches_of_an_agent_with_bad_data_are_not_written": [
            (PROCESSOR, "runs_not_written"),
        ],
        "test_an_unreachable_store_keeps_what_it_can_and_counts_the_rest": [
            (PROCESSOR, "runs_pending_store"),
            (PROCESSOR, "batches_pending_store"),
            (PROCESSOR, "batches_dropped_buffer_full"),
            (PROCESSOR, "store_errors"),
        ],
        "test_a_batch_the_store_raises_on_is_counted_unstorable": [
            (PROCESSOR, "batches_unstorable"),
        ],
        "test_a_batch_the_store_had_applied_already_is_counted_deduplicated": [
            (PROCESSOR, "batches_deduplicated"),
        ],
        "test_fields_beyond_the_per_agent_bound_are_dropped_and_counted": [
            (PROCESSOR, "learned_fields_dropped"),
        ],
        "test_agents_beyond_the_bound_are_refused_or_make_room": [
            (PROCESSOR, "agents_learned"),
            (PROCESSOR, "agents_over_limit"),
            (PROCESSOR, "agents_evicted"),
        ],
        "test_a_failing_learner_is_counted_once_per_interval": [
            (PROCESSOR, "learner_errors"),
        ],
        "test_refreshes_and_their_failures_are_counted": [
            (PROCESSOR, "exporter_errors"),
            (PROCESSOR, "refreshes"),
            (PROCESSOR, "agents_refreshed"),
            (PROCESSOR, "refresh_errors"),
        ],
        "test_a_folded_shard_is_counted_and_its_writer_redoes_its_merge": [
            (REDIS_STORE, "merge_retries"),
            (REDIS_STORE, "shards_folded"),
        ],
        "test_redis_store_write_counters_are_exact": [
            (REDIS_STORE, "bad_data"),
            (REDIS_STORE, "batches_applied"),
            (REDIS_STORE, "batches_skipped"),
            (REDIS_STORE, "runs_saved"),
            (REDIS_STORE, "runs_replaced"),
            (REDIS_STORE, "runs_skipped"),
            (REDIS_STORE, "agents_registered"),
        ],
        "test_a_moved_slot_is_one_redirect_and_one_slot_map_refresh": [
            (REDIS_STORE, "cluster_redirects"),
            (REDIS_STORE, "slot_map_refreshes"),
        ],
    },
    "test_exporter_pipeline": {
        "test_spans_after_shutdown_are_not_queued_and_are_counted": [
            (PROCESSOR, "spans_after_shutdown"),
        ],
        "test_a_trace_that_lost_an_event_is_dropped_whole_and_counted": [
            (PROCESSOR, "open_runs"),
        ],
        "test_one_unstorable_run_blocks_neither_the_other_runs_nor_learning": [
            (PROCESSOR, "runs_unstorable"),
        ],
        "test_runs_are_learned_once_per_interval_and_flush_learns_at_once": [
            (PROCESSOR, "runs_pending_learning"),
            (PROCESSOR, "batches_merged"),
        ],
    },
    "test_run_identity": {
        "test_a_failing_hint_lookup_answers_none_and_is_counted": [
            (PROCESSOR, "hint_errors"),
        ],
        "test_calls_in_no_run_are_counted": [
            (PROCESSOR, "calls_outside_runs"),
        ],
    },
    "test_processor_redis": {
        "test_outage_longer_than_the_buffer_drops_oldest_and_counts": [
            (PROCESSOR, "runs_dropped_buffer_full"),
        ],
    },
    "test_redis_store": {
        "test_a_batch_of_many_agents_is_one_round_trip": [
            (REDIS_STORE, "commands"),
            (REDIS_STORE, "round_trips"),
        ],
        "test_a_batch_id_is_applied_once": [
            (REDIS_STORE, "batches_deduplicated"),
        ],
        "test_retention_by_count_keeps_the_newest_and_the_hash_in_step": [
            (REDIS_STORE, "runs_expired"),
        ],
    },
    "test_assembler_states": {
        "test_a_refused_transition_is_counted_in_the_processor_stats": [
            (PROCESSOR, "illegal_transitions"),
        ],
    },
    "test_redis_recovery": {
        "test_a_lost_registry_is_rebuilt_with_every_agent_this_store_wrote": [
            (REDIS_STORE, "registry_rebuilds"),
        ],
    },
}

#: (whose stats, counter) -> "module::test function" asserting its exact value.
EXACT_TESTS: dict[tuple[str, str], str] = {
    counter: f"{module}::{function}"
    for module, functions in _ASSERTED_BY.items()
    for function, counters in functions.items()
    for counter in counters
}


def exact_assertion(name: str) -> re.Pattern[str]:
    """What counts as asserting ``name`` exactly: a ``["name"]`` subscript beside ``==``.

    ``stats["name"] == 3`` and ``a == stats()["name"]`` match; ``> 0``, ``>=`` and a
    mere mention do not. The other side must be something other than a bare ``0``
    (a counter only ever asserted to be zero would survive its increment's removal).
    """
    subscript = rf"\[\s*[\"']{name}[\"']\s*\]"
    return re.compile(rf"{subscript}\s*==\s*(?!0\b)\S|==\s*[^=\n]*?{subscript}(?!\s*==\s*0\b)")


def _test_function(reference: str) -> Callable[..., Any]:
    module_name, function_name = reference.split("::")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    assert callable(function), f"{reference} does not exist"
    assert function_name.startswith("test_"), f"{reference} is not a test"
    return function  # type: ignore[no-any-return]


def test_every_documented_counter_names_a_test_that_asserts_it_exactly() -> None:
    documented = {(owner, name) for owner, names in documented_counters().items() for name in names}
    assert sorted(documented - set(EXACT_TESTS)) == [], "documented counters without a test"
    assert sorted(set(EXACT_TESTS) - documented) == [], "tests of undocumented counters"
    listed = [pair for tests in _ASSERTED_BY.values() for pairs in tests.values() for pair in pairs]
    assert len(listed) == len(EXACT_TESTS), "a counter is listed under two tests"
    for (owner, name), reference in EXACT_TESTS.items():
        source = inspect.getsource(_test_function(reference))
        assert exact_assertion(name).search(source), f"{reference}: {owner}[{name!r}] not exact"


def test_the_exact_assertion_pattern_tells_exact_from_loose() -> None:
    pattern = exact_assertion("runs_stored")
    for exact in ('stats["runs_stored"] == 3', "x == s()['runs_stored']", 's["runs_stored"] == n'):
        assert pattern.search(exact), exact
    for loose in ('stats["runs_stored"] > 0', 's["runs_stored"] >= 1', 's["runs_stored"] == 0'):
        assert not pattern.search(loose), loose
    assert not pattern.search('stats["runs_stored_x"] == 3')


# --- scenarios: the hot path and the assembler ------------------------------------------------


def _agent_run(tracer: trace.Tracer, agent: str, calls: int = 2) -> None:
    """One run: an agent span with ``calls`` LLM calls beneath it, then a tool call."""
    with tracer.start_as_current_span("invoke_agent " + agent, attributes=agent_attrs(agent)):
        for _ in range(calls):
            with tracer.start_as_current_span("chat m", attributes=LLM):
                pass
        with tracer.start_as_current_span("execute_tool t", attributes=TOOL):
            pass


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class _BlockingStore(MemoryStore):
    """Holds the exporter in its first ``save_runs`` until released, so the queue fills."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        self.entered.set()
        assert self.release.wait(30)
        return super().save_runs(runs)


def test_a_full_queue_drops_events_and_their_runs_whole() -> None:
    store = _BlockingStore()
    provider, processor, tracer = make_processor(
        store=store, max_queue_size=4, max_export_batch_size=4, run_grace_seconds=0
    )
    try:
        # A run of 4 events wakes the exporter, which takes them and blocks writing it.
        with tracer.start_as_current_span("invoke_agent first", attributes=agent_attrs("first")):
            tracer.start_span("chat m", attributes=LLM).end()
        assert store.entered.wait(10)
        assert processor.stats()["queue_depth"] == 0
        root = tracer.start_span("invoke_agent lossy", attributes=agent_attrs("lossy"))
        context = trace.set_span_in_context(root)
        tracer.start_span("chat m", context, attributes=LLM).end()
        tracer.start_span("chat m", context, attributes=LLM).end()  # its end: a fifth event
        stats = processor.stats()
        assert stats["queue_depth"] == 4
        assert stats["events_dropped"] == 1
        store.release.set()
        wait_for(lambda: processor.stats()["queue_depth"] == 0)
        root.end()  # queued: the run completes, but its trace lost an event
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["events_dropped"] == 1
        assert stats["runs_dropped_overload"] == 1
        assert stats["runs_completed"] == 1  # the first run only
        assert stats["runs_stored"] == stats["runs_learned"] == 1
        assert store.list_runs("lossy") == []
        assert stats["spans_started"] == stats["spans_ended"] == 5
    finally:
        store.release.set()
        provider.shutdown()


def test_a_run_with_open_spans_is_stored_truncated_and_its_late_span_counted() -> None:
    provider, processor, tracer = make_processor(run_grace_seconds=0)
    try:
        _agent_run(tracer, "whole")
        root = tracer.start_span("invoke_agent cut", attributes=agent_attrs("cut"))
        open_llm = tracer.start_span("chat m", trace.set_span_in_context(root), attributes=LLM)
        root.end()  # the LLM call is still open and there is no grace time
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["runs_completed"] == 2
        assert stats["runs_truncated"] == 1
        assert stats["runs_stored"] == 2
        assert stats["runs_learned"] == 1  # the truncated run is never learned
        assert [run.truncated for run in processor.store.list_runs("cut")] == [True]
        assert stats["late_spans"] == 0
        open_llm.end()
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["late_spans"] == 1
        assert stats["runs_completed"] == 2 and stats["runs_learned"] == 1
    finally:
        provider.shutdown()


def test_span_events_seen_twice_are_counted_once_each() -> None:
    provider, processor, tracer = make_processor()
    try:
        with tracer.start_as_current_span("invoke_agent twice", attributes=agent_attrs("twice")):
            llm: Any = tracer.start_span("chat m", attributes=LLM)
            processor.on_start(llm)  # handed to us a second time
            llm.end()
            processor.on_end(llm)  # and its end again
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["duplicate_spans"] == 2
        assert stats["spans_started"] == 3 and stats["spans_ended"] == 3
        assert stats["runs_completed"] == stats["runs_stored"] == 1
        assert [len(run.calls) for run in processor.store.list_runs("twice")] == [1]
    finally:
        provider.shutdown()


def test_traces_beyond_the_capacity_are_evicted_and_counted() -> None:
    provider, processor, tracer = make_processor(max_open_traces=2, max_spans_per_trace=3)
    try:
        roots = [
            tracer.start_span(f"invoke_agent a{i}", attributes=agent_attrs(f"a{i}"))
            for i in range(3)
        ]
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["traces_evicted_capacity"] == 1  # the oldest made room for the third
        assert stats["runs_evicted"] == 1
        assert stats["open_runs"] == 2
        # One trace grows past max_spans_per_trace: it is evicted too.
        context = trace.set_span_in_context(roots[2])
        children = [tracer.start_span("chat m", context, attributes=LLM) for _ in range(3)]
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["traces_evicted_capacity"] == 2
        assert stats["runs_evicted"] == 2
        for span in [*children, *roots]:
            span.end()
    finally:
        provider.shutdown()


def test_spans_beyond_the_live_bounds_are_counted_untracked() -> None:
    # One open trace allowed: 16 open spans are tracked for hints, and one trace's state.
    provider, processor, tracer = make_processor(max_open_traces=1, max_queue_size=20_000)
    try:
        with tracer.start_as_current_span("invoke_agent long", attributes=agent_attrs("long")):
            for _ in range(MAX_ENDED_PER_TRACE + 2):  # two ended spans beyond the bound
                tracer.start_span("chat m", attributes=LLM).end()
        assert processor.stats()["live_spans_untracked"] == 2
        root = tracer.start_span("invoke_agent wide", attributes=agent_attrs("wide"))
        context = trace.set_span_in_context(root)
        opened = [tracer.start_span("step", context) for _ in range(16)]  # 17 open: one over
        stats = processor.stats()
        assert stats["live_spans"] == 16
        assert stats["live_spans_untracked"] == 3
        other = tracer.start_span("invoke_agent other")  # a second trace: no room for either
        assert processor.stats()["live_spans_untracked"] == 5
        for span in [other, *opened, root]:
            span.end()
        assert processor.force_flush(30_000)
        stats = processor.stats()
        assert stats["live_spans_untracked"] == 5
        assert stats["live_spans"] == 0
    finally:
        provider.shutdown()


def test_errors_on_the_hot_path_are_swallowed_and_counted() -> None:
    provider, processor, _ = make_processor()
    try:
        not_a_span: Any = object()
        processor.on_start(not_a_span)
        processor.on_end(not_a_span)
        processor.on_end(not_a_span)
        stats = processor.stats()
        assert stats["hot_path_errors"] == 3
        assert stats["spans_started"] == stats["spans_ended"] == 0
    finally:
        provider.shutdown()


# --- scenarios: learning ----------------------------------------------------------------------


def _field_learner(fields: int) -> Callable[[Any, Sequence[RunRecord]], Any]:
    def learn(self: Any, runs: Sequence[RunRecord]) -> dict[str, dict[str, Mergeable]]:
        return {run.agent_id: {f"f{i}": Tally(1) for i in range(fields)} for run in runs}

    return learn


def test_fields_beyond_the_per_agent_bound_are_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound = _learned_state.MAX_FIELDS_PER_AGENT
    monkeypatch.setattr(ToolParallelismLearner, "learn", _field_learner(bound + 5))
    monkeypatch.setattr(ToolParallelismLearner, "view", lambda self, agent, fields: None)
    provider, processor, tracer = make_processor(learners=("tool_parallelism",))
    try:
        _agent_run(tracer, "wide")
        assert processor.force_flush(10_000)
        assert processor.stats()["learned_fields_dropped"] == 5
        assert len(processor.store.load_fields("wide", "tool_parallelism")) == bound
        _agent_run(tracer, "wide")  # the same fields again: the known ones are kept
        assert processor.force_flush(10_000)
        assert processor.stats()["learned_fields_dropped"] == 10
        assert processor.stats()["exporter_errors"] == 0
    finally:
        provider.shutdown()


def test_a_failing_learner_is_counted_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, runs: Sequence[RunRecord]) -> Any:
        raise RuntimeError("learner bug")

    monkeypatch.setattr(ToolParallelismLearner, "learn", broken)
    provider, processor, tracer = make_processor(learn_interval_millis=60_000)
    try:
        _agent_run(tracer, "a")
        _agent_run(tracer, "b")
        assert processor.force_flush(10_000)  # one interval, two runs: one failure
        stats = processor.stats()
        assert stats["learner_errors"] == 1
        assert stats["runs_learned"] == 2 and stats["batches_merged"] == 1  # the trie's
        assert processor.store.load_fields("a", "tool_parallelism") == {}
        assert processor.store.load_fields("a", PredictionTrieLearner.name) != {}
    finally:
        provider.shutdown()


def test_agents_beyond_the_bound_are_refused_or_make_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, processor, tracer = make_processor(max_agents=2)
    try:
        for agent in ("a", "b", "c", "c", "d"):  # one interval: c and d refused once each
            _agent_run(tracer, agent)
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["agents_learned"] == 2
        assert stats["agents_over_limit"] == 2
        assert stats["agents_evicted"] == 0
        assert stats["runs_learned"] == 2 and stats["runs_stored"] == 5  # stored all the same
        _agent_run(tracer, "c")  # a new interval: refused again
        assert processor.force_flush(10_000)
        assert processor.stats()["agents_over_limit"] == 3
        monkeypatch.setattr(_learned_state, "AGENT_IDLE_SECONDS", 0.0)  # a and b are idle now
        _agent_run(tracer, "c")
        _agent_run(tracer, "d")
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["agents_evicted"] == 2
        assert stats["agents_learned"] == 2
        assert stats["agents_over_limit"] == 3
        assert stats["runs_learned"] == 4
    finally:
        provider.shutdown()


# --- scenarios: the store's answers -----------------------------------------------------------


class _ScriptedStore(MemoryStore):
    """An in-memory store whose writes fail as told."""

    def __init__(self, *, unreachable: bool = False, merge_raises: bool = False) -> None:
        super().__init__()
        self.unreachable = unreachable
        self.merge_raises = merge_raises

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        if self.unreachable:
            raise StoreUnavailableError("down")
        return super().save_runs(runs)

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        if self.unreachable:
            raise StoreUnavailableError("down")
        if self.merge_raises:
            raise TypeError("cannot encode this delta")
        return super().merge(batch_id, deltas)


def test_a_batch_the_store_raises_on_is_counted_unstorable() -> None:
    provider, processor, tracer = make_processor(store=_ScriptedStore(merge_raises=True))
    try:
        _agent_run(tracer, "a")
        assert processor.force_flush(10_000)
        _agent_run(tracer, "a")
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["batches_unstorable"] == 2
        assert stats["batches_merged"] == 0 and stats["batches_pending_store"] == 0
        assert stats["runs_stored"] == 2
    finally:
        provider.shutdown()


class _AppliedBeforeStore(MemoryStore):
    """Applies a batch, then answers as to a retry: the write had already been applied."""

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        super().merge(batch_id, deltas)
        return super().merge(batch_id, deltas)


def test_a_batch_the_store_had_applied_already_is_counted_deduplicated() -> None:
    provider, processor, tracer = make_processor(store=_AppliedBeforeStore())
    try:
        _agent_run(tracer, "a")
        assert processor.force_flush(10_000)
        _agent_run(tracer, "b")
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["batches_deduplicated"] == 2
        assert stats["batches_merged"] == 0
    finally:
        provider.shutdown()


def test_an_unreachable_store_keeps_what_it_can_and_counts_the_rest() -> None:
    store = _ScriptedStore(unreachable=True)
    runs = MAX_PENDING_BATCHES + 2
    # Nothing wakes the exporter before the flush; then one forced write of each kind.
    provider = TracerProvider()
    processor = AdaptiveSpanProcessor(
        store=store,
        per_run_batches=True,  # one learned batch per run
        schedule_delay_millis=60_000,
        learn_interval_millis=60_000,
        max_queue_size=20_000,
        max_export_batch_size=20_000,
        retry_buffer_runs=runs - 3,
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    try:
        for _ in range(runs):
            with tracer.start_as_current_span("invoke_agent a", attributes=agent_attrs("a")):
                with tracer.start_as_current_span("chat m", attributes=LLM):
                    pass
        assert not processor.force_flush(30_000)  # the store took nothing
        stats = processor.stats()
        assert stats["store_errors"] == 2  # one failed write of runs, one of learned state
        assert stats["runs_pending_store"] == runs - 3
        assert stats["runs_dropped_buffer_full"] == 3
        assert stats["batches_pending_store"] == runs - 2
        assert stats["batches_dropped_buffer_full"] == 2
        assert stats["runs_stored"] == stats["batches_merged"] == 0
        store.unreachable = False
        assert processor.force_flush(30_000)
        stats = processor.stats()
        assert stats["store_errors"] == 2
        assert stats["runs_stored"] == runs - 3
        assert stats["batches_merged"] == runs - 2
        assert stats["runs_pending_store"] == stats["batches_pending_store"] == 0
    finally:
        store.unreachable = False
        provider.shutdown()


class _SharedStore(MemoryStore):
    """An in-process store treated as shared (others write it); one agent cannot be read."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[str] = set()
        self.versions_fail = False
        self.unreachable = False

    def agent_versions(self) -> dict[str, int | None]:
        if self.versions_fail:
            raise RuntimeError("unexpected reply")
        if self.unreachable:
            raise StoreUnavailableError("timed out")
        return super().agent_versions()

    def load_fields(self, agent_id: str, learner: str) -> dict[str, Mergeable]:
        if agent_id in self.broken:
            raise ValueError("this agent's state cannot be decoded")
        return super().load_fields(agent_id, learner)


def test_refreshes_and_their_failures_are_counted() -> None:
    store = _SharedStore()
    provider, processor, tracer = make_processor(
        store=store, learners=("trie",), refresh_interval_seconds=3600
    )
    try:
        _agent_run(tracer, "mine")
        assert processor.force_flush(10_000)
        stats = processor.stats()
        # The first cycle refreshes after learning the flushed run: it re-reads our agent.
        assert stats["refreshes"] == 1
        assert stats["agents_refreshed"] == 1
        # Other processes write two agents; one of them cannot be read back.
        fields = store.load_fields("mine", "trie")
        store.merge("elsewhere:1", [AgentDelta("theirs", "trie", fields)])
        store.merge("elsewhere:2", [AgentDelta("broken", "trie", fields)])
        store.broken.add("broken")
        exporter = processor._exporter
        exporter.refresh()
        stats = processor.stats()
        assert stats["refreshes"] == 2
        assert stats["agents_refreshed"] == 2  # theirs; ours did not change
        assert stats["refresh_errors"] == 1
        assert processor.cache.get("theirs") is not None
        exporter.refresh()  # only the broken one is still unread: tried again, fails again
        stats = processor.stats()
        assert stats["refreshes"] == 3
        assert stats["agents_refreshed"] == 2
        assert stats["refresh_errors"] == 2
        assert stats["exporter_errors"] == 0
        # A refresh step failing for no reason of one agent's is an exporter error.
        store.versions_fail = True
        processor._exporter._learned._next_refresh = 0.0
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["exporter_errors"] == 1
        assert stats["refreshes"] == 3
    finally:
        provider.shutdown()


def test_reads_that_fail_are_store_errors() -> None:
    store = _SharedStore()
    store.unreachable = True
    provider, processor, tracer = make_processor(
        store=store, learners=("trie",), refresh_interval_seconds=3600
    )
    try:
        assert processor.force_flush(10_000)  # the first refresh cannot reach the store
        stats = processor.stats()
        assert stats["store_errors"] == 1
        assert stats["refreshes"] == 0
        store.unreachable = False
        store.broken.add("new")  # its learned state cannot be read when learning starts
        _agent_run(tracer, "new")
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["store_errors"] == 2
        assert stats["runs_learned"] == 1 and stats["batches_merged"] == 1
        assert stats["exporter_errors"] == 0
    finally:
        provider.shutdown()


def test_a_span_the_assembler_fails_on_is_an_exporter_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, processor, tracer = make_processor()
    assembler = processor._exporter._assembler

    def failing_on_poison(step: Any) -> Any:
        def step_or_fail(span: Any) -> None:
            if span.start_name == "poison":
                raise RuntimeError("assembler bug")
            step(span)

        return step_or_fail

    # A leaf span's start and end may be taken apart or in one step: poison both ways.
    for name in ("span_started", "span_started_and_ended"):
        monkeypatch.setattr(assembler, name, failing_on_poison(getattr(assembler, name)))
    try:
        with tracer.start_as_current_span("invoke_agent a", attributes=agent_attrs("a")):
            tracer.start_span("poison").end()
            tracer.start_span("chat m", attributes=LLM).end()
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["exporter_errors"] == 1
        assert stats["runs_completed"] == stats["runs_stored"] == 1
    finally:
        provider.shutdown()


# --- scenarios: the Redis store ---------------------------------------------------------------


def _redis_store(url: str, prefix: str, **options: Any) -> RedisStore:
    return RedisStore.from_url(url, key_prefix=prefix, learners=learners(), **options)


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_redis_store_write_counters_are_exact(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    store = _redis_store(redis_url, key_prefix)
    try:
        assert store.save_runs([make_run("a", "r1"), make_run("a", "r2")]) == 2
        stats = store.stats()
        assert stats["runs_saved"] == 2
        assert stats["runs_replaced"] == 0
        assert stats["agents_registered"] == 1
        store.save_runs([make_run("a", "r2"), make_run("a", "r3"), make_run("b", "r1")])
        stats = store.stats()
        assert stats["runs_saved"] == 5
        assert stats["runs_replaced"] == 1  # r2 again
        assert stats["agents_registered"] == 2
        # An agent whose runs key holds something else: its run is skipped, counted once.
        admin.set(store.keys.runs("bad"), "not a hash")
        assert store.save_runs([make_run("bad", "r1"), make_run("a", "r4")]) == 1
        stats = store.stats()
        assert stats["runs_saved"] == 6
        assert stats["runs_skipped"] == 1
        assert stats["bad_data"] == 1
        assert stats["agents_registered"] == 3  # listed all the same: it has keys
        store.merge("b1", [tally_delta("a", runs=Tally(1)), tally_delta("b", runs=Tally(1))])
        assert store.stats()["batches_applied"] == 2  # per agent
        # A shard of the wrong type blocks that agent's merge (on_bad_data=ignore).
        admin.rpush(store.keys.shard("bad", "tally", store._writer), "not", "a", "hash")
        store.merge("b2", [tally_delta("bad", runs=Tally(1)), tally_delta("a", runs=Tally(1))])
        stats = store.stats()
        assert stats["batches_skipped"] == 1
        assert stats["batches_applied"] == 3
        assert stats["bad_data"] == 2
        assert stats["agents_registered"] == 3  # nobody new: 'bad' was listed already
        assert store.agents() == ["a", "b", "bad"]
        assert store.run_count("a") == 4
    finally:
        store.close()


def test_runs_and_batches_of_an_agent_with_bad_data_are_not_written(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    provider, processor, tracer = make_processor(redis_url=redis_url, key_prefix=key_prefix)
    store = processor.store
    assert isinstance(store, RedisStore)
    try:
        admin.set(store.keys.runs("blocked"), "not a hash")
        _agent_run(tracer, "blocked")
        _agent_run(tracer, "fine")
        assert processor.force_flush(10_000)
        stats = processor.stats()
        assert stats["runs_completed"] == 2
        assert stats["runs_not_written"] == 1
        assert stats["runs_stored"] == 1
        assert stats["runs_learned"] == 2
        assert store.stats()["runs_skipped"] == 1
        assert store.run_count("fine") == 1
    finally:
        provider.shutdown()


def test_a_folded_shard_is_counted_and_its_writer_redoes_its_merge(
    redis_url: str, key_prefix: str
) -> None:
    first = _redis_store(redis_url, key_prefix, writer_idle_seconds=0.2)
    second = _redis_store(redis_url, key_prefix, writer_idle_seconds=0.2)
    try:
        assert first.merge("f1", [tally_delta("agent", runs=Tally(1))])
        time.sleep(0.4)  # the first writer is idle: a reader folds its shard into the base
        assert second.load_fields("agent", "tally") == {"runs": Tally(1)}
        assert second.stats()["shards_folded"] == 1
        assert first.stats()["merge_retries"] == 0
        # The first writer's view of its own shard is stale now: its next merge is redone.
        assert first.merge("f2", [tally_delta("agent", runs=Tally(1))])
        assert first.stats()["merge_retries"] == 1
        assert first.stats()["shards_folded"] == 0
        assert second.load_fields("agent", "tally") == {"runs": Tally(2)}
    finally:
        first.close()
        second.close()



def test_a_moved_slot_is_one_redirect_and_one_slot_map_refresh(
    own_cluster: RedisClusterServers, key_prefix: str
) -> None:
    store = _redis_store(own_cluster.url, key_prefix, cluster=True)
    admin = RedisCluster.from_url(own_cluster.url)
    try:
        meta = store.keys.meta("moving")
        assert store.save_runs([make_run("moving", "r1")]) == 1
        assert store.merge("b1", [tally_delta("moving", runs=Tally(1))])
        stats = store.stats()
        assert stats["cluster_redirects"] == 0
        assert stats["slot_map_refreshes"] == 0
        port = admin.get_node_from_key(meta).port  # type: ignore[no-untyped-call]
        source = next(node for node in own_cluster.nodes if node.port == port)
        target = next(node for node in own_cluster.nodes if node.port != port)
        slot = admin.keyslot(meta)  # type: ignore[no-untyped-call]
        own_cluster.migrate_slot(slot, source, target)

        assert store.save_runs([make_run("moving", "r2")]) == 1  # sent to the old owner first
        stats = store.stats()
        assert stats["cluster_redirects"] == 1
        assert stats["slot_map_refreshes"] == 1
        assert store.merge("b2", [tally_delta("moving", runs=Tally(1))])  # the new map: direct
        stats = store.stats()
        assert stats["cluster_redirects"] == 1
        assert stats["slot_map_refreshes"] == 1
        assert store.run_count("moving") == 2
        assert store.load_fields("moving", "tally") == {"runs": Tally(2)}
    finally:
        admin.close()
        store.close()
