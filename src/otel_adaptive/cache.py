"""Immutable plan snapshots, published by the exporter and read lock-free.

The exporter builds a new :class:`AgentPlan` for every agent a batch touched and
swaps a new mapping in with one assignment. A reader takes the current mapping
with one attribute read and keeps using it, so it can never see a plan that is
half updated, and it never waits for the exporter.

Plans hold each learner's view under the learner's name; the cache knows no
concrete learner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Names under which the built-in learners publish their views.
TRIE_VIEW = "trie"
PLAN_VIEW = "tool_parallelism"


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """What is known about one agent: each learner's view, by learner name."""

    agent_id: str
    views: Mapping[str, Any] = field(default_factory=dict)

    def view(self, learner: str) -> Any:
        """The view the named learner built, or None."""
        return self.views.get(learner)

    @property
    def trie(self) -> Any:
        """The prediction trie's view (a ``TrieView``), or None."""
        return self.views.get(TRIE_VIEW)

    @property
    def plan(self) -> Any:
        """The tool-parallelism view (an ``ExecutionPlan``), or None."""
        return self.views.get(PLAN_VIEW)


_EMPTY: Mapping[str, AgentPlan] = MappingProxyType({})
_NO_ALIASES: Mapping[str, str] = MappingProxyType({})
#: Run-root names remembered for hint lookups; the oldest go first beyond it.
MAX_ALIASES = 4096


class PlanCache:
    """Holds the latest snapshot of every agent's plan.

    With the plans it holds the *aliases*: for the span name a run root had at
    start, the agent id the assembler stored its run under. A hint lookup sees
    only what was set at start, and some instrumentations name the agent at end
    (see :mod:`otel_adaptive.identity`).
    """

    def __init__(self) -> None:
        self._plans: Mapping[str, AgentPlan] = _EMPTY
        self._aliases: Mapping[str, str] = _NO_ALIASES
        self._version = 0

    @property
    def version(self) -> int:
        """Incremented on every publish; lets tests and tools wait for fresh data."""
        return self._version

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, agent_id: str) -> AgentPlan | None:
        """The agent's current plan (hot path: one attribute read and one lookup)."""
        return self._plans.get(agent_id)

    def alias(self, root_name: str) -> str | None:
        """The agent id runs with this root start name were stored under, if known."""
        return self._aliases.get(root_name)

    def publish(
        self, updated: Mapping[str, AgentPlan], aliases: Mapping[str, str] | None = None
    ) -> None:
        """Replace the plans of some agents (and add aliases); exporter thread only."""
        if not updated and not aliases:
            return
        if aliases:
            known = dict(self._aliases)
            for key, agent_id in aliases.items():
                known.pop(key, None)  # re-inserted: the most recent stay longest
                known[key] = agent_id
            while len(known) > MAX_ALIASES:
                del known[next(iter(known))]
            # Aliases first: a reader that sees a new plan also sees how to find it.
            self._aliases = MappingProxyType(known)
        if updated:
            merged = dict(self._plans)
            merged.update(updated)
            self._plans = MappingProxyType(merged)
        self._version += 1

    def retract(self, agent_ids: Iterable[str]) -> None:
        """Stop serving some agents (their state was evicted); exporter thread only."""
        gone = [agent for agent in agent_ids if agent in self._plans]
        if not gone:
            return
        kept = dict(self._plans)
        for agent in gone:
            del kept[agent]
        self._plans = MappingProxyType(kept)
        self._version += 1
