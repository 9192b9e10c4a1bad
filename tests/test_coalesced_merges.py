"""Learned batches that wait together go to the store together: one write per agent."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import pytest
from opentelemetry.sdk.trace import TracerProvider

from counting import count_calls
from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor
from otel_adaptive._counters import ExporterCounters
from otel_adaptive._logs import RateLimitedLog
from otel_adaptive._store_writer import StoreWriter
from otel_adaptive.cli._replay import _CountingStore
from otel_adaptive.learners import build_learners
from otel_adaptive.learners.base import Mergeable
from otel_adaptive.learners.trie import PredictionTrieLearner
from otel_adaptive.records import CallRecord, RunRecord
from otel_adaptive.stats import RunningStats
from otel_adaptive.store.base import AgentDelta, Store, StoreUnavailableError
from otel_adaptive.store.memory import MemoryStore
from otel_adaptive.store.redis import RedisStore
from redis_helpers import ROOT_ANY_FIELD, Tally, learners, tally_delta
from spans import LLM, MS, agent_attrs, timed_span, usage


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisStore]:
    created = RedisStore.from_url(redis_url, key_prefix=key_prefix, learners=learners())
    yield created
    created.close()


def spent(store: RedisStore, before: Mapping[str, int]) -> dict[str, int]:
    after = store.stats()
    return {name: after[name] - before[name] for name in ("commands", "round_trips")}


def tally(store: Store, agent: str, field: str = "runs") -> int:
    value = store.load_fields(agent, "tally").get(field)
    assert isinstance(value, Tally), value
    return value.count


# -- the store -------------------------------------------------------------------------------


def test_n_batches_for_one_agent_are_one_script_call(store: RedisStore) -> None:
    assert store.merge("warm-up", [tally_delta("a", runs=Tally(1))])  # registered, shard known
    batches = [(f"b{i}", [tally_delta("a", runs=Tally(i), other=Tally(1))]) for i in range(1, 21)]

    before = store.stats()
    assert store.merge_batches(batches) == [True] * 20
    assert spent(store, before) == {"commands": 1, "round_trips": 1}
    assert tally(store, "a") == 1 + sum(range(1, 21))
    assert tally(store, "a", "other") == 20
    assert store.stats()["batches_applied"] - before["batches_applied"] == 20


def test_several_agents_in_several_batches_take_one_round_trip(store: RedisStore) -> None:
    store.merge_batches([("warm", [tally_delta(agent, runs=Tally(1)) for agent in "abc"])])
    batches = [(f"b{i}", [tally_delta(agent, runs=Tally(1)) for agent in "abc"]) for i in range(8)]

    before = store.stats()
    assert store.merge_batches(batches) == [True] * 8
    assert spent(store, before) == {"commands": 3, "round_trips": 1}  # one call per agent
    assert [tally(store, agent) for agent in "abc"] == [9, 9, 9]


def test_batches_applied_before_count_once_and_the_rest_are_written(store: RedisStore) -> None:
    for i in range(3):
        assert store.merge(f"b{i}", [tally_delta("a", runs=Tally(10**i))])
    before = store.stats()

    batches = [(f"b{i}", [tally_delta("a", runs=Tally(10**i))]) for i in range(6)]
    assert store.merge_batches(batches) == [False] * 3 + [True] * 3
    assert tally(store, "a") == 111_111  # each batch exactly once
    stats = store.stats()
    assert stats["batches_deduplicated"] - before["batches_deduplicated"] == 3
    assert stats["batches_applied"] - before["batches_applied"] == 3
    assert store.merge_batches(batches) == [False] * 6  # all of them, a second time
    assert tally(store, "a") == 111_111


def test_a_batch_is_applied_when_one_of_its_agents_had_not_seen_it(store: RedisStore) -> None:
    assert store.merge("shared", [tally_delta("a", runs=Tally(1))])
    outcome = store.merge_batches(
        [("shared", [tally_delta("a", runs=Tally(1)), tally_delta("b", runs=Tally(1))])]
    )
    assert outcome == [True]
    assert (tally(store, "a"), tally(store, "b")) == (1, 1)


# -- the writer ------------------------------------------------------------------------------


class Outage(Store):
    """Passes everything to a store, except while ``down``; records each merge call."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.learners)
        self.inner = inner
        self.down = False
        self.calls: list[list[str]] = []

    def _check(self, batch_ids: list[str]) -> None:
        self.calls.append(batch_ids)
        if self.down:
            raise StoreUnavailableError("down for the test")

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        self._check([batch_id])
        return self.inner.merge(batch_id, deltas)

    def merge_batches(self, batches: Sequence[tuple[str, Sequence[AgentDelta]]]) -> list[bool]:
        self._check([batch_id for batch_id, _ in batches])
        return self.inner.merge_batches(batches)

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        return self.inner.save_runs(runs)

    def list_runs(self, agent_id: str, limit: int | None = None) -> list[RunRecord]:
        return self.inner.list_runs(agent_id, limit)

    def run_count(self, agent_id: str) -> int:
        return self.inner.run_count(agent_id)

    def agents(self) -> list[str]:
        return self.inner.agents()

    def load_fields(self, agent_id: str, learner: str) -> dict[str, Mergeable]:
        return self.inner.load_fields(agent_id, learner)


def writer_for(store: Store) -> tuple[StoreWriter, ExporterCounters]:
    counters = ExporterCounters()
    return StoreWriter(store, 100, counters, RateLimitedLog(logging.getLogger("test"))), counters


def test_a_backlog_after_an_outage_is_one_write_per_agent(store: RedisStore) -> None:
    outage = Outage(store)
    writer, counters = writer_for(outage)
    store.merge("warm-up", [tally_delta(agent, runs=Tally(1)) for agent in "ab"])
    outage.down = True
    for i in range(30):
        writer.add_deltas(
            f"b{i}", [tally_delta("a", runs=Tally(1)), tally_delta("b", runs=Tally(2))]
        )
        writer.write(force=True)  # each attempt fails while the store is down
    assert writer.pending_batches == 30
    assert counters.store_errors == 30

    outage.down = False
    outage.calls.clear()
    before = store.stats()
    writer.write(force=True)

    assert outage.calls == [[f"b{i}" for i in range(30)]]  # the whole backlog in one call
    assert spent(store, before) == {"commands": 2, "round_trips": 1}
    assert writer.idle
    assert (counters.batches_merged, counters.batches_deduplicated) == (30, 0)
    assert (tally(store, "a"), tally(store, "b")) == (31, 61)

    for i in range(30):  # the same batches again (a retry): counted, not learned twice
        writer.add_deltas(f"b{i}", [tally_delta("a", runs=Tally(1))])
    writer.write(force=True)
    assert (counters.batches_merged, counters.batches_deduplicated) == (30, 30)
    assert tally(store, "a") == 31


def test_a_store_with_the_default_merge_batches_is_written_batch_by_batch() -> None:
    memory = MemoryStore(learners=learners())
    calls: list[str] = []

    class Counting(MemoryStore):
        def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
            calls.append(batch_id)
            return memory.merge(batch_id, deltas)

    writer, counters = writer_for(Counting(learners=learners()))
    for i in range(5):
        writer.add_deltas(f"b{i}", [tally_delta("a", runs=Tally(1))])
    writer.write(force=True)
    assert calls == [f"b{i}" for i in range(5)]
    assert counters.batches_merged == 5
    assert tally(memory, "a") == 5


# -- end to end: a replay's one batch per run --------------------------------------------------


def test_a_replays_batches_waiting_out_an_outage_are_one_write(
    redis_url: str, key_prefix: str
) -> None:
    config = AdaptiveConfig(redis_url=redis_url, key_prefix=key_prefix)
    store = RedisStore.from_url(
        redis_url, key_prefix=key_prefix, learners=build_learners(config.learners)
    )
    outage = Outage(store)
    # One merge batch per run, as `otel-adaptive replay` learns.
    processor = AdaptiveSpanProcessor(config, store=outage, per_run_batches=True)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    try:
        outage.down = True
        runs = 25
        for i in range(runs):
            with timed_span(tracer, "run", 0, 100, agent_attrs("replayed"), base_ns=10**18 + i):
                for k in range(2):
                    end = usage(7)
                    with timed_span(tracer, "chat m", k * 10, k * 10 + 5, LLM, end_attributes=end):
                        pass
        processor.force_flush(30_000)  # learned; the merges wait for the store
        assert processor.stats()["batches_merged"] == 0
        outage.down, outage.calls = False, []
        before = store.stats()

        assert processor.force_flush(30_000)
        assert len(outage.calls) == 1 and len(outage.calls[0]) == runs  # one call, every batch
        assert processor.stats()["batches_merged"] == runs  # each batch counted
        assert store.stats()["batches_applied"] - before["batches_applied"] == runs
        root = store.load_fields("replayed", "trie")[ROOT_ANY_FIELD]
        assert root.remaining_calls.count == 2 * runs  # type: ignore[attr-defined]
        assert store.run_count("replayed") == runs
    finally:
        provider.shutdown()


def test_the_replay_commands_store_passes_batches_on_together(store: RedisStore) -> None:
    outage = Outage(store)
    counting = _CountingStore(outage)
    batches = [(f"b{i}", [tally_delta("a", runs=Tally(1))]) for i in range(4)]
    assert counting.merge_batches(batches) == [True] * 4
    assert outage.calls == [["b0", "b1", "b2", "b3"]]
    assert tally(store, "a") == 4


def test_a_batch_id_given_twice_in_one_call_is_applied_once(store: RedisStore) -> None:
    batches = [(f"b{i % 2}", [tally_delta("a", runs=Tally(1))]) for i in range(4)]
    assert store.merge_batches(batches) == [True, True, False, False]
    assert tally(store, "a") == 2


# -- end to end: one merge per learned field and interval ---------------------------------------


def test_each_learned_field_is_merged_once_per_interval(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process's view of the agent and its shard in Redis hold the same values:
    # an interval's delta is merged into them once, not once each.
    processor = AdaptiveSpanProcessor(
        AdaptiveConfig(redis_url=redis_url, key_prefix=key_prefix, learners=("trie",))
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")

    def runs(first: int) -> None:
        for i in range(first, first + 3):
            with timed_span(tracer, "run", 0, 100, agent_attrs("once"), base_ns=10**18 + i):
                for k in range(3):
                    with timed_span(tracer, "chat m", k * 10, k * 10 + 5, LLM,
                                    end_attributes=usage(7 + k)):  # fmt: skip
                        pass

    try:
        runs(0)
        assert processor.force_flush(30_000)
        fields = processor.store.load_fields("once", "trie")
        metric_merges = count_calls(monkeypatch, RunningStats, "merge")
        runs(10)
        assert processor.force_flush(30_000)
        monkeypatch.undo()
        assert processor.stats()["batches_merged"] == 2
        # Fields fed by the same calls share one value (a leaf's own and subtree
        # fields): each distinct value's four metrics are merged once.
        distinct = len({id(value) for value in fields.values()})
        assert distinct < len(fields)
        assert metric_merges.count == 4 * distinct
        root = processor.store.load_fields("once", "trie")[ROOT_ANY_FIELD]
        assert root.remaining_calls.count == 18  # type: ignore[attr-defined]
    finally:
        provider.shutdown()


def test_the_shard_reuses_the_views_merges_and_folds_waiting_batches_in_order(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One interval's deltas: the shard's merge is the one the process's view made.
    # Two intervals written together fold in batch by batch, into the view's values.
    store = RedisStore.from_url(
        redis_url, key_prefix=key_prefix, learners=build_learners(("trie",))
    )
    learner = PredictionTrieLearner()
    try:
        deltas = [learner.learn([_two_call_run(i)])["folded"] for i in range(4)]
        assert store.merge("b0", [AgentDelta("folded", "trie", deltas[0])])
        view = dict(deltas[0])  # what the exporter's view holds: the very values written

        def learned(delta: Mapping[str, Mergeable]) -> None:
            for key, value in delta.items():
                view[key] = view[key].merge(value)

        learned(deltas[1])
        metric_merges = count_calls(monkeypatch, RunningStats, "merge")
        assert store.merge("b1", [AgentDelta("folded", "trie", deltas[1])])
        assert metric_merges.count == 0
        monkeypatch.undo()

        learned(deltas[2])
        learned(deltas[3])
        batches = [(f"b{i}", [AgentDelta("folded", "trie", deltas[i])]) for i in (2, 3)]
        assert store.merge_batches(batches) == [True, True]
        stored = store.load_fields("folded", "trie")
        assert {key: value.to_bytes() for key, value in stored.items()} == {
            key: value.to_bytes() for key, value in view.items()
        }
    finally:
        store.close()


def _two_call_run(number: int) -> RunRecord:
    calls = tuple(
        CallRecord(
            kind="llm", name="chat", span_id=f"{number:08x}{k:08x}", parent_span_id=None,
            path=("step",), start_ns=k * 10 * MS, end_ns=(k * 10 + 5) * MS, output_tokens=7 + k,
        )
        for k in range(2)
    )  # fmt: skip
    return RunRecord(
        id=f"run-{number}", agent_id="folded", trace_id=f"{number:032x}",
        start_ns=0, end_ns=30 * MS, calls=calls,
    )  # fmt: skip
