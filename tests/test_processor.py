"""End-to-end behaviour of the processor: spans in, run records out."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import pytest
from opentelemetry import trace

from otel_adaptive.records import RunRecord
from otel_adaptive.store.memory import MemoryStore
from spans import CHAIN, LLM, MS, TOOL, agent_attrs, make_processor, timed_span, usage


def _one_run(tracer: trace.Tracer) -> None:
    """An agent with two nested function scopes, two overlapping same-name LLM
    calls with different token counts, and three tools, two of which share a
    name and overlap."""
    with timed_span(tracer, "planner-agent", 0, 1000, agent_attrs("planner")):
        with timed_span(tracer, "plan", 0, 500, CHAIN):
            with timed_span(tracer, "chat test-model", 10, 300, LLM, end_attributes=usage(50, 7)):
                pass
            with timed_span(tracer, "chat test-model", 20, 250, LLM, end_attributes=usage(80, 9)):
                pass
        with timed_span(tracer, "act", 500, 990, CHAIN):
            with timed_span(
                tracer, "execute_tool search", 510, 700, {**TOOL, "gen_ai.tool.name": "search"}
            ):
                pass
            with timed_span(
                tracer, "execute_tool search", 520, 690, {**TOOL, "gen_ai.tool.name": "search"}
            ):
                pass
            with timed_span(
                tracer, "execute_tool fetch", 700, 800, {**TOOL, "gen_ai.tool.name": "fetch"}
            ):
                pass


def test_one_run_with_overlapping_same_name_calls_is_assembled_exactly() -> None:
    provider, processor, tracer = make_processor()
    _one_run(tracer)
    assert processor.force_flush(5000)

    runs = processor.store.list_runs("planner")
    assert len(runs) == 1
    run = runs[0]
    assert run.agent_id == "planner"
    assert run.end_ns - run.start_ns == 1000 * MS
    got = [
        (
            c.kind,
            c.name,
            c.start_ns - run.start_ns,
            c.duration_ns,
            c.output_tokens,
            c.prompt_tokens,
            c.path,
        )
        for c in run.calls
    ]
    assert got == [
        ("llm", "chat test-model", 10 * MS, 290 * MS, 50, 7, ("planner-agent", "plan")),
        ("llm", "chat test-model", 20 * MS, 230 * MS, 80, 9, ("planner-agent", "plan")),
        ("tool", "search", 510 * MS, 190 * MS, None, None, ("planner-agent", "act")),
        ("tool", "search", 520 * MS, 170 * MS, None, None, ("planner-agent", "act")),
        ("tool", "fetch", 700 * MS, 100 * MS, None, None, ("planner-agent", "act")),
    ]
    assert run.calls[0].total_tokens == 57
    assert run.calls[0].model_name == "test-model"
    # Parent ids point at the function spans, which differ for LLM calls and tools.
    assert run.calls[0].parent_span_id == run.calls[1].parent_span_id
    assert run.calls[0].parent_span_id != run.calls[2].parent_span_id
    assert len({c.span_id for c in run.calls}) == 5
    stats = processor.stats()
    assert stats["runs_completed"] == 1
    assert stats["runs_stored"] == 1
    assert stats["spans_started"] == stats["spans_ended"] == 8
    provider.shutdown()


def test_usage_set_after_start_is_recorded_and_kind_decided_at_end() -> None:
    provider, processor, tracer = make_processor()
    with timed_span(tracer, "agent", 0, 100, agent_attrs("late")):
        # Nothing says this is an LLM span until it ends.
        with timed_span(tracer, "call", 1, 50, end_attributes={**LLM, **usage(123)}):
            pass
    assert processor.force_flush(5000)
    [run] = processor.store.list_runs("late")
    [call] = run.calls
    assert (call.kind, call.output_tokens) == ("llm", 123)
    provider.shutdown()


def test_two_agents_in_one_process_get_separate_runs() -> None:
    provider, processor, tracer = make_processor()
    for name in ("alpha", "beta", "alpha"):
        with timed_span(tracer, f"{name}-run", 0, 10, agent_attrs(name)):
            with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(3)):
                pass
    assert processor.force_flush(5000)
    assert len(processor.store.list_runs("alpha")) == 2
    assert len(processor.store.list_runs("beta")) == 1
    assert processor.store.agents() == ["alpha", "beta"]
    provider.shutdown()


def test_trace_without_agent_span_is_one_run_under_service_name() -> None:
    provider, processor, tracer = make_processor(service_name="svc")
    with timed_span(tracer, "handle request", 0, 10):
        with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(3)):
            pass
    assert processor.force_flush(5000)
    [run] = processor.store.list_runs("svc")
    assert run.calls[0].path == ("handle request",)
    provider.shutdown()


def test_configured_fallback_agent_id_wins_over_service_name() -> None:
    provider, processor, tracer = make_processor(service_name="svc", agent_id="my-agent")
    with timed_span(tracer, "root", 0, 10), timed_span(tracer, "chat m", 1, 5, LLM):
        pass
    assert processor.force_flush(5000)
    assert processor.store.run_count("my-agent") == 1
    assert processor.store.run_count("svc") == 0
    provider.shutdown()


def test_agent_only_policy_ignores_traces_without_agents() -> None:
    provider, processor, tracer = make_processor(run_root="agent")
    with timed_span(tracer, "root", 0, 10), timed_span(tracer, "chat m", 1, 5, LLM):
        pass
    assert processor.force_flush(5000)
    assert processor.store.agents() == []
    assert processor.stats()["spans_outside_runs"] == 2
    provider.shutdown()


def test_bridge_agent_span_takes_the_name_of_the_agent_beneath_it() -> None:
    provider, processor, tracer = make_processor()
    with timed_span(tracer, "Agent workflow", 0, 100, {"openinference.span.kind": "AGENT"}):
        with timed_span(tracer, "Weather agent", 1, 99, agent_attrs("weather")):
            with timed_span(tracer, "chat m", 2, 50, LLM, end_attributes=usage(5)):
                pass
    assert processor.force_flush(5000)
    [run] = processor.store.list_runs("weather")
    assert run.calls[0].path == ("Agent workflow", "Weather agent")
    provider.shutdown()


def test_llm_span_inside_llm_span_is_one_call_with_tokens_counted_once() -> None:
    provider, processor, tracer = make_processor()
    with timed_span(tracer, "agent", 0, 100, agent_attrs("bridge")):
        with timed_span(tracer, "response", 1, 60, {"openinference.span.kind": "LLM"}):
            with timed_span(tracer, "chat m", 2, 55, LLM, end_attributes=usage(42)):
                pass
    assert processor.force_flush(5000)
    [run] = processor.store.list_runs("bridge")
    [call] = run.calls
    assert (call.name, call.output_tokens, call.model_name) == ("response", 42, "test-model")
    provider.shutdown()


def test_never_ended_run_is_evicted_and_counted() -> None:
    provider, processor, tracer = make_processor(run_timeout_seconds=0.05)
    agent = tracer.start_span("stuck", attributes=agent_attrs("stuck"))
    with trace.use_span(agent, end_on_exit=False):
        with tracer.start_as_current_span("chat m", attributes=LLM):
            pass
    assert processor.force_flush(5000)
    assert processor.stats()["live_spans"] == 1
    deadline = time.monotonic() + 5
    while processor.stats()["runs_evicted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.06)  # let the run timeout elapse, then flush again to run eviction
        processor.force_flush(5000)
    stats = processor.stats()
    assert stats["runs_evicted"] == 1
    assert stats["open_runs"] == 0
    assert stats["live_spans"] == 0  # the hot-path map forgets the abandoned span too
    abandoned = weakref.ref(agent)
    del agent
    gc.collect()
    assert abandoned() is None  # and nothing of ours keeps it alive
    provider.shutdown()


def test_calls_beyond_the_cap_are_truncated_and_counted() -> None:
    provider, processor, tracer = make_processor(max_calls_per_run=3)
    with timed_span(tracer, "agent", 0, 100, agent_attrs("big")):
        for i in range(5):
            with timed_span(tracer, "chat m", i, i + 0.5, LLM):
                pass
    assert processor.force_flush(5000)
    [run] = processor.store.list_runs("big")
    assert len(run.calls) == 3
    assert processor.stats()["calls_truncated"] == 2
    provider.shutdown()


def test_long_names_are_cut() -> None:
    provider, processor, tracer = make_processor(max_name_length=16)
    with timed_span(tracer, "x" * 1000, 0, 10, agent_attrs("y" * 1000)):
        with timed_span(tracer, "chat " + "z" * 1000, 1, 5, LLM):
            pass
    assert processor.force_flush(5000)
    [agent] = processor.store.agents()
    assert agent == "y" * 16
    [run] = processor.store.list_runs(agent)
    assert run.calls[0].path == ("x" * 16,)
    assert len(run.calls[0].name) == 16
    provider.shutdown()


class _BlockingStore(MemoryStore):
    """A store whose writes wait until released: the exporter is stuck behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def save_runs(self, runs: list[RunRecord]) -> None:  # type: ignore[override]
        self.entered.set()
        self.release.wait(30)
        super().save_runs(runs)


def test_full_queue_never_blocks_the_application_and_counts_drops() -> None:
    store = _BlockingStore()
    provider, processor, tracer = make_processor(
        store=store, max_queue_size=100, max_export_batch_size=10, schedule_delay_millis=1
    )
    with timed_span(tracer, "agent", 0, 1, agent_attrs("q")):
        pass
    assert store.entered.wait(10)  # the exporter is now stuck in save_runs
    started = time.perf_counter()
    for i in range(2000):
        with timed_span(tracer, "agent", 0, 1, agent_attrs(f"a{i}")):
            pass
    elapsed = time.perf_counter() - started
    stats = processor.stats()
    assert stats["events_dropped"] >= 4000 - 100
    assert stats["queue_depth"] <= 100
    assert elapsed < 5  # nothing waited for the exporter (real cost is a few ms)
    # Every span is accounted for: seen by the exporter, still queued, or dropped.
    assert stats["spans_started"] == stats["spans_ended"] == 2001
    store.release.set()
    assert processor.force_flush(10_000)
    provider.shutdown()


def test_force_flush_and_shutdown_lose_nothing() -> None:
    provider, processor, tracer = make_processor(max_export_batch_size=7)
    for i in range(300):
        with timed_span(tracer, "agent", 0, 2, agent_attrs("flush")):
            with timed_span(tracer, "chat m", 0.5, 1, LLM):
                pass
        if i == 149:
            assert processor.force_flush(10_000)
            assert processor.store.run_count("flush") == 150
    provider.shutdown()
    assert processor.store.run_count("flush") == 300
    processor.shutdown()  # a second shutdown is harmless
    assert processor.force_flush(100)


def test_spans_after_shutdown_are_ignored_without_error() -> None:
    _, processor, tracer = make_processor()
    processor.shutdown()
    with timed_span(tracer, "agent", 0, 2, agent_attrs("late")):
        pass
    assert processor.stats()["hot_path_errors"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_stores_its_own_runs_and_not_the_parents() -> None:
    provider, processor, tracer = make_processor()
    with timed_span(tracer, "agent", 0, 2, agent_attrs("parent")):
        pass
    assert processor.force_flush(5000)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            with timed_span(tracer, "agent", 0, 2, agent_attrs("child")):
                with timed_span(tracer, "chat m", 0.5, 1, LLM):
                    pass
            ok = processor.force_flush(5000)
            result = (
                f"{ok},{processor.store.run_count('child')},{processor.store.run_count('parent')}"
            )
            os.write(write_fd, result.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    assert result == "True,1,1"
    assert processor.store.run_count("child") == 0  # the child's store is its own copy
    assert processor.store.run_count("parent") == 1
    provider.shutdown()
