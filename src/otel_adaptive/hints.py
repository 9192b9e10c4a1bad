"""Agent hints for the next LLM call, read on the application's hot path.

A hint lookup resolves the *call site* of the LLM call about to be made (the
agent, the scope path and the call index) from the open ancestors of the current
span, then looks it up in the latest immutable plan snapshot. It never does I/O,
never waits for the exporter and never raises into the application.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from otel_adaptive import conventions
from otel_adaptive.cache import PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.records import STRUCTURAL_SCOPES, clean_name

_logger = logging.getLogger(__name__)

#: Ancestors walked at most; deeper trees (or parent cycles) stop here.
_MAX_DEPTH = 64

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class AgentHints:
    """Hints for one LLM request, in the shape of the ``nvext.agent_hints`` body field."""

    osl: int
    """Expected output tokens (p90 of what this call site produced)."""
    iat: int
    """Expected milliseconds until the next LLM call arrives (mean)."""
    priority: int
    """Scheduling priority, ``scale - latency_sensitivity`` (higher is more urgent)."""
    latency_sensitivity: int
    """1 (tolerant) .. scale (latency-critical)."""
    prefix_id: str
    """Shared-prefix key: ``{agent_id}-d{depth}`` of the trie node that answered."""
    total_requests: int
    """Expected number of LLM requests in the whole run."""

    def to_dict(self) -> dict[str, Any]:
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

    # --- call sites ---------------------------------------------------------------------------

    def call_site(self, span: object | None = None) -> CallSite | None:
        """The call site of an LLM call made under ``span`` (default: the current span)."""
        current = trace.get_current_span() if span is None else span
        context = getattr(current, "get_span_context", None)
        if context is None or not current.get_span_context().is_valid:  # type: ignore[attr-defined]
            return None
        chain = self._ancestry(current)
        if not chain:
            return None
        heuristics = self._config.name_heuristics
        scopes = [
            conventions.classify(s.attributes, s.name, name_heuristics=heuristics) for s in chain
        ]
        # Hand-written code often opens the LLM span first and asks for hints
        # inside it: then the call is that span, and its parent is the call site.
        if len(chain) > 1 and scopes[-1] == "llm":
            chain.pop()
            scopes.pop()
        agent_at = next((i for i, scope in enumerate(scopes) if scope == "agent"), None)
        if agent_at is None:
            if self._config.run_root != "agent_or_root":
                return None
            agent_id = self._fallback_agent_id(chain[0])
            agent_at = 0
        else:
            agent_id = self._agent_name(chain, scopes, agent_at)
        limit = self._config.max_name_length
        path = tuple(
            clean_name(chain[i].name, limit)
            for i in range(agent_at, len(chain))
            if scopes[i] in STRUCTURAL_SCOPES
        )
        parent = chain[-1]
        assert parent.context is not None
        parent_id = parent.context.span_id
        manual = [conventions.manual_latency_sensitivity(s.attributes) for s in chain]
        manual_values = [m for m in manual if m is not None]
        return CallSite(
            agent_id=clean_name(agent_id, limit),
            path=path,
            call_index=self._llm_calls_under(parent_id) + 1,
            parent_span_id=parent_id,
            manual_sensitivity=max(manual_values) if manual_values else None,
        )

    def _llm_calls_under(self, parent_id: int) -> int:
        ended = self._ended_under.get(parent_id)
        if ended is None:
            return 0
        checked: int
        llm_calls: int
        checked, llm_calls = ended[0]
        children = ended[1:]  # a copy: appends from other threads cannot disturb it
        heuristics = self._config.name_heuristics
        for child in children[checked:]:
            if conventions.is_llm_span(child.attributes, child.name, name_heuristics=heuristics):
                llm_calls += 1
        ended[0] = (len(children), llm_calls)  # one assignment: readers see a consistent pair
        return llm_calls

    def _ancestry(self, span: Any) -> list[ReadableSpan]:
        """The span and its open local ancestors, outermost first."""
        chain: list[ReadableSpan] = []
        node: ReadableSpan | None = span
        while node is not None and len(chain) < _MAX_DEPTH:
            chain.append(node)
            parent = node.parent
            if parent is None or parent.is_remote:
                break
            node = self._live.get(parent.span_id)
        chain.reverse()
        return chain

    def _agent_name(self, chain: list[ReadableSpan], scopes: Sequence[str], root: int) -> str:
        for i in range(root, len(chain)):
            if scopes[i] == "agent":
                named = conventions.agent_name(chain[i].attributes)
                if named:
                    return named
        return chain[root].name

    def _fallback_agent_id(self, top: ReadableSpan) -> str:
        if self._config.agent_id:
            return self._config.agent_id
        resource = getattr(top, "resource", None)
        service = resource.attributes.get("service.name") if resource is not None else None
        return service if isinstance(service, str) else "unknown_service"

    # --- hints --------------------------------------------------------------------------------

    def hints_for(self, site: CallSite) -> AgentHints | None:
        """Hints for a resolved call site, or None when nothing was learned for its agent."""
        plan = self._cache.get(site.agent_id)
        if plan is None or plan.trie is None:
            return None
        found = plan.trie.match(site.path, site.call_index)
        if found is None:
            return None
        prediction = found.prediction
        sensitivity = prediction.latency_sensitivity or 1
        if site.manual_sensitivity is not None:
            sensitivity = max(sensitivity, min(site.manual_sensitivity, self._scale))
        return AgentHints(
            osl=_round_half_up(prediction.output_tokens.p90),
            iat=_round_half_up(prediction.interarrival_ms.mean),
            priority=max(self._scale - sensitivity, 0),
            latency_sensitivity=sensitivity,
            prefix_id=f"{site.agent_id}-d{found.depth}",
            total_requests=_round_half_up(prediction.remaining_calls.mean) + site.call_index,
        )

    def current_hints(self) -> AgentHints | None:
        """Hints for an LLM call about to be made under the current span."""
        try:
            site = self.call_site()
            return None if site is None else self.hints_for(site)
        except Exception:  # the application must never see our failure
            _logger.debug("hint lookup failed", exc_info=True)
            return None

    def inject_hints(
        self,
        body: MutableMapping[str, Any] | None = None,
        headers: MutableMapping[str, str] | None = None,
    ) -> AgentHints | None:
        """Write the current hints into a request body and/or headers; returns them."""
        hints = self.current_hints()
        if hints is None:
            return None
        try:
            payload = hints.to_dict()
            if body is not None and self._config.hint_body_path:
                self._put(body, self._config.hint_body_path, payload)
            if headers is not None and self._config.hint_header:
                headers[self._config.hint_header] = _json.encode(payload).decode()
        except Exception:
            _logger.debug("hint injection failed", exc_info=True)
        return hints

    def _put(self, body: MutableMapping[str, Any], dotted: str, payload: dict[str, Any]) -> None:
        *parents, leaf = dotted.split(".")
        target: MutableMapping[str, Any] = body
        for key in parents:
            child = target.setdefault(key, {})
            if not isinstance(child, MutableMapping):
                self._warn_once(
                    dotted, f"cannot inject hints at {dotted!r}: {key!r} is not an object"
                )
                return
            target = child
        target[leaf] = payload

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
            return True
        except Exception:
            _logger.debug("set_latency_sensitivity failed", exc_info=True)
            return False

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _logger.warning(message)


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
    """Write the current hints into a request body (at the configured dotted path,
    default ``nvext.agent_hints``) and/or a header; returns them (None: nothing written)."""
    service = _current_service()
    return None if service is None else service.inject_hints(body, headers)


def set_latency_sensitivity(value: int) -> bool:
    """Mark the current span (and so the LLM calls under it) latency-sensitive.

    The highest value among a call's ancestors wins; it raises the learned
    sensitivity, never lowers it. Returns True when recorded.
    """
    service = _current_service()
    return False if service is None else service.set_latency_sensitivity(value)
