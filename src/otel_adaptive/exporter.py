"""The exporter thread: everything that must not run on the application's threads.

It drains span events from the processor's queue in batches, assembles runs,
stores them, runs the learners and publishes fresh plan snapshots — in that
order, one direction. Like the SDK's batch processor it wakes on a schedule or
when a batch is ready, and it runs with OpenTelemetry instrumentation suppressed
so that an instrumented Redis client cannot trace our own writes back to us.

When the store is unreachable, completed runs and learned deltas wait in bounded
buffers and are written when it returns (exponential backoff); learning goes on
locally meanwhile, and whatever overflows is counted.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from otel_adaptive.assembler import RunAssembler
from otel_adaptive.cache import AgentPlan, PlanCache
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.learners.base import Learner, Mergeable
from otel_adaptive.learners.parallelism import ExecutionPlan
from otel_adaptive.learners.trie import TrieView
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import AgentDelta, Store, StoreUnavailableError

_logger = logging.getLogger(__name__)

SPAN_STARTED = 0
SPAN_ENDED = 1
FLUSH = 2

#: Runs written to the store per call, so a long outage backlog drains in pieces.
_WRITE_CHUNK = 500
_BACKOFF_MIN_SECONDS = 0.1
_BACKOFF_MAX_SECONDS = 30.0
#: Shortest time between two rebuilds of the plans published for hints.
_PUBLISH_INTERVAL_SECONDS = 0.2
#: Learned deltas waiting for the store, at most (each holds one batch).
_MAX_PENDING_BATCHES = 1000
#: Distinct fields one agent's learned state may hold per learner. Fields are keyed by
#: names seen in spans (scope paths, tool groups): without a bound, names of unbounded
#: cardinality would grow memory, Redis and the cost of every plan rebuild for ever.
_MAX_FIELDS_PER_AGENT = 2048


class FlushRequest:
    """A marker in the queue: everything queued before it has been handled when ``done`` is set."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


@dataclass(slots=True)
class ExporterCounters:
    spans_started: int = 0
    spans_ended: int = 0
    runs_stored: int = 0
    runs_dropped_buffer_full: int = 0
    batches_merged: int = 0
    batches_deduplicated: int = 0
    batches_dropped_buffer_full: int = 0
    learned_fields_dropped: int = 0
    learner_errors: int = 0
    store_errors: int = 0
    exporter_errors: int = 0
    refreshes: int = 0


QueueItem = tuple[int, Any]


class Exporter:
    """Owns the worker thread and every stage after the queue."""

    def __init__(
        self,
        config: AdaptiveConfig,
        queue: deque[QueueItem],
        store: Store,
        learners: Sequence[Learner],
        cache: PlanCache,
        forget_spans: Callable[[list[int]], None],
    ) -> None:
        self._config = config
        self._queue = queue
        self._store = store
        self._learners = list(learners)
        self._cache = cache
        self._forget_spans = forget_spans
        self._assembler = RunAssembler(config)
        self.counters = ExporterCounters()
        self._wake = threading.Event()
        self._stopping = False
        self._batch_ids = _BatchIds()
        # Local mirror of a shared store's learned state: hints keep improving while
        # the store is away. A private (in-process) store needs none.
        self._private = not store.shared
        self._learned: dict[tuple[str, str], dict[str, Mergeable]] = {}
        self._pending_runs: deque[RunRecord] = deque()
        self._pending_deltas: deque[tuple[str, list[AgentDelta]]] = deque()
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN_SECONDS
        self._next_refresh = 0.0
        self._unpublished: set[str] = set()
        self._unpublished_aliases: dict[str, str] = {}
        self._next_publish = 0.0
        self._last_error_log = 0.0
        self._thread = threading.Thread(
            target=self._run, name="otel-adaptive-exporter", daemon=True
        )

    # --- lifecycle (called from application threads) -----------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def wake_event(self) -> threading.Event:
        return self._wake

    def stop(self, timeout: float) -> bool:
        """Drain, write and stop within ``timeout`` seconds; True when it finished."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def open_traces(self) -> int:
        return self._assembler.open_traces

    def pending_runs(self) -> int:
        return len(self._pending_runs)

    def stats(self) -> dict[str, int]:
        values = asdict(self.counters)
        values.update(asdict(self._assembler.counters))
        values["runs_pending_store"] = len(self._pending_runs)
        values["batches_pending_store"] = len(self._pending_deltas)
        values["open_runs"] = self._assembler.open_traces
        return values

    # --- the worker loop ----------------------------------------------------------------------

    def _run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            delay = self._config.schedule_delay_millis / 1000.0
            while True:
                self._wake.wait(delay)
                self._wake.clear()
                self._cycle()
                if self._stopping and not self._queue:
                    break
            # Last chance before the process goes: take the runs the final housekeeping
            # completed, and write now, even inside a back-off.
            self._guard(self._after_batch, force_write=True)
        finally:
            detach(token)

    def _cycle(self) -> None:
        """Drain the queue batch by batch, then do the periodic chores."""
        while True:
            flushes: list[FlushRequest] = []
            took = self._take_batch(flushes)
            self._guard(self._after_batch, force_write=bool(flushes))
            for request in flushes:
                request.ok = not self._pending_runs and not self._pending_deltas
                request.done.set()
            if not took:
                break
        self._guard(self._assembler_housekeeping)
        self._guard(self._write_pending, force=False)
        self._guard(self._maybe_refresh)

    def _guard(self, step: Callable[..., object], **kwargs: Any) -> None:
        try:
            step(**kwargs)
        except StoreUnavailableError as exc:  # expected during outages; retried later
            self.counters.store_errors += 1
            self._log_error(f"otel-adaptive could not read its store ({exc})", traceback=False)
        except Exception:  # the thread must survive anything
            self.counters.exporter_errors += 1
            self._log_error("otel-adaptive exporter step failed")

    def _take_batch(self, flushes: list[FlushRequest]) -> int:
        queue = self._queue
        assembler = self._assembler
        took = 0
        for _ in range(self._config.max_export_batch_size):
            try:
                kind, payload = queue.popleft()
            except IndexError:
                break
            took += 1
            try:
                if kind == SPAN_ENDED:
                    self.counters.spans_ended += 1
                    assembler.span_ended(payload)
                elif kind == SPAN_STARTED:
                    self.counters.spans_started += 1
                    assembler.span_started(payload)
                else:
                    flushes.append(payload)
                    break  # answer the flush as soon as what preceded it is handled
            except Exception:
                self.counters.exporter_errors += 1
                self._log_error("otel-adaptive could not assemble a span")
        return took

    def _assembler_housekeeping(self) -> None:
        self._assembler.evict_idle()
        evicted = self._assembler.take_evicted_span_ids()
        if evicted:
            self._forget_spans(evicted)

    def _after_batch(self, force_write: bool) -> None:
        self._assembler_housekeeping()
        runs = self._assembler.take_completed()
        self._unpublished_aliases.update(self._assembler.take_aliases())
        if runs:
            self._pending_runs.extend(runs)
            deltas = self._learn(runs)
            if deltas:
                self._pending_deltas.append((self._batch_ids.next(), deltas))
                self._unpublished.update(d.agent_id for d in deltas)
        if runs or force_write:
            self._write_pending(force=force_write)
        # Rebuilding an agent's plan costs in proportion to all it learned, so under
        # load it happens at most every _PUBLISH_INTERVAL_SECONDS, not every batch;
        # a flush publishes at once, so flushed spans are always reflected in hints.
        now = time.monotonic()
        if self._unpublished and (force_write or now >= self._next_publish):
            self._next_publish = now + _PUBLISH_INTERVAL_SECONDS
            agents, self._unpublished = self._unpublished, set()
            aliases, self._unpublished_aliases = self._unpublished_aliases, {}
            self._publish(agents, aliases)

    # --- learning -----------------------------------------------------------------------------

    def _learn(self, runs: list[RunRecord]) -> list[AgentDelta]:
        deltas: list[AgentDelta] = []
        for learner in self._learners:
            try:
                learned = learner.learn(runs)
            except Exception:
                self.counters.learner_errors += 1
                self._log_error(f"otel-adaptive learner {learner.name!r} failed")
                continue
            for agent_id, fields in learned.items():
                admitted = self._admit(agent_id, learner.name, fields)
                if admitted:
                    deltas.append(AgentDelta(agent_id, learner.name, admitted))
        for delta in deltas:
            self._merge_local(delta)
        return deltas

    def _admit(
        self, agent_id: str, learner: str, fields: dict[str, Mergeable]
    ) -> dict[str, Mergeable]:
        """The fields the agent's state may take: known ones, new ones while it is not full.

        Learners list a call's coarser fields (the trie's shallower nodes) first, so
        what is dropped is the finest detail. Each process checks its own mirror,
        refreshed from the store, so a fleet of P processes stores at most P times
        the bound, and in practice little more than it.
        """
        state = self._mirror(agent_id, learner)
        room = _MAX_FIELDS_PER_AGENT - len(state)
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
                self.counters.learned_fields_dropped += 1
        return admitted

    def _mirror(self, agent_id: str, learner: str) -> dict[str, Mergeable]:
        if self._private:
            # Only this process writes a private store, right after learning: it is
            # the state itself, and a second copy here would double memory and merges.
            return self._store.load_fields(agent_id, learner)
        state = self._learned.get((agent_id, learner))
        if state is None:
            try:
                state = self._store.load_fields(agent_id, learner)
            except Exception:
                self.counters.store_errors += 1
                state = {}  # the next refresh catches up with the store
            self._learned[(agent_id, learner)] = state
        return state

    def _merge_local(self, delta: AgentDelta) -> None:
        if self._private:
            return  # the store merges it when the batch is written
        state = self._mirror(delta.agent_id, delta.learner)
        for key, value in delta.fields.items():
            current = state.get(key)
            state[key] = value if current is None else current.merge(value)

    def _publish(self, agent_ids: set[str], aliases: Mapping[str, str] | None = None) -> None:
        plans: dict[str, AgentPlan] = {}
        for agent_id in agent_ids:
            trie: TrieView | None = None
            plan: ExecutionPlan | None = None
            for learner in self._learners:
                if self._private:
                    fields: Mapping[str, Mergeable] | None = self._mirror(agent_id, learner.name)
                else:
                    fields = self._learned.get((agent_id, learner.name))
                if fields is None:
                    continue
                view = learner.view(agent_id, fields)
                if isinstance(view, TrieView):
                    trie = view
                elif isinstance(view, ExecutionPlan):
                    plan = view
            plans[agent_id] = AgentPlan(agent_id=agent_id, trie=trie, plan=plan)
        self._cache.publish(plans, aliases)

    # --- writing to the store -----------------------------------------------------------------

    def _trim_buffers(self) -> None:
        """Bound what waits for the store: the oldest runs and deltas go first, counted."""
        overflow = len(self._pending_runs) - self._config.retry_buffer_runs
        for _ in range(max(overflow, 0)):
            self._pending_runs.popleft()
            self.counters.runs_dropped_buffer_full += 1
        while len(self._pending_deltas) > _MAX_PENDING_BATCHES:
            self._pending_deltas.popleft()
            self.counters.batches_dropped_buffer_full += 1

    def _write_pending(self, force: bool) -> None:
        """Write buffered runs and deltas; what cannot be written waits, within bounds."""
        if not self._pending_runs and not self._pending_deltas:
            return
        if force or time.monotonic() >= self._retry_at:
            self._try_write()
        self._trim_buffers()

    def _try_write(self) -> None:
        try:
            while self._pending_runs:
                count = min(_WRITE_CHUNK, len(self._pending_runs))
                self._store.save_runs([self._pending_runs[i] for i in range(count)])
                for _ in range(count):
                    self._pending_runs.popleft()
                self.counters.runs_stored += count
            while self._pending_deltas:
                batch_id, deltas = self._pending_deltas[0]
                if self._store.merge(batch_id, deltas):
                    self.counters.batches_merged += 1
                else:
                    self.counters.batches_deduplicated += 1
                self._pending_deltas.popleft()
        except Exception as exc:
            self.counters.store_errors += 1
            self._retry_at = time.monotonic() + self._backoff * (0.5 + random.random())
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_SECONDS)
            # An unreachable store is expected to happen: one line, no traceback.
            expected = isinstance(exc, StoreUnavailableError)
            self._log_error(
                f"otel-adaptive could not write to its store ({exc}); "
                f"{len(self._pending_runs)} runs wait, retrying in {self._backoff:.1f} s",
                traceback=not expected,
            )
            return
        self._backoff = _BACKOFF_MIN_SECONDS
        self._retry_at = 0.0

    # --- seeing what other processes learned ----------------------------------------------------

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_refresh:
            return
        if not self._store.shared and self.counters.refreshes:
            return  # a private store holds nothing the mirror does not already have
        self._next_refresh = now + self._config.refresh_interval_seconds
        self.refresh()

    def refresh(self) -> None:
        """Reload learned state from the store and republish every agent's plan."""
        agents = set(self._store.agents())
        if self._private:  # nothing to reload: the store is this process's own state
            self.counters.refreshes += 1
            self._publish(agents)
            return
        agents.update(agent for agent, _ in self._learned)
        unwritten = [delta for _, deltas in self._pending_deltas for delta in deltas]
        for agent_id in agents:
            for learner in self._learners:
                state = self._store.load_fields(agent_id, learner.name)
                self._learned[(agent_id, learner.name)] = state
        for delta in unwritten:  # ours, not yet in the store
            self._merge_local(delta)
        self.counters.refreshes += 1
        self._publish(agents)

    def _log_error(self, message: str, *, traceback: bool = True) -> None:
        # Rate-limited: a dead Redis must not flood the application's logs.
        now = time.monotonic()
        if now - self._last_error_log >= 10.0:
            self._last_error_log = now
            _logger.warning(message, exc_info=traceback)


class _BatchIds:
    """Ids unique across processes and restarts, so the store can deduplicate retries."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex
        self._seq = 0

    def next(self) -> str:
        self._seq += 1
        return f"{self._prefix}:{self._seq}"
