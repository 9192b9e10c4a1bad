"""Span start/end events -> run trees -> :class:`RunRecord` objects.

Runs only on the exporter thread, so it keeps plain dictionaries and no locks.
Structure comes from span ids and parent span ids alone (never from names): a
call's end is matched to its start by span id, so two concurrent calls of the
same tool cannot be confused. What a span *is* (agent, LLM, tool...) is decided
from the attributes it has when it ends, because many instrumentations only
set them then.

Each node of a tree is in one state of :class:`~otel_adaptive._run_tree.NodeState`
and changes state only through :func:`~otel_adaptive._run_tree.move`.

Memory is bounded whatever the input: open traces, spans per trace and calls
per run are capped, idle traces are evicted, and everything dropped is counted.

Per event the work is kept small: a span's attributes are copied once, at its
end, into a plain dict that every later reader uses; names are cut once and
remembered; each call record is built once, after the run's calls are known.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan

from otel_adaptive import conventions, identity
from otel_adaptive._memo import remember
from otel_adaptive._run_tree import (
    ABOVE_RUN_FROM,
    DETACHED,
    ENDED,
    ENDED_ABOVE_RUN,
    ENDED_FROM,
    OPEN,
    WAITING,
    Node,
    Trace,
    move,
)
from otel_adaptive._span_capture import SpanCapture, capture_end, capture_start, plain_attributes
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.records import (
    STRUCTURAL_SCOPES,
    CallRecord,
    RunRecord,
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
#: Cut names remembered (span, tool and model names repeat); cleared when full, so
#: high-cardinality names cost memory only up to this and then one recomputation.
_NAME_MEMO_SIZE: Final = 4096
_NAME_MEMO_MAX_LENGTH: Final = 512
#: States in which a trace still holds part of a run not yet emitted (for eviction).
_HOLDS_A_RUN: Final = frozenset({OPEN, ENDED, WAITING})


_SPAN_ID_LIMIT: Final = 1 << 64


def _member_key(trace_id: int, span_id: int) -> int | tuple[int, int]:
    """One key per (trace, span): an int while the span id fits its 64 bits (as every
    valid one does), so remembering thousands of spans creates no tracked objects."""
    if 0 <= span_id < _SPAN_ID_LIMIT:
        return (trace_id << 64) | span_id
    return (trace_id, span_id)


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
    illegal_transitions: int = 0


#: A node of a subtree and the scope path above it.
_Member = tuple[Node, tuple[str, ...]]
#: A call of a run before its record is built: (start, end, order seen, node, path,
#: LLM details or None for a tool). Sorting these tuples never reaches the node.
_Draft = tuple[int, int, int, Node, tuple[str, ...], conventions.CallDetails | None]


class RunAssembler:
    """Rebuilds agent runs from span events and emits them when their root ends."""

    def __init__(self, config: AdaptiveConfig, *, clock: Any = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._traces: OrderedDict[int, Trace] = OrderedDict()
        self._completed: list[RunRecord] = []
        self._evicted_span_ids: list[int] = []
        # Span ids of ended members of emitted runs: a span that starts under one of
        # them (an instrumentation left a finished span current) starts afresh.
        # Keyed by one int per span (see _member_key): nothing the collector tracks.
        # Two generations of plain dicts: the newer fills up to half the bound, then
        # replaces the older, so the most recent half at least is always remembered
        # and remembering costs one dict store per span.
        self._emitted_members: dict[int | tuple[int, int], None] = {}
        self._emitted_before: dict[int | tuple[int, int], None] = {}
        # WAITING run roots (streams read after their parent ended): (trace id, span
        # id) -> root until their run closes or the grace time is up. Keyed by both
        # ids: span ids repeat across traces in replayed or odd input.
        self._waiting: dict[tuple[int, int], Node] = {}
        # Run root span name at start -> the agent id its run was stored under, for
        # hint lookups that only see the start (identity.alias_key).
        self._aliases: dict[str, str] = {}
        # Traces that lost events, and a time before which every run root counts as
        # damaged (set when lost events could not all be attributed to a trace).
        self._damaged: OrderedDict[int, None] = OrderedDict()
        self._damaged_before_ns = 0
        self._names: dict[str, str] = {}  # raw name -> cut name
        self._name_limit = config.max_name_length
        self._heuristics = config.name_heuristics
        # Local roots of one process share a resource: its service name is read once.
        self._resource: object = None
        self._service_name: str | None = None
        self.counters = AssemblerCounters()

    # --- public surface used by the exporter ------------------------------------------------

    @property
    def open_traces(self) -> int:
        return len(self._traces)

    def span_started(self, span: ReadableSpan | SpanCapture) -> None:
        """Record a span start (the processor's capture, or the live span itself)."""
        capture = span if isinstance(span, SpanCapture) else capture_start(span)
        if capture is None:
            return
        trace_id = capture.trace_id
        node = self._begin(trace_id, self._touch(trace_id), capture)
        if node is not None:
            node.live = capture

    def span_ended(self, span: ReadableSpan | SpanCapture) -> None:
        """Record a span end (the processor's capture, or the read-only snapshot) and
        emit a completed run."""
        if isinstance(span, SpanCapture):
            capture: SpanCapture | None = span
        else:
            start = capture_start(span)
            capture = None if start is None else capture_end(span, start)
        if capture is None:
            return
        trace_id = capture.trace_id
        trace = self._touch(trace_id)
        node = trace.nodes.get(capture.span_id)
        if node is None:  # its start was never seen (dropped, or began before us)
            node = self._new_node(capture)
            if not self._add(trace_id, trace, node):
                return
        elif node.state >= ENDED:
            self.counters.duplicate_spans += 1
            return
        self._end(trace_id, trace, node, capture)

    def span_started_and_ended(self, capture: SpanCapture) -> None:
        """A span's start and its end queued right after it, nothing in between (a leaf
        span, typically): what ``span_started`` then ``span_ended`` do, in one step."""
        trace_id = capture.trace_id
        trace = self._touch(trace_id)
        node = self._begin(trace_id, trace, capture)
        if node is None:  # a duplicate, or its trace was evicted: the end as it comes alone
            self.span_ended(capture)
        else:
            self._end(trace_id, trace, node, capture)

    def _begin(self, trace_id: int, trace: Trace, capture: SpanCapture) -> Node | None:
        """The node of a span that starts, in the tree; ``None`` for a duplicate start
        (counted) or when its trace was evicted to make room."""
        if capture.span_id in trace.nodes:
            self.counters.duplicate_spans += 1
            return None
        node = self._new_node(capture)
        return node if self._add(trace_id, trace, node) else None

    def _end(self, trace_id: int, trace: Trace, node: Node, capture: SpanCapture) -> None:
        """The end of ``node`` (in the tree, not ended yet); emit the run it completes."""
        if node.state is DETACHED:  # its run was emitted without it
            self.counters.late_spans += 1
            self._forget(trace, node)
        else:
            self._finish(node, capture)
            if node.local_root or (node.scope == "agent" and self._is_agent(node)):
                # A possible run root: walk what is beneath it once, for every decision.
                members = self._subtree(trace, node)
                if self._is_run_root(trace, node, members):
                    self._emit_or_wait(trace_id, trace, node, members)
                elif node.local_root:
                    self._discard_subtree(trace, node)
                elif self._waiting:
                    self._emit_if_closed(trace_id, trace, node)
            elif self._waiting:
                self._emit_if_closed(trace_id, trace, node)
        if not trace.nodes:
            self._traces.pop(trace_id, None)

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
        due = [
            (trace_id, root)
            for (trace_id, _), root in self._waiting.items()
            if (root.waiting_until or 0.0) <= now
        ]
        for trace_id, root in due:
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

    def _touch(self, trace_id: int) -> Trace:
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = Trace(damaged=trace_id in self._damaged)
            if len(self._traces) > self._config.max_open_traces:
                oldest = next(iter(self._traces))
                self.counters.traces_evicted_capacity += 1
                self._evict(oldest)
        else:
            self._traces.move_to_end(trace_id)
        trace.last_activity = self._clock()
        return trace

    def _new_node(self, capture: SpanCapture) -> Node:
        name = self._cut(capture.start_name)
        start = capture.start_time
        if not (type(start) is int and 0 < start < _NS_LIMIT):
            start = _as_ns(start, 0)
        parent_id = capture.parent_id
        span_id = capture.span_id
        local_root = capture.no_local_parent or parent_id == span_id
        return Node(span_id, parent_id, local_root, start, name, name)

    def _add(self, trace_id: int, trace: Trace, node: Node) -> bool:
        if len(trace.nodes) >= self._config.max_spans_per_trace:
            self.counters.traces_evicted_capacity += 1
            self._evict(trace_id)
            return False
        trace.nodes[node.span_id] = node
        parent_id = node.parent_id
        if parent_id is None:
            return True
        key = _member_key(trace_id, parent_id)
        if key in self._emitted_members or key in self._emitted_before:
            node.parent_finished = True  # it starts afresh: a local root
            node.local_root = True
        elif parent_id != node.span_id:
            siblings = trace.children.get(parent_id)
            if siblings is None:
                trace.children[parent_id] = [node.span_id]
            else:
                siblings.append(node.span_id)
            parent = trace.nodes.get(parent_id)
            if parent is not None and parent.state is DETACHED:
                node.state = DETACHED  # an initial state: born out of every run
        return True

    def _finish(self, node: Node, capture: SpanCapture) -> None:
        move(node, ENDED_FROM.get(node.state, ENDED), self.counters)
        attributes = capture.attributes
        if attributes is None:
            attributes = {}
        raw_name = capture.end_name
        node.live = None
        if raw_name != node.name:  # renamed while open (cutting twice changes nothing)
            node.name = self._cut(raw_name)
        end = capture.end_time  # the start time is the capture's, read at the start
        node.end_ns = (
            end if type(end) is int and 0 < end < _NS_LIMIT else _as_ns(end, node.start_ns)
        )
        node.attributes = attributes
        node.scope = conventions.classify(attributes, raw_name, name_heuristics=self._heuristics)
        if node.local_root:
            node.service_name = self._service_of(capture.resource)

    def _service_of(self, resource: object) -> str | None:
        if resource is not self._resource:
            attributes = getattr(resource, "attributes", None) if resource else None
            service = attributes.get("service.name") if attributes else None
            self._resource = resource
            self._service_name = service if isinstance(service, str) else None
        return self._service_name

    def _cut(self, name: object) -> str:
        if type(name) is not str:
            return clean_name(name, self._name_limit)
        names = self._names
        cut = names.get(name)
        if cut is None:
            cut = clean_name(name, self._name_limit)
            remember(
                names, name, cut, small=len(name) <= _NAME_MEMO_MAX_LENGTH, capacity=_NAME_MEMO_SIZE
            )
        return cut

    # --- deciding run roots -------------------------------------------------------------------

    def _ancestors(self, trace: Trace, node: Node) -> Iterator[Node]:
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
    def _is_agent(node: Node) -> bool:
        return (
            node.scope == "agent"
            and node.state >= ENDED
            and identity.is_agent_scope(node.scope, node.name, node.attributes)
        )

    def _is_agent_now(self, node: Node) -> bool:
        capture = node.live
        if node.state >= ENDED or capture is None:
            return self._is_agent(node)
        # Open here: classify from what the span carries right now. Its end may already
        # be captured (it ended in the application, not yet here): that is the latest.
        live = capture.live
        if live is not None:
            attributes = plain_attributes(live)
            name = live.name
        elif capture.ended:  # ``ended`` is set before ``live`` is cleared
            attributes = capture.attributes or {}
            name = capture.end_name
        else:
            return self._is_agent(node)
        kind = conventions.classify(attributes, name, name_heuristics=self._heuristics)
        return identity.is_agent_scope(kind, self._cut(name), attributes)

    def _is_run_root(self, trace: Trace, node: Node, members: list[_Member]) -> bool:
        if node.state is ENDED_ABOVE_RUN:
            return False
        if (
            self._is_agent(node)
            and any(
                n.state >= ENDED and n.scope in _CALL_KINDS and n is not node for n, _ in members
            )
            and not any(self._is_agent_now(a) for a in self._ancestors(trace, node))
        ):
            return True
        # Some instrumentations label any step with "agent" in its name as an agent:
        # one with no call beneath it stays part of the run around it.
        return self._config.run_root == "agent_or_root" and node.local_root

    # --- emitting runs ----------------------------------------------------------------------

    def _emit_or_wait(
        self, trace_id: int, trace: Trace, root: Node, members: list[_Member]
    ) -> None:
        may_wait = self._config.run_grace_seconds > 0
        self._emit(trace_id, trace, root, members, may_wait=may_wait)

    def _wait(self, trace_id: int, trace: Trace, root: Node) -> bool:
        """A call is still open beneath the ended root (typically a stream read after its
        parent ended): the run waits for it, within the grace time."""
        if not move(root, WAITING, self.counters):
            return False
        root.waiting_until = self._clock() + self._config.run_grace_seconds
        self._waiting[(trace_id, root.span_id)] = root
        self._mark_above_run(trace, root)
        return True

    def _emit_if_closed(self, trace_id: int, trace: Trace, node: Node) -> None:
        """Emit the waiting run ``node`` belongs to once nothing beneath it is open."""
        for ancestor in self._ancestors(trace, node):
            if ancestor.state is WAITING:
                if all(n.state >= ENDED for n, _ in self._subtree(trace, ancestor)):
                    self._emit(trace_id, trace, ancestor)
                return

    def _mark_above_run(self, trace: Trace, root: Node) -> None:
        """Ancestors of an emitted or waiting run can no longer root a run themselves."""
        for ancestor in self._ancestors(trace, root):
            new = ABOVE_RUN_FROM.get(ancestor.state)
            if new is not None:
                move(ancestor, new, self.counters)

    @staticmethod
    def _subtree(trace: Trace, root: Node, *, skip_waiting: bool = False) -> list[_Member]:
        """Nodes under ``root`` (itself first) with the scope path above each.

        ``skip_waiting`` leaves out the runs beneath that wait for open calls.
        """
        nodes = trace.nodes
        children = trace.children
        members: list[_Member] = []
        stack: list[_Member] = [(root, ())]
        seen = {root.span_id}
        while stack:
            node, path = member = stack.pop()
            members.append(member)
            below = children.get(node.span_id)
            if not below:
                continue
            # An open node's scope is not known yet: it counts as structural.
            if node.state < ENDED or node.scope in STRUCTURAL_SCOPES:
                path = (*path, node.name)
            for child_id in below:
                child = nodes.get(child_id)
                if child is None or child_id in seen:
                    continue
                if skip_waiting and child.state is WAITING:
                    continue
                seen.add(child_id)
                stack.append((child, path))
        return members

    def _emit(
        self,
        trace_id: int,
        trace: Trace,
        root: Node,
        members: list[_Member] | None = None,
        *,
        may_wait: bool = False,
    ) -> None:
        """Emit the run of ``root``; with ``may_wait``, wait instead while a span beneath
        it is open (found on the one pass over its members)."""
        if root.state is WAITING:
            self._waiting.pop((trace_id, root.span_id), None)
        if members is None:
            members = self._subtree(trace, root)
        if trace.damaged or root.start_ns < self._damaged_before_ns:
            open_beneath = may_wait and any(n.state < ENDED for n, _ in members)
            if open_beneath and self._wait(trace_id, trace, root):
                return
            # Whole runs or nothing: a run that lost events is never stored or learned.
            self.counters.runs_dropped_overload += 1
            self._drop_emitted(trace_id, trace, root, members, complete=False)
            return
        drafts: list[_Draft] = []
        nested_in_llm: set[int] = set()
        first_agent: Node | None = None  # the first agent span beneath the root
        graph_node: Node | None = None  # the first generic graph node beneath the root
        complete = True
        has_tools = unknown_counts = False
        for node, path in members:
            if node.state < ENDED:
                if may_wait and self._wait(trace_id, trace, root):
                    return
                may_wait = False
                complete = False
                continue
            scope = node.scope
            if scope == "llm":
                if node.span_id not in nested_in_llm:
                    details = conventions.read_call_details(node.attributes)
                    if node.span_id in trace.children:  # not a leaf: maybe seen twice
                        inner = self._inner_llm_calls(trace, node, nested_in_llm)
                        details = _with_inner_details(details, inner)
                    unknown_counts = unknown_counts or details.tool_call_count is None
                    drafts.append((node.start_ns, node.end_ns, len(drafts), node, path, details))
            elif scope == "tool":
                has_tools = True
                drafts.append((node.start_ns, node.end_ns, len(drafts), node, path, None))
            elif scope == "agent" and node is not root:
                if not identity.is_graph_node(scope, node.name, node.attributes):
                    if first_agent is None or node.start_ns < first_agent.start_ns:
                        first_agent = node
                elif graph_node is None or node.start_ns < graph_node.start_ns:
                    graph_node = node
        drafts.sort()
        counted = _tool_call_counts(drafts) if has_tools and unknown_counts else {}
        limit = self._config.max_calls_per_run
        if len(drafts) > limit:
            self.counters.calls_truncated += len(drafts) - limit
            del drafts[limit:]
        graph = None
        if graph_node is not None and graph_node.parent_id is not None:
            graph = trace.nodes.get(graph_node.parent_id)
        agent_id = self._agent_id(root, first_agent, graph)
        self._aliases[identity.alias_key(root.start_name)] = agent_id
        trace_hex = f"{trace_id:032x}"
        run = RunRecord(
            id=f"{trace_hex}-{root.span_id:016x}",
            agent_id=agent_id,
            trace_id=trace_hex,
            start_ns=root.start_ns,
            end_ns=root.end_ns,
            calls=self._call_records(drafts, counted),
            truncated=not complete,
        )
        self._completed.append(run)
        self.counters.runs_completed += 1
        self.counters.runs_truncated += not complete
        self._drop_emitted(trace_id, trace, root, members, complete=complete)

    def _call_records(
        self, drafts: list[_Draft], counted: dict[int, int]
    ) -> tuple[CallRecord, ...]:
        """Each call's record, built once from its node and details; ``counted`` has the
        tool-call counts filled in from tool spans, by position in ``drafts``."""
        hexes: dict[int, str] = {}  # siblings share a parent
        records = []
        for position, (start, end, _, node, path, details) in enumerate(drafts):
            parent_id = node.parent_id
            parent_hex = None
            if parent_id is not None:
                parent_hex = hexes.get(parent_id)
                if parent_hex is None:
                    parent_hex = hexes[parent_id] = f"{parent_id:016x}"
            if details is None:
                name = conventions.tool_name(node.attributes) or node.name
                records.append(
                    CallRecord(
                        kind="tool",
                        name=self._cut(name),
                        span_id=f"{node.span_id:016x}",
                        parent_span_id=parent_hex,
                        path=path,
                        start_ns=start,
                        end_ns=end,
                    )
                )
                continue
            model = details.model_name
            records.append(
                CallRecord(
                    kind="llm",
                    name=node.name,
                    span_id=f"{node.span_id:016x}",
                    parent_span_id=parent_hex,
                    path=path,
                    start_ns=start,
                    end_ns=end,
                    output_tokens=details.output_tokens,
                    prompt_tokens=details.prompt_tokens,
                    total_tokens=details.total_tokens,
                    model_name=None if model is None else self._cut(model),
                    tool_call_count=counted.get(position, details.tool_call_count),
                )
            )
        return tuple(records)

    def _drop_emitted(
        self, trace_id: int, trace: Trace, root: Node, members: list[_Member], *, complete: bool
    ) -> None:
        self._mark_above_run(trace, root)
        nodes = [member for member, _ in members]
        self._remember_emitted(trace_id, nodes)
        self._remove_members(trace, nodes, all_ended=complete)

    def _remember_emitted(self, trace_id: int, members: list[Node]) -> None:
        emitted = self._emitted_members
        for node in members:
            if node.state >= ENDED:
                emitted[_member_key(trace_id, node.span_id)] = None
        if len(emitted) >= _REMEMBERED_MEMBERS // 2:
            self._emitted_before = emitted
            self._emitted_members = {}

    def _inner_llm_calls(self, trace: Trace, outer: Node, nested: set[int]) -> list[Node]:
        """LLM spans nested in an LLM span: the same call seen by two instrumentations."""
        inner = []
        for node, _ in self._subtree(trace, outer):
            if node is not outer and node.state >= ENDED and node.scope == "llm":
                nested.add(node.span_id)
                inner.append(node)
        return inner

    def _agent_id(self, root: Node, first_agent: Node | None, graph: Node | None) -> str:
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

    def _remove_members(
        self, trace: Trace, members: list[Node], *, all_ended: bool = False
    ) -> None:
        """Drop an emitted or discarded subtree (``members[0]`` is its root)."""
        nodes = trace.nodes
        if len(members) == len(nodes) and (all_ended or all(n.state >= ENDED for n in members)):
            # The common case: the run was the whole trace, and all of it has ended.
            nodes.clear()
            trace.children.clear()
            return
        self._unlink_from_parent(trace, members[0])
        children = trace.children
        for node in members:
            state = node.state
            if state >= ENDED:
                nodes.pop(node.span_id, None)
                children.pop(node.span_id, None)
            elif state is not DETACHED:
                move(node, DETACHED, self.counters)  # its run is gone; counted when it ends

    def _discard_subtree(self, trace: Trace, root: Node) -> None:
        members = [node for node, _ in self._subtree(trace, root, skip_waiting=True)]
        if root.state is not ENDED_ABOVE_RUN:
            self.counters.spans_outside_runs += sum(1 for n in members if n.state >= ENDED)
        # Calls are counted whether or not a run was emitted beside them: a call that
        # belongs to no run is lost to learning, and that must show.
        self.counters.calls_outside_runs += sum(
            1 for n in members if n.state >= ENDED and n.scope in _CALL_KINDS
        )
        self._remove_members(trace, members)

    def _forget(self, trace: Trace, node: Node) -> None:
        trace.nodes.pop(node.span_id, None)
        trace.children.pop(node.span_id, None)
        self._unlink_from_parent(trace, node)

    @staticmethod
    def _unlink_from_parent(trace: Trace, node: Node) -> None:
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
            if node.state is WAITING:
                self._waiting.pop((trace_id, node.span_id), None)
        if any(n.state in _HOLDS_A_RUN for n in trace.nodes.values()):
            self.counters.runs_evicted += 1
        self._evicted_span_ids.extend(n.span_id for n in trace.nodes.values() if n.state < ENDED)


def _with_inner_details(
    details: conventions.CallDetails, inner: list[Node]
) -> conventions.CallDetails:
    """The outer span speaks for the call; inner spans fill what it lacks (counted once)."""
    for other in inner:
        if None not in (
            details.output_tokens,
            details.prompt_tokens,
            details.model_name,
            details.tool_call_count,
        ):
            break
        extra = conventions.read_call_details(other.attributes)
        details = conventions.CallDetails(*map(_first, details, extra))
    return details


def _tool_call_counts(drafts: list[_Draft]) -> dict[int, int]:
    """Unknown tool-call counts, from the tool spans of the same turn, by draft position.

    When an LLM span does not say how many tools the model asked for, the tool
    calls under the same parent that start after it ended and before the next
    LLM call there are what it asked for. Only called when the run has tool spans
    at all (without them tools are not traced and the count stays unknown) and
    some count is unknown. ``drafts`` are in start order.
    """
    counted: dict[int, int] = {}
    for i, draft in enumerate(drafts):
        details = draft[5]
        if details is None or details.tool_call_count is not None:
            continue
        parent_id, ended = draft[3].parent_id, draft[1]
        count = 0
        for later in itertools.islice(drafts, i + 1, None):  # no copy: it stops early
            if later[3].parent_id != parent_id:
                continue
            if later[5] is not None:
                break
            if later[0] >= ended:
                count += 1
        counted[i] = count
    return counted


def _as_ns(value: object, fallback: int) -> int:
    """A span time as int nanoseconds (OTLP's 64 bits); anything else is ``fallback``.

    The SDK keeps whatever times it is given: a NaN, infinite or float time would
    be stored in a run no later read can decode, and a NaN or astronomically large
    one makes Redis (or the float conversion of its score) reject the whole write.
    The callers test the common case (an int in range) inline first.
    """
    if type(value) is not int:  # rare: the SDK's own clock gives ints
        if isinstance(value, float) and math.isfinite(value):
            value = int(value)
        elif not isinstance(value, int) or isinstance(value, bool):
            return fallback
    return int(value) if 0 < value < _NS_LIMIT else fallback


def _first(a: Any, b: Any) -> Any:
    return a if a is not None else b
