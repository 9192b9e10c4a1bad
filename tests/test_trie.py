"""Tests for the prediction-trie learner, its view and its wire format."""

from __future__ import annotations

import copy
import gc
import json
import re
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from itertools import count, pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otel_adaptive.learners.trie as trie_module
from counting import count_calls
from otel_adaptive.learners.base import Mergeable
from otel_adaptive.learners.trie import (
    ANY_INDEX,
    MAX_PATH_DEPTH,
    Bucket,
    NodeStats,
    PredictionTrieLearner,
    TrieView,
    decode_field_key,
    encode_field_key,
    latency_sensitivity_scores,
    logical_steps,
    sensitivity_level,
    validate_envelope,
)
from otel_adaptive.records import CallRecord, RunRecord
from otel_adaptive.stats import RunningStats

MS = 1_000_000
SECOND = 1_000_000_000
_ids = count(1)


def llm(
    start_ns: int,
    end_ns: int,
    *,
    path: tuple[str, ...] = ("agent",),
    parent: str | None = "p",
    tokens: int | None = None,
) -> CallRecord:
    return CallRecord(
        kind="llm",
        name="chat",
        span_id=f"{next(_ids):016x}",
        parent_span_id=parent,
        path=path,
        start_ns=start_ns,
        end_ns=end_ns,
        output_tokens=tokens,
    )


def tool(start_ns: int, end_ns: int) -> CallRecord:
    return CallRecord(
        kind="tool",
        name="search",
        span_id=f"{next(_ids):016x}",
        parent_span_id="p",
        path=("agent",),
        start_ns=start_ns,
        end_ns=end_ns,
    )


def run(
    *calls: CallRecord, agent_id: str = "agent", start_ns: int = 0, end_ns: int | None = None
) -> RunRecord:
    last = max((c.end_ns for c in calls), default=start_ns)
    return RunRecord(
        id=f"run-{next(_ids)}",
        agent_id=agent_id,
        trace_id="0" * 32,
        start_ns=start_ns,
        end_ns=last if end_ns is None else end_ns,
        calls=tuple(calls),
    )


def nodes(fields: Mapping[str, Mergeable]) -> dict[str, NodeStats]:
    result = {}
    for key, value in fields.items():
        assert isinstance(value, NodeStats)
        result[key] = value
    return result


def learn_view(learner: PredictionTrieLearner, runs: Sequence[RunRecord]) -> TrieView:
    learned = learner.learn(runs)
    assert set(learned) == {"agent"}
    return learner.view("agent", learned["agent"])


# --- acceptance: per-call-index predictions ---------------------------------


def ramp_run(calls: int = 5) -> RunRecord:
    """The k-th LLM call (same parent) produces 58 + 40*(k-1) tokens, 100 ms gaps."""
    records = []
    for k in range(calls):
        start = k * 400 * MS
        records.append(llm(start, start + 300 * MS, path=("agent", "loop"), tokens=58 + 40 * k))
    return run(*records)


def test_each_call_index_predicts_its_own_tokens_and_remaining_calls() -> None:
    learner = PredictionTrieLearner()
    trie = learn_view(learner, [ramp_run() for _ in range(50)])
    for k in range(1, 6):
        prediction = trie.lookup(("agent", "loop"), k)
        assert prediction is not None
        assert prediction.output_tokens.p90 == 58 + 40 * (k - 1)
        assert prediction.output_tokens.sample_count == 50
        assert prediction.remaining_calls.mean == 5 - k
        if k < 5:
            assert prediction.interarrival_ms.mean == 100.0
            assert prediction.interarrival_ms.sample_count == 50
        else:
            assert prediction.interarrival_ms.sample_count == 0
    found = trie.match(("agent", "loop"), 3)
    assert found is not None
    assert found.depth == 2


def test_any_index_blends_all_calls_of_a_node() -> None:
    learner = PredictionTrieLearner()
    trie = learn_view(learner, [ramp_run() for _ in range(30)])
    root = trie.root_any()
    assert root is not None
    tokens = [58 + 40 * k for k in range(5)] * 30
    assert root.output_tokens.sample_count == 150
    assert root.output_tokens.mean == pytest.approx(np.mean(tokens), rel=1e-12)
    assert root.remaining_calls.mean == pytest.approx(2.0, rel=1e-12)
    # 150 samples is beyond the exact range: the sketch's p90 lies near numpy's.
    assert abs(root.output_tokens.p90 - np.percentile(tokens, 90)) <= 40


def test_call_index_counts_the_runs_calls_at_one_path_across_parent_spans() -> None:
    # Each turn in a span of its own (one parent per turn), all at one scope path.
    def turns() -> RunRecord:
        return run(
            llm(0, 10 * MS, path=("agent", "turn"), parent="first", tokens=100),
            llm(20 * MS, 30 * MS, path=("agent", "turn"), parent="second", tokens=200),
            llm(40 * MS, 50 * MS, path=("agent", "turn"), parent="third", tokens=300),
            llm(60 * MS, 70 * MS, path=("agent", "other"), parent="fourth", tokens=7),
        )

    learner = PredictionTrieLearner()
    learned = nodes(learner.learn([turns() for _ in range(10)])["agent"])
    turn = ("agent", "turn")
    assert encode_field_key(turn, 4) not in learned
    for k in (1, 2, 3):
        assert learned[encode_field_key(turn, k)].output_tokens.count == 10
        assert learned[encode_field_key(turn, k)].output_tokens.max == 100 * k
        # remaining_calls counts every later LLM call of the run, at any path.
        assert learned[encode_field_key(turn, k)].remaining_calls.p50 == 4 - k
    # The other path starts its own count.
    assert learned[encode_field_key(("agent", "other"), 1)].output_tokens.max == 7
    trie = learn_view(learner, [turns() for _ in range(10)])
    found = [trie.lookup(turn, k) for k in (1, 2, 3)]
    assert [p.output_tokens.p90 if p else None for p in found] == [100, 200, 300]


def test_a_nodes_own_calls_answer_before_its_subtree_aggregate() -> None:
    # An agent used as a tool: the outer agent's calls sit at ("outer",), the inner
    # agent's beneath it, at ("outer", "inner"), with their own token counts.
    def nested() -> RunRecord:
        return run(
            llm(0, 10 * MS, path=("outer",), parent="o", tokens=11),
            llm(20 * MS, 30 * MS, path=("outer", "inner"), parent="i", tokens=18),
            llm(40 * MS, 50 * MS, path=("outer", "inner"), parent="i", tokens=18),
            llm(60 * MS, 70 * MS, path=("outer",), parent="o", tokens=5),
        )

    learner = PredictionTrieLearner()
    trie = learn_view(learner, [nested() for _ in range(10)])
    first, second = trie.match(("outer",), 1), trie.match(("outer",), 2)
    assert first is not None and second is not None
    assert (first.prediction.output_tokens.p90, first.depth) == (11, 1)
    assert second.prediction.output_tokens.p90 == 5
    assert second.prediction.remaining_calls.mean == 0
    inner = trie.match(("outer", "inner"), 2)
    assert inner is not None and inner.prediction.output_tokens.p90 == 18
    # The subtree aggregate is still there, as the fallback and on the wire.
    envelope = trie.envelope()
    validate_envelope(envelope)
    outer = envelope["root"]["children"]["outer"]
    assert outer["predictions_by_call_index"]["1"]["output_tokens"]["sample_count"] == 20
    assert outer["own_predictions_by_call_index"]["1"]["output_tokens"]["sample_count"] == 10
    assert outer["own_predictions_any_index"]["output_tokens"]["sample_count"] == 20
    assert envelope["root"]["own_predictions_any_index"] is None
    # Past the learned call indexes, the own any-index answers.
    third = trie.match(("outer",), 3)
    assert third is not None and third.prediction.output_tokens.mean == 8


def test_calls_without_parent_share_one_counter_and_tokens_default_to_zero() -> None:
    learner = PredictionTrieLearner()
    one = run(llm(0, MS, parent=None), llm(2 * MS, 3 * MS, parent=None, tokens=7))
    learned = nodes(learner.learn([one])["agent"])
    assert learned[encode_field_key((), 1)].output_tokens.summary()["mean"] == 0.0
    assert learned[encode_field_key((), 2)].output_tokens.mean == 7.0


def test_tool_calls_do_not_count_as_llm_calls() -> None:
    learner = PredictionTrieLearner()
    trie = learn_view(
        learner, [run(tool(0, 5 * MS), llm(10 * MS, 20 * MS), tool(25 * MS, 30 * MS))]
    )
    prediction = trie.lookup(("agent",), 1)
    assert prediction is not None
    assert prediction.remaining_calls.mean == 0.0
    assert prediction.interarrival_ms.sample_count == 0


def test_interarrival_is_in_milliseconds_and_clamped_at_zero_for_overlaps() -> None:
    learner = PredictionTrieLearner()
    overlapping = run(
        llm(0, 300 * MS, parent="a", path=("agent", "a")),
        llm(100 * MS, 400 * MS, parent="b", path=("agent", "b")),
        llm(401_500_000, 500 * MS, parent="c", path=("agent", "c")),
    )
    trie = learn_view(learner, [overlapping])
    first = trie.lookup(("agent", "a"), 1)
    second = trie.lookup(("agent", "b"), 1)
    assert first is not None and second is not None
    assert first.interarrival_ms.mean == 0.0  # the next call started before this one ended
    assert second.interarrival_ms.mean == 1.5


# --- acceptance: different call sites --------------------------------------


def test_call_sites_under_different_scopes_predict_differently() -> None:
    def site_run() -> RunRecord:
        return run(
            llm(0, 100 * MS, path=("agent", "classify"), parent="c", tokens=12),
            llm(200 * MS, 900 * MS, path=("agent", "summarise"), parent="s", tokens=1500),
        )

    learner = PredictionTrieLearner()
    trie = learn_view(learner, [site_run() for _ in range(20)])
    classify = trie.match(("agent", "classify"), 1)
    summarise = trie.match(("agent", "summarise"), 1)
    assert classify is not None and summarise is not None
    assert classify.depth == summarise.depth == 2
    assert classify.prediction.output_tokens.p90 == 12
    assert summarise.prediction.output_tokens.p90 == 1500
    root = trie.root_any()
    assert root is not None
    assert root.output_tokens.mean == pytest.approx(756.0, rel=1e-12)
    assert root.output_tokens.sample_count == 40
    # An unknown leaf falls back to the deepest known node, then to the root.
    fallback = trie.match(("agent", "translate"), 1)
    assert fallback is not None
    assert fallback.depth == 1
    assert fallback.prediction.output_tokens.mean == pytest.approx(756.0, rel=1e-12)
    elsewhere = trie.match(("other-agent", "x"), 1)
    assert elsewhere is not None
    assert elsewhere.depth == 0


def test_deepest_node_wins_and_exact_index_is_preferred_at_each_node() -> None:
    learner = PredictionTrieLearner()
    shape = run(
        llm(0, MS, path=("agent", "x"), parent="x", tokens=5),
        llm(2 * MS, 3 * MS, path=("agent", "y"), parent="y", tokens=70),
        llm(4 * MS, 5 * MS, path=("agent", "y"), parent="y", tokens=90),
    )
    trie = learn_view(learner, [shape])
    # Node x learned only index 1; index 2 is known higher up, yet x's any-index answers.
    deep = trie.match(("agent", "x"), 2)
    assert deep is not None
    assert deep.depth == 2
    assert deep.prediction.output_tokens.mean == 5.0
    # At node y the exact index wins over y's any-index blend.
    exact = trie.lookup(("agent", "y"), 2)
    assert exact is not None
    assert exact.output_tokens.mean == 90.0


def test_empty_view_answers_nothing() -> None:
    learner = PredictionTrieLearner()
    trie = learner.view("agent", {})
    assert trie.is_empty
    assert trie.lookup(("agent",), 1) is None
    assert trie.match((), 1) is None
    assert trie.root_any() is None
    assert learner.envelope("agent", {}) is None
    assert learner.learn([run(tool(0, MS))]) == {}


# --- logical steps and sensitivity -------------------------------------------


def test_overlapping_calls_within_one_second_are_one_logical_step() -> None:
    overlapping = [llm(100 * MS, 400 * MS), llm(200 * MS, 500 * MS)]
    sequential = [llm(100 * MS, 400 * MS), llm(500 * MS, 800 * MS)]
    touching = [llm(100 * MS, 400 * MS), llm(400 * MS, 700 * MS)]
    chained = [llm(0, 300 * MS), llm(200 * MS, 500 * MS), llm(450 * MS, 600 * MS)]
    assert logical_steps(overlapping) == [0, 0]
    # Both sequential calls fall inside the same wall-clock second.
    assert logical_steps(sequential) == [0, 1]
    assert logical_steps(touching) == [0, 1]
    assert logical_steps(chained) == [0, 0, 0]
    assert logical_steps([]) == []


def sensitivity_run() -> RunRecord:
    """A 10 s run: c1 alone, c2 and c3 in parallel, c4 alone (three steps)."""
    return run(
        llm(0, 2 * SECOND, path=("agent", "c1"), parent="c1"),
        llm(3 * SECOND, 5 * SECOND, path=("agent", "c2"), parent="c2"),
        llm(3_500 * MS, 4_500 * MS, path=("agent", "c3"), parent="c3"),
        llm(7 * SECOND, 10 * SECOND, path=("agent", "c4"), parent="c4"),
        end_ns=10 * SECOND,
    )


def test_sensitivity_formula_on_a_hand_computed_run() -> None:
    # steps: c1 -> 0, c2/c3 -> 1, c4 -> 2; S = 3; run 10 s.
    # critical  c1 2/10=0.2   c2 0.2   c3 0.1   c4 0.3
    # fanout    c1 2/2=1      c2 1/2   c3 1/2   c4 0
    # position  c1 1          c2 0.5   c3 0.5   c4 1
    # raw = 0.5*critical + 0.3*fanout + 0.2*position:
    #           c1 0.60       c2 0.35  c3 0.30  c4 0.35
    # min-max over [0.30, 0.60]: c1 1, c2 1/6, c3 0, c4 1/6.
    record = sensitivity_run()
    calls = record.llm_calls()
    assert [c.path[-1] for c in calls] == ["c1", "c2", "c3", "c4"]
    scores = latency_sensitivity_scores(record, calls)
    assert scores == pytest.approx([1.0, 1 / 6, 0.0, 1 / 6], abs=1e-12)


def test_sensitivity_parallel_penalty_uses_group_size_and_slack() -> None:
    # With w_parallel = 0.4, step 1 has g = 2 calls; (g-1)/g = 0.5.
    # c2 is the longest of its step: slack 0,     parallel (0 + 0.5)/2 = 0.25
    # c3 lasts 1 s of the longest 2 s: slack 0.5, parallel (0.5 + 0.5)/2 = 0.5
    # raw: c1 0.60, c2 0.35-0.4*0.25=0.25, c3 0.30-0.4*0.5=0.10, c4 0.35
    # min-max over [0.10, 0.60]: c1 1, c2 0.3, c3 0, c4 0.5.
    record = sensitivity_run()
    scores = latency_sensitivity_scores(record, record.llm_calls(), parallel_weight=0.4)
    assert scores == pytest.approx([1.0, 0.3, 0.0, 0.5], abs=1e-12)


def test_sensitivity_levels_reach_the_predictions() -> None:
    # Scores 1, 1/6, 0, 1/6 on scale 5: round(4*s)+1 -> 5, 2, 1, 2.
    learner = PredictionTrieLearner()
    trie = learn_view(learner, [sensitivity_run()])
    levels = {}
    for name in ("c1", "c2", "c3", "c4"):
        prediction = trie.lookup(("agent", name), 1)
        assert prediction is not None
        levels[name] = prediction.latency_sensitivity
    assert levels == {"c1": 5, "c2": 2, "c3": 1, "c4": 2}
    weighted = learn_view(PredictionTrieLearner(parallel_weight=0.4), [sensitivity_run()])
    c4 = weighted.lookup(("agent", "c4"), 1)
    assert c4 is not None
    assert c4.latency_sensitivity == 3  # 0.5 * 4 = 2 -> level 3


def test_single_step_runs_score_the_middle() -> None:
    lone = run(llm(0, SECOND))
    assert latency_sensitivity_scores(lone, lone.llm_calls()) == [0.5]
    pair = run(llm(0, SECOND), llm(SECOND // 2, SECOND))
    assert latency_sensitivity_scores(pair, pair.llm_calls()) == [1.0, 0.0]
    same = run(llm(0, SECOND), llm(0, SECOND))
    assert latency_sensitivity_scores(same, same.llm_calls()) == [0.5, 0.5]


def test_instant_calls_share_no_interval_so_they_are_separate_steps() -> None:
    # [5, 5) is empty: two instant calls at the same time do not overlap.
    instant = run(llm(5, 5), llm(5, 5), start_ns=5, end_ns=5)
    assert logical_steps(instant.llm_calls()) == [0, 1]
    # Zero run duration: critical is 1 for both; step 0 scores 1.0, step 1 0.7.
    assert latency_sensitivity_scores(instant, instant.llm_calls()) == [1.0, 0.0]


def test_sensitivity_can_be_switched_off() -> None:
    trie = learn_view(PredictionTrieLearner(sensitivity=False), [sensitivity_run()])
    prediction = trie.lookup(("agent", "c1"), 1)
    assert prediction is not None
    assert prediction.latency_sensitivity is None


@pytest.mark.parametrize(
    ("mean", "level"),
    [
        (0.0, 1),
        (0.125, 2),  # 0.5 rounds up (banker's rounding would give 1)
        (0.375, 3),  # 1.5 -> 2
        (0.625, 4),  # 2.5 rounds up (banker's rounding would give 3)
        (0.6, 3),  # 2.4 -> 2
        (1.0, 5),
        (1.2, 5),  # clamped
        (-0.3, 1),  # clamped
    ],
)
def test_sensitivity_level_rounds_half_up_and_clamps(mean: float, level: int) -> None:
    assert sensitivity_level(mean, 5) == level


# --- caps --------------------------------------------------------------------


def test_call_indexes_above_the_cap_feed_only_the_any_index_bucket() -> None:
    learner = PredictionTrieLearner(max_call_index=2)
    calls = [llm(k * 10 * MS, k * 10 * MS + MS, tokens=k) for k in range(4)]
    learned = nodes(learner.learn([run(*calls)])["agent"])
    buckets = {decode_field_key(key)[1] for key in learned}
    assert buckets == {1, 2, ANY_INDEX}
    assert learned[encode_field_key((), ANY_INDEX)].output_tokens.count == 4


def test_paths_are_cut_at_the_maximum_depth() -> None:
    deep_path = tuple(f"level{i}" for i in range(MAX_PATH_DEPTH + 5))
    learner = PredictionTrieLearner()
    learned = learner.learn([run(llm(0, MS, path=deep_path))])["agent"]
    depths = {len(decode_field_key(key)[0]) for key in learned}
    assert max(depths) == MAX_PATH_DEPTH
    trie = learner.view("agent", learned)
    found = trie.match(deep_path, 1)
    assert found is not None
    assert found.depth == MAX_PATH_DEPTH


def test_a_node_admits_at_most_max_children_names_per_batch() -> None:
    learner = PredictionTrieLearner(max_children=2)
    calls = [
        llm(k * 10 * MS, k * 10 * MS + MS, path=("agent", name), parent=name, tokens=k)
        for k, name in enumerate(["a", "b", "c", "a"])
    ]
    learned = nodes(learner.learn([run(*calls)])["agent"])
    paths = {decode_field_key(key)[0] for key in learned}
    assert paths == {(), ("agent",), ("agent", "a"), ("agent", "b")}
    # The call under the rejected child still counts at every node above it.
    assert learned[encode_field_key(("agent",), ANY_INDEX)].output_tokens.count == 4
    assert learned[encode_field_key(("agent", "a"), ANY_INDEX)].output_tokens.count == 2


def test_the_view_keeps_the_busiest_children_when_batches_add_more() -> None:
    learner = PredictionTrieLearner(max_children=2)
    batches = [
        [run(llm(0, MS, path=("agent", name), parent=name)) for _ in range(times)]
        for name, times in (("rare", 1), ("busy", 5), ("common", 3))
    ]
    state: dict[str, NodeStats] = {}
    for batch in batches:
        for key, value in nodes(learner.learn(batch)["agent"]).items():
            state[key] = state[key].merge(value) if key in state else value
    trie = learner.view("agent", state)
    envelope = trie.envelope()
    assert set(envelope["root"]["children"]["agent"]["children"]) == {"busy", "common"}
    rare = trie.match(("agent", "rare"), 1)
    assert rare is not None
    assert rare.depth == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": 1},
        {"scale": 2.5},
        {"max_call_index": 0},
        {"max_children": 0},
        {"max_children": True},
        {"parallel_weight": float("nan")},
    ],
)
def test_invalid_settings_fail_fast(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PredictionTrieLearner(**kwargs)


# --- field keys ----------------------------------------------------------------

names = st.text(max_size=12)
buckets: st.SearchStrategy[Bucket] = st.one_of(st.just(ANY_INDEX), st.integers(1, 10_000))


@settings(max_examples=200, deadline=None)
@given(path=st.lists(names, max_size=6).map(tuple), bucket=buckets)
def test_field_keys_round_trip_any_names(path: tuple[str, ...], bucket: Bucket) -> None:
    key = encode_field_key(path, bucket)
    assert decode_field_key(key) == (path, bucket, False)
    own = encode_field_key(path, bucket, own=True)
    assert own != key
    assert decode_field_key(own) == (path, bucket, True)


@settings(max_examples=200, deadline=None)
@given(
    first=st.tuples(st.lists(names, max_size=4).map(tuple), buckets),
    second=st.tuples(st.lists(names, max_size=4).map(tuple), buckets),
)
def test_distinct_fields_never_share_a_key(
    first: tuple[tuple[str, ...], Bucket], second: tuple[tuple[str, ...], Bucket]
) -> None:
    if first != second:
        assert encode_field_key(*first) != encode_field_key(*second)


def test_tricky_names_stay_distinct() -> None:
    assert encode_field_key(("a/b",), 1) != encode_field_key(("a", "b"), 1)
    assert encode_field_key(("*",), 1) != encode_field_key((), ANY_INDEX)
    assert encode_field_key(("1",), ANY_INDEX) != encode_field_key((), 1)


@pytest.mark.parametrize(
    "key",
    [
        '[["a"], 1]',
        '[["a"],0]',
        '[["a"],true]',
        '[["a"],"x"]',
        '[["a"],1.0]',
        "garbage",
        '["a"]',
        '[["a"],1,"mine"]',
        '[["a"],1,"own",1]',
        '[["a"],["b"]]',
        "[1,1]",
    ],
)
def test_foreign_or_non_canonical_keys_are_rejected(key: str) -> None:
    with pytest.raises(ValueError):
        decode_field_key(key)


@pytest.mark.parametrize("bucket", [0, -1, True, "x", 1.5])
def test_invalid_buckets_cannot_be_encoded(bucket: Any) -> None:
    with pytest.raises(ValueError):
        encode_field_key(("a",), bucket)


# --- merging: many processes learn what one would -----------------------------


@st.composite
def run_records(draw: st.DrawFn) -> RunRecord:
    calls = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, 5_000)) * MS
        duration = draw(st.integers(0, 2_000)) * MS
        calls.append(
            llm(
                start,
                start + duration,
                path=tuple(draw(st.lists(st.sampled_from(["plan", "act", "x/y"]), max_size=3))),
                parent=draw(st.sampled_from(["p1", "p2", None])),
                tokens=draw(st.one_of(st.none(), st.integers(0, 4_000))),
            )
        )
    return run(*calls, agent_id=draw(st.sampled_from(["alpha", "beta"])))


def merge_deltas(
    deltas: Sequence[Mapping[str, Mapping[str, Mergeable]]],
) -> dict[str, dict[str, NodeStats]]:
    state: dict[str, dict[str, NodeStats]] = {}
    for delta in deltas:
        for agent_id, fields in delta.items():
            agent_state = state.setdefault(agent_id, {})
            for key, value in nodes(fields).items():
                agent_state[key] = agent_state[key].merge(value) if key in agent_state else value
    return state


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(run_records(), min_size=1, max_size=12), cuts=st.lists(st.integers(0, 12)))
def test_learning_in_parts_then_merging_equals_learning_everything(
    runs: list[RunRecord], cuts: list[int]
) -> None:
    learner = PredictionTrieLearner(parallel_weight=0.3)
    bounds = [0, *sorted({c % (len(runs) + 1) for c in cuts}), len(runs)]
    parts = [runs[a:b] for a, b in pairwise(bounds)]
    together = merge_deltas([learner.learn(runs)])
    in_parts = merge_deltas([learner.learn(part) for part in parts])
    assert together.keys() == in_parts.keys()
    for agent_id, fields in together.items():
        assert fields.keys() == in_parts[agent_id].keys()
        for key, whole in fields.items():
            merged = in_parts[agent_id][key]
            for metric in ("remaining_calls", "interarrival_ms", "output_tokens", "sensitivity"):
                expected, actual = getattr(whole, metric), getattr(merged, metric)
                assert actual.count == expected.count
                scale = max(abs(expected.min or 0.0), abs(expected.max or 0.0), 1.0)
                assert actual.mean == pytest.approx(expected.mean, rel=0, abs=1e-12 * scale)
                assert actual.variance == pytest.approx(expected.variance, rel=1e-9, abs=1e-12)
                # Tiny data: percentiles are exact on both sides.
                assert actual.summary()["p50"] == expected.summary()["p50"]
                assert actual.summary()["p90"] == expected.summary()["p90"]
                assert actual.summary()["p95"] == expected.summary()["p95"]
        view_whole = learner.envelope(agent_id, fields, generated_at=datetime(2025, 1, 1))
        view_parts = learner.envelope(agent_id, in_parts[agent_id], datetime(2025, 1, 1))
        assert view_whole is not None and view_parts is not None
        assert _structure(view_whole["root"]) == _structure(view_parts["root"])


def _structure(node: Mapping[str, Any]) -> Any:
    """A node's shape and integer content (sample counts, sensitivity levels)."""
    return (
        node["name"],
        sorted(node["predictions_by_call_index"]),
        {name: _structure(child) for name, child in node["children"].items()},
    )


# --- decoding ------------------------------------------------------------------


def test_node_stats_round_trip_through_decode_field() -> None:
    learner = PredictionTrieLearner()
    learned = learner.learn([ramp_run() for _ in range(40)])["agent"]
    for key, value in learned.items():
        decoded = learner.decode_field(key, value.to_bytes())
        assert decoded == value
        assert decoded.to_bytes() == value.to_bytes()
    assert NodeStats.empty().merge(NodeStats.empty()) == NodeStats.empty()


_SAMPLE_FIELD = (
    PredictionTrieLearner().learn([ramp_run() for _ in range(30)])["agent"][
        encode_field_key((), ANY_INDEX)
    ]
).to_bytes()


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(1, 255))
def test_decode_field_rejects_corrupted_bytes(position: int, flip: int) -> None:
    corrupted = bytearray(_SAMPLE_FIELD)
    corrupted[position % len(corrupted)] ^= flip
    with pytest.raises(ValueError):
        PredictionTrieLearner().decode_field(encode_field_key((), ANY_INDEX), bytes(corrupted))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_decode_field_rejects_arbitrary_bytes(data: bytes) -> None:
    with pytest.raises(ValueError):
        PredictionTrieLearner().decode_field(encode_field_key(("agent",), 1), data)


def test_decode_field_rejects_truncation_and_foreign_keys() -> None:
    learner = PredictionTrieLearner()
    key = encode_field_key((), ANY_INDEX)
    for cut in range(0, len(_SAMPLE_FIELD), 7):
        with pytest.raises(ValueError):
            learner.decode_field(key, _SAMPLE_FIELD[:cut])
    with pytest.raises(ValueError):
        learner.decode_field("not-a-key", _SAMPLE_FIELD)
    assert learner.decode_field(key, _SAMPLE_FIELD).remaining_calls.count == 150


# --- the view ------------------------------------------------------------------


def test_view_reuses_predictions_of_unchanged_fields() -> None:
    learner = PredictionTrieLearner()
    fields = dict(learner.learn([ramp_run() for _ in range(5)])["agent"])
    first = learner.view("agent", fields)
    again = learner.view("agent", fields)
    path = ("agent", "loop")
    assert first.lookup(path, 1) is again.lookup(path, 1)
    changed_key = encode_field_key(path, 1, own=True)
    fields[changed_key] = nodes(learner.learn([ramp_run()])["agent"])[changed_key]
    updated = learner.view("agent", fields)
    assert updated.lookup(path, 1) is not first.lookup(path, 1)
    prediction = updated.lookup(path, 1)
    assert prediction is not None
    assert prediction.output_tokens.sample_count == 1
    assert updated.lookup(path, 2) is first.lookup(path, 2)


def test_view_rejects_values_of_another_learner() -> None:
    learner = PredictionTrieLearner()
    bogus: dict[str, Any] = {encode_field_key((), 1): object()}
    with pytest.raises(TypeError):
        learner.view("agent", bogus)


def test_lookup_is_fast_enough_for_the_application_thread() -> None:
    learner = PredictionTrieLearner()
    trie = learn_view(learner, [ramp_run() for _ in range(10)])
    path = ("agent", "loop", "deeper", "deepest")
    rounds = 2_000
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(rounds):
            trie.lookup(path, 3)
        best = min(best, (time.perf_counter() - began) / rounds)
    # Typically under 1 µs; the bound leaves room for slow CI machines.
    assert best < 20e-6


# --- wire format ---------------------------------------------------------------


def sample_envelope() -> dict[str, Any]:
    learner = PredictionTrieLearner()
    runs = [ramp_run() for _ in range(3)] + [sensitivity_run()]
    envelope = learner.envelope(
        "agent", learner.learn(runs)["agent"], datetime(2025, 5, 17, 9, 30, tzinfo=timezone.utc)
    )
    assert envelope is not None
    return envelope


def test_envelope_has_the_documented_shape_and_survives_json() -> None:
    envelope = sample_envelope()
    assert json.loads(json.dumps(envelope, allow_nan=False)) == envelope
    validate_envelope(envelope)
    assert envelope["version"] == "1.0"
    assert envelope["generated_at"] == "2025-05-17T09:30:00+00:00"
    assert envelope["workflow_name"] == "agent"
    root = envelope["root"]
    assert root["name"] == "root"
    loop = root["children"]["agent"]["children"]["loop"]
    assert loop["name"] == "loop"
    assert loop["children"] == {}
    assert sorted(loop["predictions_by_call_index"], key=int) == ["1", "2", "3", "4", "5"]
    third = loop["predictions_by_call_index"]["3"]
    assert set(third) == {
        "remaining_calls",
        "interarrival_ms",
        "output_tokens",
        "latency_sensitivity",
    }
    assert third["output_tokens"] == {
        "sample_count": 3,
        "mean": 138.0,
        "p50": 138.0,
        "p90": 138.0,
        "p95": 138.0,
    }
    assert isinstance(third["latency_sensitivity"], int)
    assert root["predictions_any_index"]["remaining_calls"]["sample_count"] == 19


def test_envelope_timestamps() -> None:
    trie = learn_view(PredictionTrieLearner(), [ramp_run()])
    naive = trie.envelope(datetime(2025, 1, 2, 3, 4, 5))
    assert naive["generated_at"] == "2025-01-02T03:04:05+00:00"
    offset = trie.envelope(datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))))
    assert offset["generated_at"] == "2025-01-02T03:04:05+02:00"
    validate_envelope(trie.envelope())


Mutation = Callable[[dict[str, Any]], None]


def _loop(envelope: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = envelope["root"]["children"]["agent"]["children"]["loop"]
    return node


def _third(envelope: dict[str, Any]) -> dict[str, Any]:
    prediction: dict[str, Any] = _loop(envelope)["predictions_by_call_index"]["3"]
    return prediction


BROKEN: dict[str, tuple[Mutation, str]] = {
    "no-version": (lambda e: e.pop("version"), "missing key 'version'"),
    "old-version": (lambda e: e.update(version="0.9"), "version"),
    "extra-key": (lambda e: e.update(extra=1), "unexpected key 'extra'"),
    "bad-time": (lambda e: e.update(generated_at="yesterday"), "generated_at"),
    "no-zone": (lambda e: e.update(generated_at="2025-05-17T09:30:00"), "generated_at"),
    "month-13": (lambda e: e.update(generated_at="2025-13-17T09:30:00Z"), "generated_at"),
    "name-type": (lambda e: e.update(workflow_name=3), "workflow_name"),
    "root-name": (lambda e: e["root"].update(name="top"), "root.name"),
    "child-name": (lambda e: _loop(e).update(name="other"), "children['loop'].name"),
    "child-type": (lambda e: e["root"]["children"].update(x=[]), "children['x']"),
    "index-zero": (
        lambda e: _loop(e)["predictions_by_call_index"].update({"0": _third(e)}),
        "'0'",
    ),
    "index-padded": (
        lambda e: _loop(e)["predictions_by_call_index"].update({"03": _third(e)}),
        "'03'",
    ),
    "negative-count": (
        lambda e: _third(e)["output_tokens"].update(sample_count=-1),
        "sample_count",
    ),
    "bool-count": (
        lambda e: _third(e)["output_tokens"].update(sample_count=True),
        "sample_count",
    ),
    "nan-mean": (lambda e: _third(e)["output_tokens"].update(mean=float("nan")), "mean"),
    "string-p90": (lambda e: _third(e)["interarrival_ms"].update(p90="1"), "p90"),
    "missing-p95": (lambda e: _third(e)["remaining_calls"].pop("p95"), "missing key 'p95'"),
    "level-zero": (lambda e: _third(e).update(latency_sensitivity=0), "latency_sensitivity"),
    "level-float": (lambda e: _third(e).update(latency_sensitivity=2.0), "latency_sensitivity"),
    "any-index-type": (lambda e: _loop(e).update(predictions_any_index=[]), "any_index"),
    "children-list": (lambda e: _loop(e).update(children=[]), "children"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validate_envelope_rejects_broken_envelopes(case: str) -> None:
    mutate, message = BROKEN[case]
    envelope = copy.deepcopy(sample_envelope())
    mutate(envelope)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_envelope(envelope)


@pytest.mark.parametrize("document", [None, [], "envelope", {"version": "1.0"}])
def test_validate_envelope_rejects_non_envelopes(document: Any) -> None:
    with pytest.raises(ValueError):
        validate_envelope(document)


def test_validate_envelope_accepts_rfc3339_variants() -> None:
    envelope = sample_envelope()
    for stamp in ("2025-05-17T09:30:00Z", "2025-05-17t09:30:00.123456789-05:30"):
        envelope["generated_at"] = stamp
        validate_envelope(envelope)


def test_validate_envelope_survives_very_deep_documents() -> None:
    envelope = sample_envelope()
    node = envelope["root"]
    for depth in range(5_000):
        child: dict[str, Any] = {
            "name": f"n{depth}",
            "children": {},
            "predictions_by_call_index": {},
            "predictions_any_index": None,
        }
        node["children"] = {child["name"]: child}
        node = child
    validate_envelope(envelope)
    node["predictions_by_call_index"] = {"1": None}
    with pytest.raises(ValueError, match="n4999"):
        validate_envelope(envelope)


def uniform_node(values: list[float]) -> NodeStats:
    """A trie value whose four metrics summarise the same values."""
    stats = RunningStats.of_floats(values)
    return NodeStats(stats, stats, stats, stats)


def test_merging_the_same_value_twice_computes_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A process sharing a store merges each interval's delta into its view and into
    # its shard; while both hold the same value the second merge is not recomputed.
    state, delta = uniform_node([1.0, 2.0] * 80), uniform_node([3.0] * 50)
    other = uniform_node([4.0])
    expected = state.remaining_calls.merge(other.remaining_calls)
    first = state.merge(delta)
    metric_merges = count_calls(monkeypatch, RunningStats, "merge")
    assert state.merge(delta) is first
    assert metric_merges.count == 0
    third = state.merge(other)  # another value: computed, and remembered instead
    assert metric_merges.count == 4
    assert third == NodeStats(expected, expected, expected, expected)
    again = state.merge(delta)
    assert metric_merges.count == 8 and again == first and again is not first
    assert state == uniform_node([1.0, 2.0] * 80)  # the remembered merge is not the value's


def test_a_view_predicts_each_distinct_value_once(monkeypatch: pytest.MonkeyPatch) -> None:
    learner = PredictionTrieLearner()
    calls = tuple(
        CallRecord(
            kind="llm", name="chat", span_id=f"{k:016x}", parent_span_id=None,
            path=("plan",), start_ns=k * 10 * MS, end_ns=(k * 10 + 5) * MS, output_tokens=9,
        )
        for k in range(3)
    )  # fmt: skip
    record = RunRecord(
        id="r", agent_id="a", trace_id="0" * 32, start_ns=0, end_ns=40 * MS, calls=calls
    )
    fields = learner.learn([record])["a"]
    distinct = {id(value) for value in fields.values()}
    assert len(distinct) < len(fields)  # a leaf's own and subtree fields share a value
    predictions = count_calls(monkeypatch, trie_module, "_predict")
    view = learner.view("a", fields)
    assert predictions.count == len(distinct)
    again = learner.view("a", fields)
    assert again.envelope(datetime(2025, 1, 1)) == view.envelope(datetime(2025, 1, 1))
    assert predictions.count == len(distinct)  # the same values again: nothing predicted
    match = view.match(("plan",), 2)
    assert match is not None and match.prediction.remaining_calls.mean == 1.0


def test_a_remembered_merge_keeps_no_later_value_alive() -> None:
    # The writer holds a delta through an outage while the view moves on, merge after
    # merge: what the delta remembers must not keep the whole chain of later values.
    held = uniform_node([1.0] * 150)  # an unwritten delta, also the view's first value
    current = held
    later = []
    for i in range(5):
        current = current.merge(uniform_node([float(i)] * 120))
        later.append(weakref.ref(current))
    assert held.merge(current) is not None  # still usable
    del current
    gc.collect()
    assert [ref() for ref in later] == [None] * 5
