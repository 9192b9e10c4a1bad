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

from otel_adaptive import conventions, identity, profiles
from otel_adaptive._span_capture import SpanCapture
from otel_adaptive.cache import PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.live import LiveSpans, Tally, TraceState
from otel_adaptive.records import STRUCTURAL_SCOPES, ScopeType, clean_name

_logger = logging.getLogger(__name__)

#: Ancestors walked at most; deeper trees (or parent cycles) stop here.
_MAX_DEPTH = 64
#: Resolved call sites kept per open trace; beyond it sites are resolved uncached.
_MAX_SITES_PER_TRACE = 1024
_NO_CALLS = Tally(0, {}, {})
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
    """Where an LLM call is about to be made.

    ``calls_made`` is how many LLM calls the run made before this one (None: only
    the ``call_index - 1`` earlier calls at this path are known).
    """

    agent_id: str
    path: tuple[str, ...]
    call_index: int
    parent_span_id: int
    manual_sensitivity: int | None
    calls_made: int | None = None


@dataclass(frozen=True, slots=True)
class _Scope:
    """What hints need to know about one open span, derived from its parent's.

    ``names`` are the structural scope names from the local root down to this
    span (itself included when structural); ``agent_start`` is where the run's
    root agent begins in them (None: no agent above, the local root is the run
    root). The ``root_*`` fields describe the run root as far as visible now,
    for :mod:`otel_adaptive.identity`. Each span is classified once; a child's
    scope is built from its parent's in O(1).
    """

    span_id: int
    kind: ScopeType
    name: str
    parent: _Scope | None
    names: tuple[str, ...]
    agent_start: int | None
    run_root_id: int
    root_name: str
    root_kind: ScopeType
    root_attributes: Mapping[str, object]
    inner_agent: tuple[str, Mapping[str, object]] | None
    graph_name: str | None
    fallback_agent_id: str
    manual_sensitivity: int | None
    agent: tuple[str, str | None]  # (the rule's agent id, the explicit name on the root)


@dataclass(frozen=True, slots=True)
class _Place:
    """The part of a call site that stays fixed while its parent span is open.

    The agent id served is ``explicit``, else what the exporter published for
    ``alias_key`` (what the assembler stored runs with that root under), else
    ``agent_id``, the rule applied to what is visible now.
    """

    agent_id: str
    explicit: str | None
    alias_key: str
    path: tuple[str, ...]
    run_root_id: int
    manual_sensitivity: int | None


class _Site:
    """A call-site cache entry: a span's scope, its place once asked, the last answer."""

    __slots__ = ("generation", "memo", "place", "scope")

    def __init__(self, generation: int, scope: _Scope) -> None:
        self.generation = generation
        self.scope = scope
        self.place: _Place | None = _UNSET
        # (snapshot version, call index, calls made, hints), replaced with one assignment.
        self.memo: tuple[int, int, int, AgentHints | None] | None = None


class HintService:
    """Resolves call sites from live spans and turns predictions into hints.

    The open spans and what ended in each trace come from the processor's
    :class:`~otel_adaptive.live.LiveSpans`, appended on the hot path; the LLM
    calls among the ended spans are classified and counted here, once each, so
    ``on_end`` never pays for it.
    """

    def __init__(self, config: AdaptiveConfig, cache: PlanCache, live: LiveSpans) -> None:
        self._config = config
        self._cache = cache
        self._live = live
        self._scale = config.sensitivity_scale
        self._warned: set[str] = set()
        self._profile = profiles.build_profile(config)
        # The last hints rendered and their wire form (treated as read-only by every caller).
        self._wire_memo: tuple[AgentHints, profiles.WireHints] | None = None
        # Bumped by set_latency_sensitivity: cached scopes carry the old value.
        self._generation = 0
        self._errors = 0
        self._errors_lock = threading.Lock()

    @property
    def errors(self) -> int:
        """Hint lookups that failed (answered None instead of raising)."""
        return self._errors

    # --- call sites ---------------------------------------------------------------------------

    def _site(
        self, span: Any, state: TraceState | None, ended: _EndedIndex | None = None
    ) -> _Site | None:
        """The span's cache entry, computing (and caching) what its ancestors lack."""
        generation = self._generation
        sites = state.sites if state is not None else None
        missing: list[Any] = []
        base: _Site | None = None
        node = span
        while node is not None and len(missing) < _MAX_DEPTH:
            context = node.get_span_context()
            if not context.is_valid:
                break
            if sites is not None:
                cached = sites.get(context.span_id)
                if cached is not None and cached.generation == generation:
                    base = cached
                    break
            missing.append(node)
            parent = node.parent
            if parent is None or parent.is_remote:
                break
            node = self._live.get(parent.span_id)
            if node is None and state is not None:
                if ended is None:
                    ended = _EndedIndex(state)
                node = ended.get(parent.span_id)  # ended meanwhile: its end is recorded
        for node in reversed(missing):
            site = _Site(generation, self._derive(None if base is None else base.scope, node))
            if sites is not None and len(sites) < _MAX_SITES_PER_TRACE:
                kept = sites.setdefault(site.scope.span_id, site)
                if kept.generation == generation:
                    site = kept  # another thread's equal answer: keep one
                else:
                    sites[site.scope.span_id] = site  # replaces a stale one
            base = site
        return base

    def _derive(self, parent: _Scope | None, span: Any) -> _Scope:
        # One copy into a plain dict: every lookup that misses on the SDK's own
        # attribute mapping raises and catches a KeyError, which costs microseconds.
        attributes: Mapping[str, object] = dict(span.attributes or {})
        name = clean_name(span.name, self._config.max_name_length)
        kind = conventions.classify(
            attributes, span.name, name_heuristics=self._config.name_heuristics
        )
        manual = conventions.manual_latency_sensitivity(attributes)
        span_id = span.get_span_context().span_id
        if parent is None:  # the local root: the run root until an agent shows up
            names: tuple[str, ...] = ()
            agent_start = None
            run_root_id, root_name, root_kind, root_attributes = span_id, name, kind, attributes
            inner_agent = None
            graph_name = None
            fallback = self._fallback_agent_id(span)
        else:
            names, agent_start = parent.names, parent.agent_start
            run_root_id, root_name = parent.run_root_id, parent.root_name
            root_kind, root_attributes = parent.root_kind, parent.root_attributes
            inner_agent, graph_name = parent.inner_agent, parent.graph_name
            fallback = parent.fallback_agent_id
            if parent.manual_sensitivity is not None:
                manual = max(manual or 0, parent.manual_sensitivity)
            if identity.is_agent_scope(kind, name, attributes):
                if agent_start is None:  # the outermost agent roots the run
                    agent_start = len(names)
                    run_root_id, root_name, root_kind = span_id, name, kind
                    root_attributes, inner_agent = attributes, None
                elif inner_agent is None:
                    inner_agent = (name, attributes)
            elif graph_name is None and identity.is_graph_node(kind, name, attributes):
                graph_name = parent.name
        if parent is None and identity.is_agent_scope(kind, name, attributes):
            agent_start = 0
        if kind in STRUCTURAL_SCOPES:
            names = (*names, name)
        if (
            parent is None
            or run_root_id != parent.run_root_id
            or inner_agent is not parent.inner_agent
            or graph_name != parent.graph_name
        ):
            agent = self._agent(
                root_kind, root_name, root_attributes, inner_agent, graph_name, fallback
            )
        else:
            agent = parent.agent  # nothing the rule reads changed: most spans
        return _Scope(
            span_id=span_id,
            kind=kind,
            name=name,
            parent=parent,
            names=names,
            agent_start=agent_start,
            run_root_id=run_root_id,
            root_name=root_name,
            root_kind=root_kind,
            root_attributes=root_attributes,
            inner_agent=inner_agent,
            graph_name=graph_name,
            fallback_agent_id=fallback,
            manual_sensitivity=manual,
            agent=agent,
        )

    def _agent(
        self,
        root_kind: ScopeType,
        root_name: str,
        root_attributes: Mapping[str, object],
        inner_agent: tuple[str, Mapping[str, object]] | None,
        graph_name: str | None,
        fallback: str,
    ) -> tuple[str, str | None]:
        limit = self._config.max_name_length
        agent_id = identity.run_agent_id(
            root_kind,
            root_name,
            root_attributes,
            first_inner_agent=inner_agent,
            graph_name=graph_name,
            fallback=fallback,
        )
        explicit = identity.explicit_agent_name(root_attributes)
        return clean_name(agent_id, limit), None if explicit is None else clean_name(
            explicit, limit
        )

    def _place(self, scope: _Scope) -> _Place | None:
        # Hand-written code often opens the LLM span first and asks for hints
        # inside it: then the call is that span, and its parent is the call site.
        if scope.kind == "llm" and scope.parent is not None:
            scope = scope.parent
        if scope.agent_start is None:
            if self._config.run_root != "agent_or_root":
                return None
            path = scope.names
        else:
            path = scope.names[scope.agent_start :]
        agent_id, explicit = scope.agent
        return _Place(
            agent_id=agent_id,
            explicit=explicit,
            alias_key=identity.alias_key(scope.root_name),
            path=path,
            run_root_id=scope.run_root_id,
            manual_sensitivity=scope.manual_sensitivity,
        )

    def _site_place(self, site: _Site) -> _Place | None:
        place = site.place
        if place is _UNSET:
            place = site.place = self._place(site.scope)
        return place

    def _tally(self, state: TraceState) -> Tally:
        """The trace's LLM calls per run and per (run, path), counting new ends first."""
        tally = state.tally
        ended = state.ended
        end = len(ended)  # other threads may append meanwhile: count up to here
        if tally.cursor >= end:
            return tally
        # Copied on the first new LLM call only: most ends are not LLM calls.
        per_run: dict[int, int] | None = None
        per_path: dict[tuple[int, tuple[str, ...]], int] = tally.per_path
        heuristics = self._config.name_heuristics
        index = _EndedIndex(state)
        for capture in ended[tally.cursor : end]:
            attributes = capture.attributes or {}
            name = capture.end_name
            if not conventions.is_llm_span(attributes, name, name_heuristics=heuristics):
                continue
            if capture.no_local_parent:
                continue
            assert capture.parent_id is not None
            site = self._parent_site(capture.parent_id, state, index)
            if site is None or site.scope.kind == "llm":
                continue  # an LLM span inside an LLM span: one call, counted once
            place = self._site_place(site)
            if place is None:
                continue
            if per_run is None:
                per_run, per_path = dict(tally.per_run), dict(tally.per_path)
            key = (place.run_root_id, place.path)
            per_run[place.run_root_id] = per_run.get(place.run_root_id, 0) + 1
            per_path[key] = per_path.get(key, 0) + 1
        counted = Tally(end, tally.per_run if per_run is None else per_run, per_path)
        state.tally = counted  # one assignment: readers see a consistent tally
        return counted

    def _parent_site(self, span_id: int, state: TraceState, index: _EndedIndex) -> _Site | None:
        site: _Site | None = state.sites.get(span_id)
        if site is not None and site.generation == self._generation:
            return site
        span: Any = self._live.get(span_id) or index.get(span_id)
        return None if span is None else self._site(span, state, index)

    def _fallback_agent_id(self, top: Any) -> str:
        resource = getattr(top, "resource", None)
        service = resource.attributes.get("service.name") if resource is not None else None
        return identity.fallback_agent_id(self._config.agent_id, service)

    # --- hints --------------------------------------------------------------------------------

    def hints_for(self, site: CallSite) -> AgentHints | None:
        """Hints for a resolved call site, or None when nothing was learned for its agent."""
        made = site.call_index - 1 if site.calls_made is None else site.calls_made
        return self._hints(site.agent_id, site.path, site.call_index, made, site.manual_sensitivity)

    def _hints(
        self,
        agent_id: str,
        path: tuple[str, ...],
        call_index: int,
        calls_made: int,
        manual: int | None,
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
            # The calls this run already made, this one, and the ones expected after it.
            total_requests=calls_made + 1 + _round_half_up(prediction.remaining_calls.mean),
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
            span = trace.get_current_span()
            context = span.get_span_context()
            if not context.is_valid:
                return None
            state = self._live.traces.get(context.trace_id)
            site = self._site(span, state)
            if site is None:
                return None
            place = self._site_place(site)
            if place is None:
                return None
            calls = _NO_CALLS if state is None else self._tally(state)
            made = calls.per_run.get(place.run_root_id, 0)
            call_index = calls.per_path.get((place.run_root_id, place.path), 0) + 1
            version = self._cache.version
            memo = site.memo
            if memo is not None and memo[:3] == (version, call_index, made):
                return memo[3]
            agent_id = place.explicit or self._cache.alias(place.alias_key) or place.agent_id
            hints = self._hints(agent_id, place.path, call_index, made, place.manual_sensitivity)
            if hints is not None:
                hints = self._with_session(hints)
            site.memo = (version, call_index, made, hints)  # one assignment: a consistent memo
            return hints
        except Exception:  # the application must never see our failure
            with self._errors_lock:
                self._errors += 1
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


class _EndedIndex:
    """The trace's ended spans (their captures) by id, built on first use (lookups only)."""

    __slots__ = ("_by_id", "_state")

    def __init__(self, state: TraceState) -> None:
        self._state = state
        self._by_id: dict[int, SpanCapture] | None = None

    def get(self, span_id: int) -> SpanCapture | None:
        if self._by_id is None:
            self._by_id = {capture.span_id: capture for capture in list(self._state.ended)}
        return self._by_id.get(span_id)


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
