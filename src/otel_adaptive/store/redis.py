"""A :class:`~otel_adaptive.store.base.Store` backed by Redis or Redis Cluster.

Every key of one agent carries the hash tag ``{<agent>}``, so all of an agent's
writes are single atomic Lua scripts on one cluster slot. Each process merges
learned state into its own shard: values are merged in Python from what it knows
it wrote, and one script writes them if the batch ids are new and its writer
entry still holds the stamp of its last write; otherwise the reply carries the
current values, so a retry costs one more round trip. The key layout is
documented in ``docs/storage.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, Union
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import SSLConnection
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from otel_adaptive.learners.base import Learner, Mergeable
from otel_adaptive.records import (
    RUN_SCHEMA_VERSION,
    RunFormatError,
    RunRecord,
    decode_run,
    encode_run,
)
from otel_adaptive.redaction import Redactor, mask_url, url_secrets
from otel_adaptive.store import _redis_lua
from otel_adaptive.store.base import AgentDelta, Store, StoreUnavailableError

_log = logging.getLogger(__name__)

#: Version of the Redis key layout, stored in each agent's meta hash.
STORE_SCHEMA_VERSION = 1

BadDataMode = Literal["ignore", "replace"]
RedisClient: TypeAlias = Union["redis.Redis", RedisCluster]

# Applied batch ids kept per agent; a retried batch older than this many newer
# batches would be applied again, far beyond any exporter retry window.
_BATCH_IDS_KEPT = 10_000
#: Agents whose versions are asked for in one pipeline (bounded replies per round trip).
_VERSIONS_PER_PIPELINE = 1000
_MAX_MERGE_ATTEMPTS = 100
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
# Replies and failures that mean "the slot moved or its node is changing", not bad data.
_TRANSIENT_REPLIES = (TryAgainError, ClusterDownError)
_REDIRECT_REPLIES = (AskError, *_TRANSIENT_REPLIES)  # MovedError is an AskError
_NODE_TROUBLE = (RedisConnectionError, RedisTimeoutError, OSError)
# The registry is re-sent at least this often, in case it was lost without this
# process seeing any error (a flush of the registry's node only).
_REGISTRY_RECHECK_SECONDS = 60.0
# Learned state is read back in steps of this many fields, this many bytes per
# call; a larger value, or an agent larger than this, is reported and skipped.
_SCAN_COUNT = 128
_MAX_CALL_BYTES = 4 << 20
_MAX_VALUE_BYTES = 1 << 20
_MAX_AGENT_BYTES = 64 << 20
_MAX_AGENT_FIELDS = 65_536
_MAX_WRITERS_LISTED = 1024
# Fields moved per fold step (one atomic script call each).
_FOLD_CHUNK = 200
# A writer that has not merged for this long has stopped: its shard is folded
# into the base by the next reader.
_WRITER_IDLE_SECONDS = 600.0
# Agents whose shard content this process keeps decoded (least recently written go).
_OWN_AGENTS_CACHED = 4096
# Agents remembered as (maybe) written by this writer. Past it, every agent counts as
# maybe written: a shard then is never taken for empty, at the price of one read.
_WRITTEN_AGENTS_REMEMBERED = 65536
# How long cluster calls follow redirects and wait for a node before giving up.
_REDIRECT_DEADLINE_SECONDS = 2.0

_REASON_TEXT = {
    "wrong_type": "holds a value of the wrong type ({detail})",
    "corrupt": "holds data that cannot be decoded ({detail})",
    "schema_version": "was written with another schema version ({detail})",
}


class StoreAuthenticationError(StoreUnavailableError):
    """Redis rejected the configured username or password."""


class MergeContentionError(StoreUnavailableError):
    """A merge kept losing compare-and-set races; retrying the batch later is safe."""


class RedisKeyLayout:
    """The names of every key the store reads or writes (see ``docs/storage.md``)."""

    def __init__(self, prefix: str, learner_names: Iterable[str]) -> None:
        names = tuple(learner_names)
        for text, what in [(prefix, "key prefix"), *((name, "learner name") for name in names)]:
            if "{" in text or "}" in text:
                raise ValueError(f"{what} {text!r} must not contain '{{' or '}}'")
        self.prefix = prefix
        self.learner_names = names

    @property
    def registry(self) -> str:
        """The set of known agent ids (not hash-tagged: written on its own)."""
        return f"{self.prefix}agents"

    def tag(self, agent_id: str) -> str:
        """The agent's hash tag; braces and ``%`` are escaped so any id is one valid tag."""
        escaped = agent_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
        # An empty tag would make Redis hash the whole key, scattering the agent's keys;
        # a lone '%' cannot come out of the escaping above.
        return "{" + (escaped or "%") + "}"

    def meta(self, agent_id: str) -> str:
        return f"{self.prefix}{self.tag(agent_id)}:meta"

    def runs(self, agent_id: str) -> str:
        return f"{self.prefix}{self.tag(agent_id)}:runs"

    def run_index(self, agent_id: str) -> str:
        return f"{self.prefix}{self.tag(agent_id)}:run_index"

    def batches(self, agent_id: str) -> str:
        return f"{self.prefix}{self.tag(agent_id)}:batches"

    def learned(self, agent_id: str, learner: str) -> str:
        """The base of the agent's learned state: folded from writers that stopped."""
        return f"{self.prefix}{self.tag(agent_id)}:learned:{learner}"

    def shard(self, agent_id: str, learner: str, writer: str) -> str:
        """One writer process's part of the agent's learned state (only it writes there)."""
        return f"{self.learned(agent_id, learner)}:w:{writer}"

    def writers(self, agent_id: str) -> str:
        """Writer id -> time of its last merge, for every writer with a shard."""
        return f"{self.prefix}{self.tag(agent_id)}:writers"

    def agent_keys(self, agent_id: str) -> list[str]:
        """The agent's fixed keys (writer shards on top); the run scripts take the first three."""
        return [
            self.meta(agent_id),
            self.runs(agent_id),
            self.run_index(agent_id),
            self.batches(agent_id),
            *(self.learned(agent_id, name) for name in self.learner_names),
            self.writers(agent_id),
        ]


# Index of this writer's first shard key in a MERGE_SHARD call's keys (0-based).
_FIRST_SHARD = 3


@dataclass(frozen=True)
class _ScriptCall:
    script: Script
    keys: Sequence[str]
    args: Sequence[Any]


_Slot: TypeAlias = tuple[int, str]  # (learner index, field key)
# A stored value that failed to decode: merging into it is left to on_bad_data.
_UNUSABLE: Any = object()


# A shard stamp no writer entry ever holds (entries are times): asks for the values.
_UNSURE = "?"


@dataclass
class _OwnShard:
    """What this writer knows one agent's shards hold while its writer entry says ``stamp``.

    Only this process writes its shards, and every change to them (its writes, a
    fold) changes its entry in the agent's writer hash; so while the entry says
    ``stamp``, the values here (decoded; None for a field known to be absent) are
    what Redis holds: merges need no read and refreshes no decode of them.
    ``complete`` says no other field exists (a shard this writer started); when it is
    False (after an eviction, a lost reply or a fold) fields not listed are unknown,
    and the shard in Redis is read like any other.
    """

    complete: bool
    stamp: str = ""
    fields: dict[_Slot, Any] = field(default_factory=dict)


@dataclass
class _AgentMerge:
    """One agent's part of a merge of one or more batches, carried across attempts."""

    agent_id: str
    keys: list[str]  # meta, batch ids, writers, this writer's shard per learner
    batches: list[tuple[str, list[AgentDelta]]]  # (batch id, this agent's deltas), in order
    # Per learner: each field's deltas, one per batch, in batch order.
    deltas: list[dict[str, list[Mergeable]]] = field(default_factory=list)
    # (merged bytes, merged value) per field, or None to leave the field alone.
    prepared: dict[_Slot, tuple[bytes, Mergeable] | None] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    done: bool = False


def _fold(current: Mergeable | None, deltas: Sequence[Mergeable]) -> Mergeable:
    """``current`` with each delta merged in, batch by batch.

    The process's view of the agent merged them the same way as it learned them, so
    while its value and this shard's are the same, a merge here whose result the view
    still holds is the one already made there (learned values remember their last
    merge, weakly).
    """
    merged = current
    for delta in deltas:
        merged = delta if merged is None else merged.merge(delta)
    assert merged is not None
    return merged


class _Scripts:
    """The store's Lua scripts, registered once per client."""

    def __init__(self, client: RedisClient) -> None:
        self.save_runs = client.register_script(_redis_lua.SAVE_RUNS)
        self.list_runs = client.register_script(_redis_lua.LIST_RUNS)
        self.load_chunk = client.register_script(_redis_lua.LOAD_CHUNK)
        self.list_writers = client.register_script(_redis_lua.LIST_WRITERS)
        self.merge_shard = client.register_script(_redis_lua.MERGE_SHARD)
        self.fold_shard = client.register_script(_redis_lua.FOLD_SHARD)
        self.register_agents = client.register_script(_redis_lua.REGISTER_AGENTS)


class RedisStore(Store):
    """Runs and learned state in Redis, shared by every process that uses the same prefix.

    Connection failures and timeouts surface as
    :class:`~otel_adaptive.store.base.StoreUnavailableError`; every write is safe
    to retry (runs by id, merges by batch id). Bad stored data is logged once per
    key, counted, and never raised.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = "otel_adaptive:",
        learners: Mapping[str, Learner],
        max_runs_per_agent: int = 1000,
        run_max_age_seconds: float | None = None,
        on_bad_data: BadDataMode = "ignore",
    ) -> None:
        if client.get_encoder().decode_responses:
            # Learned values are binary; decoded replies would corrupt them.
            raise ValueError("RedisStore needs a client created with decode_responses=False")
        url, secrets = _describe_client(client)
        self._configure(
            lambda: client,
            url=url,
            secrets=secrets,
            cluster=isinstance(client, RedisCluster),
            owns_client=False,
            key_prefix=key_prefix,
            learners=learners,
            max_runs_per_agent=max_runs_per_agent,
            run_max_age_seconds=run_max_age_seconds,
            on_bad_data=on_bad_data,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        **store_kwargs: Any,
    ) -> RedisStore:
        """Connect lazily to ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

        ``cluster=True`` or the URL option ``?cluster=true`` selects Redis Cluster.
        The connection is made on first use, so a store can be built while Redis
        is down. redis-py's own command retries are turned off: failures surface
        at once and the caller decides when to retry.
        """
        client_url, url_says_cluster = _split_cluster_option(url)
        use_cluster = cluster or url_says_cluster
        tls_options = {
            name: value
            for name, value in (
                ("ssl_ca_certs", ssl_ca_certs),
                ("ssl_certfile", ssl_certfile),
                ("ssl_keyfile", ssl_keyfile),
            )
            if value is not None
        }
        if tls_options and urlsplit(client_url).scheme != "rediss":
            raise ValueError(
                "TLS options (ssl_ca_certs, ssl_certfile, ssl_keyfile) need a rediss:// URL"
            )
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            **tls_options,
        }

        def connect() -> RedisClient:
            if use_cluster:
                return RedisCluster.from_url(client_url, **options)
            return redis.Redis.from_url(client_url, **options)

        store = cls.__new__(cls)
        store._configure(
            connect,
            url=mask_url(client_url),
            secrets=url_secrets(url),
            cluster=use_cluster,
            owns_client=True,
            **store_kwargs,
        )
        return store

    def _configure(
        self,
        connect: Callable[[], RedisClient],
        *,
        url: str,
        secrets: tuple[str, ...],
        cluster: bool,
        owns_client: bool,
        key_prefix: str = "otel_adaptive:",
        learners: Mapping[str, Learner],
        max_runs_per_agent: int = 1000,
        run_max_age_seconds: float | None = None,
        on_bad_data: BadDataMode = "ignore",
        writer_idle_seconds: float = _WRITER_IDLE_SECONDS,
    ) -> None:
        if max_runs_per_agent < 1:
            raise ValueError(f"max_runs_per_agent must be >= 1, got {max_runs_per_agent}")
        if run_max_age_seconds is not None and run_max_age_seconds <= 0:
            raise ValueError(f"run_max_age_seconds must be > 0 or None, got {run_max_age_seconds}")
        if on_bad_data not in ("ignore", "replace"):
            raise ValueError(f"on_bad_data must be 'ignore' or 'replace', got {on_bad_data!r}")
        if not writer_idle_seconds > 0:
            raise ValueError(f"writer_idle_seconds must be > 0, got {writer_idle_seconds}")
        self._connect = connect
        self._url = url
        self._scrub = Redactor(secrets)
        self._has_password = bool(secrets)
        self._cluster = cluster
        self._owns_client = owns_client
        self._keys = RedisKeyLayout(key_prefix, learners)
        super().__init__(dict(learners))
        self._max_runs = max_runs_per_agent
        self._max_age = run_max_age_seconds
        self._mode: BadDataMode = on_bad_data
        self._client: RedisClient | None = None
        self._scripts: _Scripts | None = None
        self._client_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._counters = dict.fromkeys(
            (
                "commands",
                "round_trips",
                "merge_retries",
                "bad_data",
                "batches_deduplicated",
                "batches_applied",
                "batches_skipped",
                "runs_saved",
                "runs_replaced",
                "runs_skipped",
                "runs_expired",
                "agents_registered",
                "registry_rebuilds",
                "cluster_redirects",
                "slot_map_refreshes",
                "shards_folded",
            ),
            0,
        )
        self._bad_by_reason: dict[str, int] = {}
        self._reported: set[tuple[str, str]] = set()
        # Agents this store has added to the registry; saves a command per batch. It is
        # forgotten whenever the registry may have been lost (see _forget_registrations).
        self._registered: set[str] = set()
        self._ever_registered: set[str] = set()
        self._registry_checked = time.monotonic()
        self._redirect_deadline = _REDIRECT_DEADLINE_SECONDS
        # This process's writer id and what it last wrote (see _OwnShard).
        self._pid = os.getpid()
        self._writer = _new_writer_id()
        self._writer_idle = writer_idle_seconds
        self._own: OrderedDict[str, _OwnShard] = OrderedDict()
        # Agents whose shard this writer may have written (see _may_have_written).
        self._written: set[str] = set()
        self._written_overflow = False

    # -- public API ------------------------------------------------------------------------

    @property
    def keys(self) -> RedisKeyLayout:
        """The key layout, for tools that inspect or clean up stored data."""
        return self._keys

    @property
    def bad_data_count(self) -> int:
        """Bad stored values found so far (every encounter counts; each key logs once)."""
        with self._stats_lock:
            return self._counters["bad_data"]

    @property
    def bad_data_by_reason(self) -> dict[str, int]:
        """Bad data encounters by reason: ``wrong_type``, ``corrupt``, ``schema_version``."""
        with self._stats_lock:
            return dict(self._bad_by_reason)

    def stats(self) -> dict[str, int]:
        """Counters: commands and round trips sent, merge retries, bad data, batches."""
        with self._stats_lock:
            return dict(self._counters)

    def describe(self) -> dict[str, object]:
        """Where the store points, with any password masked."""
        return {
            "url": self._url,
            "cluster": self._cluster,
            "key_prefix": self._keys.prefix,
            "schema_version": STORE_SCHEMA_VERSION,
        }

    def __repr__(self) -> str:
        return (
            f"RedisStore(url={self._url!r}, cluster={self._cluster}, "
            f"key_prefix={self._keys.prefix!r})"
        )

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        if not runs:
            return 0
        by_agent: dict[str, list[RunRecord]] = {}
        for run in runs:
            by_agent.setdefault(run.agent_id, []).append(run)
        scripts = self._ensure_scripts("save_runs")
        cutoff = "" if self._max_age is None else repr(time.time() - self._max_age)
        calls: list[_ScriptCall] = []
        for agent_id, agent_runs in by_agent.items():
            calls.append(self._save_call(scripts, agent_id, agent_runs, cutoff))
        register = self._register_call(scripts, by_agent)
        replies = self._run_scripts("save_runs", [*calls, *([register] if register else [])])
        if register is not None:
            self._settle_register(register, replies[-1])
        saved = replaced = skipped = expired = 0
        fresh_agents = []
        for agent_id, call, reply, agent_runs in zip(
            by_agent, calls, replies[: len(calls)], by_agent.values(), strict=True
        ):
            written, problems, removed, fresh, added = reply
            self._report_problems(call.keys, problems)
            if written:
                saved += len(agent_runs)
                replaced += len(agent_runs) - int(added)
                expired += int(removed)
            else:
                skipped += len(agent_runs)
            if fresh and (register is None or agent_id not in register.args[1:]):
                fresh_agents.append(agent_id)  # known here, yet its keys were gone
        self._add(
            runs_saved=saved, runs_replaced=replaced, runs_skipped=skipped, runs_expired=expired
        )
        self._register_again(fresh_agents)
        return saved

    def _save_call(
        self, scripts: _Scripts, agent_id: str, runs: Sequence[RunRecord], cutoff: str
    ) -> _ScriptCall:
        """SAVE_RUNS for one agent: a (score, id) range for the index, an (id, record) range."""
        index: list[Any] = []
        records: list[Any] = []
        for run in runs:
            index += (run.end_ns / 1e9, run.id)
            records += (run.id, encode_run(run))
        args = [STORE_SCHEMA_VERSION, self._mode, self._max_runs, cutoff, len(runs)]
        return _ScriptCall(
            scripts.save_runs, self._keys.agent_keys(agent_id), args + index + records
        )

    def list_runs(self, agent_id: str, limit: int | None = None) -> list[RunRecord]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        if limit == 0:
            return []
        scripts = self._ensure_scripts("list_runs")
        keys = self._keys.agent_keys(agent_id)[:3]
        call = _ScriptCall(scripts.list_runs, keys, [STORE_SCHEMA_VERSION, limit or 0])
        reply = self._run_scripts("list_runs", [call])[0]
        self._report_problems(keys, reply[1])
        runs: list[RunRecord] = []
        items = reply[2:]
        for run_id, data in zip(items[::2], items[1::2], strict=True):
            if data is None:
                continue
            try:
                run = decode_run(data)
            except RunFormatError as exc:  # written by a newer version: not ours to read
                self._report(keys[1], "schema_version", f"run {_text(run_id)!r}: {exc}")
                continue
            except ValueError as exc:
                self._report(keys[1], "corrupt", f"run {_text(run_id)!r}: {exc}")
                continue
            if run.schema_version != RUN_SCHEMA_VERSION:
                self._report(keys[1], "schema_version", f"run {run.id!r}: {run.schema_version}")
                continue
            runs.append(run)
        return runs

    def run_count(self, agent_id: str) -> int:
        key = self._keys.run_index(agent_id)
        reply = self._call("run_count", lambda client: client.zcard(key), key)
        return int(reply) if reply is not None else 0

    def agents(self) -> list[str]:
        key = self._keys.registry
        reply = self._call("agents", lambda client: client.smembers(key), key)
        return sorted(_text(member) for member in reply or ())

    def load_fields(self, agent_id: str, learner: str) -> dict[str, Mergeable]:
        """The agent's learned state: the base merged with every writer's shard.

        Read in bounded chunks; a value or an agent over the size limits is
        reported once and left out, so one bad agent never stalls the others.
        """
        decoder = self._learner(learner)
        scripts = self._ensure_scripts("load_fields")
        self._check_process()
        listing = self._list_writers(scripts, agent_id)
        if listing is None:
            return {}
        listed, _ = listing
        own = self._own_view(agent_id, listed)
        index = self._learner_index(learner)
        keys = [self._keys.learned(agent_id, learner)]
        keys += [
            self._keys.shard(agent_id, learner, writer)
            for writer in listed
            if not (writer == self._writer and own is not None)
        ]
        raw = self._read_hashes(scripts, agent_id, keys)
        if raw is None:
            return {}
        decoded: dict[str, dict[str, Any]] = {}
        fields: dict[str, Mergeable] = {}
        for key, values in raw.items():
            decoded[key] = {}
            for field_key, data in values.items():
                try:
                    value = decoder.decode_field(field_key, data)
                except ValueError as exc:
                    self._report(key, "corrupt", f"field {field_key!r}: {exc}")
                    continue
                decoded[key][field_key] = value
                earlier = fields.get(field_key)
                fields[field_key] = value if earlier is None else earlier.merge(value)
        if own is not None and index is not None:
            for (learner_index, field_key), value in own.fields.items():
                if learner_index == index and value is not None and value is not _UNUSABLE:
                    earlier = fields.get(field_key)
                    fields[field_key] = value if earlier is None else earlier.merge(value)
        self._fold_departed(scripts, agent_id, learner, listed, raw, decoded)
        return fields

    def agent_versions(self) -> dict[str, int | None]:
        """Each registered agent's learned-state version: it changes with every merge of any
        writer, so a reader that remembers them re-reads only the agents whose version moved.
        """
        agent_ids = self.agents()
        versions: dict[str, int | None] = {}
        client = self._client_for("agent_versions")
        for start in range(0, len(agent_ids), _VERSIONS_PER_PIPELINE):
            chunk = agent_ids[start : start + _VERSIONS_PER_PIPELINE]
            pipe = client.pipeline()
            for agent_id in chunk:
                pipe.hget(self._keys.meta(agent_id), "learned_version")
            replies = self._execute("agent_versions", pipe, len(chunk))
            for agent_id, reply in zip(chunk, replies, strict=True):
                try:
                    versions[agent_id] = int(reply or 0)
                except (TypeError, ValueError):  # WRONGTYPE or garbage: bad data, not a crash
                    self._report(self._keys.meta(agent_id), "corrupt", "learned_version")
                    versions[agent_id] = None  # unknown: the reader re-reads it
        return versions

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        """Merge deltas into this process's shards; per agent atomic, idempotent by ``batch_id``.

        No other process writes these shards, so a merge is one round trip and
        never redoes work because of another writer. Returns False only when every
        agent in the batch had already applied it (in any process).
        """
        return self.merge_batches([(batch_id, deltas)])[0]

    def merge_batches(self, batches: Sequence[tuple[str, Sequence[AgentDelta]]]) -> list[bool]:
        """Merge several batches with one script call per agent, all in one round trip.

        Each agent's deltas of every batch are folded into its shard's values batch by
        batch (the order the process's view merged them in, so those merges are
        reused) and written with all their batch ids at once; when the agent had
        applied some of those batches already (a retry), the rest are folded again and
        written, so each batch counts once. Per batch, as :meth:`merge` returns it.
        """
        self._check_process()
        # A batch id given twice is applied once: the first occurrence counts.
        firsts: dict[str, Sequence[AgentDelta]] = {}
        for batch_id, deltas in batches:
            firsts.setdefault(batch_id, deltas)
        unique = list(firsts.items())
        plans = self._plan_merges(unique)
        if plans:
            self._write_plans(plans, [batch_id for batch_id, _ in unique])
        # A batch is new unless every agent it reached had applied it already.
        taken = {batch_id for plan in plans for batch_id in (*plan.applied, *plan.skipped)}
        duplicate = {batch_id for plan in plans for batch_id in plan.duplicates}
        # Counted per agent and batch, by what the scripts say they did.
        self._add(
            batches_deduplicated=sum(len(plan.duplicates) for plan in plans),
            batches_applied=sum(len(plan.applied) for plan in plans),
            batches_skipped=sum(len(plan.skipped) for plan in plans),
        )
        outcomes = []
        seen: set[str] = set()
        for batch_id, _ in batches:
            fresh = batch_id in taken or batch_id not in duplicate
            outcomes.append(batch_id not in seen and fresh)
            seen.add(batch_id)
        return outcomes

    def close(self) -> None:
        with self._client_lock:
            client, self._client, self._scripts = self._client, None, None
        if client is not None and self._owns_client:
            client.close()

    # -- merge internals -------------------------------------------------------------------

    def _write_plans(self, plans: list[_AgentMerge], batch_ids: Sequence[str]) -> None:
        """Send every agent's write, again for those told to, until each one is settled."""
        scripts = self._ensure_scripts("merge")
        register = self._register_call(scripts, [plan.agent_id for plan in plans])
        registered_now = set(register.args[1:]) if register is not None else set()
        pending, attempt, fresh_agents = plans, 0, []
        now = repr(time.time())
        try:
            while pending:
                calls = [self._write_call(scripts, plan, now) for plan in pending]
                if register is not None:
                    calls.append(register)
                replies = self._run_scripts("merge", calls)
                if register is not None:
                    self._settle_register(register, replies[-1])
                    register = None
                retry = []
                for plan, reply in zip(pending, replies[: len(pending)], strict=True):
                    status, problems, fresh, conflicts, extra = reply
                    self._report_problems(plan.keys, problems)
                    if fresh and plan.agent_id not in registered_now:
                        fresh_agents.append(plan.agent_id)
                    if self._settle(plan, int(status), conflicts, extra, now):
                        retry.append(plan)
                pending = retry
                if pending:
                    attempt += 1
                    self._add(merge_retries=len(pending))
                    if attempt >= _MAX_MERGE_ATTEMPTS:
                        named = ", ".join(repr(b) for b in batch_ids[:3])
                        raise MergeContentionError(
                            f"merge of batch {named} kept finding its own shards changed "
                            f"for {len(pending)} agent(s) at {self._url}; retry it later"
                        )
        except StoreUnavailableError:
            # Applied or not is unknown: what this process believes its shards hold
            # is no longer certain, so the next write asks the server first.
            for plan in plans:
                if not plan.done:
                    self._distrust_own(plan.agent_id)
            raise
        self._register_again(fresh_agents)

    def _merge_keys(self, agent_id: str) -> list[str]:
        return [
            self._keys.meta(agent_id),
            self._keys.batches(agent_id),
            self._keys.writers(agent_id),
            *(self._keys.shard(agent_id, name, self._writer) for name in self._keys.learner_names),
            *(self._keys.learned(agent_id, name) for name in self._keys.learner_names),
        ]

    def _learner_index(self, learner: str) -> int | None:
        names = self._keys.learner_names
        return names.index(learner) if learner in names else None

    def _plan_merges(
        self, batches: Sequence[tuple[str, Sequence[AgentDelta]]]
    ) -> list[_AgentMerge]:
        """One plan per agent: the batches that carry fields for it, their deltas grouped."""
        positions = {name: i for i, name in enumerate(self._keys.learner_names)}
        plans: dict[str, _AgentMerge] = {}
        for batch_id, deltas in batches:
            for delta in deltas:
                if delta.learner not in positions:
                    allowed = ", ".join(self._keys.learner_names) or "none"
                    raise ValueError(
                        f"learner {delta.learner!r} is not configured for this store; "
                        f"configured: {allowed}"
                    )
                if not delta.fields:
                    continue
                plan = plans.get(delta.agent_id)
                if plan is None:
                    plan = plans[delta.agent_id] = _AgentMerge(
                        agent_id=delta.agent_id,
                        keys=self._merge_keys(delta.agent_id),
                        batches=[],
                    )
                if not plan.batches or plan.batches[-1][0] != batch_id:
                    plan.batches.append((batch_id, []))
                plan.batches[-1][1].append(delta)
        for plan in plans.values():
            self._combine(plan)
        return list(plans.values())

    def _combine(self, plan: _AgentMerge) -> None:
        """The plan's deltas: every batch it still holds, per learner and field, in order."""
        positions = {name: i for i, name in enumerate(self._keys.learner_names)}
        combined: list[dict[str, list[Mergeable]]] = [{} for _ in self._keys.learner_names]
        for _, deltas in plan.batches:
            for delta in deltas:
                target = combined[positions[delta.learner]]
                for field_key, value in delta.fields.items():
                    target.setdefault(field_key, []).append(value)
        plan.deltas = combined
        plan.prepared.clear()

    def _write_call(self, scripts: _Scripts, plan: _AgentMerge, now: str) -> _ScriptCall:
        own = self._own.get(plan.agent_id)
        if own is None and not self._may_have_written(plan.agent_id):
            own = self._own_for_write(plan.agent_id)  # a shard it starts: known to be empty
        sure = own is not None and (
            own.complete
            or all((i, key) in own.fields for i, fields in enumerate(plan.deltas) for key in fields)
        )
        batch_ids = [batch_id for batch_id, _ in plan.batches]
        args: list[Any] = [
            STORE_SCHEMA_VERSION,
            self._mode,
            now,
            _BATCH_IDS_KEPT,
            self._writer,
            own.stamp if sure and own is not None else _UNSURE,
            len(batch_ids),
            *batch_ids,
        ]
        for index, fields in enumerate(plan.deltas):
            pairs: list[Any] = []
            for field_key in fields:
                if not sure or own is None:
                    pairs += (field_key, b"")  # a question: what does the field hold?
                    continue
                prepared = self._prepare_field(plan, own, index, field_key)
                if prepared is not None:
                    pairs += (field_key, prepared[0])
            args.append(len(pairs) // 2)
            args.extend(pairs)
        return _ScriptCall(scripts.merge_shard, plan.keys, args)

    def _prepare_field(
        self, plan: _AgentMerge, own: _OwnShard, index: int, field_key: str
    ) -> tuple[bytes, Mergeable] | None:
        """(merged bytes, merged value), or None to leave the field alone."""
        slot = (index, field_key)
        if slot in plan.prepared:
            return plan.prepared[slot]
        current = own.fields.get(slot)
        prepared: tuple[bytes, Mergeable] | None
        if current is _UNUSABLE:
            # replace: overwrite the bad value with the deltas; ignore: leave it be.
            if self._mode == "replace":
                merged = _fold(None, plan.deltas[index][field_key])
                prepared = (merged.to_bytes(), merged)
            else:
                prepared = None
        else:
            merged = _fold(current, plan.deltas[index][field_key])
            prepared = (merged.to_bytes(), merged)
        plan.prepared[slot] = prepared
        return prepared

    def _settle(
        self, plan: _AgentMerge, status: int, conflicts: Sequence[Any], extra: Any, now: str
    ) -> bool:
        """Record what the script did; True when the plan must be sent again."""
        batch_ids = [batch_id for batch_id, _ in plan.batches]
        if status == 1:
            own = self._own_for_write(plan.agent_id)
            own.stamp = now
            for slot, prepared in plan.prepared.items():
                if prepared is not None:
                    own.fields[slot] = prepared[1]
            plan.applied += batch_ids
        elif status == 0:
            plan.duplicates += batch_ids
        elif status == 2:
            self._take_conflicts(plan, _text(extra), conflicts)
            return True
        elif status == 4:
            # Applied before (a retry): those count as duplicates, the rest go again.
            seen = {int(position) - 1 for position in extra}
            plan.duplicates += [b for i, b in enumerate(batch_ids) if i in seen]
            plan.batches = [batch for i, batch in enumerate(plan.batches) if i not in seen]
            self._combine(plan)
            return True
        else:
            plan.skipped += batch_ids
        plan.done = True
        return False

    def _take_conflicts(self, plan: _AgentMerge, entry: str, conflicts: Sequence[Any]) -> None:
        """The server's values of the plan's fields, as of this writer's entry ``entry``."""
        own = self._own_for_write(plan.agent_id)
        if own.stamp != entry:
            # Something changed the shard (a fold) or this process lost track: all it
            # knew is void, only what the server just said is known.
            own.complete = False
            own.fields.clear()
            own.stamp = entry
        plan.prepared.clear()
        for key_number, raw_field, stored in zip(
            conflicts[::3], conflicts[1::3], conflicts[2::3], strict=True
        ):
            index = int(key_number) - 1 - _FIRST_SHARD
            field_key = _text(raw_field)
            if stored is None:
                own.fields[(index, field_key)] = None
                continue
            learner = self._keys.learner_names[index]
            try:
                value: Any = self.learners[learner].decode_field(field_key, stored)
            except ValueError as exc:
                self._report(
                    plan.keys[int(key_number) - 1], "corrupt", f"field {field_key!r}: {exc}"
                )
                value = _UNUSABLE
            own.fields[(index, field_key)] = value

    # -- this writer's shards ------------------------------------------------------------

    def _check_process(self) -> None:
        """A forked child is another writer: its own id, nothing believed about shards."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._writer = _new_writer_id()
            self._own.clear()
            self._written.clear()
            self._written_overflow = False

    def _may_have_written(self, agent_id: str) -> bool:
        """Whether this writer's shard of the agent may hold anything (else it is empty)."""
        return self._written_overflow or agent_id in self._written

    def _mark_written(self, agent_id: str) -> None:
        written = self._written
        written.add(agent_id)
        if len(written) > _WRITTEN_AGENTS_REMEMBERED:
            # Forgetting one would let its shard pass for empty (a write the server
            # refuses, then redone): from now on every agent counts as maybe written.
            written.clear()
            self._written_overflow = True

    def _own_for_write(self, agent_id: str) -> _OwnShard:
        own = self._own.get(agent_id)
        if own is None:
            # A shard this writer never wrote is empty: nothing to read back.
            own = _OwnShard(complete=not self._may_have_written(agent_id))
            self._own[agent_id] = own
            self._mark_written(agent_id)
            while len(self._own) > _OWN_AGENTS_CACHED:
                self._own.popitem(last=False)
        self._own.move_to_end(agent_id)
        return own

    def _distrust_own(self, agent_id: str) -> None:
        self._own.pop(agent_id, None)
        self._mark_written(agent_id)  # whatever is rebuilt later is known to be partial

    def _own_view(self, agent_id: str, listed: Mapping[str, str]) -> _OwnShard | None:
        """This writer's cached shard when it is exactly what Redis holds, else None."""
        own = self._own.get(agent_id)
        if own is None:
            return None
        if listed.get(self._writer, "") != own.stamp:
            # Folded away or written behind our back: read it like any other shard.
            self._distrust_own(agent_id)
            return None
        # Partly known (what it knows stays true): the shard is read like any other.
        return own if own.complete else None

    # -- bounded reads -------------------------------------------------------------------

    def _list_writers(self, scripts: _Scripts, agent_id: str) -> tuple[dict[str, str], int] | None:
        keys = [self._keys.meta(agent_id), self._keys.writers(agent_id)]
        call = _ScriptCall(scripts.list_writers, keys, [STORE_SCHEMA_VERSION, _MAX_WRITERS_LISTED])
        readable, problems, items, version = self._run_scripts("load_fields", [call])[0]
        self._report_problems(keys, problems)
        if not readable:
            return None
        listed = {_text(w): _text(t) for w, t in zip(items[::2], items[1::2], strict=True)}
        return listed, int(version)

    def _read_hashes(
        self, scripts: _Scripts, agent_id: str, keys: Sequence[str]
    ) -> dict[str, dict[str, bytes]] | None:
        """Every field of each hash, chunk by chunk; None when the agent is over the limits."""
        meta = self._keys.meta(agent_id)
        values: dict[str, dict[str, bytes]] = {key: {} for key in keys}
        cursors = dict.fromkeys(keys, "0")
        deferred: dict[str, list[str]] = {key: [] for key in keys}
        active = list(keys)
        total = 0
        while active:
            calls = []
            for key in active:
                args: list[Any] = [
                    STORE_SCHEMA_VERSION,
                    cursors[key],
                    _SCAN_COUNT,
                    _MAX_VALUE_BYTES,
                    _MAX_CALL_BYTES,
                ]
                if deferred[key]:
                    args += deferred[key][:_SCAN_COUNT]
                    del deferred[key][:_SCAN_COUNT]
                calls.append(_ScriptCall(scripts.load_chunk, [meta, key], args))
            still: list[str] = []
            for key, call, reply in zip(
                active, calls, self._run_scripts("load_fields", calls), strict=True
            ):
                readable, problems, cursor, pairs, later = reply
                self._report_problems(call.keys, problems)
                if not readable:
                    values[key] = {}
                    continue
                scanning = len(call.args) == 5
                if scanning:
                    cursors[key] = _text(cursor)
                deferred[key] += [_text(name) for name in later]
                for raw_field, data in zip(pairs[::2], pairs[1::2], strict=True):
                    values[key][_text(raw_field)] = data
                    total += len(data)
                if deferred[key] or (scanning and cursors[key] != "0"):
                    still.append(key)
            fields = sum(len(v) for v in values.values())
            if total > _MAX_AGENT_BYTES or fields > _MAX_AGENT_FIELDS:
                self._report(
                    meta,
                    "oversized",
                    f"learned state over {_MAX_AGENT_BYTES} bytes or {_MAX_AGENT_FIELDS} fields",
                )
                return None
            active = still
        return values

    def _fold_departed(
        self,
        scripts: _Scripts,
        agent_id: str,
        learner: str,
        listed: Mapping[str, str],
        raw: Mapping[str, Mapping[str, bytes]],
        decoded: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Fold (at most) one writer that stopped writing into the base, from values just read."""
        cutoff = time.time() - self._writer_idle
        base_key = self._keys.learned(agent_id, learner)
        for writer, last in listed.items():
            shard_key = self._keys.shard(agent_id, learner, writer)
            if writer == self._writer or shard_key not in raw or not _older(last, cutoff):
                continue
            base_raw, base_values = raw[base_key], decoded[base_key]
            shard_raw, shard_values = raw[shard_key], decoded[shard_key]
            if len(shard_values) != len(shard_raw):
                return  # a corrupt field: leave the shard for on_bad_data, never drop data
            quads: list[Any] = []
            for field_key, value in shard_values.items():
                earlier = base_values.get(field_key)
                if field_key in base_raw and earlier is None:
                    return  # the base value is corrupt: do not overwrite it here
                merged = value if earlier is None else earlier.merge(value)
                old = base_raw.get(field_key)
                quads += [
                    field_key,
                    hashlib.sha1(old).hexdigest() if old is not None else "",
                    hashlib.sha1(shard_raw[field_key]).hexdigest(),
                    merged.to_bytes(),
                ]
            keys = [self._keys.meta(agent_id), self._keys.writers(agent_id), base_key, shard_key]
            seen = last
            for first in range(0, max(len(quads), 1), 4 * _FOLD_CHUNK):
                chunk = quads[first : first + 4 * _FOLD_CHUNK]
                call = _ScriptCall(scripts.fold_shard, keys, [writer, seen, *chunk])
                if not self._run_scripts("fold", [call])[0][0]:
                    return  # it changed meanwhile: a later read tries again
                seen += "+"
            self._add(shards_folded=1)
            return

    # -- plumbing --------------------------------------------------------------------------

    def _register_call(self, scripts: _Scripts, agent_ids: Iterable[str]) -> _ScriptCall | None:
        """Add agents this store has not registered yet to the registry set, or None."""
        if time.monotonic() - self._registry_checked >= _REGISTRY_RECHECK_SECONDS:
            self._forget_registrations()
        new = [agent for agent in dict.fromkeys(agent_ids) if agent not in self._registered]
        if not new:
            return None
        return _ScriptCall(scripts.register_agents, [self._keys.registry], [self._mode, *new])

    def _settle_register(self, call: _ScriptCall, reply: list[Any]) -> None:
        written, problems, existed, added = reply
        self._report_problems(call.keys, problems)
        if not written:
            return
        agents = call.args[1:]
        with self._stats_lock:
            self._registered.update(agents)
            self._ever_registered.update(agents)
            self._registry_checked = time.monotonic()
            # What the registry gained, not what was sent: others may have listed them.
            self._counters["agents_registered"] += int(added)
            lost = [] if existed else sorted(self._ever_registered.difference(agents))
        if lost:
            # The registry vanished (flush, empty restart, failover): every agent this
            # store wrote before whose keys survived is listed again.
            self._add(registry_rebuilds=1)
            survivors = self._still_stored(lost)
            if survivors:
                scripts = self._ensure_scripts("register")
                rebuild = _ScriptCall(scripts.register_agents, call.keys, [self._mode, *survivors])
                self._settle_register(rebuild, self._run_scripts("register", [rebuild])[0])

    def _still_stored(self, agent_ids: Sequence[str]) -> list[str]:
        """The agents whose meta hash exists (a rare check: redis-py routes it)."""
        client = self._client_for("register")
        pipe = client.pipeline()
        for agent_id in agent_ids:
            pipe.exists(self._keys.meta(agent_id))
        found = self._execute("register", pipe, len(agent_ids))
        return [agent for agent, exists in zip(agent_ids, found, strict=True) if exists == 1]

    def _register_again(self, agent_ids: Iterable[str]) -> None:
        """Register agents whose keys vanished (their registry entry may be gone too)."""
        agents = [agent for agent in agent_ids if agent in self._registered]
        if not agents:
            return
        with self._stats_lock:
            self._registered.difference_update(agents)
        call = self._register_call(self._ensure_scripts("register"), agents)
        if call is not None:
            self._settle_register(call, self._run_scripts("register", [call])[0])

    def _forget_registrations(self) -> None:
        with self._stats_lock:
            self._registered.clear()
            self._registry_checked = time.monotonic()

    def _client_for(self, operation: str) -> RedisClient:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._client is None:
                try:
                    client = self._connect()
                    self._scripts = _Scripts(client)
                except (RedisError, RedisClusterException, OSError) as exc:
                    raise self._unavailable(operation, exc) from exc
                except ValueError as exc:  # redis-py parses the URL here
                    raise ValueError(self._scrub(f"invalid Redis URL {self._url}: {exc}")) from None
                self._client = client
            return self._client

    def _ensure_scripts(self, operation: str) -> _Scripts:
        self._client_for(operation)
        scripts = self._scripts
        assert scripts is not None
        return scripts

    def _run_scripts(self, operation: str, calls: Sequence[_ScriptCall]) -> list[Any]:
        """Run script calls in one pipeline per server; reload scripts a server lacks."""
        client = self._client_for(operation)
        if not isinstance(client, RedisCluster):
            try:
                return self._run_pipeline(operation, client, calls)
            except StoreUnavailableError:
                self._forget_registrations()  # a restarted server may have lost the registry
                raise
        return self._run_on_cluster(operation, client, calls)

    def _run_on_cluster(
        self, operation: str, client: RedisCluster, calls: Sequence[_ScriptCall]
    ) -> list[Any]:
        """Calls grouped by the node owning their hash tag, followed when slots move.

        A cluster pipeline asks the server for the keys of every EVALSHA (one more
        command each), so calls go as plain pipelines to the node our slot map names.
        Because that skips redis-py's own redirect handling, MOVED, ASK, TRYAGAIN,
        CLUSTERDOWN and lost connections are handled here: the slot map is refreshed
        and the calls still pending are sent again, until the deadline.
        """
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        asking: dict[int, Any] = {}  # call index -> node that answered ASK for it
        deadline = time.monotonic() + self._redirect_deadline
        attempt = 0
        while True:
            retry: list[int] = []
            refresh = False
            last_error: BaseException | None = None
            for node, indexes, ask in self._group_by_node(
                operation, client, pending, calls, asking
            ):
                node_client = client.get_redis_connection(node)
                try:
                    replies = self._run_pipeline(
                        operation, node_client, [calls[i] for i in indexes], asking=ask
                    )
                except StoreUnavailableError as exc:
                    if not isinstance(exc.__cause__, _NODE_TROUBLE):
                        raise
                    retry += indexes
                    refresh, last_error = True, exc
                    continue
                for i, reply in zip(indexes, replies, strict=True):
                    asking.pop(i, None)
                    if isinstance(reply, MovedError):
                        retry.append(i)
                        refresh, last_error = True, reply
                    elif isinstance(reply, AskError):
                        asking[i] = client.get_node(reply.host, reply.port)  # type: ignore[no-untyped-call]
                        retry.append(i)
                        last_error = reply
                    elif isinstance(reply, _TRANSIENT_REPLIES):
                        retry.append(i)
                        refresh, last_error = isinstance(reply, ClusterDownError), reply
                    else:
                        results[i] = reply
            if not retry:
                return results
            self._forget_registrations()  # the registry's node may have changed or restarted
            attempt += 1
            self._add(cluster_redirects=len(retry))
            if time.monotonic() >= deadline:
                assert last_error is not None
                raise self._unavailable(operation, last_error) from last_error
            if refresh:
                self._refresh_slot_map(client)
            if attempt > 1 or refresh:
                time.sleep(min(0.01 * 2**attempt, 0.2, max(deadline - time.monotonic(), 0)))
            pending = retry

    def _group_by_node(
        self,
        operation: str,
        client: RedisCluster,
        pending: Sequence[int],
        calls: Sequence[_ScriptCall],
        asking: Mapping[int, Any],
    ) -> list[tuple[Any, list[int], bool]]:
        groups: dict[tuple[str, bool], tuple[Any, list[int], bool]] = {}
        for i in pending:
            node = asking.get(i)
            if node is None:
                try:
                    node = client.get_node_from_key(calls[i].keys[0])  # type: ignore[no-untyped-call]
                except RedisClusterException as exc:  # slot not covered while the map changes
                    raise self._unavailable(operation, exc) from exc
            ask = i in asking
            groups.setdefault((node.name, ask), (node, [], ask))[1].append(i)
        return list(groups.values())

    def _refresh_slot_map(self, client: RedisCluster) -> None:
        self._add(slot_map_refreshes=1)
        # When no node answers, the next attempt (or the next batch) tries again.
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            client.nodes_manager.initialize()

    def _run_pipeline(
        self, operation: str, client: Any, calls: Sequence[_ScriptCall], *, asking: bool = False
    ) -> list[Any]:
        """One pipeline to one server; redirect replies are returned, other errors raise."""
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            for i in pending:
                call = calls[i]
                if asking:  # ASKING lets the importing node run the very next command
                    pipe.execute_command("ASKING")
                pipe.execute_command(
                    "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
                )
            step = 2 if asking else 1
            replies = self._execute(operation, pipe, len(pending) * step)[step - 1 :: step]
            missing = []
            for i, reply in zip(pending, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)
                elif isinstance(reply, _REDIRECT_REPLIES):
                    results[i] = reply  # the cluster router decides what to do
                elif isinstance(reply, Exception):
                    raise self._unavailable(operation, reply) from reply
                else:
                    results[i] = reply
            if not missing:
                return results
            self._load_scripts(operation, client, {calls[i].script for i in missing})
            pending = missing
        raise StoreUnavailableError(
            f"Redis at {self._url} keeps forgetting scripts during {operation}"
        )

    def _execute(self, operation: str, pipe: Any, commands: int) -> list[Any]:
        self._add(commands=commands, round_trips=1)
        try:
            replies: list[Any] = pipe.execute(raise_on_error=False)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise self._unavailable(operation, exc) from exc
        finally:
            pipe.reset()
        return replies

    def _load_scripts(self, operation: str, client: RedisClient, scripts: Iterable[Script]) -> None:
        for script in scripts:
            self._add(commands=1, round_trips=1)
            try:
                script.sha = client.script_load(script.script)
            except (RedisError, RedisClusterException, OSError) as exc:
                raise self._unavailable(operation, exc) from exc

    def _call(self, operation: str, command: Callable[[RedisClient], Any], key: str) -> Any:
        """One plain command; WRONGTYPE is bad data (None), connection trouble raises."""
        client = self._client_for(operation)
        self._add(commands=1, round_trips=1)
        try:
            return command(client)
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                self._report(key, "wrong_type", "not the expected type")
                return None
            raise self._unavailable(operation, exc) from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise self._unavailable(operation, exc) from exc

    def _unavailable(self, operation: str, exc: BaseException) -> StoreUnavailableError:
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, AuthenticationError) and not self._has_password:
            # redis-py's words for this ("HELLO must be called with the client already
            # authenticated...") do not say what is wrong.
            return StoreAuthenticationError(
                f"Redis at {self._url} needs a password and none was given (during "
                f"{operation}); put it in the URL: redis://[USER]:PASSWORD@HOST:PORT/DB, or "
                "unix:///PATH?db=DB&password=PASSWORD"
            )
        if isinstance(exc, AuthenticationError):
            return StoreAuthenticationError(
                f"Redis at {self._url} rejected the configured credentials during {operation} "
                f"({detail}); check the username and password"
            )
        return StoreUnavailableError(f"Redis at {self._url} failed during {operation}: {detail}")

    def _report_problems(self, keys: Sequence[str], problems: Sequence[Any]) -> None:
        for key_number, reason, detail in problems:
            self._report(keys[int(key_number) - 1], _text(reason), _text(detail))

    def _report(self, key: str, reason: str, detail: str) -> None:
        with self._stats_lock:
            self._counters["bad_data"] += 1
            self._bad_by_reason[reason] = self._bad_by_reason.get(reason, 0) + 1
            first = (key, reason) not in self._reported
            self._reported.add((key, reason))
        if first:
            action = (
                "it will be replaced on the next write"
                if self._mode == "replace"
                else "it is left as is and skipped"
            )
            what = _REASON_TEXT.get(reason, "holds bad data ({detail})").format(detail=detail)
            _log.warning(
                "Redis key %r %s; %s (on_bad_data=%r). Further problems with this key are "
                "counted in stats() without logging.",
                key,
                self._scrub(what),
                action,
                self._mode,
            )

    def _add(self, **amounts: int) -> None:
        with self._stats_lock:
            for name, amount in amounts.items():
                self._counters[name] += amount


# -- URLs and secrets ----------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _new_writer_id() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _older(last_write: str, cutoff: float) -> bool:
    """True when a writer's listed last write (a time, maybe with fold marks) is before cutoff."""
    try:
        return float(last_write.rstrip("+")) < cutoff
    except ValueError:
        return False  # not ours to judge: never fold on garbage


def _split_cluster_option(url: str) -> tuple[str, bool]:
    """Remove our ``cluster`` query option (redis-py would reject it).

    Only the query is rebuilt: splitting and joining the whole URL would turn
    ``unix:///path`` into ``unix:/path``, which redis-py does not accept.
    """
    base, has_query, rest = url.partition("?")
    if not has_query:
        return url, False
    query, has_fragment, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    cluster = any(name == "cluster" and value.lower() in _TRUE_WORDS for name, value in pairs)
    kept = urlencode([(name, value) for name, value in pairs if name != "cluster"])
    return base + (f"?{kept}" if kept else "") + has_fragment + fragment, cluster


def _describe_client(client: RedisClient) -> tuple[str, tuple[str, ...]]:
    """A masked URL for a client built elsewhere, and the secrets to scrub from messages."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()  # type: ignore[no-untyped-call]
        kwargs: dict[str, Any] = dict(getattr(client.nodes_manager, "connection_kwargs", {}))
        host, port, db, path = node.host, node.port, 0, None
        tls = bool(kwargs.get("ssl")) or _is_tls(kwargs.get("connection_class"))
    else:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
        db, path = kwargs.get("db", 0), kwargs.get("path")
        tls = _is_tls(pool.connection_class)
    username, password = kwargs.get("username"), kwargs.get("password")
    userinfo = ""
    if username or password:
        userinfo = quote(str(username or ""), safe="") + (":***" if password else "") + "@"
    if path:
        url = f"unix://{userinfo}{path}?db={db}"
    else:
        url = f"{'rediss' if tls else 'redis'}://{userinfo}{host}:{port}/{db}"
    secrets = (str(password),) if password else ()
    return url, secrets


def _is_tls(connection_class: object) -> bool:
    return isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)
