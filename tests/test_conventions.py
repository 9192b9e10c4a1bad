"""Tests for span classification and attribute reading across conventions."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from otel_adaptive import conventions
from otel_adaptive.conventions import (
    AGENT_ID_ATTRIBUTE,
    LATENCY_SENSITIVITY_ATTRIBUTE,
    SCOPE_TYPE_ATTRIBUTE,
    CallDetails,
    agent_name,
    classify,
    is_llm_span,
    manual_latency_sensitivity,
    read_call_details,
    tool_name,
)
from otel_adaptive.records import ScopeType

# A name no heuristic recognises, so that attribute rules are tested on their own.
PLAIN_NAME = "GET /users"

# --- expected mapping tables (written out independently of the module) ----------------------

SCOPE_ROWS: list[tuple[str, str, ScopeType]] = [
    ("openinference.span.kind", "AGENT", "agent"),
    ("openinference.span.kind", "CHAIN", "function"),
    ("openinference.span.kind", "TOOL", "tool"),
    ("openinference.span.kind", "LLM", "llm"),
    ("openinference.span.kind", "RETRIEVER", "retriever"),
    ("openinference.span.kind", "EMBEDDING", "embedding"),
    ("openinference.span.kind", "RERANKER", "reranker"),
    ("openinference.span.kind", "GUARDRAIL", "guardrail"),
    ("openinference.span.kind", "EVALUATOR", "evaluator"),
    ("openinference.span.kind", "PROMPT", "function"),
    ("gen_ai.operation.name", "invoke_agent", "agent"),
    ("gen_ai.operation.name", "create_agent", "agent"),
    ("gen_ai.operation.name", "execute_tool", "tool"),
    ("gen_ai.operation.name", "chat", "llm"),
    ("gen_ai.operation.name", "text_completion", "llm"),
    ("gen_ai.operation.name", "generate_content", "llm"),
    ("gen_ai.operation.name", "embeddings", "embedding"),
    ("gen_ai.operation.name", "retrieval", "retriever"),
    ("gen_ai.operation.name", "invoke_workflow", "function"),
    ("gen_ai.operation.name", "execute_task", "function"),
    ("traceloop.span.kind", "workflow", "function"),
    ("traceloop.span.kind", "task", "function"),
    ("traceloop.span.kind", "agent", "agent"),
    ("traceloop.span.kind", "tool", "tool"),
    ("llm.request.type", "chat", "llm"),
    ("llm.request.type", "completion", "llm"),
    ("llm.request.type", "embedding", "embedding"),
    ("llm.request.type", "rerank", "reranker"),
]

ALL_SCOPES: tuple[ScopeType, ...] = get_args(ScopeType)

# Rules from highest to lowest priority, each with a value that maps to a distinct scope.
PRIORITY_CHAIN: list[tuple[str, str, ScopeType]] = [
    (SCOPE_TYPE_ATTRIBUTE, "guardrail", "guardrail"),
    ("openinference.span.kind", "EVALUATOR", "evaluator"),
    ("gen_ai.operation.name", "execute_tool", "tool"),
    ("traceloop.span.kind", "workflow", "function"),
    ("llm.request.type", "chat", "llm"),
]

OUTPUT_TOKEN_KEYS = [
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
]
PROMPT_TOKEN_KEYS = [
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
]
TOTAL_TOKEN_KEYS = ["gen_ai.usage.total_tokens", "llm.token_count.total", "llm.usage.total_tokens"]
MODEL_KEYS = ["gen_ai.response.model", "gen_ai.request.model", "llm.model_name"]


def case_variants(value: str) -> list[str]:
    return sorted({value, value.lower(), value.upper(), value.capitalize()})


def ordered_pairs(keys: list[str]) -> Iterator[tuple[str, str]]:
    for high_index, high in enumerate(keys):
        for low in keys[high_index + 1 :]:
            yield high, low


# --- classify: mapping rows -------------------------------------------------------------------


@pytest.mark.parametrize(("attribute", "value", "expected"), SCOPE_ROWS)
def test_every_mapping_row_in_any_case(attribute: str, value: str, expected: ScopeType) -> None:
    for variant in case_variants(value):
        assert classify({attribute: variant}, PLAIN_NAME) == expected
        assert classify({attribute: variant}, PLAIN_NAME, name_heuristics=False) == expected


@pytest.mark.parametrize("scope", ALL_SCOPES)
def test_override_accepts_every_scope_type(scope: ScopeType) -> None:
    for variant in case_variants(scope):
        assert classify({SCOPE_TYPE_ATTRIBUTE: variant}, "chat gpt-4o") == scope


def test_override_unknown_is_honoured_and_stops_heuristics() -> None:
    assert classify({SCOPE_TYPE_ATTRIBUTE: "unknown"}, "chat gpt-4o") == "unknown"


def test_values_with_surrounding_whitespace_are_accepted() -> None:
    assert classify({"openinference.span.kind": " llm "}, PLAIN_NAME) == "llm"


def test_no_attributes_and_no_hint_is_unknown() -> None:
    assert classify(None, PLAIN_NAME) == "unknown"
    assert classify({}, PLAIN_NAME) == "unknown"
    assert classify({"http.method": "GET"}, PLAIN_NAME) == "unknown"


# --- classify: priority and fall-through ------------------------------------------------------


@pytest.mark.parametrize("winner", range(len(PRIORITY_CHAIN)))
def test_each_rule_beats_every_lower_rule(winner: int) -> None:
    attributes = {attribute: value for attribute, value, _ in PRIORITY_CHAIN[winner:]}
    expected = PRIORITY_CHAIN[winner][2]
    # A name hinting at something else shows that heuristics come after every attribute.
    assert classify(attributes, "agent tool: search") == expected


@pytest.mark.parametrize(
    "odd_value",
    [
        "",
        "   ",
        "not-a-kind",
        42,
        3.5,
        True,
        None,
        b"LLM",
        ("LLM",),
        ["LLM"],
        {"kind": "LLM"},
    ],
)
@pytest.mark.parametrize(("attribute", "_value", "_scope"), PRIORITY_CHAIN[:-1])
def test_odd_values_fall_through_to_the_next_rule(
    attribute: str, _value: str, _scope: ScopeType, odd_value: object
) -> None:
    attributes = {attribute: odd_value, "llm.request.type": "rerank"}
    assert classify(attributes, PLAIN_NAME) == "reranker"


def test_openinference_unknown_kind_falls_through() -> None:
    attributes = {"openinference.span.kind": "UNKNOWN", "traceloop.span.kind": "task"}
    assert classify(attributes, PLAIN_NAME) == "function"


def test_odd_values_with_no_later_rule_fall_through_to_heuristics() -> None:
    attributes = {"openinference.span.kind": "UNKNOWN", "gen_ai.operation.name": 7}
    assert classify(attributes, "execute_tool search") == "tool"
    assert classify(attributes, "execute_tool search", name_heuristics=False) == "unknown"


# --- classify: name heuristics ----------------------------------------------------------------

HEURISTIC_ROWS: list[tuple[str, ScopeType]] = [
    # GenAI span names: "{operation} {subject}", exact lower-case operation.
    ("chat gpt-4o", "llm"),
    ("text_completion davinci", "llm"),
    ("generate_content gemini-2.0", "llm"),
    ("execute_tool get_weather", "tool"),
    ("invoke_agent planner", "agent"),
    ("create_agent planner", "agent"),
    ("embeddings text-embedding-3-small", "embedding"),
    ("retrieval vector-store", "retriever"),
    ("invoke_workflow onboarding", "function"),
    # The GenAI operation decides even when the subject hints at something else.
    ("execute_tool call_llm", "tool"),
    ("chat agent-model", "llm"),
    # Substring hints.
    ("openai.chat.completions", "llm"),
    ("call_llm", "llm"),
    ("ChatCompletion.create", "llm"),
    ("LLMChain", "llm"),
    ("search_tool", "tool"),
    ("Tool: search", "tool"),
    ("retrieve_documents", "retriever"),
    ("VectorStoreRetriever", "retriever"),
    ("embed_query", "embedding"),
    ("AgentExecutor", "agent"),
    ("Agent workflow", "agent"),
    # Precedence: tool > retriever > embedding > llm > agent.
    ("agent tool: search", "tool"),
    ("retriever_tool", "tool"),
    ("llm_tool", "tool"),
    ("retrieve_embeddings", "retriever"),
    ("embedding_llm", "embedding"),
    ("agent_llm_call", "llm"),
    ("agent.retrieve", "retriever"),
    # Conservative: no hint, or a GenAI-like word without the GenAI form.
    ("GET /users", "unknown"),
    ("Chat with user", "unknown"),
    ("chat", "unknown"),
    ("generate_content ", "unknown"),
    ("generate_content", "unknown"),
    ("handle_request", "unknown"),
    ("", "unknown"),
]


@pytest.mark.parametrize(("name", "expected"), HEURISTIC_ROWS)
def test_name_heuristics(name: str, expected: ScopeType) -> None:
    assert classify(None, name) == expected
    assert classify({"http.method": "POST"}, name) == expected
    assert is_llm_span(None, name) == (expected == "llm")


@pytest.mark.parametrize(("name", "_expected"), HEURISTIC_ROWS)
def test_heuristics_off_leaves_unknown(name: str, _expected: ScopeType) -> None:
    assert classify(None, name, name_heuristics=False) == "unknown"
    assert not is_llm_span(None, name, name_heuristics=False)


def test_heuristic_cache_stays_bounded_and_answers_stay_right() -> None:
    for index in range(3000):
        assert classify(None, f"step-{index}") == "unknown"
        assert classify(None, f"call_llm-{index}") == "llm"
    assert len(conventions._name_scope_cache) <= 1024
    long_name = "x" * 5000 + " tool"
    assert classify(None, long_name) == "tool"
    assert long_name not in conventions._name_scope_cache


def test_non_string_name_never_raises() -> None:
    odd_name: Any = None
    assert classify(None, odd_name) == "unknown"
    assert not is_llm_span(None, odd_name)
    odd_name = ["chat", "gpt"]
    assert classify(None, odd_name) == "unknown"


# --- is_llm_span ------------------------------------------------------------------------------


@pytest.mark.parametrize(("attribute", "value", "expected"), SCOPE_ROWS)
def test_is_llm_span_follows_every_mapping_row(
    attribute: str, value: str, expected: ScopeType
) -> None:
    for name in (PLAIN_NAME, "chat gpt-4o", "execute_tool x"):
        assert is_llm_span({attribute: value}, name) == (expected == "llm")


def test_is_llm_span_respects_priority() -> None:
    assert not is_llm_span({"openinference.span.kind": "CHAIN", "llm.request.type": "chat"}, "llm")
    assert is_llm_span({SCOPE_TYPE_ATTRIBUTE: "llm", "openinference.span.kind": "TOOL"}, "tool")


# --- the SDK's own attribute mapping ----------------------------------------------------------


class _Capture(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def ended_span(name: str, attributes: Mapping[str, Any]) -> ReadableSpan:
    capture = _Capture()
    provider = TracerProvider()
    provider.add_span_processor(capture)
    with provider.get_tracer("tests").start_as_current_span(name) as span:
        span.set_attributes(dict(attributes))
    provider.shutdown()
    return capture.spans[0]


def test_reads_ended_sdk_spans_like_plain_dicts() -> None:
    attributes = {
        "http.method": "POST",
        "openinference.span.kind": "LLM",
        "llm.token_count.prompt": 120,
        "llm.token_count.completion": 30,
        "llm.model_name": "gpt-4o",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "search",
        "llm.output_messages.0.message.tool_calls.1.tool_call.function.name": "fetch",
    }
    span = ended_span("ChatOpenAI", attributes)
    assert span.attributes is not None
    assert not isinstance(span.attributes, dict)
    assert classify(span.attributes, span.name) == "llm"
    assert is_llm_span(span.attributes, span.name)
    assert read_call_details(span.attributes) == CallDetails(
        output_tokens=30,
        prompt_tokens=120,
        total_tokens=150,
        model_name="gpt-4o",
        tool_call_count=2,
    )
    assert read_call_details(span.attributes) == read_call_details(attributes)


def test_plain_sdk_span_is_not_llm() -> None:
    span = ended_span("GET /users", {"http.method": "GET", "http.route": "/users"})
    assert span.attributes is not None
    assert classify(span.attributes, span.name) == "unknown"
    assert read_call_details(span.attributes) == CallDetails(None, None, None, None, None)


# --- read_call_details: tokens ----------------------------------------------------------------


@pytest.mark.parametrize("key", OUTPUT_TOKEN_KEYS)
def test_output_token_rows(key: str) -> None:
    details = read_call_details({key: 42})
    assert details.output_tokens == 42
    assert details.prompt_tokens is None
    assert details.total_tokens is None


@pytest.mark.parametrize("key", PROMPT_TOKEN_KEYS)
def test_prompt_token_rows(key: str) -> None:
    details = read_call_details({key: 42})
    assert details.prompt_tokens == 42
    assert details.output_tokens is None
    assert details.total_tokens is None


@pytest.mark.parametrize("key", TOTAL_TOKEN_KEYS)
def test_total_token_rows(key: str) -> None:
    assert read_call_details({key: 42}).total_tokens == 42
    # An explicit total wins over the sum of the parts.
    assert (
        read_call_details({key: 50, OUTPUT_TOKEN_KEYS[0]: 1, PROMPT_TOKEN_KEYS[0]: 2}).total_tokens
        == 50
    )


@pytest.mark.parametrize(
    "keys", [*ordered_pairs(OUTPUT_TOKEN_KEYS), *ordered_pairs(PROMPT_TOKEN_KEYS)]
)
def test_token_priority(keys: tuple[str, str]) -> None:
    high, low = keys
    details = read_call_details({low: 999, high: 7})
    assert 7 in (details.output_tokens, details.prompt_tokens)
    assert 999 not in (details.output_tokens, details.prompt_tokens)


@pytest.mark.parametrize("keys", list(ordered_pairs(TOTAL_TOKEN_KEYS)))
def test_total_token_priority(keys: tuple[str, str]) -> None:
    high, low = keys
    assert read_call_details({low: 999, high: 7}).total_tokens == 7


def test_two_token_sets_on_one_span_count_once() -> None:
    details = read_call_details(
        {
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
            "llm.token_count.prompt": 100,
            "llm.token_count.completion": 20,
            "llm.token_count.total": 120,
        }
    )
    assert (details.prompt_tokens, details.output_tokens, details.total_tokens) == (100, 20, 120)


def test_total_is_the_sum_when_both_parts_are_known() -> None:
    details = read_call_details({"llm.token_count.prompt": 100, "gen_ai.usage.output_tokens": 5})
    assert details.total_tokens == 105
    assert read_call_details({"llm.token_count.prompt": 100}).total_tokens is None


def test_a_sum_beyond_the_count_bound_is_no_total() -> None:
    # Each part is a valid count; their sum is not, like any count read past 10**9.
    at_bound = {"gen_ai.usage.input_tokens": 10**9 - 5, "gen_ai.usage.output_tokens": 5}
    assert read_call_details(at_bound).total_tokens == 10**9
    over = {"gen_ai.usage.input_tokens": 10**9 - 5, "gen_ai.usage.output_tokens": 48}
    details = read_call_details(over)
    assert (details.prompt_tokens, details.output_tokens) == (10**9 - 5, 48)
    assert details.total_tokens is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1, 1),
        (10**9, 10**9),
        (10**9 + 1, None),
        (-1, None),
        (10**40, None),
        (-(10**40), None),
        (True, None),
        (False, None),
        (12.0, 12),
        (-0.0, 0),
        (12.5, None),
        (1e9, 10**9),
        (1e300, None),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
        ("12", 12),
        ("0007", 7),
        ("1000000000", 10**9),
        ("1000000001", None),
        ("12.0", None),
        ("-12", None),
        (" 12", None),
        ("", None),
        ("²", None),
        ("١٢", None),
        ("9" * 100_000, None),
        (b"12", None),
        ([12], None),
        ((12,), None),
        (None, None),
    ],
)
def test_token_value_validation(value: object, expected: int | None) -> None:
    assert read_call_details({"gen_ai.usage.output_tokens": value}).output_tokens == expected


def test_invalid_higher_priority_token_value_falls_back_to_the_next() -> None:
    attributes: dict[str, object] = {
        "gen_ai.usage.output_tokens": -5,
        "llm.token_count.completion": 9,
    }
    assert read_call_details(attributes).output_tokens == 9
    attributes = {"gen_ai.usage.total_tokens": "lots", "llm.usage.total_tokens": 3}
    assert read_call_details(attributes).total_tokens == 3


def test_invalid_explicit_total_falls_back_to_the_sum() -> None:
    attributes = {
        "llm.token_count.total": True,
        "gen_ai.usage.input_tokens": 4,
        "gen_ai.usage.output_tokens": 5,
    }
    assert read_call_details(attributes).total_tokens == 9


# --- read_call_details: model -----------------------------------------------------------------


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_model_rows(key: str) -> None:
    assert read_call_details({key: "gpt-4o-mini"}).model_name == "gpt-4o-mini"


@pytest.mark.parametrize("keys", list(ordered_pairs(MODEL_KEYS)))
def test_model_priority(keys: tuple[str, str]) -> None:
    high, low = keys
    assert read_call_details({low: "low", high: "high"}).model_name == "high"


@pytest.mark.parametrize("odd", ["", "   ", 7, b"gpt", ("gpt",), None, True])
def test_model_must_be_a_non_empty_string(odd: object) -> None:
    assert read_call_details({"gen_ai.response.model": odd}).model_name is None
    attributes = {"gen_ai.response.model": odd, "llm.model_name": "fallback"}
    assert read_call_details(attributes).model_name == "fallback"


# --- read_call_details: tool-call count -------------------------------------------------------


def oi_tool_call(message: int, call: int, field: str = "tool_call.function.name") -> str:
    return f"llm.output_messages.{message}.message.tool_calls.{call}.{field}"


def genai_messages(*messages: list[str]) -> str:
    return json.dumps(
        [
            {"role": "assistant", "parts": [{"type": kind, "content": "x"} for kind in parts]}
            for parts in messages
        ]
    )


def test_openinference_counts_distinct_calls_per_message() -> None:
    attributes = {
        "llm.output_messages.0.message.role": "assistant",
        oi_tool_call(0, 0): "search",
        oi_tool_call(0, 0, "tool_call.id"): "a",
        oi_tool_call(0, 0, "tool_call.function.arguments"): "{}",
        oi_tool_call(0, 1): "fetch",
        oi_tool_call(0, 1, "tool_call.id"): "b",
        oi_tool_call(1, 0): "search",
        "llm.output_messages.1.message.role": "assistant",
    }
    assert read_call_details(attributes).tool_call_count == 3


def test_openinference_messages_without_tool_calls_count_zero() -> None:
    attributes = {
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Hello",
    }
    assert read_call_details(attributes).tool_call_count == 0


def test_openinference_malformed_keys_are_ignored() -> None:
    attributes = {
        "llm.output_messages.x.message.tool_calls.0.tool_call.id": "a",
        "llm.output_messages.0.message.tool_calls.y.tool_call.id": "b",
        "llm.output_messages.0.message.tool_calls.1": "no field",
        "llm.output_messages.0": "no field",
        "llm.output_messages.": "empty",
    }
    # Only the key with a valid message index and a field marks a recorded message.
    assert read_call_details(attributes).tool_call_count == 0
    assert read_call_details({"llm.output_messages.0": "x"}).tool_call_count is None


def test_openinference_indexes_with_leading_zeros_are_the_same_call() -> None:
    attributes = {
        oi_tool_call(0, 1): "a",
        "llm.output_messages.0.message.tool_calls.01.tool_call.id": "a",
        "llm.output_messages.00.message.tool_calls.1.tool_call.function.arguments": "{}",
    }
    assert read_call_details(attributes).tool_call_count == 1


def test_openllmetry_flat_completions_are_counted() -> None:
    attributes = {
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.tool_calls.0.name": "search",
        "gen_ai.completion.0.tool_calls.0.arguments": "{}",
        "gen_ai.completion.0.tool_calls.1.name": "fetch",
    }
    assert read_call_details(attributes).tool_call_count == 2
    assert read_call_details({"gen_ai.completion.0.content": "hi"}).tool_call_count == 0


def test_two_flat_layouts_on_one_span_count_once() -> None:
    attributes = {
        oi_tool_call(0, 0): "search",
        oi_tool_call(0, 1): "fetch",
        "gen_ai.completion.0.tool_calls.0.name": "search",
        "gen_ai.completion.0.tool_calls.1.name": "fetch",
    }
    assert read_call_details(attributes).tool_call_count == 2


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([["text"]], 0),
        ([["tool_call"]], 1),
        ([["text", "tool_call", "tool_call"]], 2),
        ([["tool_call"], ["reasoning", "tool_call"]], 2),
        ([[]], 0),
        ([], 0),
        ([["tool_call_response", "TOOL_CALL"]], 0),
    ],
)
def test_genai_output_message_parts_are_counted(messages: list[list[str]], expected: int) -> None:
    attributes = {"gen_ai.output.messages": genai_messages(*messages)}
    assert read_call_details(attributes).tool_call_count == expected


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '[{"parts": [',
        "",
        "{}",
        "null",
        "42",
        '[{"role": "assistant", "content": "no parts"}]',
        '[{"parts": "tool_call"}]',
        '[{"parts": [{"type": 3}]}]',
        '[{"parts": ["tool_call"]}]',
        "[" * 10_000 + "]" * 10_000,
        '[{"parts": [{"type": "tool_call", "content": ' + "[" * 10_000 + "]" * 10_000 + "}]}]",
        b'[{"parts": [{"type": "tool_call"}]}]',
        ('[{"parts": [{"type": "tool_call"}]}]',),
    ],
)
def test_bad_genai_output_messages_leave_the_count_unknown(raw: object) -> None:
    assert read_call_details({"gen_ai.output.messages": raw}).tool_call_count is None


def test_genai_messages_take_priority_over_flat_keys() -> None:
    attributes = {
        "gen_ai.output.messages": genai_messages(["tool_call"]),
        oi_tool_call(0, 0): "a",
        oi_tool_call(0, 1): "b",
    }
    assert read_call_details(attributes).tool_call_count == 1


def test_bad_genai_messages_fall_back_to_flat_keys() -> None:
    attributes = {"gen_ai.output.messages": "{broken", oi_tool_call(0, 0): "a"}
    assert read_call_details(attributes).tool_call_count == 1


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (("stop",), 0),
        (("length",), 0),
        (["stop", "length"], 0),
        ("stop", 0),
        (("tool_calls",), None),
        (("TOOL_CALLS",), None),
        (("tool_call",), None),
        (("stop", "tool_calls"), None),
        (("function_call",), None),
        (("tool_use",), None),
        ((), None),
        ((1, 2), None),
        (b"stop", None),
        (7, None),
    ],
)
def test_finish_reasons_without_messages(reasons: object, expected: int | None) -> None:
    attributes = {"gen_ai.response.finish_reasons": reasons}
    assert read_call_details(attributes).tool_call_count == expected


def test_finish_reasons_with_a_count() -> None:
    with_calls = {"gen_ai.response.finish_reasons": ("tool_calls",), oi_tool_call(0, 0): "a"}
    assert read_call_details(with_calls).tool_call_count == 1
    stopped = {
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.output.messages": genai_messages(["text"]),
    }
    assert read_call_details(stopped).tool_call_count == 0
    # Messages say none, finish reason says some: the messages were cut short.
    contradiction = {
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "gen_ai.output.messages": genai_messages(["text"]),
    }
    assert read_call_details(contradiction).tool_call_count is None


def test_no_tool_call_information_is_unknown() -> None:
    assert read_call_details({"gen_ai.usage.output_tokens": 3}).tool_call_count is None
    assert read_call_details({}) == CallDetails(None, None, None, None, None)
    assert read_call_details(None) == CallDetails(None, None, None, None, None)


# --- entity names and the latency override ----------------------------------------------------

AGENT_NAME_KEYS = [AGENT_ID_ATTRIBUTE, "gen_ai.agent.name", "agent.name"]
TOOL_NAME_KEYS = ["gen_ai.tool.name", "tool.name"]


@pytest.mark.parametrize("key", AGENT_NAME_KEYS)
def test_agent_name_rows(key: str) -> None:
    assert agent_name({key: "planner"}) == "planner"
    assert tool_name({key: "planner"}) is None


@pytest.mark.parametrize("keys", list(ordered_pairs(AGENT_NAME_KEYS)))
def test_agent_name_priority(keys: tuple[str, str]) -> None:
    high, low = keys
    assert agent_name({low: "low", high: "high"}) == "high"


@pytest.mark.parametrize("key", TOOL_NAME_KEYS)
def test_tool_name_rows(key: str) -> None:
    assert tool_name({key: "search"}) == "search"
    assert agent_name({key: "search"}) is None


def test_tool_name_priority() -> None:
    assert tool_name({"tool.name": "low", "gen_ai.tool.name": "high"}) == "high"


@pytest.mark.parametrize(
    ("kind", "expected_agent", "expected_tool"),
    [
        ("agent", "entity", None),
        ("AGENT", "entity", None),
        ("tool", None, "entity"),
        ("workflow", None, None),
        ("task", None, None),
        (None, None, None),
        (3, None, None),
    ],
)
def test_traceloop_entity_name_depends_on_kind(
    kind: object, expected_agent: str | None, expected_tool: str | None
) -> None:
    attributes = {"traceloop.entity.name": "entity", "traceloop.span.kind": kind}
    assert agent_name(attributes) == expected_agent
    assert tool_name(attributes) == expected_tool


def test_explicit_names_beat_the_traceloop_entity_name() -> None:
    attributes = {
        "traceloop.span.kind": "agent",
        "traceloop.entity.name": "entity",
        "agent.name": "explicit",
    }
    assert agent_name(attributes) == "explicit"


@pytest.mark.parametrize("odd", ["", "  ", 5, b"x", ("x",), None])
def test_names_must_be_non_empty_strings(odd: object) -> None:
    assert agent_name({"gen_ai.agent.name": odd, "agent.name": "next"}) == "next"
    assert tool_name({"gen_ai.tool.name": odd}) is None
    assert agent_name(None) is None
    assert tool_name({}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        (3, 3),
        (5.0, 5),
        ("2", 2),
        (0, None),
        (-1, None),
        (True, None),
        (2.5, None),
        (float("nan"), None),
        ("high", None),
        (None, None),
        ((3,), None),
    ],
)
def test_manual_latency_sensitivity(value: object, expected: int | None) -> None:
    assert manual_latency_sensitivity({LATENCY_SENSITIVITY_ATTRIBUTE: value}) == expected


def test_manual_latency_sensitivity_absent() -> None:
    assert manual_latency_sensitivity(None) is None
    assert manual_latency_sensitivity({"other": 3}) is None


# --- properties -------------------------------------------------------------------------------

KNOWN_KEYS = [
    SCOPE_TYPE_ATTRIBUTE,
    LATENCY_SENSITIVITY_ATTRIBUTE,
    AGENT_ID_ATTRIBUTE,
    *(attribute for attribute, _, _ in PRIORITY_CHAIN),
    *OUTPUT_TOKEN_KEYS,
    *PROMPT_TOKEN_KEYS,
    *TOTAL_TOKEN_KEYS,
    *MODEL_KEYS,
    *AGENT_NAME_KEYS,
    *TOOL_NAME_KEYS,
    "traceloop.entity.name",
    "gen_ai.output.messages",
    "gen_ai.response.finish_reasons",
    oi_tool_call(0, 0),
    oi_tool_call(1, 2, "tool_call.id"),
    "llm.output_messages.0.message.role",
    "gen_ai.completion.0.tool_calls.0.name",
    "gen_ai.completion.0.role",
]
KNOWN_VALUES = [
    *(value for _, value, _ in SCOPE_ROWS),
    *ALL_SCOPES,
    "tool_calls",
    "stop",
    genai_messages(["tool_call", "text"]),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=20),
    st.sampled_from(KNOWN_VALUES),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from(["parts", "type", "role"]), children, max_size=3)
        ),
        max_leaves=8,
    ).map(json.dumps),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children),
    max_leaves=10,
)
attribute_maps = st.dictionaries(
    st.sampled_from(KNOWN_KEYS) | st.text(max_size=40), values, max_size=12
)
names = st.one_of(
    st.text(max_size=40),
    st.sampled_from([name for name, _ in HEURISTIC_ROWS]),
    st.lists(
        st.sampled_from(["agent", "tool", "llm", "chat", "embed", "retrieve", "x", "Completion"]),
        max_size=4,
    ).map(" ".join),
)


class _ReadOnlyMapping(Mapping[str, object]):
    """A non-dict mapping, like the SDK's attribute proxy."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@settings(max_examples=200, deadline=None)
@given(attributes=attribute_maps | st.none(), name=names, heuristics=st.booleans())
def test_readers_never_raise_and_is_llm_span_agrees(
    attributes: dict[str, object] | None, name: str, heuristics: bool
) -> None:
    scope = classify(attributes, name, name_heuristics=heuristics)
    assert scope in ALL_SCOPES
    assert is_llm_span(attributes, name, name_heuristics=heuristics) == (scope == "llm")
    details = read_call_details(attributes)
    for count in (details.output_tokens, details.prompt_tokens, details.tool_call_count):
        assert count is None or (type(count) is int and count >= 0)
    assert details.output_tokens is None or details.output_tokens <= 10**9
    assert details.total_tokens is None or type(details.total_tokens) is int
    for text in (details.model_name, agent_name(attributes), tool_name(attributes)):
        assert text is None or (isinstance(text, str) and text.strip())
    sensitivity = manual_latency_sensitivity(attributes)
    assert sensitivity is None or (type(sensitivity) is int and sensitivity >= 1)


@settings(max_examples=120, deadline=None)
@given(attributes=attribute_maps, name=names)
def test_non_dict_mappings_give_the_same_answers(attributes: dict[str, object], name: str) -> None:
    view = _ReadOnlyMapping(attributes)
    assert classify(view, name) == classify(attributes, name)
    assert is_llm_span(view, name) == is_llm_span(attributes, name)
    assert read_call_details(view) == read_call_details(attributes)
    assert agent_name(view) == agent_name(attributes)
    assert tool_name(view) == tool_name(attributes)


@given(
    output=st.integers(min_value=0, max_value=10**9),
    prompt=st.integers(min_value=0, max_value=10**9),
    extra=st.integers(min_value=0, max_value=10**9),
)
def test_duplicate_token_sets_never_add_up(output: int, prompt: int, extra: int) -> None:
    attributes: dict[str, object] = {
        "gen_ai.usage.output_tokens": output,
        "gen_ai.usage.input_tokens": prompt,
        "llm.token_count.completion": output + extra,
        "llm.token_count.prompt": prompt + extra,
        "llm.usage.completion_tokens": str(output),
    }
    details = read_call_details(attributes)
    assert (details.output_tokens, details.prompt_tokens) == (output, prompt)
    # The sum, within the bound every count keeps.
    assert details.total_tokens == (output + prompt if output + prompt <= 10**9 else None)


@given(
    calls=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=5),
    fields=st.lists(st.sampled_from(["id", "function.name", "function.arguments"]), min_size=1),
)
def test_openinference_count_is_the_number_of_distinct_calls(
    calls: list[int], fields: list[str]
) -> None:
    attributes: dict[str, object] = {}
    for message, call_count in enumerate(calls):
        attributes[f"llm.output_messages.{message}.message.role"] = "assistant"
        for call in range(call_count):
            for field in fields:
                attributes[oi_tool_call(message, call, f"tool_call.{field}")] = "v"
    assert read_call_details(attributes).tool_call_count == sum(calls)


# --- attribute sets recorded from real instrumentations ---------------------------------------
# Copied (message content trimmed) from spans the conformance suite (tests/conformance/)
# produced, so the core suite guards what those libraries write without installing them.

_AGENTS_SDK_RESPONSE_SPAN: dict[str, object] = {  # openinference-instrumentation-openai-agents
    "openinference.span.kind": "LLM",
    "llm.system": "openai",
    "llm.token_count.completion": 7,
    "llm.token_count.prompt": 20,
    "llm.token_count.total": 27,
    "llm.token_count.prompt_details.cache_read": 0,
    "llm.token_count.completion_details.reasoning": 0,
    "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
    "llm.output_messages.0.message.tool_calls.1.tool_call.id": "call_2",
    "llm.output_messages.0.message.tool_calls.1.tool_call.function.name": "get_time",
    "llm.model_name": "gpt-4o-2024-08-06",
    # The Responses API status "completed" is reported as "stop" even when tools were
    # requested, which is why ``llm.finish_reason`` is not read as a finish reason.
    "llm.finish_reason": "stop",
    "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "earlier_call",
}
_OPENINFERENCE_RESPONSES_SPAN: dict[str, object] = {  # one output message per function call
    "openinference.span.kind": "LLM",
    "llm.model_name": "gpt-4o-2024-08-06",
    "llm.token_count.prompt": 14,
    "llm.token_count.completion": 25,
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
    "llm.output_messages.1.message.role": "assistant",
    "llm.output_messages.1.message.tool_calls.0.tool_call.function.name": "get_time",
}
_GENAI_V2_LEGACY_SPAN: dict[str, object] = {  # opentelemetry-instrumentation-openai-v2
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.provider.name": "openai",
    "gen_ai.response.finish_reasons": ("tool_calls",),
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 22,
}
_GENAI_V2_STREAM_SPAN: dict[str, object] = {  # legacy mode, streamed: no finish reasons
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 23,
}
_GENAI_V2_CONTENT_SPAN: dict[str, object] = {  # latest experimental conventions + content
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 23,
    "gen_ai.output.messages": json.dumps(
        [
            {
                "role": "assistant",
                "parts": [
                    {"content": "", "type": "text"},
                    {"arguments": {}, "name": "get_weather", "id": "c1", "type": "tool_call"},
                ],
                "finish_reason": "tool_calls",
            }
        ]
    ),
}
_OPENLLMETRY_SPAN: dict[str, object] = {  # traceloop opentelemetry-instrumentation-openai
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.is_streaming": False,
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.finish_reasons": ("tool_call",),
    "gen_ai.usage.total_tokens": 33,
    "gen_ai.usage.output_tokens": 22,
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.output.messages": json.dumps(
        [
            {
                "role": "assistant",
                "parts": [
                    {"type": "tool_call", "name": "get_weather", "id": "c1", "arguments": {}},
                    {"type": "tool_call", "name": "get_time", "id": "c2", "arguments": {}},
                ],
                "finish_reason": "tool_call",
            }
        ]
    ),
}
_OPENLLMETRY_NO_CONTENT_SPAN: dict[str, object] = {
    key: value for key, value in _OPENLLMETRY_SPAN.items() if key != "gen_ai.output.messages"
}

RECORDED_LLM_SPANS: list[tuple[str, str, dict[str, object], CallDetails]] = [
    (
        "agents-sdk response",
        "response",
        _AGENTS_SDK_RESPONSE_SPAN,
        CallDetails(7, 20, 27, "gpt-4o-2024-08-06", 2),
    ),
    (
        "openinference Responses API",
        "Response",
        _OPENINFERENCE_RESPONSES_SPAN,
        CallDetails(25, 14, 39, "gpt-4o-2024-08-06", 2),
    ),
    (
        "genai v2 legacy",
        "chat gpt-4o",
        _GENAI_V2_LEGACY_SPAN,
        CallDetails(22, 11, 33, "gpt-4o-2024-08-06", None),
    ),
    (
        "genai v2 legacy stream",
        "chat gpt-4o",
        _GENAI_V2_STREAM_SPAN,
        CallDetails(23, 12, 35, "gpt-4o-2024-08-06", None),
    ),
    (
        "genai v2 with content",
        "chat gpt-4o",
        _GENAI_V2_CONTENT_SPAN,
        CallDetails(23, 12, 35, "gpt-4o-2024-08-06", 1),
    ),
    (
        "openllmetry",
        "openai.chat",
        _OPENLLMETRY_SPAN,
        CallDetails(22, 11, 33, "gpt-4o-2024-08-06", 2),
    ),
    (
        "openllmetry without content",
        "openai.chat",
        _OPENLLMETRY_NO_CONTENT_SPAN,
        CallDetails(22, 11, 33, "gpt-4o-2024-08-06", None),
    ),
]


@pytest.mark.parametrize(
    ("_label", "name", "attributes", "expected"),
    RECORDED_LLM_SPANS,
    ids=[row[0] for row in RECORDED_LLM_SPANS],
)
def test_recorded_llm_spans_of_real_instrumentations(
    _label: str, name: str, attributes: dict[str, object], expected: CallDetails
) -> None:
    for heuristics in (True, False):
        assert classify(attributes, name, name_heuristics=heuristics) == "llm"
    assert read_call_details(attributes) == expected
    span = ended_span(name, attributes)  # the same through the SDK's read-only mapping
    assert read_call_details(span.attributes) == expected


RECORDED_OTHER_SPANS: list[tuple[str, dict[str, object], ScopeType]] = [
    # Agents SDK via OpenInference: the trace root, the task span, the agent (its name only
    # arrives at end), the per-turn span and a function tool.
    ("weather-flow", {"openinference.span.kind": "AGENT"}, "agent"),
    ("weather-flow", {"openinference.span.kind": "CHAIN"}, "function"),
    ("Assistant", {"openinference.span.kind": "AGENT", "agent.name": "Assistant"}, "agent"),
    ("turn", {"openinference.span.kind": "CHAIN"}, "function"),
    ("get_weather", {"openinference.span.kind": "TOOL", "tool.name": "get_weather"}, "tool"),
    # LangChain via OpenInference: any run with "agent" in its name is labelled AGENT.
    ("format_agent_scratchpad", {"openinference.span.kind": "AGENT"}, "agent"),
    ("CityRetriever", {"openinference.span.kind": "RETRIEVER"}, "retriever"),
]


@pytest.mark.parametrize(("name", "attributes", "scope"), RECORDED_OTHER_SPANS)
def test_recorded_structural_and_tool_spans(
    name: str, attributes: dict[str, object], scope: ScopeType
) -> None:
    assert classify(attributes, name, name_heuristics=False) == scope
    if scope == "agent":
        assert agent_name(attributes) == attributes.get("agent.name")
    if scope == "tool":
        assert tool_name(attributes) == name
