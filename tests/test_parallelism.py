"""Tests for the tool-parallelism learner."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_adaptive.learners.base import Mergeable
from otel_adaptive.learners.parallelism import (
    RUNS_FIELD,
    ExecutionPlan,
    GroupSupport,
    ParallelGroup,
    RunsObserved,
    ToolParallelismLearner,
    find_cohorts,
    group_id_for,
)
from otel_adaptive.records import CallKind, CallRecord, RunRecord

_span_ids = count(1)
_run_ids = count(1)


def call(name: str, start: int, end: int, kind: CallKind = "tool") -> CallRecord:
    return CallRecord(
        kind=kind,
        name=name,
        span_id=f"{next(_span_ids):016x}",
        parent_span_id=None,
        path=("agent",),
        start_ns=start,
        end_ns=end,
    )


def run(*calls: CallRecord, agent_id: str = "agent") -> RunRecord:
    ends = [c.end_ns for c in calls] or [0]
    return RunRecord(
        id=f"run-{next(_run_ids)}",
        agent_id=agent_id,
        trace_id="0" * 32,
        start_ns=0,
        end_ns=max(ends),
        calls=tuple(calls),
    )


def groups_of(fields: Mapping[str, Mergeable]) -> dict[str, GroupSupport]:
    return {k: v for k, v in fields.items() if isinstance(v, GroupSupport)}


def cohorts_of(fields: Mapping[str, Mergeable]) -> set[tuple[str, ...]]:
    return {v.tool_names for v in groups_of(fields).values()}


def sha_id(names: Sequence[str]) -> str:
    return "fanout:" + hashlib.sha256("|".join(sorted(names)).encode()).hexdigest()[:12]


LEARNER = ToolParallelismLearner()


# --------------------------------------------------------------------------- cohorts


def test_fan_out_of_four_is_one_group_of_four_without_prefixes() -> None:
    staggered = run(call("d", 30, 100), call("a", 0, 100), call("c", 20, 100), call("b", 10, 100))
    fields = LEARNER.learn([staggered])["agent"]

    groups = groups_of(fields)
    assert list(groups) == [sha_id(["a", "b", "c", "d"])]
    assert groups[sha_id(["a", "b", "c", "d"])] == GroupSupport(("a", "b", "c", "d"), 1)
    for prefix in (["a", "b"], ["a", "b", "c"]):
        assert sha_id(prefix) not in fields


def test_two_separate_fan_outs_in_one_run_are_two_groups() -> None:
    fields = LEARNER.learn(
        [run(call("a", 0, 10), call("b", 5, 15), call("c", 20, 30), call("d", 25, 40))]
    )["agent"]
    assert cohorts_of(fields) == {("a", "b"), ("c", "d")}


def test_sequential_tools_form_no_group() -> None:
    fields = LEARNER.learn([run(call("a", 0, 10), call("b", 11, 20), call("c", 25, 30))])["agent"]
    assert groups_of(fields) == {}
    assert fields[RUNS_FIELD] == RunsObserved(1)


def test_touching_intervals_do_not_overlap() -> None:
    assert find_cohorts([call("a", 0, 10), call("b", 10, 20), call("c", 20, 30)]) == ()


def test_zero_duration_call_overlaps_nothing() -> None:
    assert find_cohorts([call("a", 0, 10), call("b", 5, 5)]) == ()
    assert find_cohorts([call("a", 0, 10), call("b", 0, 0)]) == ()


def test_llm_calls_are_ignored() -> None:
    fields = LEARNER.learn([run(call("m", 0, 10, kind="llm"), call("t", 0, 10))])["agent"]
    assert groups_of(fields) == {}


def test_concurrent_calls_of_one_tool_are_a_group() -> None:
    fields = LEARNER.learn([run(call("search", 0, 10), call("search", 2, 8))])["agent"]
    assert cohorts_of(fields) == {("search", "search")}
    assert sha_id(["search", "search"]) in fields


def test_cohort_contained_in_a_larger_cohort_of_the_run_is_dropped() -> None:
    # {a, b} happens on its own, later inside a wider {a, b, c} fan-out.
    cohorts = find_cohorts(
        [
            call("a", 0, 10),
            call("b", 0, 10),
            call("a", 20, 30),
            call("b", 20, 30),
            call("c", 20, 30),
        ]
    )
    assert cohorts == (("a", "b", "c"),)


def test_multiset_with_more_copies_is_not_contained() -> None:
    cohorts = find_cohorts(
        [call("s", 0, 10), call("s", 0, 10), call("s", 20, 30), call("t", 20, 30)]
    )
    assert cohorts == (("s", "s"), ("s", "t"))


def test_cohorts_wider_than_max_group_size_are_not_recorded() -> None:
    wide = [call(f"t{i}", 0, 10) for i in range(5)]
    assert find_cohorts(wide, max_group_size=4) == ()
    assert find_cohorts(wide, max_group_size=5) == (("t0", "t1", "t2", "t3", "t4"),)
    fields = ToolParallelismLearner(max_group_size=4).learn([run(*wide)])["agent"]
    assert groups_of(fields) == {}
    assert fields[RUNS_FIELD] == RunsObserved(1)


def test_max_group_size_below_two_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_group_size"):
        ToolParallelismLearner(max_group_size=1)


# --------------------------------------------------------------------------- support


def test_support_and_runs_observed_count_runs() -> None:
    fan_out = (("a", 0, 10), ("b", 0, 10))
    runs = [
        run(*(call(*spec) for spec in fan_out)),
        run(*(call(*spec) for spec in fan_out)),
        run(call("a", 0, 10), call("c", 5, 15)),
        run(),  # no tools at all still counts as observed
        run(call("a", 0, 10)),
    ]
    fields = LEARNER.learn(runs)["agent"]
    assert fields[RUNS_FIELD] == RunsObserved(5)
    assert fields[sha_id(["a", "b"])] == GroupSupport(("a", "b"), 2)
    assert fields[sha_id(["a", "c"])] == GroupSupport(("a", "c"), 1)


def test_group_seen_twice_in_one_run_counts_once() -> None:
    twice = run(call("a", 0, 10), call("b", 0, 10), call("a", 20, 30), call("b", 25, 35))
    fields = LEARNER.learn([twice])["agent"]
    assert groups_of(fields) == {sha_id(["a", "b"]): GroupSupport(("a", "b"), 1)}


def test_agents_learn_separately() -> None:
    deltas = LEARNER.learn(
        [
            run(call("a", 0, 10), call("b", 0, 10), agent_id="x"),
            run(call("c", 0, 10), call("d", 0, 10), agent_id="y"),
            run(agent_id="y"),
        ]
    )
    assert deltas["x"][RUNS_FIELD] == RunsObserved(1)
    assert deltas["y"][RUNS_FIELD] == RunsObserved(2)
    assert cohorts_of(deltas["x"]) == {("a", "b")}
    assert cohorts_of(deltas["y"]) == {("c", "d")}


def test_empty_batch_has_no_deltas() -> None:
    assert LEARNER.learn([]) == {}


def test_group_id_format() -> None:
    names = ["web_search", "fetch", "calculator"]
    group_id = group_id_for(names)
    assert re.fullmatch(r"fanout:[0-9a-f]{12}", group_id)
    expected = hashlib.sha256(b"calculator|fetch|web_search").hexdigest()[:12]
    assert group_id == "fanout:" + expected
    assert group_id_for(reversed(names)) == group_id


# --------------------------------------------------------------------------- properties

_names = st.sampled_from(["a", "b", "c", "d"])
_interval = st.tuples(_names, st.integers(0, 40), st.integers(0, 20))
_intervals = st.lists(_interval, max_size=14)


def _calls(specs: Sequence[tuple[str, int, int]]) -> list[CallRecord]:
    return [call(name, start, start + length) for name, start, length in specs]


def _overlap(x: CallRecord, y: CallRecord) -> bool:
    return max(x.start_ns, y.start_ns) < min(x.end_ns, y.end_ns)


def _is_sub_multiset(small: Sequence[str], big: Sequence[str]) -> bool:
    big_counts = Counter(big)
    return all(big_counts[n] >= c for n, c in Counter(small).items())


def _brute_force_cohorts(calls: Sequence[CallRecord]) -> set[tuple[str, ...]]:
    # Every maximal clique of an interval graph is the set of intervals
    # containing some interval's start.
    candidates = set()
    for point in {c.start_ns for c in calls}:
        names = tuple(sorted(c.name for c in calls if c.start_ns <= point < c.end_ns))
        if len(names) >= 2:
            candidates.add(names)
    return {
        names
        for names in candidates
        if not any(
            len(other) > len(names) and _is_sub_multiset(names, other) for other in candidates
        )
    }


@settings(max_examples=300, deadline=None)
@given(_intervals)
def test_cohorts_are_maximal_and_cover_every_overlapping_pair(
    specs: list[tuple[str, int, int]],
) -> None:
    calls = _calls(specs)
    cohorts = find_cohorts(calls)

    assert len(set(cohorts)) == len(cohorts)
    for names in cohorts:
        assert len(names) >= 2
        assert list(names) == sorted(names)
        for other in cohorts:
            if other != names:
                assert not _is_sub_multiset(names, other)
    for i, x in enumerate(calls):
        for y in calls[i + 1 :]:
            if _overlap(x, y):
                assert any(_is_sub_multiset([x.name, y.name], names) for names in cohorts)
    assert set(cohorts) == _brute_force_cohorts(calls)


def _merge_deltas(
    left: dict[str, dict[str, Mergeable]], right: dict[str, dict[str, Mergeable]]
) -> dict[str, dict[str, Mergeable]]:
    merged = {agent: dict(fields) for agent, fields in left.items()}
    for agent, fields in right.items():
        target = merged.setdefault(agent, {})
        for key, value in fields.items():
            target[key] = target[key].merge(value) if key in target else value
    return merged


_runs_specs = st.lists(st.tuples(st.sampled_from(["x", "y"]), _intervals), max_size=8)


@settings(max_examples=150, deadline=None)
@given(_runs_specs, st.data())
def test_merging_split_batches_equals_learning_all(
    run_specs: list[tuple[str, list[tuple[str, int, int]]]], data: st.DataObject
) -> None:
    runs = [run(*_calls(specs), agent_id=agent) for agent, specs in run_specs]
    split = data.draw(st.integers(0, len(runs)))
    merged = _merge_deltas(LEARNER.learn(runs[:split]), LEARNER.learn(runs[split:]))
    assert merged == LEARNER.learn(runs)


@settings(max_examples=100, deadline=None)
@given(_runs_specs)
def test_learned_fields_round_trip_through_bytes(
    run_specs: list[tuple[str, list[tuple[str, int, int]]]],
) -> None:
    runs = [run(*_calls(specs), agent_id=agent) for agent, specs in run_specs]
    for fields in LEARNER.learn(runs).values():
        for key, value in fields.items():
            assert LEARNER.decode_field(key, value.to_bytes()) == value


# --------------------------------------------------------------------------- fields


def test_decode_field_round_trip() -> None:
    group = GroupSupport(("fetch", "search", "search"), 7)
    assert LEARNER.decode_field(group.group_id, group.to_bytes()) == group
    runs = RunsObserved(12)
    assert LEARNER.decode_field(RUNS_FIELD, runs.to_bytes()) == runs


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v": 1, "tools": ["a", "b"]}',
        b'{"v": 2, "tools": ["a", "b"], "support": 1}',
        b'{"v": 1, "tools": ["a", "b"], "support": -1}',
        b'{"v": 1, "tools": ["a", "b"], "support": "1"}',
        b'{"v": 1, "tools": ["a", "b"], "support": true}',
        b'{"v": 1, "tools": ["b", "a"], "support": 1}',
        b'{"v": 1, "tools": ["a"], "support": 1}',
        b'{"v": 1, "tools": ["a", 3], "support": 1}',
        b'{"v": 1, "tools": ["a", "c"], "support": 1}',  # names do not match the id
    ],
)
def test_decode_group_rejects_corrupt_data(payload: bytes) -> None:
    with pytest.raises(ValueError):
        LEARNER.decode_field(group_id_for(["a", "b"]), payload)


@pytest.mark.parametrize(
    "payload", [b"{", b'{"v": 1}', b'{"v": 1, "runs": -3}', b'{"v": 9, "runs": 3}']
)
def test_decode_runs_rejects_corrupt_data(payload: bytes) -> None:
    with pytest.raises(ValueError):
        LEARNER.decode_field(RUNS_FIELD, payload)


def test_decode_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        LEARNER.decode_field("something-else", RunsObserved(1).to_bytes())


def test_group_values_validate_their_shape() -> None:
    with pytest.raises(ValueError):
        GroupSupport(("b", "a"), 1)
    with pytest.raises(ValueError):
        GroupSupport(("a",), 1)
    with pytest.raises(ValueError):
        RunsObserved(-1)


def test_merge_adds_counts_and_leaves_inputs_unchanged() -> None:
    left, right = GroupSupport(("a", "b"), 2), GroupSupport(("a", "b"), 3)
    assert left.merge(right) == GroupSupport(("a", "b"), 5)
    assert left == GroupSupport(("a", "b"), 2)
    assert RunsObserved(2).merge(RunsObserved(4)) == RunsObserved(6)


def test_merge_with_mismatched_names_keeps_the_first() -> None:
    first, other = GroupSupport(("a", "b"), 2), GroupSupport(("c", "d"), 9)
    assert first.merge(other) == first


# --------------------------------------------------------------------------- view


def _sample_plan() -> ExecutionPlan:
    runs = [
        run(call("search", 0, 10), call("fetch", 0, 10)),
        run(call("search", 0, 10), call("fetch", 0, 10)),
        run(call("search", 0, 10), call("fetch", 0, 10)),
        run(call("search", 0, 10), call("calc", 0, 10)),
        run(call("calc", 0, 10), call("lookup", 0, 10)),
        run(),
    ]
    return LEARNER.view("agent", LEARNER.learn(runs)["agent"])


def test_view_orders_groups_by_support_then_id() -> None:
    plan = _sample_plan()
    assert plan.agent_id == "agent"
    assert plan.runs_observed == 6
    assert plan.groups[0] == ParallelGroup(
        sha_id(["fetch", "search"]), ("fetch", "search"), 3, runs_observed=6
    )
    tail_ids = [g.group_id for g in plan.groups[1:]]
    assert tail_ids == sorted([sha_id(["calc", "search"]), sha_id(["calc", "lookup"])])
    assert plan.groups[0].support_ratio == pytest.approx(0.5)


def test_parallel_hints_and_groups_for() -> None:
    plan = _sample_plan()
    hints = plan.parallel_hints()
    assert hints["fetch"] == (sha_id(["fetch", "search"]),)
    assert hints["search"][0] == sha_id(["fetch", "search"])
    assert set(hints["search"]) == {sha_id(["fetch", "search"]), sha_id(["calc", "search"])}
    assert set(hints["calc"]) == {sha_id(["calc", "search"]), sha_id(["calc", "lookup"])}
    assert [g.tool_names for g in plan.groups_for("lookup")] == [("calc", "lookup")]
    assert plan.groups_for("unknown") == ()
    hints["fetch"] = ()
    assert plan.parallel_hints()["fetch"] == (sha_id(["fetch", "search"]),)


def test_parallel_hints_list_a_self_group_once() -> None:
    plan = LEARNER.view("agent", LEARNER.learn([run(call("s", 0, 9), call("s", 1, 5))])["agent"])
    assert plan.parallel_hints() == {"s": (sha_id(["s", "s"]),)}


def test_groups_with_support_filters_rare_groups() -> None:
    plan = _sample_plan()
    assert [g.tool_names for g in plan.groups_with_support(0.4)] == [("fetch", "search")]
    assert len(plan.groups_with_support(0.0)) == 3
    assert plan.groups_with_support(1.01) == ()
    with pytest.raises(ValueError):
        plan.groups_with_support(float("nan"))


def test_view_of_empty_fields() -> None:
    plan = LEARNER.view("nobody", {})
    assert plan == ExecutionPlan("nobody", 0, ())
    assert plan.parallel_hints() == {}
    assert plan.groups_with_support(0.0) == ()


def test_support_ratio_without_runs_is_zero() -> None:
    assert ParallelGroup("fanout:000000000000", ("a", "b"), 1, 0).support_ratio == 0.0


def test_execution_plan_dict_round_trip() -> None:
    plan = _sample_plan()
    as_dict = plan.to_dict()
    restored = ExecutionPlan.from_dict(json.loads(json.dumps(as_dict)))
    assert restored == plan
    assert restored.to_dict() == as_dict
    assert as_dict["groups"][0]["support_ratio"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"agent_id": "a", "runs_observed": 1},
        {"agent_id": "a", "runs_observed": -1, "groups": []},
        {"agent_id": "a", "runs_observed": True, "groups": []},
        {"agent_id": 3, "runs_observed": 1, "groups": []},
        {"agent_id": "a", "runs_observed": 1, "groups": ["x"]},
        {"agent_id": "a", "runs_observed": 1, "groups": [{"group_id": "g", "support": 1}]},
        {
            "agent_id": "a",
            "runs_observed": 1,
            "groups": [{"group_id": "g", "tool_names": [1, 2], "support": 1}],
        },
        {"version": 99, "agent_id": "a", "runs_observed": 1, "groups": []},
    ],
)
def test_execution_plan_from_dict_rejects_malformed_input(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ExecutionPlan.from_dict(broken)
