"""Span start/end events -> run trees -> :class:`RunRecord` objects.

Runs only on the exporter thread, so it keeps plain dictionaries and no locks.
Structure comes from span ids and parent span ids alone (never from names): a
call's end is matched to its start by span id, so two concurrent calls of the
same tool cannot be confused. What a span *is* (agent, LLM, tool...) is decided
from the attributes it has when it ends, because many instrumentations only
set them then.

Memory is bounded whatever the input: open traces, spans per trace and calls
per run are capped, idle traces are evicted, and everything dropped is counted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from opentelemetry.sdk.trace import ReadableSpan

from otel_adaptive import conventions, identity
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.records import (
    STRUCTURAL_SCOPES,
    CallRecord,
    RunRecord,
    ScopeType,
    clean_name,
)

_CALL_KINDS = frozenset({"llm", "tool"})
#: Span times at or beyond this (in nanoseconds) are not times: OTLP carries 64 bits.
_NS_LIMIT = 2**63
#: Members of emitted runs remembered to recognise spans started under them.
_REMEMBERED_MEMBERS = 65536
#: Trace ids remembered as damaged (events lost to a full queue). Forgetting one could
#: let a partial run through, so overflowing this marks every run in flight instead.
_REMEMBERED_DAMAGED = 65536


@dataclass(slots=True)
class AssemblerCounters:
    """What the assembler did with the spans it saw (all monotonic)."""

    runs_completed: int = 0
    runs_evicted: int = 0
    calls_truncated: int = 0
    spans_outside_runs: int = 0
    calls_outside_runs: int = 0
    late_spans: int = 0
    duplicate_spans: int = 0
    traces_evicted_capacity: int = 0
    runs_dropped_overload: int = 0
    runs_truncated: int = 0


@dataclass(slots=True)
class _Node:
    span_id: int
    parent_id: int | None
    parent_is_remote: bool
    start_ns: int
    name: str
    start_name: str  # what a hint lookup saw while it was open
    live: ReadableSpan | None = None  # the live span while open, to read late attributes
    ended: bool = False
    end_ns: int = 0
    scope: ScopeType = "unknown"
    attributes: Mapping[str, Any] | None = None
    service_name: str | None = None
    detached: bool = False  # its run was already emitted; it ended late
    contains_run: bool = False  # a run was emitted from beneath it
    parent_finished: bool = False  # its parent belonged to a run already emitted
    waiting_until: float | None = None  # an ended run root waiting for open calls beneath


#: A node of a subtree and the scope path above it.
_Member = tuple[_Node, tuple[str, ...]]


@dataclass(slots=True)
class _Trace:
    nodes: dict[int, _Node] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)
    last_activity: float = 0.0
    damaged: bool = False  # lost span events to a full queue: its runs are dropped whole


class RunAssembler:
    """Rebuilds agent runs from span events and emits them when their root ends."""

    def __init__(self, config: AdaptiveConfig, *, clock: Any = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._completed: list[RunRecord] = []
        self._evicted_span_ids: list[int] = []
        # Span ids of ended members of emitted runs: a span that starts under one of
        # them (an instrumentation left a finished span current) starts afresh.
        self._emitted_members: OrderedDict[tuple[int, int], None] = OrderedDict()
        # Ended run roots whose run still has open spans (streams read after their
        # parent ended): (trace id, root) until they close or the grace time is up.
        self._waiting: dict[int, tuple[int, _Node]] = {}
        # Run root span name at start -> the agent id its run was stored under, for
        # hint lookups that only see the start (identity.alias_key).
        self._aliases: dict[str, str] = {}
        # Traces that lost events, and a time before which every run root counts as
        # damaged (set when lost events could not all be attributed to a trace).
        self._damaged: OrderedDict[int, None] = OrderedDict()
        self._damaged_before_ns = 0
        self.counters = AssemblerCounters()

    # --- public surface used by the exporter ------------------------------------------------

    @property
    def open_traces(self) -> int:
        return len(self._traces)

    def span_started(self, span: ReadableSpan) -> None:
        """Record a span start (``span`` is the live span)."""
        context = span.context
        if context is None:
            return
        trace = self._touch(context.trace_id)
        if context.span_id in trace.nodes:
            self.counters.duplicate_spans += 1
            return
        node = self._new_node(span)
        node.live = span
        self._add(context.trace_id, trace, node)

    def span_ended(self, span: ReadableSpan) -> None:
        """Record a span end (``span`` is the read-only snapshot) and emit a completed run."""
        context = span.context
        if context is None:
            return
        trace = self._touch(context.trace_id)
        node = trace.nodes.get(context.span_id)
        if node is None:  # its start was never seen (dropped, or began before us)
            node = self._new_node(span)
            if not self._add(context.trace_id, trace, node):
                return
        elif node.ended:
            self.counters.duplicate_spans += 1
            return
        self._finish(node, span)
        if node.detached:
            self.counters.late_spans += 1
            self._forget(trace, node)
        elif self._is_agent(node) or self._is_local_root(node):
            # A possible run root: walk what is beneath it once, for every decision.
            members = list(self._subtree(trace, node))
            if self._is_run_root(trace, node, members):
                self._emit_or_wait(context.trace_id, trace, node, members)
            elif self._is_local_root(node):
                self._discard_subtree(trace, node)
            elif self._waiting:
                self._emit_if_closed(context.trace_id, trace, node)
        elif self._waiting:
            self._emit_if_closed(context.trace_id, trace, node)
        if not trace.nodes:
            self._traces.pop(context.trace_id, None)

    def mark_damaged(self, trace_ids: list[int], *, all_in_flight: bool = False) -> None:
        """Traces that lost span events (a full queue): their runs are dropped whole.

        ``all_in_flight``: events were lost without their trace being known, so every
        run whose root started before now is treated as damaged.
        """
        if all_in_flight:
            self._damaged_before_ns = time.time_ns()
        damaged = self._damaged
        for trace_id in trace_ids:
            trace = self._traces.get(trace_id)
            if trace is not None:
                trace.damaged = True
            damaged[trace_id] = None
        if len(damaged) > _REMEMBERED_DAMAGED:
            damaged.clear()
            self._damaged_before_ns = time.time_ns()

    def take_completed(self) -> list[RunRecord]:
        """Runs completed since the last call."""
        done, self._completed = self._completed, []
        return done

    def take_aliases(self) -> dict[str, str]:
        """Run root start names -> agent ids of the runs completed since the last call."""
        aliases, self._aliases = self._aliases, {}
        return aliases

    def take_evicted_span_ids(self) -> list[int]:
        """Ids of open spans dropped by eviction since the last call."""
        ids, self._evicted_span_ids = self._evicted_span_ids, []
        return ids

    def evict_idle(self) -> int:
        """Emit runs whose grace time is up; evict traces idle for longer than the run
        timeout; returns how many traces were evicted."""
        now = self._clock()
        for trace_id, root in [w for w in self._waiting.values() if w[1].waiting_until <= now]:
            trace = self._traces.get(trace_id)
            if trace is not None:
                self._emit(trace_id, trace, root)
        deadline = now - self._config.run_timeout_seconds
        evicted = 0
        while self._traces:
            trace_id, trace = next(iter(self._traces.items()))
            if trace.last_activity > deadline:
                break
            self._evict(trace_id)
            evicted += 1
        return evicted

    # --- building the tree ------------------------------------------------------------------

    def _touch(self, trace_id: int) -> _Trace:
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = _Trace(damaged=trace_id in self._damaged)
            if len(self._traces) > self._config.max_open_traces:
                oldest = next(iter(self._traces))
                self.counters.traces_evicted_capacity += 1
                self._evict(oldest)
        else:
            self._traces.move_to_end(trace_id)
        trace.last_activity = self._clock()
        return trace

    def _new_node(self, span: ReadableSpan) -> _Node:
        parent = span.parent
        assert span.context is not None
        name = self._cut(span.name)
        return _Node(
            span_id=span.context.span_id,
            parent_id=parent.span_id if parent is not None else None,
            parent_is_remote=bool(parent is not None and parent.is_remote),
            start_ns=_as_ns(span.start_time, 0),
            name=name,
            start_name=name,
        )

    def _add(self, trace_id: int, trace: _Trace, node: _Node) -> bool:
        if len(trace.nodes) >= self._config.max_spans_per_trace:
            self.counters.traces_evicted_capacity += 1
            self._evict(trace_id)
            return False
        trace.nodes[node.span_id] = node
        if node.parent_id is not None and (trace_id, node.parent_id) in self._emitted_members:
            node.parent_finished = True
        elif node.parent_id is not None and node.parent_id != node.span_id:
            trace.children.setdefault(node.parent_id, []).append(node.span_id)
            parent = trace.nodes.get(node.parent_id)
            if parent is not None and parent.detached:
                node.detached = True
        return True

    def _finish(self, node: _Node, span: ReadableSpan) -> None:
        attributes = span.attributes
        node.ended = True
        node.live = None
        node.name = self._cut(span.name)
        node.start_ns = _as_ns(span.start_time, node.start_ns)
        node.end_ns = _as_ns(span.end_time, node.start_ns)
        node.attributes = attributes
        node.scope = conventions.classify(
            attributes, span.name, name_heuristics=self._config.name_heuristics
        )
        if self._is_local_root(node):
            service = span.resource.attributes.get("service.name") if span.resource else None
            node.service_name = service if isinstance(service, str) else None

    def _cut(self, name: object) -> str:
        return clean_name(name, self._config.max_name_length)

    # --- deciding run roots -------------------------------------------------------------------

    def _ancestors(self, trace: _Trace, node: _Node) -> Iterator[_Node]:
        seen = {node.span_id}
        parent_id = None if node.parent_finished else node.parent_id
        while parent_id is not None and parent_id not in seen:
            seen.add(parent_id)
            parent = trace.nodes.get(parent_id)
            if parent is None:
                return
            yield parent
            parent_id = parent.parent_id

    @staticmethod
    def _is_agent(node: _Node) -> bool:
        return node.ended and identity.is_agent_scope(node.scope, node.name, node.attributes)

    def _is_agent_now(self, node: _Node) -> bool:
        if node.ended or node.live is None:
            return self._is_agent(node)
        # Still open: classify from what the live span carries right now.
        live = node.live
        attributes = live.attributes
        kind = conventions.classify(
            attributes, live.name, name_heuristics=self._config.name_heuristics
        )
        return identity.is_agent_scope(kind, self._cut(live.name), attributes)

    @staticmethod
    def _is_local_root(node: _Node) -> bool:
        """No local parent: the top of this process's part of the trace.

        A span whose local parent is merely unknown is not one: the parent's start
        may have been dropped and its end may still come, so it waits (and is
        evicted with its trace if the parent never shows up).
        """
        return (
            node.parent_id is None
            or node.parent_is_remote
            or node.parent_finished
            or node.parent_id == node.span_id
        )

    def _is_run_root(self, trace: _Trace, node: _Node, members: list[_Member]) -> bool:
        if node.contains_run:
            return False
        if (
            self._is_agent(node)
            and any(n.ended and n.scope in _CALL_KINDS and n is not node for n, _ in members)
            and not any(self._is_agent_now(a) for a in self._ancestors(trace, node))
        ):
            return True
        # Some instrumentations label any step with "agent" in its name as an agent:
        # one with no call beneath it stays part of the run around it.
        return self._config.run_root == "agent_or_root" and self._is_local_root(node)

    # --- emitting runs ----------------------------------------------------------------------

    def _emit_or_wait(
        self, trace_id: int, trace: _Trace, root: _Node, members: list[_Member]
    ) -> None:
        grace = self._config.run_grace_seconds
        if grace <= 0 or all(n.ended for n, _ in members):
            self._emit(trace_id, trace, root, members)
            return
        # A call is still open beneath the ended root (typically a stream read after
        # its parent ended): the run waits for it, within the grace time.
        root.waiting_until = self._clock() + grace
        self._waiting[root.span_id] = (trace_id, root)
        for ancestor in self._ancestors(trace, root):
            ancestor.contains_run = True

    def _emit_if_closed(self, trace_id: int, trace: _Trace, node: _Node) -> None:
        """Emit the waiting run ``node`` belongs to once nothing beneath it is open."""
        for ancestor in self._ancestors(trace, node):
            if ancestor.waiting_until is not None:
                if all(n.ended for n, _ in self._subtree(trace, ancestor)):
                    self._emit(trace_id, trace, ancestor)
                return

    def _subtree(
        self, trace: _Trace, root: _Node, *, skip_waiting: bool = False
    ) -> Iterator[tuple[_Node, tuple[str, ...]]]:
        """Nodes under ``root`` (itself included) with the scope path above each.

        ``skip_waiting`` leaves out the runs beneath that wait for open calls.
        """
        stack: list[tuple[_Node, tuple[str, ...]]] = [(root, ())]
        seen = {root.span_id}
        while stack:
            node, path = stack.pop()
            yield node, path
            below = (*path, node.name) if self._scope_of(node) in STRUCTURAL_SCOPES else path
            for child_id in trace.children.get(node.span_id, ()):
                child = trace.nodes.get(child_id)
                if skip_waiting and child is not None and child.waiting_until is not None:
                    continue
                if child is not None and child_id not in seen:
                    seen.add(child_id)
                    stack.append((child, below))

    @staticmethod
    def _scope_of(node: _Node) -> ScopeType:
        return node.scope if node.ended else "unknown"

    def _emit(
        self, trace_id: int, trace: _Trace, root: _Node, members: list[_Member] | None = None
    ) -> None:
        if root.waiting_until is not None:
            root.waiting_until = None
            self._waiting.pop(root.span_id, None)
        if members is None:
            members = list(self._subtree(trace, root))
        if trace.damaged or root.start_ns < self._damaged_before_ns:
            # Whole runs or nothing: a run that lost events is never stored or learned.
            self.counters.runs_dropped_overload += 1
            self._drop_emitted(trace_id, trace, root, members)
            return
        calls: list[CallRecord] = []
        nested_in_llm: set[int] = set()
        first_agent: _Node | None = None  # the first agent span beneath the root
        graph_node: _Node | None = None  # the first generic graph node beneath the root
        for node, path in members:
            if not node.ended:
                continue
            if node.scope == "agent" and node is not root:
                if not identity.is_graph_node(node.scope, node.name, node.attributes):
                    if first_agent is None or node.start_ns < first_agent.start_ns:
                        first_agent = node
                elif graph_node is None or node.start_ns < graph_node.start_ns:
                    graph_node = node
            if node.scope not in _CALL_KINDS or node.span_id in nested_in_llm:
                continue
            if node.scope == "llm":
                inner = self._inner_llm_calls(trace, node, nested_in_llm)
                calls.append(self._llm_call(node, path, inner))
            else:
                calls.append(self._tool_call(node, path))
        calls.sort(key=lambda c: (c.start_ns, c.end_ns))
        calls = _tool_calls_from_tool_spans(calls)
        if len(calls) > self._config.max_calls_per_run:
            self.counters.calls_truncated += len(calls) - self._config.max_calls_per_run
            del calls[self._config.max_calls_per_run :]
        graph = None
        if graph_node is not None and graph_node.parent_id is not None:
            graph = trace.nodes.get(graph_node.parent_id)
        agent_id = self._agent_id(root, first_agent, graph)
        self._aliases[identity.alias_key(root.start_name)] = agent_id
        truncated = not all(node.ended for node, _ in members)
        run = RunRecord(
            id=f"{trace_id:032x}-{root.span_id:016x}",
            agent_id=agent_id,
            trace_id=f"{trace_id:032x}",
            start_ns=root.start_ns,
            end_ns=root.end_ns,
            calls=tuple(calls),
            truncated=truncated,
        )
        self._completed.append(run)
        self.counters.runs_completed += 1
        self.counters.runs_truncated += truncated
        self._drop_emitted(trace_id, trace, root, members)

    def _drop_emitted(
        self, trace_id: int, trace: _Trace, root: _Node, members: list[_Member]
    ) -> None:
        for ancestor in self._ancestors(trace, root):
            ancestor.contains_run = True
        nodes = [member for member, _ in members]
        self._remember_emitted(trace_id, nodes)
        self._remove_members(trace, nodes)

    def _remember_emitted(self, trace_id: int, members: list[_Node]) -> None:
        emitted = self._emitted_members
        for node in members:
            if node.ended:
                emitted[(trace_id, node.span_id)] = None
        while len(emitted) > _REMEMBERED_MEMBERS:
            emitted.popitem(last=False)

    def _inner_llm_calls(self, trace: _Trace, outer: _Node, nested: set[int]) -> list[_Node]:
        """LLM spans nested in an LLM span: the same call seen by two instrumentations."""
        if outer.span_id not in trace.children:
            return []  # the common case: a leaf
        inner = []
        for node, _ in self._subtree(trace, outer):
            if node is not outer and node.ended and node.scope == "llm":
                nested.add(node.span_id)
                inner.append(node)
        return inner

    def _llm_call(self, node: _Node, path: tuple[str, ...], inner: list[_Node]) -> CallRecord:
        details = conventions.read_call_details(node.attributes)
        # The outer span speaks for the call; inner spans fill what it lacks (counted once).
        for other in inner:
            if None not in (
                details.output_tokens,
                details.prompt_tokens,
                details.model_name,
                details.tool_call_count,
            ):
                break
            extra = conventions.read_call_details(other.attributes)
            details = conventions.CallDetails(
                output_tokens=_first(details.output_tokens, extra.output_tokens),
                prompt_tokens=_first(details.prompt_tokens, extra.prompt_tokens),
                total_tokens=_first(details.total_tokens, extra.total_tokens),
                model_name=_first(details.model_name, extra.model_name),
                tool_call_count=_first(details.tool_call_count, extra.tool_call_count),
            )
        return CallRecord(
            kind="llm",
            name=node.name,
            span_id=f"{node.span_id:016x}",
            parent_span_id=_hex_or_none(node.parent_id),
            path=path,
            start_ns=node.start_ns,
            end_ns=node.end_ns,
            output_tokens=details.output_tokens,
            prompt_tokens=details.prompt_tokens,
            total_tokens=details.total_tokens,
            model_name=None if details.model_name is None else self._cut(details.model_name),
            tool_call_count=details.tool_call_count,
        )

    def _tool_call(self, node: _Node, path: tuple[str, ...]) -> CallRecord:
        name = conventions.tool_name(node.attributes) or node.name
        return CallRecord(
            kind="tool",
            name=self._cut(name),
            span_id=f"{node.span_id:016x}",
            parent_span_id=_hex_or_none(node.parent_id),
            path=path,
            start_ns=node.start_ns,
            end_ns=node.end_ns,
        )

    def _agent_id(self, root: _Node, first_agent: _Node | None, graph: _Node | None) -> str:
        """The run's agent, by the one rule of :mod:`otel_adaptive.identity`."""
        inner = None if first_agent is None else (first_agent.name, first_agent.attributes)
        return self._cut(
            identity.run_agent_id(
                root.scope,
                root.name,
                root.attributes,
                first_inner_agent=inner,
                graph_name=None if graph is None else graph.name,
                fallback=identity.fallback_agent_id(self._config.agent_id, root.service_name),
            )
        )

    # --- cleanup ------------------------------------------------------------------------------

    def _remove_members(self, trace: _Trace, members: list[_Node]) -> None:
        """Drop an emitted or discarded subtree (``members[0]`` is its root)."""
        self._unlink_from_parent(trace, members[0])
        for node in members:
            if node.ended:
                trace.nodes.pop(node.span_id, None)
                trace.children.pop(node.span_id, None)
            else:
                node.detached = True  # its run is gone; count it when it ends

    def _discard_subtree(self, trace: _Trace, root: _Node) -> None:
        members = [node for node, _ in self._subtree(trace, root, skip_waiting=True)]
        if not root.contains_run:
            self.counters.spans_outside_runs += sum(1 for n in members if n.ended)
        # Calls are counted whether or not a run was emitted beside them: a call that
        # belongs to no run is lost to learning, and that must show.
        self.counters.calls_outside_runs += sum(
            1 for n in members if n.ended and n.scope in _CALL_KINDS
        )
        self._remove_members(trace, members)

    def _forget(self, trace: _Trace, node: _Node) -> None:
        trace.nodes.pop(node.span_id, None)
        trace.children.pop(node.span_id, None)
        self._unlink_from_parent(trace, node)

    @staticmethod
    def _unlink_from_parent(trace: _Trace, node: _Node) -> None:
        if node.parent_id is None:
            return
        siblings = trace.children.get(node.parent_id)
        if siblings is None:
            return
        if node.span_id in siblings:
            siblings.remove(node.span_id)
        if not siblings:
            del trace.children[node.parent_id]

    def _evict(self, trace_id: int) -> None:
        trace = self._traces.pop(trace_id, None)
        if trace is None:
            return
        for node in trace.nodes.values():
            if node.waiting_until is not None:
                self._waiting.pop(node.span_id, None)
        if any(not n.contains_run and not n.detached for n in trace.nodes.values()):
            self.counters.runs_evicted += 1
        self._evicted_span_ids.extend(n.span_id for n in trace.nodes.values() if not n.ended)


def _tool_calls_from_tool_spans(calls: list[CallRecord]) -> list[CallRecord]:
    """Fill unknown tool-call counts from the tool spans of the same turn.

    When an LLM span does not say how many tools the model asked for, the tool
    calls under the same parent that start after it ended and before the next
    LLM call there are what it asked for. Only done when the run has tool spans
    at all: without them tools are not traced and the count stays unknown.
    """
    if not any(c.kind == "tool" for c in calls) or all(
        c.tool_call_count is not None for c in calls if c.kind == "llm"
    ):
        return calls
    filled = list(calls)
    for i, call in enumerate(calls):
        if call.kind != "llm" or call.tool_call_count is not None:
            continue
        count = 0
        for later in calls[i + 1 :]:
            if later.parent_span_id != call.parent_span_id:
                continue
            if later.kind == "llm":
                break
            if later.start_ns >= call.end_ns:
                count += 1
        filled[i] = msgspec.structs.replace(call, tool_call_count=count)
    return filled


def _as_ns(value: object, fallback: int) -> int:
    """A span time as int nanoseconds (OTLP's 64 bits); anything else is ``fallback``.

    The SDK keeps whatever times it is given: a NaN, infinite or float time would
    be stored in a run no later read can decode, and a NaN or astronomically large
    one makes Redis (or the float conversion of its score) reject the whole write.
    """
    if type(value) is not int:  # rare: the SDK's own clock gives ints
        if isinstance(value, float) and math.isfinite(value):
            value = int(value)
        elif not isinstance(value, int) or isinstance(value, bool):
            return fallback
    return int(value) if 0 < abs(value) < _NS_LIMIT else fallback


def _first(a: Any, b: Any) -> Any:
    return a if a is not None else b


def _hex_or_none(span_id: int | None) -> str | None:
    return None if span_id is None else f"{span_id:016x}"
