"""Learned state in this process: coalesced learning, bounded agents, refresh, publishing.

**Coalesced intervals.** Completed runs wait up to ``learn_interval_millis`` (or until
:data:`MAX_INTERVAL_RUNS` wait) and are learned together: each learner sees all of
them at once, so every learned field gets its samples summarised once, is merged into
this process's state once, and each agent's delta goes to the store once per interval.
Hints therefore lag completed runs by up to one interval; ``force_flush`` learns at once.

**Bounded agents.** At most ``max_agents`` agents are learned in this process. When a
run of a new agent arrives and the bound is reached, the least recently active agent
that has been idle for :data:`AGENT_IDLE_SECONDS` is evicted (its in-process state and
published plan are dropped; with a shared store they are reloaded on its next run);
when no agent is idle, the new agent is not learned (its runs are still stored) and
``agents_over_limit`` counts it, once per interval.

**Refresh** re-reads, every ``refresh_interval_seconds`` and whatever the queue does,
only the agents whose stored version changed (``Store.agent_versions``), one agent at a
time: one agent's failure is counted and the others go on.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from otel_adaptive._counters import ExporterCounters
from otel_adaptive._logs import RateLimitedLog
from otel_adaptive._store_writer import StoreWriter
from otel_adaptive.cache import AgentPlan, PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.learners.base import Learner, Mergeable
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import AgentDelta, Store, StoreUnavailableError

#: Runs learned at once at most: reaching it learns before the interval is over.
MAX_INTERVAL_RUNS = 5000
#: An agent with no run for this long may make room for a new one.
AGENT_IDLE_SECONDS = 60.0
#: Shortest time between two rebuilds of the plans published for hints.
PUBLISH_INTERVAL_SECONDS = 0.2
#: Distinct fields one agent's learned state may hold per learner. Fields are keyed by
#: names seen in spans (scope paths, tool groups): without a bound, names of unbounded
#: cardinality would grow memory, Redis and the cost of every plan rebuild for ever.
MAX_FIELDS_PER_AGENT = 2048

_State = dict[str, Mergeable]


class LearnedState:
    """What this process learned, per agent and learner, and the plans built from it."""

    def __init__(
        self,
        config: AdaptiveConfig,
        store: Store,
        learners: Sequence[Learner],
        cache: PlanCache,
        writer: StoreWriter,
        counters: ExporterCounters,
        log: RateLimitedLog,
        *,
        per_run_batches: bool = False,
    ) -> None:
        self._store = store
        self._per_run_batches = per_run_batches
        self._learners = list(learners)
        self._cache = cache
        self._writer = writer
        self._counters = counters
        self._log = log
        self._interval = config.learn_interval_millis / 1000.0
        self._refresh_interval = config.refresh_interval_seconds
        self._max_agents = config.max_agents
        # A private (in-process) store is written only by us, right after learning: it is
        # the state itself, and a second copy here would double memory and merges.
        self._private = not store.shared
        self._mirror: dict[tuple[str, str], _State] = {}
        # Learned agents, least recently active first, with the time of their last run.
        self._agents: OrderedDict[str, float] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._waiting: list[RunRecord] = []
        self._batch_ids = _BatchIds()
        self._unpublished: set[str] = set()
        # Run root span names at start -> stored agent ids, published with the next plans.
        self._unpublished_aliases: dict[str, str] = {}
        self._next_learn = 0.0
        self._next_publish = 0.0
        self._next_refresh = 0.0

    @property
    def waiting_runs(self) -> int:
        """Completed runs not learned yet (they wait for the interval)."""
        return len(self._waiting)

    @property
    def agent_count(self) -> int:
        return len(self._agents)

    def add_aliases(self, aliases: Mapping[str, str]) -> None:
        if aliases:
            self._unpublished_aliases.update(aliases)

    def add_runs(self, runs: Sequence[RunRecord]) -> None:
        if not self._waiting:
            self._next_learn = time.monotonic() + self._interval
        self._waiting.extend(runs)

    # --- the periodic steps (exporter thread) ------------------------------------------------

    def learn(self, *, force: bool) -> None:
        """Learn the waiting runs when the interval is over (or at once with ``force``)."""
        if not self._waiting:
            return
        if (
            not force
            and len(self._waiting) < MAX_INTERVAL_RUNS
            and time.monotonic() < self._next_learn
        ):
            return
        runs, self._waiting = self._waiting, []
        admitted = self._admit_agents(runs)
        self._counters.runs_learned += len(admitted)
        for batch_id, batch in self._batches(admitted):
            deltas = self._learn(batch)
            if deltas:
                self._writer.add_deltas(batch_id, deltas)
                self._unpublished.update(delta.agent_id for delta in deltas)

    def _batches(self, runs: list[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
        """The merge batches of ``runs``: one, or one per run under an id of that run.

        A batch id derived from the run makes learning idempotent: whichever process
        feeds the same run again (a second replay of a file), the store skips it.
        """
        if not self._per_run_batches:
            return [(self._batch_ids.next(), runs)]
        return [(run_batch_id(run), [run]) for run in runs]

    def publish(self, *, force: bool) -> None:
        # Rebuilding an agent's plan costs in proportion to all it learned, so under load
        # it happens at most every PUBLISH_INTERVAL_SECONDS; a flush publishes at once.
        now = time.monotonic()
        if (self._unpublished or self._unpublished_aliases) and (
            force or now >= self._next_publish
        ):
            self._next_publish = now + PUBLISH_INTERVAL_SECONDS
            agents, self._unpublished = self._unpublished, set()
            self._publish(agents)

    def refresh_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_interval
        self.refresh()

    def refresh(self) -> None:
        """Re-read the agents whose stored state changed and republish their plans."""
        if self._private and self._counters.refreshes:
            return  # nobody else writes a private store: once at start is enough
        versions = self._store.agent_versions()
        changed: list[str] = []
        for agent_id, version in versions.items():
            if agent_id not in self._agents and len(self._agents) >= self._max_agents:
                continue  # others' agents are served while there is room, never evicting
            if version is None or self._versions.get(agent_id) != version:
                changed.append(agent_id)
        unwritten = self._writer.unwritten_deltas()
        refreshed: set[str] = set()
        for agent_id in changed:
            if self._reload(agent_id, [d for d in unwritten if d.agent_id == agent_id]):
                refreshed.add(agent_id)
                version = versions[agent_id]
                if version is not None:
                    self._versions[agent_id] = version
        self._counters.refreshes += 1
        self._counters.agents_refreshed += len(refreshed)
        if refreshed:
            self._publish(refreshed)

    # --- agents ------------------------------------------------------------------------------

    def _admit_agents(self, runs: list[RunRecord]) -> list[RunRecord]:
        """The runs whose agent is (or now becomes) one of the agents learned here."""
        now = time.monotonic()
        agents = self._agents
        refused: set[str] = set()
        admitted: list[RunRecord] = []
        for run in runs:
            agent_id = run.agent_id
            if agent_id in agents:
                agents.move_to_end(agent_id)
                agents[agent_id] = now
            elif agent_id in refused or not self._make_room(now):
                refused.add(agent_id)
                continue
            else:
                agents[agent_id] = now
            admitted.append(run)
        self._counters.agents_over_limit += len(refused)
        return admitted

    def _make_room(self, now: float) -> bool:
        if len(self._agents) < self._max_agents:
            return True
        oldest, last_active = next(iter(self._agents.items()))
        if now - last_active < AGENT_IDLE_SECONDS:
            return False
        self._evict(oldest)
        return True

    def _evict(self, agent_id: str) -> None:
        del self._agents[agent_id]
        self._versions.pop(agent_id, None)
        self._unpublished.discard(agent_id)
        for learner in self._learners:
            self._mirror.pop((agent_id, learner.name), None)
        self._cache.retract([agent_id])
        self._counters.agents_evicted += 1

    # --- learning ----------------------------------------------------------------------------

    def _learn(self, runs: list[RunRecord]) -> list[AgentDelta]:
        if not runs:
            return []
        deltas: list[AgentDelta] = []
        for learner in self._learners:
            try:
                learned = learner.learn(runs)
            except Exception:
                self._counters.learner_errors += 1
                self._log.report(
                    f"learner_{learner.name}", f"otel-adaptive learner {learner.name!r} failed"
                )
                continue
            for agent_id, fields in learned.items():
                admitted = self._admit_fields(agent_id, learner.name, fields)
                if admitted:
                    deltas.append(AgentDelta(agent_id, learner.name, admitted))
        if not self._private:
            for delta in deltas:
                _merge_into(self._state(delta.agent_id, delta.learner), delta.fields)
        return deltas

    def _admit_fields(
        self, agent_id: str, learner: str, fields: dict[str, Mergeable]
    ) -> dict[str, Mergeable]:
        """The fields the agent's state may take: known ones, new ones while it is not full.

        Learners list a call's coarser fields (the trie's shallower nodes) first, so
        what is dropped is the finest detail. Each process checks its own state,
        refreshed from the store, so a fleet of P processes stores at most P times
        the bound, and in practice little more than it.
        """
        state = self._state(agent_id, learner)
        room = MAX_FIELDS_PER_AGENT - len(state)
        if len(fields) <= room:
            return fields
        admitted: dict[str, Mergeable] = {}
        for key, value in fields.items():
            if key in state:
                admitted[key] = value
            elif room > 0:
                admitted[key] = value
                room -= 1
            else:
                self._counters.learned_fields_dropped += 1
        return admitted

    def _state(self, agent_id: str, learner: str) -> Mapping[str, Mergeable] | _State:
        if self._private:
            return self._store.load_fields(agent_id, learner)
        state = self._mirror.get((agent_id, learner))
        if state is None:
            try:
                state = self._store.load_fields(agent_id, learner)
            except Exception:
                self._counters.store_errors += 1
                state = {}  # the next refresh catches up with the store
            self._mirror[(agent_id, learner)] = state
        return state

    def _reload(self, agent_id: str, unwritten: list[AgentDelta]) -> bool:
        """Replace one agent's state with the store's, plus what we have not written."""
        try:
            states = {
                learner.name: self._store.load_fields(agent_id, learner.name)
                for learner in self._learners
            }
        except StoreUnavailableError:
            raise  # the whole store is away: the refresh stops here, retried next time
        except Exception:
            self._counters.refresh_errors += 1
            self._log.report("refresh_agent", f"otel-adaptive could not refresh agent {agent_id!r}")
            return False
        if agent_id not in self._agents:
            self._agents[agent_id] = 0.0  # known from the store only: idle at once
            self._agents.move_to_end(agent_id, last=False)
        if not self._private:
            for name, state in states.items():
                for delta in unwritten:
                    if delta.learner == name:
                        _merge_into(state, delta.fields)
                self._mirror[(agent_id, name)] = state
        return True

    # --- publishing --------------------------------------------------------------------------

    def _publish(self, agent_ids: set[str]) -> None:
        """Build each agent's views from its full state and publish them as one snapshot."""
        plans: dict[str, AgentPlan] = {}
        for agent_id in agent_ids:
            views: dict[str, object] = {}
            for learner in self._learners:
                if self._private:
                    fields: Mapping[str, Mergeable] | None = self._store.load_fields(
                        agent_id, learner.name
                    )
                else:
                    fields = self._mirror.get((agent_id, learner.name))
                if fields is not None:
                    views[learner.name] = learner.view(agent_id, fields)
            plans[agent_id] = AgentPlan(agent_id=agent_id, views=views)
        aliases, self._unpublished_aliases = self._unpublished_aliases, {}
        self._cache.publish(plans, aliases)


def _merge_into(state: _State | Mapping[str, Mergeable], fields: Mapping[str, Mergeable]) -> None:
    assert isinstance(state, dict)
    for key, value in fields.items():
        current = state.get(key)
        state[key] = value if current is None else current.merge(value)


def run_batch_id(run: RunRecord) -> str:
    """The merge batch id of what ``run`` alone taught (the same in every process)."""
    return f"run:{run.agent_id}:{run.id}"


class _BatchIds:
    """Ids unique across processes and restarts, so the store can deduplicate retries."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex
        self._seq = 0

    def next(self) -> str:
        self._seq += 1
        return f"{self._prefix}:{self._seq}"
