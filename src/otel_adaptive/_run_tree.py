"""The nodes of the assembler's run trees and the states a node may be in.

A node is one span of an open trace. Its state says where it is in its life and
what it may still become; every change of state goes through :func:`move`, which
allows only the transitions of :data:`LEGAL_TRANSITIONS` (``docs/architecture.md``
draws them). A node leaves the tree (emitted with its run, discarded, forgotten,
evicted) without a state of its own: it is then simply no longer referenced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Protocol

from otel_adaptive._span_capture import SpanCapture
from otel_adaptive.records import ScopeType


class NodeState(IntEnum):
    """Where a node is in its life. Every state from ``ENDED`` on has seen the span end,
    so ``state >= ENDED`` is "ended" (an int comparison, cheap on the per-event path)."""

    #: Started, not ended, and no run was emitted from beneath it.
    OPEN = 0
    #: Open, and a run beneath it was emitted or waits: it can no longer root a run.
    OPEN_ABOVE_RUN = 1
    #: Open, but the run it belonged to is gone (emitted, discarded, or its parent was
    #: detached when it started): when it ends it is a late span and is forgotten.
    DETACHED = 2
    #: Ended; waits for the run around it to be emitted.
    ENDED = 3
    #: Ended, and a run beneath it was emitted or waits: it can no longer root a run.
    ENDED_ABOVE_RUN = 4
    #: An ended run root whose run waits, within the grace time, for spans still open
    #: beneath it (typically a stream read after its parent ended).
    WAITING = 5


OPEN: Final = NodeState.OPEN
OPEN_ABOVE_RUN: Final = NodeState.OPEN_ABOVE_RUN
DETACHED: Final = NodeState.DETACHED
ENDED: Final = NodeState.ENDED
ENDED_ABOVE_RUN: Final = NodeState.ENDED_ABOVE_RUN
WAITING: Final = NodeState.WAITING

#: The states a node is created in: detached when its parent already is.
INITIAL_STATES: Final = frozenset({OPEN, DETACHED})

#: Every state change the assembler may make; anything else is a defect, refused by
#: :func:`move` and counted (``illegal_transitions``), never raised.
LEGAL_TRANSITIONS: Final[Mapping[NodeState, frozenset[NodeState]]] = {
    OPEN: frozenset({ENDED, OPEN_ABOVE_RUN, DETACHED}),
    OPEN_ABOVE_RUN: frozenset({ENDED_ABOVE_RUN, DETACHED}),
    DETACHED: frozenset(),  # its end forgets it
    ENDED: frozenset({ENDED_ABOVE_RUN, WAITING}),
    ENDED_ABOVE_RUN: frozenset(),  # leaves the tree with the run around it
    WAITING: frozenset(),  # leaves the tree when its run is emitted
}

#: What the span's end makes of an open node (a detached one is forgotten instead).
ENDED_FROM: Final[Mapping[NodeState, NodeState]] = {
    OPEN: ENDED,
    OPEN_ABOVE_RUN: ENDED_ABOVE_RUN,
}

#: What a run emitted (or waiting) beneath a node makes of it; the other states are
#: unaffected (a detached node is already out of every run, a waiting root already
#: roots its own, and the ``*_ABOVE_RUN`` states already say so).
ABOVE_RUN_FROM: Final[Mapping[NodeState, NodeState]] = {
    OPEN: OPEN_ABOVE_RUN,
    ENDED: ENDED_ABOVE_RUN,
}


@dataclass(slots=True)
class Node:
    """One span of an open trace."""

    span_id: int
    parent_id: int | None
    #: No local parent: the top of this process's part of the trace (see the assembler).
    local_root: bool
    start_ns: int
    name: str
    start_name: str  # what a hint lookup saw while it was open
    #: The span's capture while open here (its live span, or its end if that came first).
    live: SpanCapture | None = None
    state: NodeState = OPEN
    parent_finished: bool = False  # its parent belonged to a run already emitted
    end_ns: int = 0
    scope: ScopeType = "unknown"
    # Once ended: a plain dict copy (the span's own mapping if it could not be copied).
    attributes: Mapping[str, Any] | None = None
    service_name: str | None = None
    waiting_until: float | None = None  # the grace deadline while WAITING


@dataclass(slots=True)
class Trace:
    """The open part of one trace: its nodes and, per node, its children's ids."""

    nodes: dict[int, Node] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)
    last_activity: float = 0.0
    damaged: bool = False  # lost span events to a full queue: its runs are dropped whole


class _Counts(Protocol):
    """What :func:`move` needs of the assembler's counters."""

    illegal_transitions: int


def move(node: Node, new: NodeState, counters: _Counts) -> bool:
    """Put ``node`` in state ``new`` if the transition is legal; else count it and refuse."""
    if new in LEGAL_TRANSITIONS[node.state]:
        node.state = new
        return True
    counters.illegal_transitions += 1
    return False


__all__ = [
    "ABOVE_RUN_FROM",
    "DETACHED",
    "ENDED",
    "ENDED_ABOVE_RUN",
    "ENDED_FROM",
    "INITIAL_STATES",
    "LEGAL_TRANSITIONS",
    "OPEN",
    "OPEN_ABOVE_RUN",
    "WAITING",
    "Node",
    "NodeState",
    "Trace",
    "move",
]
