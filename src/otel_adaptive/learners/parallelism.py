"""Tool parallelism: which tools an agent runs at the same time.

Within one run, tool calls whose ``[start, end)`` intervals overlap form a
*cohort*. Only maximal cohorts are kept, so a fan-out of four tools is one
group of four rather than the chain of its prefixes. Each distinct cohort is a
parallel group identified by a hash of its sorted tool names; per agent we
count the runs observed and, per group, the runs in which it was seen
(*support*), so consumers can ignore groups that were rare coincidences.

Decisions worth knowing:

* Cohorts are **multisets** of names: two concurrent calls of ``search`` form
  the group ``("search", "search")``, which tells a consumer that the tool is
  safe to fan out against itself.
* Intervals are half-open: a call ending exactly when another starts does not
  overlap it, and a call with no duration (or a corrupt negative one) overlaps
  nothing, since it has no extent to share.
* A cohort is dropped when a strictly larger cohort of the same run contains
  its names (multiset containment), whether or not the calls are the same.
* Cohorts with more than ``max_group_size`` calls are not recorded: they bound
  the work per run and the size of a stored field, and such a wide fan-out is
  not a useful hint.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import msgspec

from otel_adaptive.learners.base import Fields, Learner, Mergeable
from otel_adaptive.records import CallRecord, RunRecord

_log = logging.getLogger(__name__)

#: Field key holding how many runs of the agent were observed.
RUNS_FIELD = "runs"
#: Prefix of every parallel group id (and of its field key).
GROUP_ID_PREFIX = "fanout:"
#: Hex characters of the sha256 digest kept in a group id (48 bits).
_GROUP_ID_HEX_CHARS = 12
#: Version of the stored field encoding; bumped on incompatible changes.
FIELD_SCHEMA_VERSION = 1
#: Version of the :meth:`ExecutionPlan.to_dict` layout.
PLAN_SCHEMA_VERSION = 1

_MIN_GROUP_SIZE = 2
_DEFAULT_MAX_GROUP_SIZE = 32


def group_id_for(tool_names: Iterable[str]) -> str:
    """The parallel group id of a cohort: ``"fanout:"`` + 12 hex of sha256 of the sorted names."""
    joined = "|".join(sorted(tool_names))
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()
    return GROUP_ID_PREFIX + digest[:_GROUP_ID_HEX_CHARS]


# --------------------------------------------------------------------------- cohorts


def find_cohorts(
    tool_calls: Iterable[CallRecord], max_group_size: int = _DEFAULT_MAX_GROUP_SIZE
) -> tuple[tuple[str, ...], ...]:
    """Distinct maximal cohorts of one run's tool calls, as sorted name tuples.

    The result is sorted, has no cohort that is a strict sub-multiset of
    another, and every pair of overlapping calls appears together in at least
    one cohort (unless their cohort exceeds ``max_group_size``).
    """
    cliques = _maximal_call_cliques(tool_calls, max_group_size)
    if len(cliques) <= 1:
        return tuple(cliques)  # nothing to contain, nothing to sort
    return _drop_contained(set(cliques))


def _maximal_call_cliques(
    tool_calls: Iterable[CallRecord], max_group_size: int
) -> list[tuple[str, ...]]:
    """Names of each maximal set of mutually overlapping calls (an interval-graph clique).

    Sweeping calls in start order, the active set only grows until some call
    ends; the set just before the first end after a growth is a maximal clique.
    A heap keyed by end time keeps the sweep O(n log n) on wide fan-outs.
    """
    calls = sorted(
        (c for c in tool_calls if c.end_ns > c.start_ns), key=lambda c: (c.start_ns, c.end_ns)
    )
    cliques: list[tuple[str, ...]] = []
    if len(calls) < _MIN_GROUP_SIZE:
        return cliques
    # The heap holds exactly the active calls, so their names are the clique's names.
    active: list[tuple[int, int, str]] = []  # (end_ns, sequence, name)
    grown_since_last_end = False

    def emit() -> None:
        if _MIN_GROUP_SIZE <= len(active) <= max_group_size:
            cliques.append(tuple(sorted([entry[2] for entry in active])))

    for sequence, call in enumerate(calls):
        start = call.start_ns
        if active and active[0][0] <= start:
            if grown_since_last_end:
                emit()
                grown_since_last_end = False
            while active and active[0][0] <= start:
                heapq.heappop(active)
        heapq.heappush(active, (call.end_ns, sequence, call.name))
        grown_since_last_end = True
    if grown_since_last_end:
        emit()
    return cliques


def _drop_contained(cohorts: set[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    """Keep the cohorts whose names are not a strict sub-multiset of another's."""
    # Cohorts are distinct, so a sub-multiset of another is strictly smaller:
    # only larger cohorts sharing every name need checking, found through an
    # index from name to the cohorts holding it (keeps long runs near-linear).
    by_size = sorted(cohorts, key=lambda names: (-len(names), names))
    counted = [Counter(names) for names in by_size]
    holders: dict[str, set[int]] = {}
    kept: list[tuple[str, ...]] = []
    for index, candidate in enumerate(counted):
        sharing = set.intersection(*(holders.get(name, set()) for name in candidate))
        if not any(_is_sub_multiset(candidate, counted[other]) for other in sharing):
            kept.append(by_size[index])
        for name in candidate:
            holders.setdefault(name, set()).add(index)
    return tuple(sorted(kept))


def _is_sub_multiset(small: Counter[str], big: Counter[str]) -> bool:
    return all(big[name] >= count for name, count in small.items())


# --------------------------------------------------------------------------- stored fields


class _RunsWire(msgspec.Struct, frozen=True):
    v: int
    runs: int


class _GroupWire(msgspec.Struct, frozen=True):
    v: int
    tools: tuple[str, ...]
    support: int


# A count beyond this is bad data, not a fleet's history (and floats stop being exact).
_MAX_COUNT = 2**53
_ENCODER = msgspec.json.Encoder()
_RUNS_DECODER = msgspec.json.Decoder(_RunsWire)
_GROUP_DECODER = msgspec.json.Decoder(_GroupWire)


class RunsObserved(msgspec.Struct, frozen=True):
    """How many runs of an agent were observed (with or without tool calls)."""

    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.count <= _MAX_COUNT:
            raise ValueError(f"runs observed must be from 0 to {_MAX_COUNT}, got {self.count}")

    def merge(self, other: RunsObserved) -> RunsObserved:
        return RunsObserved(self.count + other.count)

    def to_bytes(self) -> bytes:
        return _ENCODER.encode(_RunsWire(v=FIELD_SCHEMA_VERSION, runs=self.count))


class GroupSupport(msgspec.Struct, frozen=True):
    """One parallel group: its sorted tool names and the runs it was seen in."""

    tool_names: tuple[str, ...]
    support: int

    def __post_init__(self) -> None:
        if len(self.tool_names) < _MIN_GROUP_SIZE:
            raise ValueError(f"a parallel group needs >= 2 tools, got {self.tool_names!r}")
        if list(self.tool_names) != sorted(self.tool_names):
            raise ValueError(f"tool names must be sorted, got {self.tool_names!r}")
        if not 0 <= self.support <= _MAX_COUNT:
            raise ValueError(f"support must be from 0 to {_MAX_COUNT}, got {self.support}")

    @property
    def group_id(self) -> str:
        return group_id_for(self.tool_names)

    def merge(self, other: GroupSupport) -> GroupSupport:
        if other.tool_names != self.tool_names:
            # Same id, different names: a hash collision or bad data. The other
            # value's counts belong to another group, so adding them would
            # overstate this one; keep the first and carry on.
            _log.warning(
                "parallel group %s: tool names disagree (%r vs %r); keeping the first",
                self.group_id,
                self.tool_names,
                other.tool_names,
            )
            return self
        return GroupSupport(self.tool_names, self.support + other.support)

    def to_bytes(self) -> bytes:
        return _ENCODER.encode(
            _GroupWire(v=FIELD_SCHEMA_VERSION, tools=self.tool_names, support=self.support)
        )


def _decode_runs(data: bytes) -> RunsObserved:
    wire = _RUNS_DECODER.decode(data)
    _check_version(wire.v)
    return RunsObserved(wire.runs)


def _decode_group(key: str, data: bytes) -> GroupSupport:
    wire = _GROUP_DECODER.decode(data)
    _check_version(wire.v)
    value = GroupSupport(wire.tools, wire.support)
    if value.group_id != key:
        raise ValueError(f"tool names {wire.tools!r} do not hash to the field's group id")
    return value


def _check_version(version: int) -> None:
    if version != FIELD_SCHEMA_VERSION:
        raise ValueError(f"unsupported field schema version {version}")


# --------------------------------------------------------------------------- view


@dataclass(frozen=True)
class ParallelGroup:
    """Tools seen running together, and in how many of the observed runs."""

    group_id: str
    tool_names: tuple[str, ...]
    support: int
    runs_observed: int

    @property
    def support_ratio(self) -> float:
        """Share of the agent's observed runs that showed this group (0.0 with no runs)."""
        if self.runs_observed <= 0:
            return 0.0
        return self.support / self.runs_observed


@dataclass(frozen=True)
class ExecutionPlan:
    """An agent's learned parallel groups, most frequently seen first."""

    agent_id: str
    runs_observed: int = 0
    groups: tuple[ParallelGroup, ...] = field(default=())

    @cached_property
    def _membership(self) -> dict[str, tuple[ParallelGroup, ...]]:
        members: dict[str, list[ParallelGroup]] = {}
        for group in self.groups:
            for name in dict.fromkeys(group.tool_names):
                members.setdefault(name, []).append(group)
        return {name: tuple(groups) for name, groups in members.items()}

    def parallel_hints(self) -> dict[str, tuple[str, ...]]:
        """Tool name -> ids of the groups it belongs to (in plan order)."""
        return {
            name: tuple(group.group_id for group in groups)
            for name, groups in self._membership.items()
        }

    def groups_for(self, tool_name: str) -> tuple[ParallelGroup, ...]:
        """Groups that include ``tool_name`` (empty if none)."""
        return self._membership.get(tool_name, ())

    def groups_with_support(self, min_ratio: float) -> tuple[ParallelGroup, ...]:
        """Groups seen in at least ``min_ratio`` of the observed runs."""
        if math.isnan(min_ratio):
            raise ValueError("min_ratio must be a number, got nan")
        return tuple(group for group in self.groups if group.support_ratio >= min_ratio)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``support_ratio`` is included for readers and ignored on load."""
        return {
            "version": PLAN_SCHEMA_VERSION,
            "agent_id": self.agent_id,
            "runs_observed": self.runs_observed,
            "groups": [
                {
                    "group_id": group.group_id,
                    "tool_names": list(group.tool_names),
                    "support": group.support,
                    "support_ratio": group.support_ratio,
                }
                for group in self.groups
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionPlan:
        """Rebuild a plan written by :meth:`to_dict`; ``ValueError`` on malformed input."""
        version = data.get("version", PLAN_SCHEMA_VERSION)
        if version != PLAN_SCHEMA_VERSION:
            raise ValueError(f"unsupported execution plan version {version!r}")
        agent_id = _require(data, "agent_id", str)
        runs_observed = _require_count(data, "runs_observed")
        raw_groups = _require(data, "groups", list)
        groups: list[ParallelGroup] = []
        for raw in raw_groups:
            if not isinstance(raw, Mapping):
                raise ValueError(f"each group must be an object, got {raw!r}")
            names = _require(raw, "tool_names", list)
            if not all(isinstance(name, str) for name in names):
                raise ValueError(f"tool_names must be strings, got {names!r}")
            groups.append(
                ParallelGroup(
                    group_id=_require(raw, "group_id", str),
                    tool_names=tuple(names),
                    support=_require_count(raw, "support"),
                    runs_observed=runs_observed,
                )
            )
        return cls(agent_id, runs_observed, _in_plan_order(groups))


def _require(data: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    if key not in data:
        raise ValueError(f"missing {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise ValueError(f"{key!r} must be {kind.__name__}, got {value!r}")
    return value


def _require_count(data: Mapping[str, Any], key: str) -> int:
    value = _require(data, key, int)
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"{key!r} must be a non-negative integer, got {value!r}")
    return int(value)


def _in_plan_order(groups: Iterable[ParallelGroup]) -> tuple[ParallelGroup, ...]:
    return tuple(sorted(groups, key=lambda group: (-group.support, group.group_id)))


# --------------------------------------------------------------------------- learner


class ToolParallelismLearner(Learner):
    """Learns per-agent parallel tool groups and their support across runs."""

    name: ClassVar[str] = "tool_parallelism"

    def __init__(self, max_group_size: int = _DEFAULT_MAX_GROUP_SIZE) -> None:
        if max_group_size < _MIN_GROUP_SIZE:
            raise ValueError(f"max_group_size must be >= 2, got {max_group_size}")
        self._max_group_size = max_group_size

    @property
    def max_group_size(self) -> int:
        return self._max_group_size

    def learn(self, runs: Sequence[RunRecord]) -> dict[str, dict[str, Mergeable]]:
        runs_per_agent: Counter[str] = Counter()
        support: dict[str, Counter[tuple[str, ...]]] = {}
        for run in runs:
            agent_id = run.agent_id
            runs_per_agent[agent_id] += 1
            agent_support = support.get(agent_id)
            if agent_support is None:
                agent_support = support[agent_id] = Counter()
            # find_cohorts sorts the calls and keeps those with an extent itself, and
            # returns distinct cohorts, so each counts once per run.
            tools = [c for c in run.calls if c.kind == "tool"]
            agent_support.update(find_cohorts(tools, self._max_group_size))

        deltas: dict[str, dict[str, Mergeable]] = {}
        for agent_id, run_count in runs_per_agent.items():
            fields: dict[str, Mergeable] = {RUNS_FIELD: RunsObserved(run_count)}
            for names, seen in support[agent_id].items():
                value = GroupSupport(names, seen)
                key = value.group_id
                existing = fields.get(key)
                fields[key] = existing.merge(value) if isinstance(existing, GroupSupport) else value
            deltas[agent_id] = fields
        return deltas

    def decode_field(self, key: str, data: bytes) -> Mergeable:
        try:
            if key == RUNS_FIELD:
                return _decode_runs(data)
            if key.startswith(GROUP_ID_PREFIX):
                return _decode_group(key, data)
        except ValueError as exc:
            raise ValueError(f"{self.name}: corrupt field {key!r}: {exc}") from exc
        raise ValueError(f"{self.name}: unknown field key {key!r}")

    def view(self, agent_id: str, fields: Fields) -> ExecutionPlan:
        runs = fields.get(RUNS_FIELD)
        runs_observed = runs.count if isinstance(runs, RunsObserved) else 0
        groups = [
            ParallelGroup(key, value.tool_names, value.support, runs_observed)
            for key, value in fields.items()
            if isinstance(value, GroupSupport)
        ]
        return ExecutionPlan(agent_id, runs_observed, _in_plan_order(groups))
