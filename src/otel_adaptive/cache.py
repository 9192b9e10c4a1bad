"""Immutable plan snapshots, published by the exporter and read lock-free.

The exporter builds a new :class:`AgentPlan` for every agent a batch touched and
swaps a new mapping in with one assignment. A reader takes the current mapping
with one attribute read and keeps using it, so it can never see a plan that is
half updated, and it never waits for the exporter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from otel_adaptive.learners.parallelism import ExecutionPlan
from otel_adaptive.learners.trie import TrieView


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """What is known about one agent: its prediction trie and its execution plan."""

    agent_id: str
    trie: TrieView | None
    plan: ExecutionPlan | None


_EMPTY: Mapping[str, AgentPlan] = MappingProxyType({})


class PlanCache:
    """Holds the latest snapshot of every agent's plan."""

    def __init__(self) -> None:
        self._plans: Mapping[str, AgentPlan] = _EMPTY
        self._version = 0

    @property
    def version(self) -> int:
        """Incremented on every publish; lets tests and tools wait for fresh data."""
        return self._version

    def get(self, agent_id: str) -> AgentPlan | None:
        """The agent's current plan (hot path: one attribute read and one lookup)."""
        return self._plans.get(agent_id)

    def publish(self, updated: Mapping[str, AgentPlan]) -> None:
        """Replace the plans of some agents; called by the exporter thread only."""
        if not updated:
            return
        merged = dict(self._plans)
        merged.update(updated)
        self._plans = MappingProxyType(merged)
        self._version += 1
