"""The prediction trie: per scope path and call index, what the next LLM call looks like.

For every completed run the learner walks its LLM calls in start order. A call's
index is its 1-based position among the run's LLM calls at the same scope path
(the run's k-th call there). At every node on the call's scope path (the root
and each prefix of the path) it accumulates four metrics twice: once for the
call's index and once over all indices — a node's *subtree* aggregate. At the
node of the call's own path it accumulates them twice more, as the node's *own*
calls, so that a nested agent's calls never stand in for the outer agent's. The
accumulated values are :class:`NodeStats`, one per (path prefix, bucket, own)
field, so stores merge only the fields a batch touched. :class:`TrieView` turns
a full field set back into the trie that hints and the JSON wire format
(design §5.1) are served from.

Caps, and where they are enforced:

* call indexes above ``max_call_index`` feed only the any-index bucket (learn);
* paths are cut to :data:`MAX_PATH_DEPTH` names (learn and view);
* within one batch a node admits at most ``max_children`` distinct child names;
  a call whose path would add one more is learned down to that node only
  (learn, see ``_BatchWidthGuard``). Across batches the stored state may hold
  more, so the view keeps the ``max_children`` busiest children of each node
  (by any-index sample count, ties by name). The exporter bounds the stored
  state itself: an agent's learner keeps at most 2,048 fields, new ones beyond
  that are dropped and counted (``learned_fields_dropped``).
* name lengths are capped upstream, by the assembler.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeAlias

import msgspec

from otel_adaptive._memo import remember
from otel_adaptive.learners.base import Fields, Learner, Mergeable
from otel_adaptive.records import CallRecord, RunRecord
from otel_adaptive.stats import (
    DIGEST_BYTES,
    MAX_ENCODED_BYTES,
    MAX_EXACT_BYTES,
    RunningStats,
)

if TYPE_CHECKING:
    from otel_adaptive.config import AdaptiveConfig

#: Version string of the trie JSON envelope.
ENVELOPE_VERSION: Final = "1.0"

#: Deepest scope path the trie learns and serves (root excluded).
MAX_PATH_DEPTH: Final = 16

#: The bucket that accumulates calls of every index.
ANY_INDEX: Final = "*"

#: A field's bucket: a 1-based call index, or ``"*"`` for all indices.
Bucket: TypeAlias = int | Literal["*"]

_LEGACY_NODE_STATS_VERSION = 1  # a msgpack array of the four encodings: read, not written
_NODE_STATS_VERSION = 2  # the four lengths (u32 little-endian), then the four encodings
_NODE_LENGTHS = struct.Struct("<4I")
_NODE_FRAME_BYTES = 1 + _NODE_LENGTHS.size

#: Largest trie field while its four metrics are exact (3,401 B).
MAX_EXACT_NODE_BYTES: Final = _NODE_FRAME_BYTES + 4 * MAX_EXACT_BYTES
#: A trie field whose four metrics are digests at their centroid budget (6,921 B).
DIGEST_NODE_BYTES: Final = _NODE_FRAME_BYTES + 4 * DIGEST_BYTES
#: Largest trie field that decodes (13,321 B); anything larger is rejected as corrupt.
MAX_NODE_BYTES: Final = _NODE_FRAME_BYTES + 4 * MAX_ENCODED_BYTES
_NS_PER_MS = 1_000_000
_WEIGHT_CRITICAL = 0.5
_WEIGHT_FANOUT = 0.3
_WEIGHT_POSITION = 0.2

_KEY_DECODER = msgspec.json.Decoder(list[list[str] | int | str])
#: Third element of the key of a node's own-calls field.
_OWN_MARK: Final = "own"
_JSON_ENCODER = msgspec.json.Encoder()
_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_NODE_DECODER = msgspec.msgpack.Decoder(tuple[bytes, bytes, bytes, bytes])
#: Encoded field keys a learner remembers (all an agent may hold, with room to spare).
_KEY_CACHE_SIZE: Final = 8192


# --- field keys -----------------------------------------------------------


def encode_field_key(path: Sequence[str], bucket: Bucket, *, own: bool = False) -> str:
    """The storage key of one (path prefix, bucket) field.

    It is the compact JSON of ``[names, bucket]`` for a node's subtree aggregate
    and ``[names, bucket, "own"]`` for the calls made at exactly that path, so
    any character in a name round-trips and no two fields share a key.
    """
    if bucket != ANY_INDEX and not (
        isinstance(bucket, int) and not isinstance(bucket, bool) and bucket >= 1
    ):
        raise ValueError(f"bucket must be a positive int or {ANY_INDEX!r}, got {bucket!r}")
    parts: list[Any] = [list(path), bucket, _OWN_MARK] if own else [list(path), bucket]
    return _JSON_ENCODER.encode(parts).decode()


def decode_field_key(key: str) -> tuple[tuple[str, ...], Bucket, bool]:
    """Inverse of :func:`encode_field_key`: ``(path, bucket, own)``.

    Raises ``ValueError`` on foreign keys.
    """
    try:
        parts = _KEY_DECODER.decode(key)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a trie field key: {key!r}") from exc
    if len(parts) not in (2, 3) or not isinstance(parts[0], list):
        raise ValueError(f"not a trie field key: {key!r}")
    names, bucket = parts[0], parts[1]
    own = len(parts) == 3
    if isinstance(bucket, list) or (own and parts[2] != _OWN_MARK):
        raise ValueError(f"not a trie field key: {key!r}")
    checked: Bucket
    if isinstance(bucket, int):
        if bucket < 1:
            raise ValueError(f"not a trie field key (call index < 1): {key!r}")
        checked = bucket
    elif bucket == ANY_INDEX:
        checked = ANY_INDEX
    else:
        raise ValueError(f"not a trie field key: {key!r}")
    path = tuple(names)
    # Only the canonical spelling is accepted, so one field never has two keys.
    if encode_field_key(path, checked, own=own) != key:
        raise ValueError(f"not a canonical trie field key: {key!r}")
    return path, checked, own


# --- learned values -------------------------------------------------------


@dataclass(frozen=True)  # not slots: the remembered merge refers to values weakly
class NodeStats:
    """What one trie node learned for one bucket: four mergeable metrics."""

    remaining_calls: RunningStats
    interarrival_ms: RunningStats
    output_tokens: RunningStats
    sensitivity: RunningStats
    # The last merge made from this value: (other, result), both weakly. A process
    # sharing a store keeps two copies of what it learned, its view of the agent and its
    # own shard; while they hold the same value, each interval merges the same delta
    # into both, and the second merge is this lookup. Values never change, so the result
    # stays right; weakly, so a value kept long (an unwritten delta through an outage)
    # never keeps the values merged from it after them.
    _last_merge: tuple[weakref.ref[NodeStats], weakref.ref[NodeStats]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def empty(cls) -> NodeStats:
        blank = RunningStats.empty()
        return cls(blank, blank, blank, blank)

    def merge(self, other: NodeStats) -> NodeStats:
        last = self._last_merge
        if last is not None and last[0]() is other:
            remembered = last[1]()
            if remembered is not None:
                return remembered
        merged = NodeStats(
            self.remaining_calls.merge(other.remaining_calls),
            self.interarrival_ms.merge(other.interarrival_ms),
            self.output_tokens.merge(other.output_tokens),
            self.sensitivity.merge(other.sensitivity),
        )
        object.__setattr__(self, "_last_merge", (weakref.ref(other), weakref.ref(merged)))
        return merged

    def to_bytes(self) -> bytes:
        """Version byte, the four lengths, the four metric encodings (see ``stats``).

        At most :data:`MAX_EXACT_NODE_BYTES` while exact, about
        :data:`DIGEST_NODE_BYTES` once digests, never more than
        :data:`MAX_NODE_BYTES` (docs/storage.md).
        """
        parts = (
            self.remaining_calls.to_bytes(),
            self.interarrival_ms.to_bytes(),
            self.output_tokens.to_bytes(),
            self.sensitivity.to_bytes(),
        )
        lengths = _NODE_LENGTHS.pack(*(len(part) for part in parts))
        return b"".join((bytes((_NODE_STATS_VERSION,)), lengths, *parts))

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeStats:
        """Decode :meth:`to_bytes` output (or format 1); raises ``ValueError`` on anything else."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 2:
            raise ValueError("trie node stats: expected non-empty bytes")
        raw = bytes(data)
        if raw[0] == _NODE_STATS_VERSION:
            if len(raw) > MAX_NODE_BYTES:
                raise ValueError("trie node stats: larger than any valid field")
            parts = _split_parts(raw)
        elif raw[0] == _LEGACY_NODE_STATS_VERSION:
            try:
                parts = _NODE_DECODER.decode(raw[1:])
            except msgspec.DecodeError as exc:
                raise ValueError(f"trie node stats: {exc}") from exc
        else:
            raise ValueError(f"trie node stats: unsupported format version {raw[0]}")
        remaining, interarrival, tokens, sensitivity = (RunningStats.from_bytes(p) for p in parts)
        return cls(remaining, interarrival, tokens, sensitivity)


def _split_parts(raw: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    start = 1 + _NODE_LENGTHS.size
    if len(raw) < start:
        raise ValueError("trie node stats: header too short")
    lengths = _NODE_LENGTHS.unpack_from(raw, 1)
    if start + sum(lengths) != len(raw):
        raise ValueError("trie node stats: lengths disagree with the data")
    parts = []
    for length in lengths:
        parts.append(raw[start : start + length])
        start += length
    return parts[0], parts[1], parts[2], parts[3]


#: A (scope path, bucket) pair of a batch; bucket 0 means "past max_call_index".
_GroupKey: TypeAlias = tuple[tuple[str, ...], int]
#: A field in the making: (path prefix, bucket, own).
_FieldKey: TypeAlias = tuple[tuple[str, ...], Bucket, bool]


class _Group:
    """The samples of one batch's calls at one scope path and call-index bucket."""

    __slots__ = ("gaps", "remaining", "scores", "tokens")

    def __init__(self) -> None:
        self.remaining: list[float] = []
        self.gaps: list[float] = []  # interarrival ms: every call but a run's last
        self.tokens: list[float] = []
        self.scores: list[float] = []  # sensitivity: empty when it is off


class _AgentBatch:
    """One agent's calls in one batch, grouped by scope path and call index.

    Every field a call feeds (each prefix of its path, per bucket, own or
    subtree) receives the same samples as every other call of that path and
    index, so a call is appended once, to its group, and each field is
    summarised once at the end from the union of its groups: the moments from
    the groups' own summaries, the samples or sketch from their values. Fields
    fed by the same groups (a node and its only child, a leaf's own and subtree
    fields) share one summary, computed once.
    """

    __slots__ = ("_groups", "_guard", "_max_call_index", "_routes")

    def __init__(self, max_children: int, max_call_index: int) -> None:
        self._guard = _BatchWidthGuard(max_children)
        self._max_call_index = max_call_index
        # Path -> the prefixes it feeds and whether its own node was admitted.
        # Stable once computed: the guard only ever adds names.
        self._routes: dict[tuple[str, ...], tuple[list[tuple[str, ...]], bool]] = {}
        self._groups: dict[_GroupKey, _Group] = {}

    def add_run(self, calls: Sequence[CallRecord], scores: Sequence[float] | None) -> None:
        """Add one run's LLM calls (in start order) and their sensitivity scores."""
        groups = self._groups
        limit = self._max_call_index
        per_path: dict[tuple[str, ...], int] = {}
        last = len(calls) - 1
        for position, call in enumerate(calls):
            path = call.path
            # The run's k-th call at this scope path: frameworks that wrap every turn or
            # step in a span of its own still count 1, 2, 3 across the turns.
            index = per_path.get(path, 0) + 1
            per_path[path] = index
            key = (path, index if index <= limit else 0)
            group = groups.get(key)
            if group is None:
                if path not in self._routes:
                    self._routes[path] = self._route(path)
                group = groups[key] = _Group()
            group.remaining.append(float(last - position))
            if position < last:
                # Overlapping calls would give a negative gap: no wait before the next call.
                gap_ns = calls[position + 1].start_ns - call.end_ns
                group.gaps.append((gap_ns if gap_ns > 0 else 0) / _NS_PER_MS)
            group.tokens.append(float(call.output_tokens or 0))
            if scores is not None:
                group.scores.append(scores[position])

    def _route(self, path: tuple[str, ...]) -> tuple[list[tuple[str, ...]], bool]:
        prefixes = self._guard.prefixes(path)
        return prefixes, len(path) <= MAX_PATH_DEPTH and len(prefixes) == len(path) + 1

    def fields(self) -> dict[_FieldKey, NodeStats]:
        """Each touched field's summary, coarser fields of a call first."""
        members: dict[_FieldKey, list[_Group]] = {}
        for (path, index), group in self._groups.items():
            prefixes, own = self._routes[path]
            buckets: tuple[Bucket, ...] = (index, ANY_INDEX) if index else (ANY_INDEX,)
            for prefix in prefixes:
                for bucket in buckets:
                    members.setdefault((prefix, bucket, False), []).append(group)
            if own:
                for bucket in buckets:
                    members.setdefault((prefixes[-1], bucket, True), []).append(group)
        shared: dict[tuple[int, ...], NodeStats] = {}
        alone: dict[int, NodeStats] = {}
        result: dict[_FieldKey, NodeStats] = {}
        for key, groups in members.items():
            signature = tuple(map(id, groups))
            stats = shared.get(signature)
            if stats is None:
                stats = shared[signature] = _summarise_groups(groups, alone)
            result[key] = stats
        return result


def _summarise_groups(groups: list[_Group], alone: dict[int, NodeStats]) -> NodeStats:
    """The summary of the union of ``groups``; ``alone`` keeps each group's own, by id.

    Each group is summarised once, however many fields it feeds; a union takes its
    count, moments and extremes from its groups' summaries, and its samples or sketch
    from their values (a sketch sorts them first, so the order of groups is moot).
    """
    parts: list[NodeStats] = []
    for group in groups:
        stats = alone.get(id(group))
        if stats is None:
            stats = alone[id(group)] = NodeStats(
                RunningStats.of_floats(group.remaining),
                RunningStats.of_floats(group.gaps),
                RunningStats.of_floats(group.tokens),
                RunningStats.of_floats(group.scores),
            )
        parts.append(stats)
    if len(parts) == 1:
        return parts[0]
    union = itertools.chain.from_iterable
    return NodeStats(
        RunningStats.of_parts(
            [part.remaining_calls for part in parts], list(union(g.remaining for g in groups))
        ),
        RunningStats.of_parts(
            [part.interarrival_ms for part in parts], list(union(g.gaps for g in groups))
        ),
        RunningStats.of_parts(
            [part.output_tokens for part in parts], list(union(g.tokens for g in groups))
        ),
        RunningStats.of_parts(
            [part.sensitivity for part in parts], list(union(g.scores for g in groups))
        ),
    )


# --- per-run extraction (design §5.1) -------------------------------------


def logical_steps(calls: Sequence[CallRecord]) -> list[int]:
    """The 0-based logical step of each call (calls in start order).

    Calls whose ``[start, end)`` intervals overlap, directly or through a chain
    of overlaps, share a step; a call starting exactly when the step's last
    call ends starts a new step. Nanosecond precision, no rounding.
    """
    steps: list[int] = []
    step = -1
    step_end = 0
    for call in calls:
        if step < 0 or call.start_ns >= step_end:
            step += 1
            step_end = call.end_ns
        elif call.end_ns > step_end:
            step_end = call.end_ns
        steps.append(step)
    return steps


def latency_sensitivity_scores(
    run: RunRecord, calls: Sequence[CallRecord], parallel_weight: float = 0.0
) -> list[float]:
    """Per-call sensitivity in [0, 1] (design §5.1), min-max normalised over the run.

    ``slack`` of a call in a step of ``g > 1`` calls is how much shorter it is
    than the step's longest call: ``1 - duration / longest_duration`` (0 for the
    longest call, and 0 when every call in the step has zero duration). A call
    alone in its step has no sibling to wait for: slack 0, so parallel 0.
    """
    if not calls:
        return []
    steps = logical_steps(calls)
    # Each call's duration, each step's size and longest duration, in one pass.
    sizes = [0] * (steps[-1] + 1)
    longest = [0] * len(sizes)
    durations: list[int] = []
    # Comparisons rather than max(): this loop runs for every LLM call.
    for step, call in zip(steps, calls, strict=True):
        duration = call.end_ns - call.start_ns
        duration = duration if duration > 0 else 0
        sizes[step] += 1
        step_longest = longest[step]
        longest[step] = duration if duration > step_longest else step_longest
        durations.append(duration)
    fanout_terms, position_terms = _step_terms(len(sizes))
    run_duration = run.end_ns - run.start_ns
    raw: list[float] = []
    for step, duration in zip(steps, durations, strict=True):
        critical = 1.0
        if run_duration > 0:
            share = duration / run_duration
            # min(share, 1.0) without the call: this loop runs for every LLM call.
            critical = 1.0 if share > 1.0 else share
        size = sizes[step]
        parallel = 0.0
        if size > 1:
            step_longest = longest[step]
            slack = 1.0 - duration / step_longest if step_longest > 0 else 0.0
            parallel = (slack + (size - 1) / size) / 2.0
        # Summed in the order of the formula, so scores stay the same to the last bit.
        raw.append(
            _WEIGHT_CRITICAL * critical
            + fanout_terms[step]
            + position_terms[step]
            - parallel_weight * parallel
        )
    low, high = min(raw), max(raw)
    spread = high - low
    if spread > 0:
        return [(value - low) / spread for value in raw]
    return [0.5] * len(raw)


@functools.lru_cache(maxsize=256)
def _step_terms(step_count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The weighted fanout and position terms of each step (they depend on the step only)."""
    if step_count == 1:
        return (_WEIGHT_FANOUT * 0.0,), (_WEIGHT_POSITION * 1.0,)
    last = step_count - 1
    fanout = tuple(_WEIGHT_FANOUT * ((last - step) / last) for step in range(step_count))
    position = []
    for step in range(step_count):
        relative = step / last
        position.append(_WEIGHT_POSITION * max(1.0 - relative, relative))
    return fanout, tuple(position)


class _BatchWidthGuard:
    """Admits at most ``max_children`` distinct child names per node in one batch."""

    __slots__ = ("_children", "_max_children")

    def __init__(self, max_children: int) -> None:
        self._max_children = max_children
        self._children: dict[tuple[str, ...], set[str]] = {}

    def prefixes(self, path: Sequence[str]) -> list[tuple[str, ...]]:
        """The node prefixes a call on ``path`` feeds: the root, then each admitted level."""
        names = tuple(path[:MAX_PATH_DEPTH])
        prefixes: list[tuple[str, ...]] = [()]
        for depth, name in enumerate(names):
            parent = names[:depth]
            seen = self._children.setdefault(parent, set())
            if name not in seen:
                if len(seen) >= self._max_children:
                    break
                seen.add(name)
            prefixes.append(names[: depth + 1])
        return prefixes


# --- the view -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One metric of a prediction, as in the wire format's ``m`` object."""

    sample_count: int
    mean: float
    p50: float
    p90: float
    p95: float

    @classmethod
    def of(cls, stats: RunningStats) -> MetricSummary:
        summary = stats.summary()
        return cls(
            summary["sample_count"],
            summary["mean"],
            summary["p50"],
            summary["p90"],
            summary["p95"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_count": self.sample_count,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
        }


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the trie predicts for an LLM call at one node and bucket."""

    remaining_calls: MetricSummary
    interarrival_ms: MetricSummary
    output_tokens: MetricSummary
    latency_sensitivity: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "remaining_calls": self.remaining_calls.to_dict(),
            "interarrival_ms": self.interarrival_ms.to_dict(),
            "output_tokens": self.output_tokens.to_dict(),
            "latency_sensitivity": self.latency_sensitivity,
        }


@dataclass(frozen=True, slots=True)
class TrieMatch:
    """A lookup's answer and the depth of the node that gave it (0 = root)."""

    prediction: Prediction
    depth: int


def sensitivity_level(mean_sensitivity: float, scale: int) -> int:
    """``clamp(round(mean * (scale - 1)) + 1, 1, scale)`` with halves rounded up.

    Half-up (like Rust's ``f64::round`` on these non-negative values), not
    Python's round-half-to-even: a mean of 0.625 on scale 5 gives level 4, not 3.
    """
    scaled = mean_sensitivity * (scale - 1)
    level = math.floor(scaled)
    if scaled - level >= 0.5:
        level += 1
    return min(max(level + 1, 1), scale)


def _predict(stats: NodeStats, scale: int) -> Prediction | None:
    if stats.remaining_calls.count == 0:
        return None
    level = None
    if stats.sensitivity.count:
        level = sensitivity_level(stats.sensitivity.mean, scale)
    return Prediction(
        remaining_calls=MetricSummary.of(stats.remaining_calls),
        interarrival_ms=MetricSummary.of(stats.interarrival_ms),
        output_tokens=MetricSummary.of(stats.output_tokens),
        latency_sensitivity=level,
    )


class _ViewNode:
    __slots__ = ("any_index", "by_index", "children", "name", "own_any_index", "own_by_index")

    def __init__(self, name: str) -> None:
        self.name = name
        self.children: dict[str, _ViewNode] = {}
        # Every call at or beneath this node (the subtree aggregate) ...
        self.by_index: dict[int, TrieMatch] = {}
        self.any_index: TrieMatch | None = None
        # ... and only the calls made at exactly this node's path.
        self.own_by_index: dict[int, TrieMatch] = {}
        self.own_any_index: TrieMatch | None = None

    def own(self, call_index: int) -> TrieMatch | None:
        found = self.own_by_index.get(call_index)
        return found if found is not None else self.own_any_index

    def weight(self) -> int:
        if self.any_index is not None:
            return self.any_index.prediction.remaining_calls.sample_count
        return sum(m.prediction.remaining_calls.sample_count for m in self.by_index.values())

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "children": {name: child.to_wire() for name, child in self.children.items()},
            "predictions_by_call_index": {
                str(index): self.by_index[index].prediction.to_dict()
                for index in sorted(self.by_index)
            },
            "predictions_any_index": (
                self.any_index.prediction.to_dict() if self.any_index is not None else None
            ),
            "own_predictions_by_call_index": {
                str(index): self.own_by_index[index].prediction.to_dict()
                for index in sorted(self.own_by_index)
            },
            "own_predictions_any_index": (
                self.own_any_index.prediction.to_dict() if self.own_any_index is not None else None
            ),
        }


class TrieView:
    """An immutable, lookup-ready trie for one agent."""

    __slots__ = ("_agent_id", "_root")

    def __init__(self, agent_id: str, root: _ViewNode) -> None:
        # Built by PredictionTrieLearner.view; never mutated afterwards.
        self._agent_id = agent_id
        self._root = root

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def is_empty(self) -> bool:
        """True when no LLM call has been learned."""
        root = self._root
        return root.any_index is None and not root.by_index and not root.children

    def match(self, path: Sequence[str], call_index: int) -> TrieMatch | None:
        """What the trie predicts for the ``call_index``-th call at ``path``.

        The deepest node on ``path`` answers from the calls made at exactly its
        path first (the exact call index, then any index). Only when it has none
        does a subtree aggregate answer: at each node from the root along
        ``path`` the exact call-index aggregate wins over the any-index one, and
        the deepest node that had either answers. None when no node had one.
        """
        node = self._root
        best = node.by_index.get(call_index)
        if best is None:
            best = node.any_index
        for name in path:
            child = node.children.get(name)
            if child is None:
                break
            node = child
            found = node.by_index.get(call_index)
            if found is None:
                found = node.any_index
            if found is not None:
                best = found
        own = node.own(call_index)
        return own if own is not None else best

    def lookup(self, path: Sequence[str], call_index: int) -> Prediction | None:
        """Like :meth:`match`, without the depth."""
        found = self.match(path, call_index)
        return found.prediction if found is not None else None

    def root_any(self) -> Prediction | None:
        """The root's any-index prediction (the fallback for hints)."""
        found = self._root.any_index
        return found.prediction if found is not None else None

    def envelope(self, generated_at: datetime | None = None) -> dict[str, Any]:
        """The trie in the design §5.1 JSON wire format.

        A naive ``generated_at`` is taken as UTC; default: now.
        """
        moment = generated_at if generated_at is not None else datetime.now(timezone.utc)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return {
            "version": ENVELOPE_VERSION,
            "generated_at": moment.isoformat(),
            "workflow_name": self._agent_id,
            "root": self._root.to_wire(),
        }


# --- the learner ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CachedField:
    value: Mergeable
    path: tuple[str, ...]
    bucket: Bucket
    own: bool
    prediction: Prediction | None


class PredictionTrieLearner(Learner):
    """Learns the prediction trie (design §5.1) from completed runs."""

    name: ClassVar[str] = "trie"

    @classmethod
    def options_from(cls, config: AdaptiveConfig) -> dict[str, Any]:
        return {
            "sensitivity": config.sensitivity,
            "parallel_weight": config.parallel_weight,
            "scale": config.sensitivity_scale,
        }

    def __init__(
        self,
        *,
        sensitivity: bool = True,
        parallel_weight: float = 0.0,
        scale: int = 5,
        max_call_index: int = 32,
        max_children: int = 256,
    ) -> None:
        if not math.isfinite(parallel_weight):
            raise ValueError(f"parallel_weight must be finite, got {parallel_weight!r}")
        for label, value, lowest in (
            ("scale", scale, 2),
            ("max_call_index", max_call_index, 1),
            ("max_children", max_children, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{label} must be an int >= {lowest}, got {value!r}")
        self._sensitivity = sensitivity
        self._parallel_weight = float(parallel_weight)
        self._scale = scale
        self._max_call_index = max_call_index
        self._max_children = max_children
        # Per agent: field key -> decoded key and prediction, reused while the
        # stored value is the very same object (views are rebuilt every batch).
        self._field_cache: dict[str, dict[str, _CachedField]] = {}
        self._key_cache: dict[_FieldKey, str] = {}

    @property
    def scale(self) -> int:
        return self._scale

    def learn(self, runs: Sequence[RunRecord]) -> dict[str, dict[str, Mergeable]]:
        batches: dict[str, _AgentBatch] = {}
        for run in runs:
            calls = run.llm_calls()
            if not calls:
                continue
            batch = batches.get(run.agent_id)
            if batch is None:
                batch = batches[run.agent_id] = _AgentBatch(
                    self._max_children, self._max_call_index
                )
            scores = (
                latency_sensitivity_scores(run, calls, self._parallel_weight)
                if self._sensitivity
                else None
            )
            batch.add_run(calls, scores)
        return {
            agent_id: {self._field_key(key): stats for key, stats in batch.fields().items()}
            for agent_id, batch in batches.items()
        }

    def _field_key(self, key: _FieldKey) -> str:
        # The same few keys come back every batch: encode each once.
        cache = self._key_cache
        encoded = cache.get(key)
        if encoded is None:
            encoded = encode_field_key(key[0], key[1], own=key[2])
            # Paths are capped in depth upstream: every key is small enough to keep.
            remember(cache, key, encoded, small=True, capacity=_KEY_CACHE_SIZE)
        return encoded

    def decode_field(self, key: str, data: bytes) -> NodeStats:
        decode_field_key(key)
        return NodeStats.from_bytes(data)

    def view(self, agent_id: str, fields: Fields) -> TrieView:
        """Build the agent's immutable trie from its full field set.

        Predictions of fields whose value is the very object seen last time are
        reused. The cache only saves work: entries are checked by identity and
        each per-agent map is replaced whole, so concurrent callers stay correct.
        """
        previous = self._field_cache.get(agent_id, {})
        current: dict[str, _CachedField] = {}
        # Fields fed by the same calls share one value: one prediction for all of them.
        predicted: dict[int, Prediction | None] = {}
        for key, value in fields.items():
            cached = previous.get(key)
            if cached is None or cached.value is not value:
                if not isinstance(value, NodeStats):
                    raise TypeError(f"trie field {key!r} holds {type(value).__name__}")
                if id(value) in predicted:
                    prediction = predicted[id(value)]
                else:
                    prediction = predicted[id(value)] = _predict(value, self._scale)
                if cached is None:
                    path, bucket, own = decode_field_key(key)
                else:  # the same key: its decoded parts are those seen last time
                    path, bucket, own = cached.path, cached.bucket, cached.own
                cached = _CachedField(value, path, bucket, own, prediction)
            current[key] = cached
        self._field_cache[agent_id] = current
        return TrieView(agent_id, self._build_tree(current.values()))

    def document(self, agent_id: str, fields: Fields) -> dict[str, Any] | None:
        """The trie's JSON wire format (design §5.1); None before any LLM call."""
        return self.envelope(agent_id, fields)

    def envelope(
        self, agent_id: str, fields: Fields, generated_at: datetime | None = None
    ) -> dict[str, Any] | None:
        """The agent's trie in the wire format; None when no LLM call was learned."""
        trie = self.view(agent_id, fields)
        return None if trie.is_empty else trie.envelope(generated_at)

    def _build_tree(self, entries: Iterable[_CachedField]) -> _ViewNode:
        root = _ViewNode("root")
        for entry in entries:
            if entry.prediction is None or len(entry.path) > MAX_PATH_DEPTH:
                continue
            node = root
            for name in entry.path:
                child = node.children.get(name)
                if child is None:
                    child = node.children[name] = _ViewNode(name)
                node = child
            found = TrieMatch(entry.prediction, len(entry.path))
            if entry.own:
                if isinstance(entry.bucket, int):
                    node.own_by_index[entry.bucket] = found
                else:
                    node.own_any_index = found
            elif isinstance(entry.bucket, int):
                node.by_index[entry.bucket] = found
            else:
                node.any_index = found
        self._cap_children(root)
        return root

    def _cap_children(self, root: _ViewNode) -> None:
        pending = [root]
        while pending:
            node = pending.pop()
            if len(node.children) > self._max_children:
                ranked = sorted(node.children.values(), key=lambda c: (-c.weight(), c.name))
                node.children = {c.name: c for c in ranked[: self._max_children]}
            pending.extend(node.children.values())


# --- wire-format validation -----------------------------------------------

_ENVELOPE_KEYS = frozenset({"version", "generated_at", "workflow_name", "root"})
_NODE_KEYS = frozenset({"name", "children", "predictions_by_call_index", "predictions_any_index"})
#: Node keys added after version 1.0 was first published: optional for readers.
_OPTIONAL_NODE_KEYS = frozenset({"own_predictions_by_call_index", "own_predictions_any_index"})
_PREDICTION_KEYS = ("remaining_calls", "interarrival_ms", "output_tokens", "latency_sensitivity")
_METRIC_KEYS = ("sample_count", "mean", "p50", "p90", "p95")
_CALL_INDEX = re.compile(r"[1-9][0-9]*")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))"
)


def validate_envelope(obj: Any) -> None:
    """Check ``obj`` against the trie wire format; ``ValueError`` names the first problem."""
    _check_keys(obj, _ENVELOPE_KEYS, "envelope")
    if obj["version"] != ENVELOPE_VERSION:
        raise ValueError(f"envelope.version: expected {ENVELOPE_VERSION!r}, got {obj['version']!r}")
    _check_timestamp(obj["generated_at"], "envelope.generated_at")
    if not isinstance(obj["workflow_name"], str):
        raise ValueError("envelope.workflow_name: expected a string")
    # Iterative walk: a hostile document must not exhaust the recursion limit.
    pending: list[tuple[Any, str, str]] = [(obj["root"], "root", "root")]
    while pending:
        node, where, expected_name = pending.pop()
        _check_keys(node, _NODE_KEYS, where, optional=_OPTIONAL_NODE_KEYS)
        if node["name"] != expected_name:
            raise ValueError(f"{where}.name: expected {expected_name!r}, got {node['name']!r}")
        for prefix in ("", "own_"):
            by_key, any_key = f"{prefix}predictions_by_call_index", f"{prefix}predictions_any_index"
            if by_key not in node and any_key not in node:
                continue
            if (by_key in node) != (any_key in node):
                raise ValueError(f"{where}: {by_key!r} and {any_key!r} come together")
            _check_predictions(node[by_key], node[any_key], f"{where}.{by_key}", where, any_key)
        children = node["children"]
        if not isinstance(children, dict):
            raise ValueError(f"{where}.children: expected an object")
        for name, child in children.items():
            if not isinstance(name, str):
                raise ValueError(f"{where}.children: keys must be strings")
            pending.append((child, f"{where}.children[{name!r}]", name))


def _check_predictions(
    by_index: Any, any_index: Any, by_label: str, where: str, any_key: str
) -> None:
    if not isinstance(by_index, dict):
        raise ValueError(f"{by_label}: expected an object")
    for index, prediction in by_index.items():
        label = f"{by_label}[{index!r}]"
        if not isinstance(index, str) or not _CALL_INDEX.fullmatch(index):
            raise ValueError(f"{label}: key must be a positive integer in decimal")
        _check_prediction(prediction, label)
    if any_index is not None:
        _check_prediction(any_index, f"{where}.{any_key}")


def _check_keys(
    obj: Any, expected: frozenset[str], where: str, optional: frozenset[str] = frozenset()
) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    for key in sorted(expected, key=str):
        if key not in obj:
            raise ValueError(f"{where}: missing key {key!r}")
    for key in obj:
        if key not in expected and key not in optional:
            raise ValueError(f"{where}: unexpected key {key!r}")


def _check_prediction(prediction: Any, where: str) -> None:
    _check_keys(prediction, frozenset(_PREDICTION_KEYS), where)
    for metric_name in _PREDICTION_KEYS[:3]:
        metric = prediction[metric_name]
        label = f"{where}.{metric_name}"
        _check_keys(metric, frozenset(_METRIC_KEYS), label)
        count = metric["sample_count"]
        if not _is_int(count) or count < 0:
            raise ValueError(f"{label}.sample_count: expected a non-negative integer")
        for stat in _METRIC_KEYS[1:]:
            value = metric[stat]
            if not _is_number(value):
                raise ValueError(f"{label}.{stat}: expected a finite number, got {value!r}")
    level = prediction["latency_sensitivity"]
    if level is not None and (not _is_int(level) or level < 1):
        raise ValueError(f"{where}.latency_sensitivity: expected null or an integer >= 1")


def _check_timestamp(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an RFC 3339 string")
    found = _RFC3339.fullmatch(value)
    if found is None:
        raise ValueError(f"{where}: not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    offset_hours = int(found.group(7) or 0)
    offset_minutes = int(found.group(8) or 0)
    try:
        # RFC 3339 allows a leap second (60); datetime does not.
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError as exc:
        raise ValueError(f"{where}: not an RFC 3339 timestamp: {value!r}") from exc
    if second > 60 or offset_hours > 23 or offset_minutes > 59:
        raise ValueError(f"{where}: not an RFC 3339 timestamp: {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


__all__ = [
    "ANY_INDEX",
    "DIGEST_NODE_BYTES",
    "ENVELOPE_VERSION",
    "MAX_EXACT_NODE_BYTES",
    "MAX_NODE_BYTES",
    "MAX_PATH_DEPTH",
    "Bucket",
    "MetricSummary",
    "NodeStats",
    "Prediction",
    "PredictionTrieLearner",
    "TrieMatch",
    "TrieView",
    "decode_field_key",
    "encode_field_key",
    "latency_sensitivity_scores",
    "logical_steps",
    "sensitivity_level",
    "validate_envelope",
]
