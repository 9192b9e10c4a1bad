"""The storage contract shared by the in-memory and Redis stores.

Stores know learners only through the plug-in contract (``learners.base.Learner``) and
the registry of learner names; no concrete learner is imported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otel_adaptive.learners import LEARNER_TYPES, build_learners, learner_for
from otel_adaptive.learners.base import Learner, Mergeable
from otel_adaptive.records import RunRecord

#: Names of the built-in learners whose views ``load_trie``/``load_plan`` return.
TRIE_LEARNER = "trie"
PLAN_LEARNER = "tool_parallelism"


class StoreUnavailableError(Exception):
    """The store's backend could not be reached or did not answer in time.

    Raised (chained to the client library's error) by stores with a remote
    backend. Writes that raised it may or may not have been applied; retrying
    them with the same run ids and batch ids is safe.
    """


@dataclass(frozen=True)
class AgentDelta:
    """What one learner learned about one agent from one batch of runs."""

    agent_id: str
    learner: str
    fields: Mapping[str, Mergeable]


class Store(ABC):
    """Where completed runs and learned state live.

    Every method is called from the exporter thread (or from user code reading
    back results); none is ever called on the span hot path.
    """

    #: True when other processes may write to the same state, so the exporter
    #: re-reads it every ``refresh_interval_seconds`` to serve their learning too.
    shared: bool = True

    def __init__(self, learners: Mapping[str, Learner] | None = None) -> None:
        # The learners decode stored fields and build the views served by
        # ``load_trie``/``load_plan``; by default every known learner.
        if learners is None:
            learners = build_learners(LEARNER_TYPES)
        self.learners: Mapping[str, Learner] = learners

    @abstractmethod
    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        """Store a batch of runs, applying per-agent retention; returns how many were written.

        Saving a run whose id is already stored replaces it (idempotent) and counts
        as written. Runs the store declines (an agent whose stored data is bad and
        left alone) are not counted; raising means nothing can be said.
        """

    @abstractmethod
    def list_runs(self, agent_id: str, limit: int | None = None) -> list[RunRecord]:
        """The agent's stored runs, oldest first; the newest ``limit`` if given."""

    @abstractmethod
    def run_count(self, agent_id: str) -> int:
        """How many runs of the agent are currently retained."""

    @abstractmethod
    def agents(self) -> list[str]:
        """Agent ids with stored runs or learned state, sorted."""

    @abstractmethod
    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        """Merge learned deltas atomically; a batch id already merged is skipped.

        Returns True when the batch was applied, False when it had been already.
        """

    def merge_batches(self, batches: Sequence[tuple[str, Sequence[AgentDelta]]]) -> list[bool]:
        """Merge several ``(batch id, deltas)`` batches; per batch, what :meth:`merge` returns.

        Each batch is still applied once, by its id. Stores that can write the batches
        waiting for one agent together (one write per agent, not one per batch) override
        this; by default they are merged one after the other.
        """
        return [self.merge(batch_id, deltas) for batch_id, deltas in batches]

    @abstractmethod
    def load_fields(self, agent_id: str, learner: str) -> dict[str, Mergeable]:
        """The agent's full learned state for one learner (empty if none)."""

    def agent_versions(self) -> Mapping[str, int | None]:
        """Every agent with learned state, and a version of that state.

        Contract: an agent's version changes whenever its learned state changes
        (any learner, any writer), and stays the same otherwise, so a reader that
        saw version ``v`` re-reads the agent only when it sees another value.
        ``None`` means "unknown": the reader re-reads the agent every time. This
        default knows no versions; stores that can track them should override it.
        """
        return dict.fromkeys(self.agents())

    def load_view(self, agent_id: str, learner: str) -> Any:
        """The named learner's view of the agent's learned state."""
        plugin = self._learner(learner)
        return plugin.view(agent_id, self.load_fields(agent_id, plugin.name))

    def load_trie(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's prediction trie in its JSON wire format, or None before any LLM call."""
        learner = self._learner(TRIE_LEARNER)
        return learner.document(agent_id, self.load_fields(agent_id, learner.name))

    def load_plan(self, agent_id: str) -> Any:
        """The agent's ``ExecutionPlan``: tool groups observed running in parallel."""
        return self.load_view(agent_id, PLAN_LEARNER)

    def _learner(self, name: str) -> Learner:
        return learner_for(name, self.learners)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; the store is not used afterwards."""
