"""Hostile spans: huge or undecodable names and values, absurd numbers and times, parent cycles.

Whatever arrives, no exception reaches the application, the exporter carries on,
and nothing is stored that a later read (``list_runs``, ``load_trie``,
``load_plan``, ``otel-adaptive inspect``) cannot use.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from reliability_helpers import agent_run, wait_for

from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor
from otel_adaptive.cli import main as cli_main
from otel_adaptive.learners.trie import validate_envelope
from otel_adaptive.store.redis import RedisStore
from spans import LLM, TOOL, agent_attrs

ONE_MB = 1_000_000
NAME_LIMIT = 256  # AdaptiveConfig.max_name_length's default
_QUIET = ("hot_path_errors", "exporter_errors", "learner_errors", "store_errors", "events_dropped")


class _ChosenIds(IdGenerator):
    """Random ids, except the span ids a test queues up (to build parent cycles)."""

    def __init__(self) -> None:
        self.queued: list[int] = []
        self._random = random.Random(7)

    def generate_span_id(self) -> int:
        return self.queued.pop(0) if self.queued else self._random.getrandbits(64)

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128)


@pytest.fixture
def hostile_setup(
    redis_url: str, key_prefix: str
) -> Iterator[tuple[AdaptiveSpanProcessor, trace.Tracer, _ChosenIds]]:
    processor = AdaptiveSpanProcessor(
        AdaptiveConfig(
            redis_url=redis_url,
            key_prefix=key_prefix,
            schedule_delay_millis=60_000,
            run_timeout_seconds=0.3,
            run_grace_seconds=0,
        )
    )
    ids = _ChosenIds()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "hostile"}), id_generator=ids
    )
    provider.add_span_processor(processor)
    yield processor, provider.get_tracer("hostile"), ids
    provider.shutdown()


def _span(tracer: trace.Tracer, name: Any, attributes: dict[str, Any], **kwargs: Any) -> Any:
    return tracer.start_span(name, attributes=attributes, **kwargs)


def _run(
    tracer: trace.Tracer,
    agent_name: Any,
    *,
    span_name: Any = "agent",
    step_name: Any = "step",
    llm_name: Any = "chat m",
    llm_attributes: dict[str, Any] | None = None,
    llm_times: tuple[Any, Any] = (None, None),
    tool_name: Any = "lookup",
) -> None:
    """An agent span > a step > an LLM call and a tool call, any of it hostile."""
    agent = _span(
        tracer, span_name, {**agent_attrs("placeholder"), "gen_ai.agent.name": agent_name}
    )
    with trace.use_span(agent, end_on_exit=True):
        step = _span(tracer, step_name, {"openinference.span.kind": "CHAIN"})
        with trace.use_span(step, end_on_exit=True):
            start, end = llm_times
            llm = _span(tracer, llm_name, {**LLM, **(llm_attributes or {})}, start_time=start)
            llm.end(end_time=end)
            tool = _span(tracer, "execute_tool", {**TOOL, "gen_ai.tool.name": tool_name})
            tool.end()


# --- the catalogue ------------------------------------------------------------------------------

HUGE = "h" * ONE_MB
WIDE = "é" * ONE_MB  # two bytes each in UTF-8


def _huge_values(tracer: trace.Tracer, _: _ChosenIds) -> None:
    _run(
        tracer,
        HUGE,
        span_name=WIDE,
        step_name=HUGE,
        llm_name=HUGE,
        tool_name=WIDE,
        llm_attributes={
            "gen_ai.request.model": HUGE,
            "gen_ai.output.messages": "[" * ONE_MB,  # not JSON
            "gen_ai.input.messages": json.dumps([{"role": "user", "content": HUGE}]),
            "gen_ai.response.finish_reasons": [HUGE, "tool_calls"],
        },
    )


def _undecodable_values(tracer: trace.Tracer, _: _ChosenIds) -> None:
    _run(
        tracer,
        b"\xff\xfe agent",  # the SDK keeps bytes as given
        span_name=b"\xc3\x28",
        step_name=b"\xff",
        llm_name=b"\x80chat",
        tool_name=b"\xfe",
        llm_attributes={
            "gen_ai.request.model": b"\xff",
            "gen_ai.usage.output_tokens": b"\x31\x32",
            "gen_ai.output.messages": b"\xff[{}]",
        },
    )


def _lone_surrogates(tracer: trace.Tracer, _: _ChosenIds) -> None:
    _run(
        tracer,
        "agent\ud800",
        span_name="\udfffroot",
        step_name="step\ud83d",
        llm_name="\udc00",
        tool_name="tool\ud800\udc00x",  # a surrogate pair, not a character, in str
        llm_attributes={"gen_ai.request.model": "m\ud800", "gen_ai.usage.output_tokens": "\ud800"},
    )


BAD_COUNTS: list[Any] = [
    -5,
    10**30,
    2**63,
    float("nan"),
    float("inf"),
    -float("inf"),
    1.5,
    "12abc",
    "9" * 5000,
    True,
]


def _absurd_token_counts(tracer: trace.Tracer, _: _ChosenIds) -> None:
    for count in BAD_COUNTS:
        _run(
            tracer,
            "absurd-tokens",
            llm_attributes={
                "gen_ai.usage.output_tokens": count,
                "gen_ai.usage.input_tokens": count,
                "llm.token_count.total": count,
            },
        )


BAD_TIMES: list[tuple[Any, Any]] = [
    (float("nan"), None),
    (None, float("nan")),
    (float("inf"), float("-inf")),
    (2_000_000_000_000_000_000, 1_000_000_000_000_000_000),  # ends before it starts
    (10**30, 2**64),
    (-(10**400), 10**400),
    (1.5e18, 1.6e18),
    (None, 1),
]


def _absurd_times(tracer: trace.Tracer, _: _ChosenIds) -> None:
    for times in BAD_TIMES:
        _run(tracer, "absurd-times", llm_times=times)


def _parent_cycles(tracer: trace.Tracer, ids: _ChosenIds) -> None:
    trace_id = random.Random(3).getrandbits(128)

    def under(span_id: int) -> Any:
        parent = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
        return trace.set_span_in_context(NonRecordingSpan(parent))

    # A's parent is B and B's parent is A; C is its own parent; D > E > F > D.
    cycle = [(0xA, 0xB), (0xB, 0xA), (0xC, 0xC), (0xD, 0xF), (0xE, 0xD), (0xF, 0xE)]
    opened = []
    for span_id, parent_id in cycle:
        ids.queued.append(span_id)
        opened.append(
            _span(tracer, f"cyclic-{span_id:x}", agent_attrs("cyclic"), context=under(parent_id))
        )
    for span in opened:
        with trace.use_span(span):
            llm = _span(tracer, "chat m", LLM)
            llm.end()
    for span in opened:
        span.end()


CATALOGUE: list[Callable[[trace.Tracer, _ChosenIds], None]] = [
    _huge_values,
    _undecodable_values,
    _lone_surrogates,
    _absurd_token_counts,
    _absurd_times,
    _parent_cycles,
]


def _every_stored_thing_reads_back(processor: AdaptiveSpanProcessor) -> list[str]:
    store = processor.store
    assert isinstance(store, RedisStore)
    agents = store.agents()
    for agent in agents:
        assert len(agent) <= NAME_LIMIT
        agent.encode("utf-8")  # every stored name is valid UTF-8
        runs = store.list_runs(agent)
        assert len(runs) == store.run_count(agent)
        for run in runs:
            assert isinstance(run.start_ns, int) and isinstance(run.end_ns, int)
            for call in run.calls:
                assert isinstance(call.start_ns, int) and isinstance(call.end_ns, int)
                assert len(call.name) <= NAME_LIMIT
                assert all(len(name) <= NAME_LIMIT for name in call.path)
                for tokens in (call.output_tokens, call.prompt_tokens, call.total_tokens):
                    assert tokens is None or 0 <= tokens <= 10**9
        envelope = store.load_trie(agent)
        if envelope is not None:
            validate_envelope(envelope)
        json.dumps(store.load_plan(agent).to_dict())
    assert store.bad_data_count == 0
    return agents


@pytest.mark.parametrize("hostile", CATALOGUE, ids=lambda f: f.__name__.strip("_"))
def test_hostile_spans_raise_nothing_and_store_nothing_unreadable(
    hostile_setup: tuple[AdaptiveSpanProcessor, trace.Tracer, _ChosenIds],
    hostile: Callable[[trace.Tracer, _ChosenIds], None],
    redis_url: str,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    processor, tracer, ids = hostile_setup
    hostile(tracer, ids)  # would raise here if anything escaped the processor
    # A well-formed run in the same batch is not held back by the hostile ones.
    agent_run(tracer, "steady")
    assert processor.force_flush(30_000)

    def settled() -> bool:  # runs that can never complete are evicted after the timeout
        processor.force_flush(10_000)
        stats = processor.stats()
        return stats["open_runs"] == 0 and stats["live_spans"] == 0

    wait_for(settled, "open hostile runs to be evicted", timeout=10)
    stats = processor.stats()
    assert {name: stats[name] for name in _QUIET} == dict.fromkeys(_QUIET, 0)
    assert stats["runs_stored"] == stats["runs_completed"] >= 1
    assert stats["spans_started"] == stats["spans_ended"]
    agents = _every_stored_thing_reads_back(processor)
    assert processor.store.run_count("steady") == 1
    for agent in agents:
        inspect = [
            "inspect",
            "--agent",
            agent,
            "--redis-url",
            redis_url,
            "--key-prefix",
            key_prefix,
        ]
        status = cli_main(inspect)
        assert status == 0, capsys.readouterr().err
        capsys.readouterr()
        status = cli_main([*inspect, "--json"])
        assert status == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["agent_id"] == agent


# --- generated hostile values -------------------------------------------------------------------

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
any_value = st.one_of(
    any_text,
    st.binary(max_size=64),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=4),
)
any_time = st.one_of(
    st.none(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    agent_name=any_value,
    names=st.lists(st.one_of(any_text, st.binary(max_size=16)), min_size=4, max_size=4),
    tokens=st.lists(any_value, min_size=3, max_size=3),
    model=any_value,
    llm_times=st.tuples(any_time, any_time),
)
def test_generated_hostile_values_never_break_a_later_read(
    hostile_setup: tuple[AdaptiveSpanProcessor, trace.Tracer, _ChosenIds],
    agent_name: Any,
    names: list[Any],
    tokens: list[Any],
    model: Any,
    llm_times: tuple[Any, Any],
) -> None:
    processor, tracer, _ = hostile_setup
    _run(
        tracer,
        agent_name,
        span_name=names[0],
        step_name=names[1],
        llm_name=names[2],
        tool_name=names[3],
        llm_attributes={
            "gen_ai.request.model": model,
            "gen_ai.usage.output_tokens": tokens[0],
            "gen_ai.usage.input_tokens": tokens[1],
            "gen_ai.usage.total_tokens": tokens[2],
        },
        llm_times=llm_times,
    )
    before = processor.stats()["runs_stored"]
    assert processor.force_flush(30_000)
    stats = processor.stats()
    assert {name: stats[name] for name in _QUIET} == dict.fromkeys(_QUIET, 0)
    assert stats["runs_stored"] == before + 1 == stats["runs_completed"]
    _every_stored_thing_reads_back(processor)
