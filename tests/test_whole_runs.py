"""Whole runs or nothing: under overload a run is stored and learned whole, or not at all.

The exporter is held inside the store while a segment of span events arrives, so the
processor's small queue fills and drops events at a known point; then it is released
and drains. Whatever the interleaving and wherever the cuts fall, every stored run is
complete, and the learned state equals what the learners make of exactly those runs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

from otel_adaptive.learners.base import Mergeable
from otel_adaptive.learners.trie import NodeStats
from otel_adaptive.records import RunRecord
from otel_adaptive.store.memory import MemoryStore
from spans import BASE_NS, LLM, MS, TOOL, agent_attrs, make_processor, usage

BLOCKER = "blocker"


class _GatedStore(MemoryStore):
    """Holds the exporter inside ``save_runs`` while the gate is shut."""

    def __init__(self) -> None:
        super().__init__(max_runs_per_agent=10_000)
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(30)
            self.held.clear()
        return super().save_runs(runs)


@dataclass(frozen=True)
class _Call:
    tool: bool
    output_tokens: int


@dataclass(frozen=True)
class _RunPlan:
    agent: str
    calls: tuple[_Call, ...]


_calls = st.lists(
    st.builds(_Call, tool=st.booleans(), output_tokens=st.integers(1, 500)),
    min_size=1,
    max_size=4,
)
_runs = st.lists(
    st.builds(_RunPlan, agent=st.sampled_from(["alpha", "beta"]), calls=_calls.map(tuple)),
    min_size=1,
    max_size=6,
)


def _events(plan: _RunPlan, index: int) -> list[tuple[int, str, int]]:
    """One run's events in order: (run, action, call) with action start/end/root."""
    events = [(index, "root_start", -1)]
    for call in range(len(plan.calls)):
        events += [(index, "start", call), (index, "end", call)]
    events.append((index, "root_end", -1))
    return events


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[_RunPlan], list[tuple[int, str, int]], list[int]]:
    plans = draw(_runs)
    pending = [_events(plan, index) for index, plan in enumerate(plans)]
    order: list[tuple[int, str, int]] = []
    while any(pending):
        choices = [i for i, events in enumerate(pending) if events]
        order.append(pending[draw(st.sampled_from(choices))].pop(0))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(order) - 1, 1)), max_size=3)))
    return plans, order, cuts


def _hold(store: _GatedStore, tracer: trace.Tracer) -> None:
    """Shut the gate and wait until the exporter is stuck writing a blocker run."""
    store.gate.clear()
    with tracer.start_as_current_span("agent", attributes=agent_attrs(BLOCKER)):
        pass
    assert store.held.wait(10)


def _release(store: _GatedStore, processor: object) -> None:
    store.gate.set()
    deadline = time.monotonic() + 10
    while processor.stats()["queue_depth"] and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.002)


def _play(
    tracer: trace.Tracer,
    plans: list[_RunPlan],
    events: list[tuple[int, str, int]],
    roots: dict[int, trace.Span],
    calls: dict[tuple[int, int], trace.Span],
) -> None:
    for run, action, call in events:
        plan = plans[run]
        at = BASE_NS + (run * 100 + len(calls)) * MS
        if action == "root_start":
            roots[run] = tracer.start_span("agent", attributes=agent_attrs(plan.agent))
        elif action == "root_end":
            roots[run].end()
        elif action == "start":
            spec = plan.calls[call]
            attributes = {**TOOL, "gen_ai.tool.name": "t"} if spec.tool else LLM
            calls[(run, call)] = tracer.start_span(
                "call",
                context=trace.set_span_in_context(roots[run]),
                attributes=attributes,
                start_time=at,
            )
        else:
            span = calls[(run, call)]
            if not plan.calls[call].tool:
                for key, value in usage(plan.calls[call].output_tokens).items():
                    span.set_attribute(key, value)
            span.end(end_time=at + MS)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenario=_scenario(), queue_size=st.integers(2, 24))
def test_stored_runs_are_whole_and_learning_matches_them(
    scenario: tuple[list[_RunPlan], list[tuple[int, str, int]], list[int]], queue_size: int
) -> None:
    plans, order, cuts = scenario
    store = _GatedStore()
    provider, processor, tracer = make_processor(
        store=store,
        max_queue_size=queue_size,
        max_export_batch_size=queue_size,
        schedule_delay_millis=1,
        learn_interval_millis=1,
        run_grace_seconds=0,
    )
    roots: dict[int, trace.Span] = {}
    calls: dict[tuple[int, int], trace.Span] = {}
    try:
        bounds = [0, *cuts, len(order)]
        for start, stop in itertools.pairwise(bounds):
            _hold(store, tracer)
            _play(tracer, plans, order[start:stop], roots, calls)
            _release(store, processor)
        assert processor.force_flush(10_000)

        stored = [run for agent in ("alpha", "beta") for run in store.list_runs(agent)]
        by_id = {run.id: run for run in stored}
        assert len(by_id) == len(stored)
        for run in stored:
            assert not run.truncated
            # The run's plan: the root span id is in its id; its calls must all be there.
            index = next(
                i
                for i, span in roots.items()
                if run.id.endswith(f"{span.get_span_context().span_id:016x}")
            )
            plan = plans[index]
            assert run.agent_id == plan.agent
            assert sorted(c.kind for c in run.calls) == sorted(
                "tool" if c.tool else "llm" for c in plan.calls
            )
            llm_tokens = sorted(c.output_tokens for c in run.calls if c.kind == "llm")
            assert llm_tokens == sorted(c.output_tokens for c in plan.calls if not c.tool)

        stats = processor.stats()
        blockers = store.run_count(BLOCKER)
        # Counted as written, exactly; every run the assembler emitted is stored or dropped.
        assert stats["runs_stored"] == len(stored) + blockers
        assert stats["runs_completed"] == len(stored) + blockers
        assert stats["runs_truncated"] == 0
        if stats["events_dropped"] == 0:
            assert len(stored) == len(plans)
            assert stats["runs_dropped_overload"] == 0

        # Learned state equals one fresh learning of exactly the stored runs.
        for name, learner in store.learners.items():
            expected = learner.learn(stored)
            for agent in ("alpha", "beta"):
                _assert_same_fields(store.load_fields(agent, name), expected.get(agent, {}))
    finally:
        store.gate.set()
        provider.shutdown()


def _assert_same_fields(got: Mapping[str, Mergeable], want: Mapping[str, Mergeable]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, NodeStats):
            # Sums in another order may differ in the last bits; counts and extremes not.
            stored = got[key]
            assert isinstance(stored, NodeStats)
            for metric in ("remaining_calls", "interarrival_ms", "output_tokens", "sensitivity"):
                a, b = getattr(stored, metric), getattr(value, metric)
                assert (a.count, a.min, a.max) == (b.count, b.min, b.max), (key, metric)
                assert a.mean == pytest.approx(b.mean, rel=1e-9, abs=1e-9), (key, metric)
        else:
            assert got[key].to_bytes() == value.to_bytes(), key
