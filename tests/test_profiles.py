"""Hint profiles: what goes on the wire, typed as consumers need it, never over caller keys."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otel_adaptive
from otel_adaptive import AdaptiveConfig, AgentHints, ConfigError
from otel_adaptive.profiles import (
    Collision,
    build_profile,
    merge_body_in_place,
    merged_body,
    parse_field_list,
)
from spans import LLM, agent_attrs, make_processor, timed_span, usage

HINTS = AgentHints(
    osl=120,
    iat=250,
    priority=3,
    latency_sensitivity=4,
    prefix_id="bot-d2",
    total_requests=6,
    agent_id="bot",
    session_id="bot-0af7651916cd43dd8448eb211c80319c",
)


def _render(**config: Any) -> Any:
    return build_profile(AdaptiveConfig(**config)).render(HINTS)


# --- profiles ---------------------------------------------------------------------------------


def test_dynamo_profile_sends_only_priority_and_osl_as_integers_plus_the_session_header() -> None:
    wire = _render()
    assert wire.body_path == ("nvext", "agent_hints")
    assert wire.body == {"priority": 3, "osl": 120}
    assert all(type(value) is int for value in wire.body.values())
    assert wire.headers == {"x-dynamo-session-id": HINTS.session_id}


def test_dynamo_profile_leaves_osl_out_below_one_token() -> None:
    profile = build_profile(AdaptiveConfig())
    for osl in (0, -3):
        hints = AgentHints(osl, 1, 0, 1, "a-d1", 1)
        assert profile.render(hints).body == {"priority": 0}


def test_parent_session_header_is_sent_only_for_a_run_with_a_remote_parent() -> None:
    profile = build_profile(AdaptiveConfig())
    nested = AgentHints(1, 1, 0, 1, "a-d1", 1, "a", "a-1", "0" * 31 + "1-" + "0" * 15 + "2")
    assert profile.render(nested).headers == {
        "x-dynamo-session-id": "a-1",
        "x-dynamo-parent-session-id": nested.parent_session_id,
    }
    assert "x-dynamo-parent-session-id" not in profile.render(HINTS).headers


def test_each_session_header_can_be_switched_off_or_renamed() -> None:
    nested = AgentHints(1, 1, 0, 1, "a-d1", 1, "a", "a-1", "p-1")
    off = build_profile(AdaptiveConfig(hint_session_header=None, hint_parent_session_header=None))
    assert off.render(nested).headers == {}
    renamed = build_profile(AdaptiveConfig(hint_session_header="x-run"))
    assert renamed.render(nested).headers == {"x-run": "a-1", "x-dynamo-parent-session-id": "p-1"}


def test_nat_profile_sends_the_six_fields_nemo_agent_toolkit_sends() -> None:
    wire = _render(hint_profile="nat")
    assert wire.body == {
        "osl": 120,
        "iat": 250,
        "priority": 4,  # NAT's priority is the sensitivity itself
        "latency_sensitivity": 4.0,
        "prefix_id": "bot-d2",
        "total_requests": 6,
    }
    assert type(wire.body["latency_sensitivity"]) is float


def test_custom_profile_picks_and_renames_fields_at_its_own_body_path_and_header() -> None:
    wire = _render(
        hint_profile="custom",
        hint_fields="priority, osl:expected_tokens",
        hint_body_path="metadata.hints",
        hint_header="x-agent-hints",
    )
    assert wire.body_path == ("metadata", "hints")
    assert wire.body == {"priority": 3, "expected_tokens": 120}
    assert wire.headers["x-agent-hints"] == '{"priority":3,"expected_tokens":120}'


def test_custom_profile_without_a_field_list_sends_all_six() -> None:
    assert _render(hint_profile="custom").body == HINTS.to_dict()


def test_no_body_path_means_headers_only() -> None:
    assert _render(hint_body_path=None).body_path is None


# --- bad configuration fails at start-up, naming the variable ---------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_ADAPTIVE_HINT_PROFILE", "dynamo2"),
        ("OTEL_ADAPTIVE_HINT_FIELDS", "priority,bogus"),
        ("OTEL_ADAPTIVE_HINT_FIELDS", "priority,osl:priority"),
        ("OTEL_ADAPTIVE_HINT_FIELDS", "priority:has space"),
        ("OTEL_ADAPTIVE_HINT_BODY_PATH", "nvext..agent_hints"),
        ("OTEL_ADAPTIVE_HINT_BODY_PATH", ".nvext"),
        ("OTEL_ADAPTIVE_HINT_BODY_PATH", "nvext.agent hints"),
        ("OTEL_ADAPTIVE_HINT_SESSION_HEADER", "x session"),
        ("OTEL_ADAPTIVE_HINT_HEADER", "x:hints"),
    ],
)
def test_bad_hint_settings_fail_at_start_up_naming_the_variable(variable: str, value: str) -> None:
    environ = {variable: value}
    if variable == "OTEL_ADAPTIVE_HINT_FIELDS":
        environ["OTEL_ADAPTIVE_HINT_PROFILE"] = "custom"
    with pytest.raises(ConfigError, match=variable):
        AdaptiveConfig.from_env(environ)


def test_a_field_list_needs_the_custom_profile() -> None:
    with pytest.raises(ConfigError, match="OTEL_ADAPTIVE_HINT_PROFILE"):
        AdaptiveConfig(hint_fields="priority")


def test_field_list_parsing() -> None:
    assert parse_field_list(" osl , priority:prio ") == (("osl", "osl"), ("priority", "prio"))
    with pytest.raises(ValueError, match="unknown hint field 'iatt'"):
        parse_field_list("iatt")


# --- merging never clobbers the caller ---------------------------------------------------------


def test_merge_keeps_every_key_the_caller_set() -> None:
    body = {"nvext": {"greed_sampling": True, "agent_hints": {"priority": 9}}, "model": "m"}
    merge_body_in_place(body, ("nvext", "agent_hints"), {"priority": 3, "osl": 120})
    assert body == {
        "nvext": {"greed_sampling": True, "agent_hints": {"priority": 9, "osl": 120}},
        "model": "m",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"nvext": "on"},
        {"nvext": {"agent_hints": [1, 2]}},
        {"nvext": {"agent_hints": 7}},
    ],
)
def test_a_path_blocked_by_a_non_object_leaves_the_body_untouched(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    with pytest.raises(Collision):
        merge_body_in_place(body, ("nvext", "agent_hints"), {"priority": 1})
    assert body == before
    with pytest.raises(Collision):
        merged_body(body, ("nvext", "agent_hints"), {"priority": 1})
    assert body == before


_keys = st.sampled_from(["nvext", "agent_hints", "priority", "osl", "x"])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: st.dictionaries(_keys, children, max_size=3),
    max_leaves=8,
)
_hints = st.dictionaries(st.sampled_from(["priority", "osl", "iat"]), st.integers(), max_size=3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(_keys, _json, max_size=3),
    path=st.lists(_keys, min_size=1, max_size=3),
    hints=_hints,
)
def test_merged_body_is_the_callers_body_plus_only_absent_hint_keys(
    body: dict[str, Any], path: list[str], hints: dict[str, Any]
) -> None:
    before = copy.deepcopy(body)
    in_place = copy.deepcopy(body)
    try:
        result = merged_body(body, tuple(path), hints)
    except Collision:
        with pytest.raises(Collision):
            merge_body_in_place(in_place, tuple(path), hints)
        assert in_place == before  # untouched, never half-written
        return
    merge_body_in_place(in_place, tuple(path), hints)
    assert body == before  # the caller's object is not modified
    assert in_place == result  # both merges agree
    target = result
    original: Any = before
    for key in path:
        target = target[key]
        original = original.get(key) if isinstance(original, dict) else None
    for key, value in hints.items():
        caller = original.get(key) if isinstance(original, dict) else None
        assert target[key] == (value if caller is None else caller)
    _assert_contains(result, before)


def _assert_contains(result: Any, caller: Any) -> None:
    """Every non-None value the caller set is still there, unchanged."""
    if isinstance(caller, dict):
        for key, value in caller.items():
            if value is not None:
                _assert_contains(result[key], value)
    else:
        assert result == caller


# --- inject_hints follows the active profile --------------------------------------------------


def _learned(**config: Any) -> Any:
    provider, processor, tracer = make_processor(**config)
    for _ in range(3):
        with timed_span(tracer, "agent", 0, 100, agent_attrs("profiled")):
            with timed_span(tracer, "chat m", 10, 60, LLM, end_attributes=usage(40)):
                pass
        assert processor.force_flush(5000)
    return provider, tracer


def test_inject_hints_follows_the_default_dynamo_profile() -> None:
    provider, tracer = _learned()
    with timed_span(tracer, "agent", 0, 100, agent_attrs("profiled")) as root:
        body: dict[str, Any] = {"nvext": {"greed_sampling": True}}
        headers: dict[str, str] = {}
        hints = otel_adaptive.inject_hints(body, headers)
        trace_id = root.get_span_context().trace_id
    assert hints is not None
    assert hints.priority == hints.latency_sensitivity - 1
    agent_hints = {"priority": hints.priority, "osl": 40}
    assert body == {"nvext": {"greed_sampling": True, "agent_hints": agent_hints}}
    assert headers == {"x-dynamo-session-id": f"profiled-{trace_id:032x}"}
    provider.shutdown()


def test_inject_hints_follows_the_nat_profile() -> None:
    provider, tracer = _learned(hint_profile="nat")
    with timed_span(tracer, "agent", 0, 100, agent_attrs("profiled")):
        body: dict[str, Any] = {}
        otel_adaptive.inject_hints(body)
    assert set(body["nvext"]["agent_hints"]) == set(HINTS.to_dict())
    provider.shutdown()


def test_inject_hints_keeps_the_callers_header_whatever_its_case() -> None:
    provider, tracer = _learned()
    with timed_span(tracer, "agent", 0, 100, agent_attrs("profiled")):
        headers = {"X-Dynamo-Session-Id": "mine"}
        otel_adaptive.inject_hints(None, headers)
    assert headers == {"X-Dynamo-Session-Id": "mine"}
    provider.shutdown()


def test_inject_hints_into_a_blocked_path_warns_once_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, tracer = _learned()
    with timed_span(tracer, "agent", 0, 100, agent_attrs("profiled")):
        bodies = [{"nvext": "flat"}, {"nvext": "flat"}]
        with caplog.at_level(logging.WARNING):
            for body in bodies:
                assert otel_adaptive.inject_hints(body) is not None
    assert bodies == [{"nvext": "flat"}, {"nvext": "flat"}]
    warnings = [r for r in caplog.records if "not an object" in r.getMessage()]
    assert len(warnings) == 1
    provider.shutdown()


def test_a_call_marked_latency_sensitive_gets_a_higher_priority() -> None:
    provider, tracer = _learned()
    with timed_span(tracer, "agent", 0, 100, agent_attrs("profiled")):
        plain = otel_adaptive.current_hints()
        assert otel_adaptive.set_latency_sensitivity(5)
        marked = otel_adaptive.current_hints()
    assert plain is not None and marked is not None
    assert (plain.priority, marked.priority) == (plain.latency_sensitivity - 1, 4)
    assert marked.priority > plain.priority
    provider.shutdown()
