"""Shared pieces of the Redis store tests, importable by spawned worker processes.

``Tally`` is a tiny exact Mergeable (an int count and a bag of floats packed
as IEEE-754 doubles), so tests can check totals and bit-exact floats without
depending on what a real learner computes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from otel_adaptive.learners.base import Fields, Learner, Mergeable
from otel_adaptive.learners.trie import ANY_INDEX, PredictionTrieLearner, encode_field_key
from otel_adaptive.records import CallRecord, RunRecord
from otel_adaptive.store.base import AgentDelta
from otel_adaptive.store.redis import RedisStore

_HEADER = struct.Struct("<qI")
BASE_NS = 1_700_000_000_000_000_000
MS = 1_000_000


@dataclass(frozen=True)
class Tally:
    count: int
    samples: tuple[float, ...] = ()

    def merge(self, other: Tally) -> Tally:
        return Tally(self.count + other.count, self.samples + other.samples)

    def to_bytes(self) -> bytes:
        body = struct.pack(f"<{len(self.samples)}d", *self.samples)
        return _HEADER.pack(self.count, len(self.samples)) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> Tally:
        if len(data) < _HEADER.size:
            raise ValueError("tally: too short")
        count, n = _HEADER.unpack_from(data)
        if len(data) != _HEADER.size + 8 * n:
            raise ValueError(f"tally: expected {n} samples, got {len(data)} bytes")
        return cls(count, struct.unpack_from(f"<{n}d", data, _HEADER.size))


class TallyLearner(Learner):
    """Counts runs per agent; the field ``runs`` holds the count."""

    name: ClassVar[str] = "tally"

    def learn(self, runs: Sequence[RunRecord]) -> dict[str, dict[str, Mergeable]]:
        learned: dict[str, dict[str, Mergeable]] = {}
        for run in runs:
            fields = learned.setdefault(run.agent_id, {})
            earlier = fields.get("runs")
            fields["runs"] = Tally(1) if earlier is None else earlier.merge(Tally(1))
        return learned

    def decode_field(self, key: str, data: bytes) -> Tally:
        return Tally.from_bytes(data)

    def view(self, agent_id: str, fields: Fields) -> Any:
        return dict(fields)


def learners() -> dict[str, Learner]:
    return {TallyLearner.name: TallyLearner(), PredictionTrieLearner.name: PredictionTrieLearner()}


def tally_delta(agent_id: str, **fields: Tally) -> AgentDelta:
    return AgentDelta(agent_id=agent_id, learner=TallyLearner.name, fields=fields)


def make_run(agent_id: str, run_id: str, end_ns: int = BASE_NS, llm_calls: int = 2) -> RunRecord:
    """A run of ``llm_calls`` sequential LLM calls ending at ``end_ns``."""
    start_ns = end_ns - (llm_calls + 1) * 10 * MS
    calls = tuple(
        CallRecord(
            kind="llm",
            name="chat",
            span_id=f"{run_id}-{i}",
            parent_span_id=f"{run_id}-root",
            path=("agent",),
            start_ns=start_ns + i * 10 * MS,
            end_ns=start_ns + i * 10 * MS + 5 * MS,
            output_tokens=10 + i,
        )
        for i in range(llm_calls)
    )
    return RunRecord(
        id=run_id,
        agent_id=agent_id,
        trace_id=f"trace-{run_id}",
        start_ns=start_ns,
        end_ns=end_ns,
        calls=calls,
    )


ROOT_ANY_FIELD = encode_field_key((), ANY_INDEX)


def fleet_worker(
    url: str,
    cluster: bool,
    prefix: str,
    agent_id: str,
    worker: int,
    runs: int,
    learner_names: tuple[str, ...] = ("tally", "trie"),
) -> dict[str, int]:
    """One process of a fleet: per run, save it and merge what the learners learned."""
    configured = {name: learner for name, learner in learners().items() if name in learner_names}
    store = RedisStore.from_url(
        url,
        cluster=cluster,
        key_prefix=prefix,
        learners=configured,
        max_runs_per_agent=100_000,
        socket_timeout=5.0,
    )
    try:
        for i in range(runs):
            run = make_run(agent_id, f"w{worker}-r{i}", end_ns=BASE_NS + i * MS)
            store.save_runs([run])
            deltas = [
                AgentDelta(agent_id=agent, learner=name, fields=fields)
                for name, learner in configured.items()
                for agent, fields in learner.learn([run]).items()
            ]
            store.merge(f"w{worker}-b{i}", deltas)
        return store.stats()
    finally:
        store.close()
