"""When the exporter writes: an interval's learned deltas leave in the cycle that learned them."""

from __future__ import annotations

import time
from collections import deque
from types import SimpleNamespace

import pytest

from otel_adaptive import _learned_state, exporter
from otel_adaptive.cache import PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.learners import build_learners
from otel_adaptive.records import CallRecord, RunRecord
from otel_adaptive.store.memory import MemoryStore

MS = 1_000_000


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(number: int) -> RunRecord:
    calls = tuple(
        CallRecord(
            kind="llm", name="chat", span_id=f"{number:08x}{k:08x}", parent_span_id=None,
            path=("step",), start_ns=k * 10 * MS, end_ns=(k * 10 + 5) * MS, output_tokens=7,
        )
        for k in range(2)
    )  # fmt: skip
    return RunRecord(
        id=f"run-{number}", agent_id="timed", trace_id=f"{number:032x}",
        start_ns=0, end_ns=30 * MS, calls=calls,
    )  # fmt: skip


def test_deltas_are_written_in_the_cycle_that_learns_them(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    fake_time = SimpleNamespace(**{name: getattr(time, name) for name in dir(time)})
    fake_time.monotonic = clock
    monkeypatch.setattr(exporter, "time", fake_time)
    monkeypatch.setattr(_learned_state, "time", fake_time)
    config = AdaptiveConfig(learn_interval_millis=1000)
    learners = build_learners(config.learners)
    store = MemoryStore(learners=learners)
    worker = exporter.Exporter(
        config, deque(), store, list(learners.values()), PlanCache(), lambda ids: None
    )
    completed: list[RunRecord] = []
    monkeypatch.setattr(worker._assembler, "take_completed", lambda: list(completed))

    def cycle(at: float, runs: tuple[RunRecord, ...] = ()) -> None:
        clock.now = at
        completed[:] = runs
        worker._after_batch(force=False)
        completed.clear()

    cycle(0.0)  # a write: the write clock's next tick is at 1.0
    cycle(0.3, (run(1), run(2)))  # the runs wait for learning until 1.3
    cycle(1.0)  # the write clock ticks: the runs are stored, nothing is learned yet
    assert worker.counters.runs_stored == 2
    assert worker.counters.batches_merged == 0
    cycle(1.3)  # learned, and written at once (the write clock would say 2.0)
    assert worker.counters.runs_learned == 2
    assert worker.counters.batches_merged == 1
    assert store.load_fields("timed", "trie")
