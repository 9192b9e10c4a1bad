"""Batch learning of the prediction trie: what a batch teaches is what its calls teach.

The learner groups a batch's calls by scope path and call index and summarises
each field once from its groups. These tests check it against a reference that
follows the design (§5.1) one call at a time, adding each value to each field
it feeds, and check that batches split any way merge into what the whole teaches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import count, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_adaptive.learners.base import Mergeable
from otel_adaptive.learners.trie import (
    ANY_INDEX,
    MAX_PATH_DEPTH,
    Bucket,
    NodeStats,
    PredictionTrieLearner,
    encode_field_key,
    latency_sensitivity_scores,
)
from otel_adaptive.records import CallRecord, RunRecord
from otel_adaptive.stats import RunningStats

MS = 1_000_000
METRICS = ("remaining_calls", "interarrival_ms", "output_tokens", "sensitivity")
_ids = count(1)

# A deep path (past MAX_PATH_DEPTH) is cut for the subtree fields and has no own field.
DEEP = tuple(f"d{i}" for i in range(MAX_PATH_DEPTH + 2))
PATHS = st.one_of(
    st.lists(st.sampled_from(["plan", "act", "a/b", ""]), max_size=3).map(tuple),
    st.just(DEEP),
    st.integers(0, 9).map(lambda i: ("wide", f"w{i}")),
)


@st.composite
def runs(draw: st.DrawFn) -> RunRecord:
    calls = []
    for _ in range(draw(st.integers(0, 8))):
        start = draw(st.integers(0, 4_000)) * MS
        end = start + draw(st.integers(0, 1_500)) * MS
        calls.append(
            CallRecord(
                kind=draw(st.sampled_from(["llm", "llm", "llm", "tool"])),
                name="chat",
                span_id=f"{next(_ids):016x}",
                parent_span_id=None,
                path=draw(PATHS),
                start_ns=start,
                end_ns=end,
                output_tokens=draw(st.one_of(st.none(), st.integers(0, 3_000))),
            )
        )
    last = max((c.end_ns for c in calls), default=0)
    return RunRecord(
        id=f"run-{next(_ids)}",
        agent_id=draw(st.sampled_from(["alpha", "beta"])),
        trace_id="0" * 32,
        start_ns=0,
        end_ns=last + draw(st.integers(0, 500)) * MS,
        calls=tuple(calls),
    )


def reference_learn(
    batch: Sequence[RunRecord],
    *,
    sensitivity: bool,
    parallel_weight: float,
    max_call_index: int,
    max_children: int,
) -> dict[str, dict[str, NodeStats]]:
    """Design §5.1 call by call: every value added to every field it feeds, in order."""
    learned: dict[str, dict[str, list[list[float]]]] = {}
    admitted: dict[str, dict[tuple[str, ...], set[str]]] = {}
    for record in batch:
        calls = record.llm_calls()
        if not calls:
            continue
        fields = learned.setdefault(record.agent_id, {})
        children = admitted.setdefault(record.agent_id, {})
        scores = latency_sensitivity_scores(record, calls, parallel_weight)
        seen_at: dict[tuple[str, ...], int] = {}
        for position, call in enumerate(calls):
            index = seen_at.get(call.path, 0) + 1
            seen_at[call.path] = index
            buckets: list[Bucket] = [index, ANY_INDEX] if index <= max_call_index else [ANY_INDEX]
            names = call.path[:MAX_PATH_DEPTH]
            prefixes = [()]
            for depth, name in enumerate(names):
                known = children.setdefault(names[:depth], set())
                if name not in known and len(known) >= max_children:
                    break  # the node is full for this batch: learned down to here
                known.add(name)
                prefixes.append(names[: depth + 1])
            keys = [encode_field_key(p, b) for p in prefixes for b in buckets]
            if len(call.path) <= MAX_PATH_DEPTH and len(prefixes) == len(call.path) + 1:
                keys += [encode_field_key(prefixes[-1], b, own=True) for b in buckets]
            values: list[float | None] = [
                float(len(calls) - 1 - position),
                None
                if position == len(calls) - 1
                else max(calls[position + 1].start_ns - call.end_ns, 0) / MS,
                float(call.output_tokens or 0),
                scores[position] if sensitivity else None,
            ]
            for key in keys:
                lists = fields.setdefault(key, [[], [], [], []])
                for metric, value in zip(lists, values, strict=True):
                    if value is not None:
                        metric.append(value)
    result: dict[str, dict[str, NodeStats]] = {}
    for agent_id, fields in learned.items():
        result[agent_id] = {}
        for key, lists in fields.items():
            stats = []
            for values in lists:
                one_by_one = RunningStats.empty()
                for value in values:
                    one_by_one = one_by_one.add(value)
                stats.append(one_by_one)
            result[agent_id][key] = NodeStats(*stats)
    return result


def assert_same(actual: RunningStats, expected: RunningStats) -> None:
    """Equal counts, extremes and (exact range) samples; moments up to rounding."""
    assert actual.count == expected.count
    assert (actual.min, actual.max) == (expected.min, expected.max)
    assert actual.is_exact and expected.is_exact
    assert [actual.quantile(q) for q in (0.0, 0.5, 0.9, 0.95, 1.0)] == [
        expected.quantile(q) for q in (0.0, 0.5, 0.9, 0.95, 1.0)
    ]
    scale = max(abs(expected.min or 0.0), abs(expected.max or 0.0), 1.0)
    assert actual.mean == pytest.approx(expected.mean, rel=0, abs=1e-12 * scale)
    assert actual.m2 == pytest.approx(expected.m2, rel=1e-9, abs=1e-9 * scale * scale)


def nodes(fields: Mapping[str, Mergeable]) -> dict[str, NodeStats]:
    result = {}
    for key, value in fields.items():
        assert isinstance(value, NodeStats)
        result[key] = value
    return result


def merge_all(
    deltas: Sequence[Mapping[str, Mapping[str, Mergeable]]],
) -> dict[str, dict[str, NodeStats]]:
    state: dict[str, dict[str, NodeStats]] = {}
    for delta in deltas:
        for agent_id, fields in delta.items():
            agent = state.setdefault(agent_id, {})
            for key, value in nodes(fields).items():
                agent[key] = agent[key].merge(value) if key in agent else value
    return state


def assert_same_fields(
    actual: Mapping[str, Mapping[str, NodeStats]], expected: Mapping[str, Mapping[str, NodeStats]]
) -> None:
    assert actual.keys() == expected.keys()
    for agent_id, fields in expected.items():
        assert actual[agent_id].keys() == fields.keys()
        for key, node in fields.items():
            for metric in METRICS:
                assert_same(getattr(actual[agent_id][key], metric), getattr(node, metric))


LEARNER_SETTINGS = st.fixed_dictionaries(
    {
        "sensitivity": st.booleans(),
        "parallel_weight": st.sampled_from([0.0, 0.4]),
        "max_call_index": st.sampled_from([1, 2, 32]),
        "max_children": st.sampled_from([1, 3, 256]),
    }
)


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(runs(), max_size=10), options=LEARNER_SETTINGS)
def test_a_batch_teaches_what_its_calls_teach_one_value_at_a_time(
    batch: list[RunRecord], options: dict[str, object]
) -> None:
    learner = PredictionTrieLearner(**options)  # type: ignore[arg-type]
    learned = {agent: nodes(fields) for agent, fields in learner.learn(batch).items()}
    expected = reference_learn(batch, **options)  # type: ignore[arg-type]
    assert_same_fields(learned, expected)
    for agent_id, fields in expected.items():
        # Coarser fields of a call first: what a full agent drops is the finest detail.
        assert list(learned[agent_id]) == list(fields)


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(runs(), min_size=1, max_size=10))
def test_learning_run_by_run_and_merging_equals_learning_the_batch(batch: list[RunRecord]) -> None:
    learner = PredictionTrieLearner(parallel_weight=0.4)
    whole = {agent: nodes(fields) for agent, fields in learner.learn(batch).items()}
    assert_same_fields(merge_all([learner.learn([record]) for record in batch]), whole)


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(runs(), min_size=1, max_size=12), cuts=st.lists(st.integers(0, 12)))
def test_merging_split_batches_equals_learning_their_union(
    batch: list[RunRecord], cuts: list[int]
) -> None:
    learner = PredictionTrieLearner()
    bounds = [0, *sorted({c % (len(batch) + 1) for c in cuts}), len(batch)]
    parts = [learner.learn(batch[a:b]) for a, b in pairwise(bounds)]
    whole = {agent: nodes(fields) for agent, fields in learner.learn(batch).items()}
    assert_same_fields(merge_all(parts), whole)


def test_a_large_batch_summarises_each_field_from_every_call() -> None:
    # Past the exact range the fields become digests: counts, extremes and means
    # still come from every call of the batch, whichever groups fed them.
    batch = []
    for i in range(60):
        calls = [
            CallRecord(
                kind="llm",
                name="chat",
                span_id=f"{i:08x}{k:08x}",
                parent_span_id=None,
                path=("agent", "plan" if k % 2 else "act"),
                start_ns=k * 100 * MS,
                end_ns=k * 100 * MS + (20 + (i * 7 + k) % 50) * MS,
                output_tokens=(i * 13 + k * 31) % 700,
            )
            for k in range(5)
        ]
        batch.append(
            RunRecord(
                id=f"r{i}",
                agent_id="a",
                trace_id="0" * 32,
                start_ns=0,
                end_ns=600 * MS,
                calls=tuple(calls),
            )
        )
    learned = nodes(PredictionTrieLearner().learn(batch)["a"])
    root = learned[encode_field_key((), ANY_INDEX)]
    assert not root.output_tokens.is_exact and root.output_tokens.count == 300
    tokens = [float(c.output_tokens or 0) for r in batch for c in r.calls]
    assert root.output_tokens.mean == pytest.approx(sum(tokens) / len(tokens), rel=1e-12)
    assert (root.output_tokens.min, root.output_tokens.max) == (min(tokens), max(tokens))
    # The agent node holds the same calls as the root; the leaves split them.
    agent = learned[encode_field_key(("agent",), ANY_INDEX)]
    assert agent.output_tokens.count == 300 and agent.output_tokens.mean == root.output_tokens.mean
    act = learned[encode_field_key(("agent", "act"), ANY_INDEX, own=True)]
    plan = learned[encode_field_key(("agent", "plan"), ANY_INDEX, own=True)]
    assert act.output_tokens.count + plan.output_tokens.count == 300
