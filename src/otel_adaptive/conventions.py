"""What a span is, and what it says about an LLM call, across instrumentation conventions.

This is the only module that knows attribute names. Each convention contributes
rows to the tables below (scope kinds, token counters, model and entity names,
tool-call layouts), so supporting another instrumentation is a change here and in
``docs/semantic-conventions.md`` and nowhere else.

Every reader tolerates arbitrary attribute values: a value of the wrong type or
out of range is treated as absent and the next convention in priority order is
consulted. Nothing in this module raises on bad span data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple, get_args

import msgspec

from otel_adaptive._memo import remember
from otel_adaptive.records import ScopeType

#: Our override for the scope type; the value is a ``ScopeType`` string.
SCOPE_TYPE_ATTRIBUTE: Final = "adaptive.scope.type"
#: How latency-sensitive the application says a scope is (int, 1 = least).
LATENCY_SENSITIVITY_ATTRIBUTE: Final = "adaptive.latency_sensitivity"
#: Our explicit agent id; beats every convention's agent name.
AGENT_ID_ATTRIBUTE: Final = "adaptive.agent.id"

# --- scope type tables ------------------------------------------------------------------------
# Keys are lower case; lookups are case-insensitive.

_OPENINFERENCE_SPAN_KINDS: Final[Mapping[str, ScopeType]] = {
    "agent": "agent",
    "chain": "function",
    "tool": "tool",
    "llm": "llm",
    "retriever": "retriever",
    "embedding": "embedding",
    "reranker": "reranker",
    "guardrail": "guardrail",
    "evaluator": "evaluator",
    "prompt": "function",
}

_GENAI_OPERATIONS: Final[Mapping[str, ScopeType]] = {
    "invoke_agent": "agent",
    "create_agent": "agent",
    "execute_tool": "tool",
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "embedding",
    "retrieval": "retriever",
    "invoke_workflow": "function",
    "execute_task": "function",
}

_TRACELOOP_SPAN_KINDS: Final[Mapping[str, ScopeType]] = {
    "workflow": "function",
    "task": "function",
    "agent": "agent",
    "tool": "tool",
}

# Older OpenLLMetry instrumentations set only this on the client span.
_LLM_REQUEST_TYPES: Final[Mapping[str, ScopeType]] = {
    "chat": "llm",
    "completion": "llm",
    "embedding": "embedding",
    "rerank": "reranker",
}

_OVERRIDE_VALUES: Final[Mapping[str, ScopeType]] = {scope: scope for scope in get_args(ScopeType)}

_TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"


def _with_upper_case(table: Mapping[str, ScopeType]) -> dict[str, ScopeType]:
    # Conventions write either all-lower or all-upper values; holding both spellings lets
    # the common case hit on the first lookup without allocating a lowered copy.
    expanded = dict(table)
    expanded.update({value.upper(): scope for value, scope in table.items()})
    return expanded


#: Classification rules, highest priority first: (attribute, value -> scope type).
_SCOPE_RULES: Final[tuple[tuple[str, Mapping[str, ScopeType]], ...]] = tuple(
    (attribute, _with_upper_case(table))
    for attribute, table in (
        (SCOPE_TYPE_ATTRIBUTE, _OVERRIDE_VALUES),
        ("openinference.span.kind", _OPENINFERENCE_SPAN_KINDS),
        ("gen_ai.operation.name", _GENAI_OPERATIONS),
        (_TRACELOOP_SPAN_KIND, _TRACELOOP_SPAN_KINDS),
        ("llm.request.type", _LLM_REQUEST_TYPES),
    )
)
_SCOPE_ATTRIBUTES: Final = frozenset(attribute for attribute, _ in _SCOPE_RULES)

# --- name heuristics --------------------------------------------------------------------------
# GenAI span names are "{gen_ai.operation.name} {model | tool | agent}". Matched case-sensitively
# on the first word, because the operation names are lower case by specification and a
# capitalised "Chat with user" is more likely an application function than a model call.
_GENAI_NAME_OPERATIONS: Final = _GENAI_OPERATIONS

#: Substring hints on the lower-cased span name, in precedence order: the first scope with a
#: matching hint wins. Leaf kinds beat "agent" because frameworks prefix almost everything with
#: the agent ("agent tool: search" is a tool); "tool" beats the rest because tools commonly wrap
#: retrieval, embedding and model calls.
_NAME_HINTS: Final[tuple[tuple[ScopeType, tuple[str, ...]], ...]] = (
    ("tool", ("tool",)),
    ("retriever", ("retriev",)),
    ("embedding", ("embed",)),
    ("llm", ("llm", "completion")),
    ("agent", ("agent",)),
)


# Span names are low-cardinality in well-behaved instrumentations, so the heuristic answer
# is cached per name. The cache is cleared when full rather than evicting one by one: bounded
# memory, no bookkeeping, and high-cardinality names only cost a recomputation.
_NAME_CACHE_SIZE: Final = 1024
_NAME_CACHE_MAX_NAME_LENGTH: Final = 256
_name_scope_cache: dict[str, ScopeType] = {}


def classify(
    attributes: Mapping[str, object] | None, name: str, *, name_heuristics: bool = True
) -> ScopeType:
    """Scope type of a span from its attributes, falling back to its name.

    Rules in order: ``SCOPE_TYPE_ATTRIBUTE``, ``openinference.span.kind``,
    ``gen_ai.operation.name``, ``traceloop.span.kind``, ``llm.request.type``, then the
    name heuristics (when enabled), else ``"unknown"``. Values are case-insensitive; a
    value of the wrong type or not in a rule's table falls through to the next rule.
    """
    scope = _scope_from_attributes(attributes)
    if scope is not None:
        return scope
    if name_heuristics:
        return _scope_from_name(name)
    return "unknown"


def is_llm_span(
    attributes: Mapping[str, object] | None, name: str, *, name_heuristics: bool = True
) -> bool:
    """``classify(attributes, name, ...) == "llm"``; runs at every span end, so kept lean."""
    scope = _scope_from_attributes(attributes)
    if scope is None:
        if not name_heuristics:
            return False
        scope = _scope_from_name(name)
    return scope == "llm"


def _scope_from_attributes(attributes: Mapping[str, object] | None) -> ScopeType | None:
    if attributes is None:
        return None
    values = _wanted_values(attributes, _SCOPE_ATTRIBUTES)
    if not values:
        return None
    # The value lookup is inlined rather than a helper call: this loop is on the hot path.
    for attribute, table in _SCOPE_RULES:
        value = values.get(attribute)
        if isinstance(value, str):
            scope = table.get(value) or table.get(value.strip().lower())
            if scope is not None:
                return scope
    return None


def _scope_from_name(name: str) -> ScopeType:
    if not isinstance(name, str):
        return "unknown"
    scope = _name_scope_cache.get(name)
    if scope is None:
        scope = _heuristic_scope(name)
        remember(
            _name_scope_cache,
            name,
            scope,
            small=len(name) <= _NAME_CACHE_MAX_NAME_LENGTH,
            capacity=_NAME_CACHE_SIZE,
        )
    return scope


def _heuristic_scope(name: str) -> ScopeType:
    space = name.find(" ")
    if 0 < space < len(name) - 1:
        scope = _GENAI_NAME_OPERATIONS.get(name[:space])
        if scope is not None:
            return scope
    lowered = name.lower()
    for hint_scope, hints in _NAME_HINTS:
        for hint in hints:
            if hint in lowered:
                return hint_scope
    return "unknown"


_NOTHING: Final[Mapping[str, object]] = MappingProxyType({})


def _wanted_values(
    attributes: Mapping[str, object], wanted: frozenset[str]
) -> Mapping[str, object]:
    """A mapping that answers ``get`` cheaply for every key in ``wanted``.

    Most spans carry none of the wanted keys; one pass over the keys in C says so, and a
    plain dict that has some is returned as is. Span attributes at ``on_end`` are a
    read-only proxy over the SDK's bounded mapping, where every missed ``get`` costs a
    raised ``KeyError`` in Python code, so for other mappings one pass in C finds the
    wanted keys present and only those are read.
    """
    try:
        if type(attributes) is dict:
            return _NOTHING if wanted.isdisjoint(attributes) else attributes
        present: Iterable[str] = wanted.intersection(attributes)
    except (RuntimeError, TypeError):
        # Changed while iterated, or odd keys: probe every wanted key instead.
        present = wanted
    values: dict[str, object] = {}
    for key in present:
        value = attributes.get(key)
        if value is not None:
            values[key] = value
    return values


# --- call details -----------------------------------------------------------------------------

_MAX_TOKENS: Final = 10**9
# Longer digit strings cannot be in range (leading zeros aside) and int() of a huge string is
# slow, so they are rejected before parsing.
_MAX_DIGITS: Final = 20

#: Token counters per field, highest priority first: current GenAI, older GenAI names,
#: OpenInference, older OpenLLMetry.
_OUTPUT_TOKEN_ATTRIBUTES: Final = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
)
_PROMPT_TOKEN_ATTRIBUTES: Final = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
)
_TOTAL_TOKEN_ATTRIBUTES: Final = (
    "gen_ai.usage.total_tokens",
    "llm.token_count.total",
    "llm.usage.total_tokens",
)
_MODEL_ATTRIBUTES: Final = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
)

#: JSON list of output messages, each ``{"parts": [{"type": ...}, ...], ...}`` (GenAI).
_GENAI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
_GENAI_TOOL_CALL_PART: Final = "tool_call"
_GENAI_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
#: Finish reasons that mean the model asked for tools (provider spellings differ).
_TOOL_FINISH_REASONS: Final = frozenset({"tool_calls", "tool_call", "function_call", "tool_use"})
#: Common finish reasons that do not ask for tools.
_OTHER_FINISH_REASONS: Final = ("stop", "length", "end_turn", "max_tokens", "content_filter")
#: Common spellings (as sent and upper-cased), answered by one lookup; any other is
#: stripped and lowered first. Derived from the rule, so the two cannot disagree.
_FINISH_REASON_ASKS: Final[Mapping[str, bool]] = {
    spelling: reason in _TOOL_FINISH_REASONS
    for reason in (*_TOOL_FINISH_REASONS, *_OTHER_FINISH_REASONS, "safety")
    for spelling in (reason, reason.upper())
}


@dataclass(frozen=True, slots=True)
class _FlatToolCallLayout:
    """Tool calls flattened into keys ``{prefix}{i}{infix}{j}.<field>``.

    Any key ``{prefix}{i}.<...>`` shows that output message ``i`` was recorded, so the
    count is known (possibly zero) once one such key exists.
    """

    prefix: str
    infix: str


_FLAT_TOOL_CALL_LAYOUTS: Final = (
    _FlatToolCallLayout("llm.output_messages.", ".message.tool_calls."),  # OpenInference
    _FlatToolCallLayout("gen_ai.completion.", ".tool_calls."),  # OpenLLMetry
)
_FLAT_PREFIXES: Final = tuple(layout.prefix for layout in _FLAT_TOOL_CALL_LAYOUTS)

_DETAIL_ATTRIBUTES: Final = frozenset(
    (
        *_OUTPUT_TOKEN_ATTRIBUTES,
        *_PROMPT_TOKEN_ATTRIBUTES,
        *_TOTAL_TOKEN_ATTRIBUTES,
        *_MODEL_ATTRIBUTES,
        _GENAI_OUTPUT_MESSAGES,
        _GENAI_FINISH_REASONS,
    )
)


class _MessagePart(msgspec.Struct):
    type: str | None = None


class _OutputMessage(msgspec.Struct):
    parts: list[_MessagePart]


# Typed decoding skips message content without building it; a shape other than the GenAI
# one (no "parts", a non-string "type") is a decode error, i.e. an unknown count.
_OUTPUT_MESSAGES_DECODER: Final = msgspec.json.Decoder(list[_OutputMessage])


class CallDetails(NamedTuple):
    """What an LLM span says about its call; ``None`` means the span did not say."""

    output_tokens: int | None
    prompt_tokens: int | None
    total_tokens: int | None
    model_name: str | None
    tool_call_count: int | None


_NO_DETAILS: Final = CallDetails(None, None, None, None, None)
_new_details: Final = tuple.__new__


class _DetailShape(NamedTuple):
    """What a span's attribute *names* alone say about reading its call details.

    Spans of one instrumentation carry the same names span after span, so this is
    worked out once per set of names: which candidate attributes of each field are
    present (in priority order), and the tool-call count of the flattened layouts
    (which depends only on the names).
    """

    output_tokens: tuple[str, ...]
    prompt_tokens: tuple[str, ...]
    total_tokens: tuple[str, ...]
    model_name: tuple[str, ...]
    messages: bool
    finish_reasons: bool
    flat_tool_calls: int | None


# Bounded like the name cache: cleared when full; very long name sets are not kept.
_SHAPE_CACHE_SIZE: Final = 512
_SHAPE_CACHE_MAX_KEYS: Final = 256
_shape_cache: dict[tuple[object, ...], _DetailShape] = {}


def read_call_details(attributes: Mapping[str, object] | None) -> CallDetails:
    """Token usage, model and requested tool-call count, from whichever convention is present.

    A span carrying several conventions' token counters (some modes write two sets) is
    counted once: each field takes the first valid value in priority order. The
    tool-call count is ``None`` when unknown; see ``docs/semantic-conventions.md``.
    """
    if attributes is None:
        return _NO_DETAILS
    values = attributes if type(attributes) is dict else _as_dict(attributes)
    if not values:
        return _NO_DETAILS
    names = tuple(values)
    shape = _shape_cache.get(names)
    if shape is None:
        shape = _detail_shape(names)
        remember(
            _shape_cache,
            names,
            shape,
            small=len(names) <= _SHAPE_CACHE_MAX_KEYS,
            capacity=_SHAPE_CACHE_SIZE,
        )
    output_tokens = _first_count(values, shape.output_tokens)
    prompt_tokens = _first_count(values, shape.prompt_tokens)
    total_tokens = _first_count(values, shape.total_tokens)
    if total_tokens is None and output_tokens is not None and prompt_tokens is not None:
        # A derived count is a count like any other: the same rule, the same bound.
        total_tokens = _as_count(output_tokens + prompt_tokens)
    model_name = _first_name(values, shape.model_name)
    # tuple.__new__ directly: a NamedTuple's own constructor is a Python function.
    return _new_details(
        CallDetails,
        (output_tokens, prompt_tokens, total_tokens, model_name, _tool_call_count(values, shape)),
    )


def _as_dict(attributes: Mapping[str, object]) -> dict[Any, object]:
    """A plain copy of a mapping; only the wanted keys when it cannot be iterated."""
    try:
        return dict(attributes)
    except (RuntimeError, TypeError):  # changed while iterated, or odd keys
        pass
    values: dict[Any, object] = {}
    for key in _DETAIL_ATTRIBUTES:
        value = attributes.get(key)
        if value is not None:
            values[key] = value
    return values


def _detail_shape(names: tuple[object, ...]) -> _DetailShape:
    present = _DETAIL_ATTRIBUTES.intersection(names)
    flat = [name for name in names if isinstance(name, str) and name.startswith(_FLAT_PREFIXES)]
    return _DetailShape(
        output_tokens=_in_order(_OUTPUT_TOKEN_ATTRIBUTES, present),
        prompt_tokens=_in_order(_PROMPT_TOKEN_ATTRIBUTES, present),
        total_tokens=_in_order(_TOTAL_TOKEN_ATTRIBUTES, present),
        model_name=_in_order(_MODEL_ATTRIBUTES, present),
        messages=_GENAI_OUTPUT_MESSAGES in present,
        finish_reasons=_GENAI_FINISH_REASONS in present,
        flat_tool_calls=_count_flat_tool_calls(flat),
    )


def _in_order(candidates: tuple[str, ...], present: frozenset[str]) -> tuple[str, ...]:
    return tuple(attribute for attribute in candidates if attribute in present)


def _first_count(values: Mapping[Any, object], attributes: Iterable[str]) -> int | None:
    for attribute in attributes:
        value = values.get(attribute)
        if type(value) is int and 0 <= value <= _MAX_TOKENS:  # the common case, inline
            return value
        count = _as_count(value)
        if count is not None:
            return count
    return None


def _as_count(value: object, minimum: int = 0) -> int | None:
    """``value`` as an int in ``[minimum, 10**9]``, else ``None``.

    Accepts ints (not bools), integral finite floats and strings of ASCII digits.
    """
    number: int
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():  # also rejects nan and infinities
            return None
        number = int(value)
    elif isinstance(value, str):
        if not (len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit()):
            return None
        number = int(value)
    else:
        return None
    return number if minimum <= number <= _MAX_TOKENS else None


def _as_name(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _first_name(values: Mapping[Any, object], attributes: Iterable[str]) -> str | None:
    for attribute in attributes:
        name = _as_name(values.get(attribute))
        if name is not None:
            return name
    return None


def _tool_call_count(values: Mapping[Any, object], shape: _DetailShape) -> int | None:
    """Tool calls the model requested; ``None`` when the span does not tell.

    Counted from recorded output messages (GenAI JSON, then flattened keys). Without
    messages, finish reasons can only say "none requested" (0): a ``tool_calls`` finish
    reason without messages leaves the number unknown. A count of 0 that contradicts a
    ``tool_calls`` finish reason (messages truncated by attribute limits) is unknown too.
    """
    count = None
    if shape.messages:
        count = _count_genai_tool_call_parts(values.get(_GENAI_OUTPUT_MESSAGES))
    if count is None:
        count = shape.flat_tool_calls
    tools_requested = None
    if shape.finish_reasons:
        tools_requested = _finish_reasons_request_tools(values.get(_GENAI_FINISH_REASONS))
    if count is None:
        return 0 if tools_requested is False else None
    if count == 0 and tools_requested:
        return None
    return count


def _count_genai_tool_call_parts(raw: object) -> int | None:
    if not isinstance(raw, str):
        return None
    try:
        messages = _OUTPUT_MESSAGES_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    return sum(part.type == _GENAI_TOOL_CALL_PART for message in messages for part in message.parts)


def _count_flat_tool_calls(keys: list[str]) -> int | None:
    """Tool calls in the flattened layouts, from the attribute names that use them."""
    if not keys:
        return None
    # First layout with recorded messages wins, so a span written in two layouts counts once.
    for layout in _FLAT_TOOL_CALL_LAYOUTS:
        count = _count_in_layout(keys, layout)
        if count is not None:
            return count
    return None


def _count_in_layout(keys: Iterable[str], layout: _FlatToolCallLayout) -> int | None:
    tool_calls: set[tuple[str, str]] = set()
    messages_seen = False
    for key in keys:
        if not key.startswith(layout.prefix):
            continue
        message, dot, rest = key[len(layout.prefix) :].partition(".")
        if not (dot and rest and _is_index(message)):
            continue
        messages_seen = True
        tail = "." + rest
        if tail.startswith(layout.infix):
            call, dot, field = tail[len(layout.infix) :].partition(".")
            if dot and field and _is_index(call):
                tool_calls.add((_canonical_index(message), _canonical_index(call)))
    return len(tool_calls) if messages_seen else None


def _is_index(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _canonical_index(digits: str) -> str:
    # Compared as text, not int(): int() of a huge digit string is slow or refused.
    return digits.lstrip("0") or "0"


def _finish_reasons_request_tools(value: object) -> bool | None:
    """True/False when finish reasons are present and do/don't ask for tools, else None."""
    reasons: tuple[object, ...] | list[object]
    if isinstance(value, str):
        reasons = (value,)
    elif isinstance(value, (list, tuple)):
        reasons = value
    else:
        return None
    seen = False
    for reason in reasons:
        if isinstance(reason, str):
            seen = True
            asks = _FINISH_REASON_ASKS.get(reason)
            if asks is None:
                asks = reason.strip().lower() in _TOOL_FINISH_REASONS
            if asks:
                return True
    return False if seen else None


# --- entity names and overrides ---------------------------------------------------------------

_AGENT_NAME_ATTRIBUTES: Final = (AGENT_ID_ATTRIBUTE, "gen_ai.agent.name", "agent.name")
_TOOL_NAME_ATTRIBUTES: Final = ("gen_ai.tool.name", "tool.name")
# Traceloop names every entity with one attribute; its kind says what the name is of.
_TRACELOOP_ENTITY_NAME: Final = "traceloop.entity.name"
#: OpenInference's node id; CrewAI sets it to the agent's name on its agent spans.
_GRAPH_NODE_ID: Final = "graph.node.id"


def agent_name(attributes: Mapping[str, object] | None) -> str | None:
    """The agent's explicit name, or ``None`` when no convention names one."""
    return _entity_name(attributes, _AGENT_NAME_ATTRIBUTES, "agent")


def graph_node_name(attributes: Mapping[str, object] | None) -> str | None:
    """The graph node's name an instrumentation states (CrewAI names its agents so)."""
    if not attributes:
        return None
    return _as_name(attributes.get(_GRAPH_NODE_ID))


def workflow_name(attributes: Mapping[str, object] | None) -> str | None:
    """The workflow's explicit name (a Traceloop ``workflow`` entity), else ``None``."""
    if not attributes:
        return None
    kind = attributes.get(_TRACELOOP_SPAN_KIND)
    if isinstance(kind, str) and kind.strip().lower() == "workflow":
        return _as_name(attributes.get(_TRACELOOP_ENTITY_NAME))
    return None


def tool_name(attributes: Mapping[str, object] | None) -> str | None:
    """The tool's explicit name, or ``None`` when no convention names one."""
    return _entity_name(attributes, _TOOL_NAME_ATTRIBUTES, "tool")


def _entity_name(
    attributes: Mapping[str, object] | None,
    name_attributes: tuple[str, ...],
    traceloop_kind: str,
) -> str | None:
    if not attributes:
        return None
    name = _first_name(attributes, name_attributes)
    if name is not None:
        return name
    kind = attributes.get(_TRACELOOP_SPAN_KIND)
    if isinstance(kind, str) and kind.strip().lower() == traceloop_kind:
        return _as_name(attributes.get(_TRACELOOP_ENTITY_NAME))
    return None


def manual_latency_sensitivity(attributes: Mapping[str, object] | None) -> int | None:
    """The application's latency sensitivity for a scope (an int >= 1), else ``None``."""
    if not attributes:
        return None
    return _as_count(attributes.get(LATENCY_SENSITIVITY_ATTRIBUTE), minimum=1)


__all__ = [
    "AGENT_ID_ATTRIBUTE",
    "LATENCY_SENSITIVITY_ATTRIBUTE",
    "SCOPE_TYPE_ATTRIBUTE",
    "CallDetails",
    "agent_name",
    "classify",
    "graph_node_name",
    "is_llm_span",
    "manual_latency_sensitivity",
    "read_call_details",
    "tool_name",
    "workflow_name",
]
