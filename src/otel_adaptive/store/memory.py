"""The embedded default store: everything in this process, bounded by configuration.

Bounds: ``max_runs_per_agent`` runs (and ``run_max_age_seconds``) per agent, and at most
``max_agents`` agents with runs and ``max_agents`` agents with learned state. Beyond
that the least recently written agent is forgotten (its runs, or its learned state):
in memory there is no other copy, so a flood of throwaway agent names costs bounded
memory and pushes out only agents that stopped writing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from otel_adaptive.learners.base import Learner, Mergeable
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import AgentDelta, Store

#: Batch ids remembered for idempotent merges; older ones are forgotten first.
_REMEMBERED_BATCHES = 4096


class MemoryStore(Store):
    """Runs and learned state in dictionaries, safe to read from any thread."""

    shared = False  # only this process writes here: there is nothing to refresh

    def __init__(
        self,
        *,
        max_runs_per_agent: int = 1000,
        run_max_age_seconds: float | None = None,
        max_agents: int = 1000,
        learners: Mapping[str, Learner] | None = None,
    ) -> None:
        super().__init__(learners)
        self._max_runs = max_runs_per_agent
        self._max_agents = max_agents
        self._max_age_ns = None if run_max_age_seconds is None else int(run_max_age_seconds * 1e9)
        # One lock for everything: writers are the exporter thread, readers are user
        # code; none of them ever runs on the span hot path.
        self._lock = threading.Lock()
        # Both least recently written first.
        self._runs: OrderedDict[str, OrderedDict[str, RunRecord]] = OrderedDict()
        self._learned: OrderedDict[str, dict[str, dict[str, Mergeable]]] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._applied_batches: OrderedDict[str, None] = OrderedDict()
        self.agents_forgotten = 0

    def __repr__(self) -> str:
        return f"MemoryStore(max_runs_per_agent={self._max_runs}, max_agents={self._max_agents})"

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        now_ns = time.time_ns()
        with self._lock:
            touched: set[str] = set()
            for run in runs:
                by_id = self._runs.get(run.agent_id)
                if by_id is None:
                    by_id = self._runs[run.agent_id] = OrderedDict()
                else:
                    self._runs.move_to_end(run.agent_id)
                by_id.pop(run.id, None)  # a re-saved run moves to the newest end
                by_id[run.id] = run
                touched.add(run.agent_id)
            for agent_id in touched:
                self._apply_retention(self._runs[agent_id], now_ns)
            while len(self._runs) > self._max_agents:
                self._runs.popitem(last=False)
                self.agents_forgotten += 1
        return len(runs)

    def _apply_retention(self, by_id: OrderedDict[str, RunRecord], now_ns: int) -> None:
        while len(by_id) > self._max_runs:
            by_id.popitem(last=False)
        if self._max_age_ns is not None:
            oldest_allowed = now_ns - self._max_age_ns
            stale = [run_id for run_id, run in by_id.items() if run.end_ns < oldest_allowed]
            for run_id in stale:
                del by_id[run_id]

    def list_runs(self, agent_id: str, limit: int | None = None) -> list[RunRecord]:
        with self._lock:
            by_id = self._runs.get(agent_id)
            if not by_id:
                return []
            if self._max_age_ns is not None:
                self._apply_retention(by_id, time.time_ns())
            runs = list(by_id.values())
        return runs if limit is None else runs[max(len(runs) - limit, 0) :]

    def run_count(self, agent_id: str) -> int:
        with self._lock:
            return len(self._runs.get(agent_id, ()))

    def agents(self) -> list[str]:
        with self._lock:
            names = {agent for agent, runs in self._runs.items() if runs}
            names.update(self._learned)
        return sorted(names)

    def agent_versions(self) -> dict[str, int | None]:
        with self._lock:
            return {agent: self._versions.get(agent, 0) for agent in self._learned}

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        with self._lock:
            if batch_id in self._applied_batches:
                return False
            for delta in deltas:
                learned = self._learned.get(delta.agent_id)
                if learned is None:
                    learned = self._learned[delta.agent_id] = {}
                else:
                    self._learned.move_to_end(delta.agent_id)
                state = learned.setdefault(delta.learner, {})
                for key, value in delta.fields.items():
                    current = state.get(key)
                    state[key] = value if current is None else current.merge(value)
                self._versions[delta.agent_id] = self._versions.get(delta.agent_id, 0) + 1
            while len(self._learned) > self._max_agents:
                forgotten, _ = self._learned.popitem(last=False)
                self._versions.pop(forgotten, None)
                self.agents_forgotten += 1
            self._applied_batches[batch_id] = None
            if len(self._applied_batches) > _REMEMBERED_BATCHES:
                self._applied_batches.popitem(last=False)
            return True

    def load_fields(self, agent_id: str, learner: str) -> dict[str, Mergeable]:
        with self._lock:
            learned = self._learned.get(agent_id)
            return dict(learned.get(learner, {})) if learned is not None else {}
