"""Agent hints for the next LLM call, read on the application's hot path.

A hint lookup resolves the *call site* of the LLM call about to be made (the
agent, the scope path and the call index) from the open ancestors of the current
span, then looks it up in the latest immutable plan snapshot. It never does I/O,
never waits for the exporter and never raises into the application.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from otel_adaptive import conventions, profiles
from otel_adaptive.cache import PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.records import STRUCTURAL_SCOPES, clean_name

_logger = logging.getLogger(__name__)

#: Ancestors walked at most; deeper trees (or parent cycles) stop here.
_MAX_DEPTH = 64
#: Resolved call sites kept; the cache is simply emptied when it is full.
_MAX_CACHED_SITES = 4096
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class AgentHints:
    """Hints for one LLM request; the hint profile decides which of them go on the wire."""

    osl: int
    """Expected output tokens (p90 of what this call site produced)."""
    iat: int
    """Expected milliseconds until the next LLM call arrives (mean)."""
    priority: int
    """Scheduling priority, ``latency_sensitivity - 1``: 0 for the most tolerant call,
    higher is more urgent (Dynamo's meaning)."""
    latency_sensitivity: int
    """1 (tolerant) .. scale (latency-critical)."""
    prefix_id: str
    """Shared-prefix key: ``{agent_id}-d{depth}`` of the trie node that answered."""
    total_requests: int
    """Expected number of LLM requests in the whole run."""
    agent_id: str = ""
    """The agent whose run makes the call."""
    session_id: str = ""
    """One id per run, ``{agent_id}-{trace_id}`` (32 hex digits): a session for routers."""
    parent_session_id: str | None = None
    """``{trace_id}-{span_id}`` of the remote span the run was started under, when the
    run's trace came in from another process (None: the run started here)."""

    def to_dict(self) -> dict[str, Any]:
        """The six predicted values (not the session ids), under their own names."""
        return {
            "osl": self.osl,
            "iat": self.iat,
            "priority": self.priority,
            "latency_sensitivity": self.latency_sensitivity,
            "prefix_id": self.prefix_id,
            "total_requests": self.total_requests,
        }


@dataclass(frozen=True, slots=True)
class CallSite:
    """Where an LLM call is about to be made."""

    agent_id: str
    path: tuple[str, ...]
    call_index: int
    parent_span_id: int
    manual_sensitivity: int | None


@dataclass(frozen=True, slots=True)
class _Scope:
    """What hints need to know about one open span, derived from its parent's.

    ``names`` are the structural scope names from the local root down to this
    span (itself included when structural); ``agent_start`` is where the run's
    outermost agent begins in them (None: no agent above). Each span is
    classified once; a child's scope is built from its parent's in O(1).
    """

    span_id: int
    kind: str
    parent: _Scope | None
    names: tuple[str, ...]
    agent_start: int | None
    agent_name: str | None
    inner_agent: str | None  # span name of the first agent span beneath the outermost
    fallback_agent_id: str
    manual_sensitivity: int | None


@dataclass(frozen=True, slots=True)
class _Place:
    """The part of a call site that stays fixed while its parent span is open."""

    agent_id: str
    path: tuple[str, ...]
    parent_span_id: int
    manual_sensitivity: int | None


class HintService:
    """Resolves call sites from live spans and turns predictions into hints.

    ``live`` maps the span id of every open span to the span; ``ended_under`` maps
    an open parent's span id to ``[(checked, llm_calls), child, child, ...]``: the
    children that ended under it, headed by a tally of how many of them were
    already classified and how many of those were LLM calls. The processor
    appends on the hot path; classification happens here, once per child, so
    ``on_end`` never pays for it.
    """

    def __init__(
        self,
        config: AdaptiveConfig,
        cache: PlanCache,
        live: Mapping[int, ReadableSpan],
        ended_under: Mapping[int, list[Any]],
    ) -> None:
        self._config = config
        self._cache = cache
        self._live = live
        self._ended_under = ended_under
        self._scale = config.sensitivity_scale
        self._warned: set[str] = set()
        self._profile = profiles.build_profile(config)
        # The last hints rendered and their wire form (treated as read-only by every caller).
        self._wire_memo: tuple[AgentHints, profiles.WireHints] | None = None
        self._sites: dict[int, list[Any]] = {}
        # Bumped by set_latency_sensitivity: cached places carry the old value.
        self._generation = 0

    # --- call sites ---------------------------------------------------------------------------

    def _entry(self, current: Any) -> list[Any] | None:
        """``[generation, scope, place, memo]`` for the span, resolved once per open span.

        Where a span sits (agent, path, parent) does not change while it is open;
        only the call index moves on. ``memo`` is the last answer as one tuple
        ``(snapshot version, call index, hints)``.
        """
        scope = self._scope(current)
        if scope is None:
            return None
        entry: list[Any] = self._sites[scope.span_id]
        if entry[2] is _UNSET:
            entry[2] = self._place(scope)
        return entry

    def _scope(self, span: Any) -> _Scope | None:
        """The span's scope, computing (and caching) what its open ancestors lack."""
        generation = self._generation
        missing: list[Any] = []
        base: _Scope | None = None
        node = span
        while node is not None and len(missing) < _MAX_DEPTH:
            context = node.get_span_context()
            if not context.is_valid:
                break
            entry = self._sites.get(context.span_id)
            if entry is not None and entry[0] == generation:
                base = entry[1]
                break
            missing.append(node)
            parent = node.parent
            if parent is None or parent.is_remote:
                break
            node = self._live.get(parent.span_id)
        if len(self._sites) + len(missing) > _MAX_CACHED_SITES:
            self._sites.clear()
        for node in reversed(missing):
            base = self._derive(base, node)
            self._sites[base.span_id] = [generation, base, _UNSET, None]
        return base

    def _derive(self, parent: _Scope | None, span: Any) -> _Scope:
        # One copy into a plain dict: every lookup that misses on the SDK's own
        # attribute mapping raises and catches a KeyError, which costs microseconds.
        attributes = dict(span.attributes or {})
        limit = self._config.max_name_length
        kind = conventions.classify(
            attributes, span.name, name_heuristics=self._config.name_heuristics
        )
        manual = conventions.manual_latency_sensitivity(attributes)
        if parent is None:
            names: tuple[str, ...] = ()
            agent_start = None
            agent_name = inner_agent = None
            fallback = self._fallback_agent_id(span)
        else:
            names, agent_start, agent_name = parent.names, parent.agent_start, parent.agent_name
            inner_agent = parent.inner_agent
            fallback = parent.fallback_agent_id
            if parent.manual_sensitivity is not None:
                manual = max(manual or 0, parent.manual_sensitivity)
        if kind == "agent":
            if agent_start is None:
                agent_start = len(names)
            elif inner_agent is None:
                inner_agent = clean_name(span.name, limit)
            if agent_name is None:
                agent_name = conventions.agent_name(attributes)
        if kind in STRUCTURAL_SCOPES:
            names = (*names, clean_name(span.name, limit))
        return _Scope(
            span_id=span.get_span_context().span_id,
            kind=kind,
            parent=parent,
            names=names,
            agent_start=agent_start,
            agent_name=agent_name,
            inner_agent=inner_agent,
            fallback_agent_id=fallback,
            manual_sensitivity=manual,
        )

    def _place(self, scope: _Scope) -> _Place | None:
        # Hand-written code often opens the LLM span first and asks for hints
        # inside it: then the call is that span, and its parent is the call site.
        if scope.kind == "llm" and scope.parent is not None:
            scope = scope.parent
        limit = self._config.max_name_length
        if scope.agent_start is None:
            if self._config.run_root != "agent_or_root":
                return None
            agent_id, path = scope.fallback_agent_id, scope.names
        else:
            path = scope.names[scope.agent_start :]
            # The same order as the assembler: explicit names, then the first inner
            # agent's span name, then the outermost agent's span name.
            agent_id = scope.agent_name or scope.inner_agent or path[0]
        return _Place(
            agent_id=clean_name(agent_id, limit),
            path=path,
            parent_span_id=scope.span_id,
            manual_sensitivity=scope.manual_sensitivity,
        )

    def _llm_calls_under(self, parent_id: int) -> int:
        ended = self._ended_under.get(parent_id)
        if ended is None:
            return 0
        checked: int
        llm_calls: int
        checked, llm_calls = ended[0]
        total = len(ended) - 1  # other threads may append meanwhile: count up to here
        heuristics = self._config.name_heuristics
        for child in ended[1 + checked : 1 + total]:
            if conventions.is_llm_span(child.attributes, child.name, name_heuristics=heuristics):
                llm_calls += 1
        ended[0] = (total, llm_calls)  # one assignment: readers see a consistent pair
        return llm_calls

    def _fallback_agent_id(self, top: Any) -> str:
        if self._config.agent_id:
            return self._config.agent_id
        resource = getattr(top, "resource", None)
        service = resource.attributes.get("service.name") if resource is not None else None
        return service if isinstance(service, str) else "unknown_service"

    # --- hints --------------------------------------------------------------------------------

    def hints_for(self, site: CallSite) -> AgentHints | None:
        """Hints for a resolved call site, or None when nothing was learned for its agent."""
        return self._hints(site.agent_id, site.path, site.call_index, site.manual_sensitivity)

    def _hints(
        self, agent_id: str, path: tuple[str, ...], call_index: int, manual: int | None
    ) -> AgentHints | None:
        plan = self._cache.get(agent_id)
        if plan is None or plan.trie is None:
            return None
        found = plan.trie.match(path, call_index)
        if found is None:
            return None
        prediction = found.prediction
        sensitivity = prediction.latency_sensitivity or 1
        if manual is not None:
            sensitivity = max(sensitivity, min(manual, self._scale))
        return AgentHints(
            osl=_round_half_up(prediction.output_tokens.p90),
            iat=_round_half_up(prediction.interarrival_ms.mean),
            priority=sensitivity - 1,
            latency_sensitivity=sensitivity,
            prefix_id=f"{agent_id}-d{found.depth}",
            total_requests=_round_half_up(prediction.remaining_calls.mean) + call_index,
            agent_id=agent_id,
        )

    def _with_session(self, hints: AgentHints) -> AgentHints:
        """The hints with the session ids of the run the current span belongs to."""
        span: Any = trace.get_current_span()
        context = span.get_span_context()
        parent_session = None
        for _ in range(_MAX_DEPTH):
            parent = getattr(span, "parent", None)
            if parent is None:
                break
            if parent.is_remote:
                parent_session = f"{parent.trace_id:032x}-{parent.span_id:016x}"
                break
            span = self._live.get(parent.span_id)
            if span is None:
                break
        return replace(
            hints,
            session_id=f"{_header_safe(hints.agent_id)}-{context.trace_id:032x}",
            parent_session_id=parent_session,
        )

    def current_hints(self) -> AgentHints | None:
        """Hints for an LLM call about to be made under the current span."""
        try:
            entry = self._entry(trace.get_current_span())
            place = None if entry is None else entry[2]
            if entry is None or place is None:
                return None
            call_index = self._llm_calls_under(place.parent_span_id) + 1
            version = self._cache.version
            memo = entry[3]
            if memo is not None and memo[0] == version and memo[1] == call_index:
                hints: AgentHints | None = memo[2]
                return hints
            hints = self._hints(place.agent_id, place.path, call_index, place.manual_sensitivity)
            if hints is not None:
                hints = self._with_session(hints)
            entry[3] = (version, call_index, hints)  # one assignment: a consistent memo
            return hints
        except Exception:  # the application must never see our failure
            _logger.debug("hint lookup failed", exc_info=True)
            return None

    def wire_hints(self) -> tuple[AgentHints, profiles.WireHints] | None:
        """The current hints and what the active profile puts on the wire for them."""
        hints = self.current_hints()
        if hints is None:
            return None
        memo = self._wire_memo
        if memo is not None and memo[0] is hints:  # lookups are memoised: same object
            return memo
        try:
            found = (hints, self._profile.render(hints))
            self._wire_memo = found  # one assignment: readers see a consistent pair
            return found
        except Exception:
            _logger.debug("rendering hints failed", exc_info=True)
            return None

    def inject_hints(
        self,
        body: MutableMapping[str, Any] | None = None,
        headers: MutableMapping[str, str] | None = None,
    ) -> AgentHints | None:
        """Merge the current hints into a request body and/or headers; returns them.

        Keys the caller already set win. None: nothing was learned for this call
        (nothing written).
        """
        found = self.wire_hints()
        if found is None:
            return None
        hints, wire = found
        try:
            if body is not None and wire.body_path is not None and wire.body:
                self._put(body, wire.body_path, wire.body)
            if headers is not None and wire.headers:
                unset = profiles.missing_headers(headers)
                for name, value in wire.headers.items():
                    if unset(name):
                        headers[name] = value
        except Exception:
            _logger.debug("hint injection failed", exc_info=True)
        return hints

    def _put(
        self, body: MutableMapping[str, Any], path: tuple[str, ...], payload: dict[str, Any]
    ) -> None:
        try:
            profiles.merge_body_in_place(body, path, payload)
        except profiles.Collision as exc:
            self._warn_once("collision", f"{exc}; the request was left unchanged")

    def set_latency_sensitivity(self, value: int) -> bool:
        """Mark the current span latency-sensitive (1..scale); True when recorded."""
        try:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self._warn_once(
                    "sensitivity", f"latency sensitivity must be an int >= 1: {value!r}"
                )
                return False
            span = trace.get_current_span()
            if not span.is_recording():
                return False
            span.set_attribute(conventions.LATENCY_SENSITIVITY_ATTRIBUTE, min(value, self._scale))
            self._generation += 1
            return True
        except Exception:
            _logger.debug("set_latency_sensitivity failed", exc_info=True)
            return False

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _logger.warning(message)


def _header_safe(text: str) -> str:
    # Agent ids are free text; a header value must be visible ASCII.
    if text.isascii() and text.isprintable() and " " not in text:
        return text
    return "".join(c if c.isascii() and c.isprintable() and c != " " else "_" for c in text)


def _round_half_up(value: float) -> int:
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


# --- module-level functions on the active processor ------------------------------------------

_active_lock = threading.Lock()
_active: list[HintService] = []


def _activate(service: HintService) -> None:
    with _active_lock:
        _active.append(service)


def _deactivate(service: HintService) -> None:
    with _active_lock:
        if service in _active:
            _active.remove(service)


def _current_service() -> HintService | None:
    try:
        return _active[-1]  # lock-free: a concurrent removal at worst raises IndexError
    except IndexError:
        return None


def current_hints() -> AgentHints | None:
    """Hints for an LLM call about to be made under the current span.

    Uses the most recently created :class:`~otel_adaptive.AdaptiveSpanProcessor`
    that is not shut down. Returns None when nothing was learned yet.
    """
    service = _current_service()
    return None if service is None else service.current_hints()


def inject_hints(
    body: MutableMapping[str, Any] | None = None,
    headers: MutableMapping[str, str] | None = None,
) -> AgentHints | None:
    """Merge the current hints into a request body and/or headers, as the hint profile
    says (default ``dynamo``: ``body["nvext"]["agent_hints"] = {"priority", "osl"}`` and
    an ``x-dynamo-session-id`` header). Keys the caller already set are kept. Returns
    the hints (None: nothing learned, nothing written)."""
    service = _current_service()
    return None if service is None else service.inject_hints(body, headers)


def set_latency_sensitivity(value: int) -> bool:
    """Mark the current span (and so the LLM calls under it) latency-sensitive.

    The highest value among a call's ancestors wins; it raises the learned
    sensitivity, never lowers it. Returns True when recorded.
    """
    service = _current_service()
    return False if service is None else service.set_latency_sensitivity(value)
