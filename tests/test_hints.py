"""Agent hints served on the hot path from what the processor learned."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from opentelemetry import trace

import otel_adaptive
from otel_adaptive import AgentHints
from otel_adaptive import cache as cache_module
from otel_adaptive.learners.trie import validate_envelope
from spans import CHAIN, LLM, TOOL, agent_attrs, make_processor, timed_span, usage

CALLS_PER_RUN = 4


def _tokens(k: int) -> int:
    return 58 + 40 * (k - 1)


def test_hints_follow_the_call_index_in_every_run_not_only_the_first() -> None:
    provider, processor, tracer = make_processor()
    seen: list[list[AgentHints | None]] = []
    for _ in range(50):
        hints_this_run: list[AgentHints | None] = []
        with timed_span(tracer, "solver", 0, 100, agent_attrs("solver")):
            for k in range(1, CALLS_PER_RUN + 1):
                hints_this_run.append(otel_adaptive.current_hints())
                with timed_span(
                    tracer, "chat m", k * 10, k * 10 + 5, LLM, end_attributes=usage(_tokens(k))
                ):
                    pass
        seen.append(hints_this_run)
        assert processor.force_flush(5000)

    assert seen[0] == [None] * CALLS_PER_RUN  # nothing learned before the first run
    for run, hints_this_run in enumerate(seen[1:], start=2):
        for k, hints in enumerate(hints_this_run, start=1):
            assert hints is not None, (run, k)
            assert hints.osl == _tokens(k), (run, k)
            assert hints.total_requests == CALLS_PER_RUN, (run, k)
            # 5 ms from one call's end to the next one's start; nothing follows the last.
            assert hints.iat == (5 if k < CALLS_PER_RUN else 0)
            assert hints.prefix_id == "solver-d1"
    provider.shutdown()


def test_hints_inside_an_open_llm_span_describe_that_call() -> None:
    provider, processor, tracer = make_processor()
    for _ in range(3):
        with timed_span(tracer, "agent", 0, 100, agent_attrs("inside")):
            for k in (1, 2):
                with timed_span(
                    tracer, "chat m", k * 10, k * 10 + 5, LLM, end_attributes=usage(_tokens(k))
                ):
                    pass
        processor.force_flush(5000)
    with timed_span(tracer, "agent", 0, 100, agent_attrs("inside")):
        with timed_span(tracer, "chat m", 10, 15, LLM):
            first = otel_adaptive.current_hints()
        with timed_span(tracer, "chat m", 20, 25, LLM):
            second = otel_adaptive.current_hints()
    assert first is not None and second is not None
    assert (first.osl, second.osl) == (_tokens(1), _tokens(2))
    provider.shutdown()


def test_call_sites_under_different_scopes_get_different_hints() -> None:
    provider, processor, tracer = make_processor()

    def run() -> dict[str, AgentHints | None]:
        got = {}
        with timed_span(tracer, "writer", 0, 100, agent_attrs("writer")):
            with timed_span(tracer, "outline", 0, 40, CHAIN):
                got["outline"] = otel_adaptive.current_hints()
                with timed_span(tracer, "chat m", 1, 30, LLM, end_attributes=usage(20)):
                    pass
            with timed_span(tracer, "draft", 40, 100, CHAIN):
                got["draft"] = otel_adaptive.current_hints()
                with timed_span(tracer, "chat m", 41, 90, LLM, end_attributes=usage(2000)):
                    pass
        processor.force_flush(5000)
        return got

    for _ in range(5):
        got = run()
    outline, draft = got["outline"], got["draft"]
    assert outline is not None and draft is not None
    assert (outline.osl, draft.osl) == (20, 2000)
    assert outline.prefix_id == draft.prefix_id == "writer-d2"
    # total_requests = calls the run already made + 1 + round(mean remaining calls):
    # "draft" is the first call at its path but the run's second, and its last.
    assert (outline.total_requests, draft.total_requests) == (2, 2)
    provider.shutdown()


def test_two_agents_learn_and_hint_separately() -> None:
    provider, processor, tracer = make_processor()
    for _ in range(3):
        for name, tokens in (("small", 10), ("large", 900)):
            with timed_span(tracer, "run", 0, 10, agent_attrs(name)):
                with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(tokens)):
                    pass
        processor.force_flush(5000)
    results = {}
    for name in ("small", "large"):
        with timed_span(tracer, "run", 0, 10, agent_attrs(name)):
            results[name] = otel_adaptive.current_hints()
    assert results["small"] is not None and results["large"] is not None
    assert (results["small"].osl, results["large"].osl) == (10, 900)
    assert results["small"].prefix_id.startswith("small-")
    provider.shutdown()


def test_manual_latency_sensitivity_raises_but_never_lowers() -> None:
    provider, processor, tracer = make_processor()
    for _ in range(3):
        with timed_span(tracer, "run", 0, 10, agent_attrs("lat")):
            with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(5)):
                pass
        processor.force_flush(5000)
    with timed_span(tracer, "run", 0, 10, agent_attrs("lat")):
        learned = otel_adaptive.current_hints()
        with timed_span(tracer, "relaxed", 1, 9, CHAIN):
            assert otel_adaptive.set_latency_sensitivity(1)  # below what was learned
            not_lowered = otel_adaptive.current_hints()
        assert otel_adaptive.set_latency_sensitivity(5)
        with timed_span(tracer, "step", 1, 9, CHAIN):
            assert otel_adaptive.set_latency_sensitivity(1)  # lower value below: max wins
            raised = otel_adaptive.current_hints()
    assert learned is not None and raised is not None and not_lowered is not None
    # A run of one call scores the middle: 0.5 on the 1..5 scale is level 3.
    assert (learned.latency_sensitivity, learned.priority) == (3, 2)
    assert (not_lowered.latency_sensitivity, not_lowered.priority) == (3, 2)
    assert raised.latency_sensitivity == 5
    assert raised.priority == 0
    assert not otel_adaptive.set_latency_sensitivity(0)
    assert not otel_adaptive.set_latency_sensitivity("high")  # type: ignore[arg-type]
    provider.shutdown()


def test_inject_hints_writes_body_path_and_header() -> None:
    provider, processor, tracer = make_processor(hint_header="x-agent-hints")
    for _ in range(2):
        with timed_span(tracer, "run", 0, 10, agent_attrs("inj")):
            with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(7)):
                pass
        processor.force_flush(5000)
    body: dict[str, object] = {"model": "m", "nvext": {"other": 1}}
    headers: dict[str, str] = {}
    with timed_span(tracer, "run", 0, 10, agent_attrs("inj")):
        hints = otel_adaptive.inject_hints(body, headers)
    assert hints is not None
    assert body["nvext"] == {"other": 1, "agent_hints": hints.to_dict()}
    assert json.loads(headers["x-agent-hints"]) == hints.to_dict()
    assert set(hints.to_dict()) == {
        "osl",
        "iat",
        "priority",
        "latency_sensitivity",
        "prefix_id",
        "total_requests",
    }
    # A body where the path is blocked by a non-object is left alone, without error.
    blocked: dict[str, object] = {"nvext": "not a dict"}
    with timed_span(tracer, "run", 0, 10, agent_attrs("inj")):
        assert otel_adaptive.inject_hints(blocked) is not None
    assert blocked == {"nvext": "not a dict"}
    provider.shutdown()


def test_no_hints_before_learning_or_outside_spans() -> None:
    provider, _, tracer = make_processor()
    assert otel_adaptive.current_hints() is None
    body: dict[str, object] = {}
    with timed_span(tracer, "run", 0, 10, agent_attrs("fresh")):
        assert otel_adaptive.inject_hints(body) is None
    assert body == {}
    provider.shutdown()


def test_fan_out_of_four_tools_is_one_group_in_store_and_cache() -> None:
    provider, processor, tracer = make_processor()
    for _ in range(3):
        with timed_span(tracer, "run", 0, 100, agent_attrs("fan")):
            with timed_span(tracer, "chat m", 0, 10, LLM):
                pass
            for i, name in enumerate(("a", "b", "c", "d")):
                with timed_span(
                    tracer, f"execute_tool {name}", 10 + i, 50, {**TOOL, "gen_ai.tool.name": name}
                ):
                    pass
        processor.force_flush(5000)
    plan = processor.store.load_plan("fan")
    assert [(g.tool_names, g.support) for g in plan.groups] == [(("a", "b", "c", "d"), 3)]
    assert plan.runs_observed == 3
    cached = processor.cache.get("fan")
    assert cached is not None and cached.plan == plan
    provider.shutdown()


def test_trie_envelope_from_the_store_is_valid_wire_format() -> None:
    provider, processor, tracer = make_processor()
    assert processor.store.load_trie("wire") is None
    with timed_span(tracer, "run", 0, 10, agent_attrs("wire")):
        with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(5)):
            pass
    processor.force_flush(5000)
    envelope = processor.store.load_trie("wire")
    assert envelope is not None
    validate_envelope(json.loads(json.dumps(envelope)))
    assert envelope["workflow_name"] == "wire"
    assert (
        envelope["root"]["children"]["run"]["predictions_by_call_index"]["1"]["output_tokens"][
            "mean"
        ]
        == 5
    )
    provider.shutdown()


def test_readers_never_block_while_the_exporter_publishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, processor, tracer = make_processor(schedule_delay_millis=1)
    for _ in range(200):
        with timed_span(tracer, "run", 0, 10, agent_attrs("busy")):
            with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(5)):
                pass
    assert processor.force_flush(5000)  # published: from now on every lookup is served

    # Park the exporter thread in the middle of its next publish, however long it takes.
    parked, release = threading.Event(), threading.Event()
    build_snapshot = cache_module.MappingProxyType

    def parking(mapping: Any) -> Any:
        if threading.current_thread().name == "otel-adaptive-exporter":
            parked.set()
            release.wait(30)
        return build_snapshot(mapping)

    monkeypatch.setattr(cache_module, "MappingProxyType", parking)
    with timed_span(tracer, "run", 0, 10, agent_attrs("busy")):
        with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(5)):
            pass
    assert parked.wait(10)

    # Every reader must be served, many times over, while the publisher is stuck.
    wanted = 200
    errors: list[BaseException] = []
    served = [0] * 4

    def reader(index: int) -> None:
        try:
            deadline = time.monotonic() + 20
            while served[index] < wanted and time.monotonic() < deadline:
                with timed_span(tracer, "run", 0, 10, agent_attrs("busy")):
                    hints = otel_adaptive.current_hints()
                # Every call learned produced 5 tokens and was alone in its run.
                assert hints is not None and (hints.osl, hints.total_requests) == (5, 1), hints
                served[index] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    still_parked = not release.is_set()
    release.set()
    assert errors == []
    assert still_parked and served == [wanted] * 4
    assert processor.force_flush(5000)
    assert processor.stats()["hot_path_errors"] == processor.stats()["hint_errors"] == 0
    provider.shutdown()


def test_processor_methods_mirror_module_functions() -> None:
    provider, processor, tracer = make_processor()
    with timed_span(tracer, "run", 0, 10, agent_attrs("m")):
        with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(5)):
            pass
    processor.force_flush(5000)
    with timed_span(tracer, "run", 0, 10, agent_attrs("m")):
        assert processor.current_hints() == otel_adaptive.current_hints()
        assert processor.current_hints() is not None
    assert trace.get_current_span() is trace.INVALID_SPAN
    provider.shutdown()


def test_agent_named_only_at_end_is_found_at_call_time_by_its_span_name() -> None:
    provider, processor, tracer = make_processor()
    agent = {"openinference.span.kind": "AGENT"}

    def run() -> AgentHints | None:
        with timed_span(tracer, "Agent workflow", 0, 100, agent):
            with timed_span(tracer, "Assistant", 1, 99, agent, {"agent.name": "Assistant"}):
                hints = otel_adaptive.current_hints()
                with timed_span(tracer, "chat m", 2, 50, LLM, end_attributes=usage(11)):
                    pass
        processor.force_flush(5000)
        return hints

    assert run() is None
    hints = run()
    assert processor.store.agents() == ["Assistant"]
    assert hints is not None and hints.osl == 11
    assert hints.prefix_id == "Assistant-d2"
    provider.shutdown()


def test_learning_reaches_hints_without_a_flush() -> None:
    # Plans are rebuilt at most every 0.2 s under load; without any flush they
    # still reach the hints within a few exporter cycles.
    provider, _, tracer = make_processor(schedule_delay_millis=10)
    with timed_span(tracer, "run", 0, 10, agent_attrs("unflushed")):
        with timed_span(tracer, "chat m", 1, 5, LLM, end_attributes=usage(77)):
            pass
    deadline = time.monotonic() + 5
    hints = None
    while hints is None and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting on the exporter's own schedule, not a flush
        with timed_span(tracer, "run", 0, 10, agent_attrs("unflushed")):
            hints = otel_adaptive.current_hints()
    assert hints is not None and hints.osl == 77
    provider.shutdown()
