"""A :class:`~otel_adaptive.store.base.Store` backed by Redis or Redis Cluster.

Every key of one agent carries the hash tag ``{<agent>}``, so all of an agent's
writes are single atomic Lua scripts on one cluster slot. Learned state is
merged by optimistic compare-and-set: one round trip reads only the touched
fields, the values are merged in Python, and a second script writes them only
if those fields are unchanged and the batch id is new; a conflict reply carries
the fresh values, so a retry costs one more round trip. The key layout is
documented in ``docs/storage.md``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, Union
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import SSLConnection
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.retry import Retry

from otel_adaptive.learners import LEARNER_TYPES
from otel_adaptive.learners.base import Learner, Mergeable
from otel_adaptive.records import RUN_SCHEMA_VERSION, RunRecord, decode_run, encode_run
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
_MAX_MERGE_ATTEMPTS = 100
_RETRIES_BEFORE_BACKOFF = 3
_BACKOFF_BASE_SECONDS = 0.0005
_BACKOFF_CAP_SECONDS = 0.02
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

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
        return f"{self.prefix}{self.tag(agent_id)}:learned:{learner}"

    def agent_keys(self, agent_id: str) -> list[str]:
        """The agent's keys in the order the Lua scripts expect them."""
        return [
            self.meta(agent_id),
            self.runs(agent_id),
            self.run_index(agent_id),
            self.batches(agent_id),
            *(self.learned(agent_id, name) for name in self.learner_names),
        ]


# Index of the first learned-state key in RedisKeyLayout.agent_keys (0-based).
_FIRST_LEARNED = 4


@dataclass(frozen=True)
class _ScriptCall:
    script: Script
    keys: Sequence[str]
    args: Sequence[Any]


@dataclass
class _AgentMerge:
    """One agent's part of a merge, carried across compare-and-set attempts."""

    agent_id: str
    keys: list[str]
    deltas: list[dict[str, Mergeable]]  # aligned with RedisKeyLayout.learner_names
    stored: dict[tuple[int, str], bytes | None] = field(default_factory=dict)
    prepared: dict[tuple[int, str], tuple[str, bytes] | None] = field(default_factory=dict)
    outcome: Literal["applied", "duplicate", "skipped"] | None = None


class _Scripts:
    """The store's Lua scripts, registered once per client."""

    def __init__(self, client: RedisClient) -> None:
        self.save_runs = client.register_script(_redis_lua.SAVE_RUNS)
        self.list_runs = client.register_script(_redis_lua.LIST_RUNS)
        self.load_fields = client.register_script(_redis_lua.LOAD_FIELDS)
        self.merge_read = client.register_script(_redis_lua.MERGE_READ)
        self.merge_write = client.register_script(_redis_lua.MERGE_WRITE)
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
            url=_mask_url(client_url),
            secrets=_url_secrets(client_url),
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
    ) -> None:
        if max_runs_per_agent < 1:
            raise ValueError(f"max_runs_per_agent must be >= 1, got {max_runs_per_agent}")
        if run_max_age_seconds is not None and run_max_age_seconds <= 0:
            raise ValueError(f"run_max_age_seconds must be > 0 or None, got {run_max_age_seconds}")
        if on_bad_data not in ("ignore", "replace"):
            raise ValueError(f"on_bad_data must be 'ignore' or 'replace', got {on_bad_data!r}")
        self._connect = connect
        self._url = url
        self._secrets = secrets
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
                "runs_saved",
                "runs_expired",
            ),
            0,
        )
        self._bad_by_reason: dict[str, int] = {}
        self._reported: set[tuple[str, str]] = set()
        # Agents this store has added to the registry; saves a command per batch.
        self._registered: set[str] = set()

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
            args: list[Any] = [STORE_SCHEMA_VERSION, self._mode, self._max_runs, cutoff]
            for run in agent_runs:
                args += [run.id, run.end_ns / 1e9, encode_run(run)]
            calls.append(_ScriptCall(scripts.save_runs, self._keys.agent_keys(agent_id), args))
        register = self._register_call(scripts, by_agent)
        replies = self._run_scripts("save_runs", [*calls, *([register] if register else [])])
        if register is not None:
            self._settle_register(register, replies[-1])
        saved = expired = 0
        for call, reply, agent_runs in zip(
            calls, replies[: len(calls)], by_agent.values(), strict=True
        ):
            written, problems, removed = reply
            self._report_problems(call.keys, problems)
            if written:
                saved += len(agent_runs)
                expired += int(removed)
        self._add(runs_saved=saved, runs_expired=expired)
        return saved

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
        decoder = self._decoder(learner)
        scripts = self._ensure_scripts("load_fields")
        keys = [self._keys.meta(agent_id), self._keys.learned(agent_id, learner)]
        call = _ScriptCall(scripts.load_fields, keys, [STORE_SCHEMA_VERSION])
        reply = self._run_scripts("load_fields", [call])[0]
        self._report_problems(keys, reply[1])
        fields: dict[str, Mergeable] = {}
        items = reply[2:]
        for raw_key, data in zip(items[::2], items[1::2], strict=True):
            try:
                field_key = raw_key.decode()
                fields[field_key] = decoder.decode_field(field_key, data)
            except ValueError as exc:  # UnicodeDecodeError is a ValueError too
                self._report(keys[1], "corrupt", f"field {_text(raw_key)!r}: {exc}")
        return fields

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        """Merge deltas; per agent atomic and idempotent by ``batch_id``.

        Returns False only when every agent in the batch had already applied it.
        """
        plans = self._plan_merge(deltas)
        if not plans:
            return True
        scripts = self._ensure_scripts("merge")
        register = self._register_call(scripts, [plan.agent_id for plan in plans])
        to_read, pending, attempt = plans, plans, 0
        while True:
            if to_read:
                self._read_for_merge(scripts, batch_id, to_read)
            pending = [plan for plan in pending if plan.outcome is None]
            if not pending:
                break
            calls = [self._write_call(scripts, batch_id, plan) for plan in pending]
            if register is not None:
                calls.append(register)
            replies = self._run_scripts("merge", calls)
            if register is not None:
                self._settle_register(register, replies[-1])
                register = None
            pending = [
                plan
                for plan, reply in zip(pending, replies[: len(pending)], strict=True)
                if not self._settle_write(plan, reply)
            ]
            if not pending:
                break
            attempt += 1
            self._add(merge_retries=len(pending))
            if attempt >= _MAX_MERGE_ATTEMPTS:
                raise MergeContentionError(
                    f"merge of batch {batch_id!r} lost {attempt} compare-and-set races "
                    f"for {len(pending)} agent(s) at {self._url}; retry it later"
                )
            # A conflict reply carries the fresh values, so retry at once while they
            # are fresh; only after several lost races back off (jittered) and read
            # again, which lets the competing writers drain.
            to_read = []
            if attempt % _RETRIES_BEFORE_BACKOFF == 0:
                ceiling = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt)
                time.sleep(random.uniform(0, ceiling))
                to_read = pending
        duplicates = sum(plan.outcome == "duplicate" for plan in plans)
        self._add(batches_deduplicated=duplicates, batches_applied=len(plans) - duplicates)
        return duplicates < len(plans)

    def close(self) -> None:
        with self._client_lock:
            client, self._client, self._scripts = self._client, None, None
        if client is not None and self._owns_client:
            client.close()

    # -- merge internals -------------------------------------------------------------------

    def _plan_merge(self, deltas: Sequence[AgentDelta]) -> list[_AgentMerge]:
        positions = {name: i for i, name in enumerate(self._keys.learner_names)}
        plans: dict[str, _AgentMerge] = {}
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
                plan = _AgentMerge(
                    agent_id=delta.agent_id,
                    keys=self._keys.agent_keys(delta.agent_id),
                    deltas=[{} for _ in self._keys.learner_names],
                )
                plans[delta.agent_id] = plan
            target = plan.deltas[positions[delta.learner]]
            for field_key, value in delta.fields.items():
                earlier = target.get(field_key)
                target[field_key] = value if earlier is None else earlier.merge(value)
        return list(plans.values())

    def _read_for_merge(self, scripts: _Scripts, batch_id: str, plans: list[_AgentMerge]) -> None:
        calls = []
        for plan in plans:
            args: list[Any] = [batch_id, STORE_SCHEMA_VERSION, self._mode]
            for fields in plan.deltas:
                args.append(len(fields))
                args.extend(fields)
            calls.append(_ScriptCall(scripts.merge_read, plan.keys, args))
        for plan, reply in zip(plans, self._run_scripts("merge", calls), strict=True):
            status = reply[0]
            if status == 1:
                plan.outcome = "duplicate"
            elif status == 3:
                self._report_problems(plan.keys, reply[1])
                plan.outcome = "skipped"
            else:
                plan.stored.clear()
                plan.prepared.clear()
                values = iter(reply[1:])
                for index, fields in enumerate(plan.deltas):
                    for field_key in fields:
                        plan.stored[(index, field_key)] = next(values)

    def _write_call(self, scripts: _Scripts, batch_id: str, plan: _AgentMerge) -> _ScriptCall:
        args: list[Any] = [
            batch_id,
            STORE_SCHEMA_VERSION,
            self._mode,
            time.time(),
            _BATCH_IDS_KEPT,
        ]
        for index, fields in enumerate(plan.deltas):
            triples: list[Any] = []
            for field_key in fields:
                prepared = self._prepare_field(plan, index, field_key)
                if prepared is not None:
                    triples += [field_key, *prepared]
            args.append(len(triples) // 3)
            args.extend(triples)
        return _ScriptCall(scripts.merge_write, plan.keys, args)

    def _prepare_field(
        self, plan: _AgentMerge, index: int, field_key: str
    ) -> tuple[str, bytes] | None:
        """(digest of the stored value, merged value), or None to leave the field alone."""
        slot = (index, field_key)
        if slot in plan.prepared:
            return plan.prepared[slot]
        delta = plan.deltas[index][field_key]
        stored = plan.stored.get(slot)
        prepared: tuple[str, bytes] | None
        if stored is None:
            prepared = ("", delta.to_bytes())
        else:
            digest = hashlib.sha1(stored).hexdigest()
            learner = self._keys.learner_names[index]
            try:
                current = self.learners[learner].decode_field(field_key, stored)
            except ValueError as exc:
                self._report(
                    plan.keys[_FIRST_LEARNED + index], "corrupt", f"field {field_key!r}: {exc}"
                )
                # replace: overwrite the bad value with the delta; ignore: leave it be.
                prepared = (digest, delta.to_bytes()) if self._mode == "replace" else None
            else:
                prepared = (digest, current.merge(delta).to_bytes())
        plan.prepared[slot] = prepared
        return prepared

    def _settle_write(self, plan: _AgentMerge, reply: list[Any]) -> bool:
        """Record a write reply; False when the agent must be written again."""
        status = reply[0]
        self._report_problems(plan.keys, reply[1])
        if status == 2:
            conflicts = reply[2]
            for key_number, raw_field, current in zip(
                conflicts[::3], conflicts[1::3], conflicts[2::3], strict=True
            ):
                slot = (int(key_number) - 1 - _FIRST_LEARNED, raw_field.decode())
                plan.stored[slot] = current
                plan.prepared.pop(slot, None)
            return False
        if status == 1:
            plan.outcome = "applied"
        elif status == 0:
            plan.outcome = "duplicate"
        else:
            plan.outcome = "skipped"
        return True

    # -- plumbing --------------------------------------------------------------------------

    def _decoder(self, name: str) -> Learner:
        learner = self.learners.get(name)
        if learner is None and name in LEARNER_TYPES:
            learner = LEARNER_TYPES[name]()
        if learner is None:
            allowed = ", ".join(sorted({*self.learners, *LEARNER_TYPES}))
            raise ValueError(f"unknown learner {name!r}; allowed: {allowed}")
        return learner

    def _register_call(self, scripts: _Scripts, agent_ids: Iterable[str]) -> _ScriptCall | None:
        """Add agents this store has not registered yet to the registry set, or None."""
        new = [agent for agent in dict.fromkeys(agent_ids) if agent not in self._registered]
        if not new:
            return None
        return _ScriptCall(scripts.register_agents, [self._keys.registry], [self._mode, *new])

    def _settle_register(self, call: _ScriptCall, reply: list[Any]) -> None:
        written, problems = reply
        self._report_problems(call.keys, problems)
        if written:
            with self._stats_lock:
                self._registered.update(call.args[1:])

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
            return self._run_pipeline(operation, client, calls)
        # A cluster pipeline asks the server for the keys of every EVALSHA (one more
        # command each), so calls are grouped by the node owning their hash tag and
        # sent as plain pipelines to that node.
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i, call in enumerate(calls):
            node = client.get_node_from_key(call.keys[0])  # type: ignore[no-untyped-call]
            by_node.setdefault(node.name, (node, []))[1].append(i)
        results: list[Any] = [None] * len(calls)
        for node, indexes in by_node.values():
            node_client = client.get_redis_connection(node)
            replies = self._run_pipeline(operation, node_client, [calls[i] for i in indexes])
            for i, reply in zip(indexes, replies, strict=True):
                results[i] = reply
        return results

    def _run_pipeline(self, operation: str, client: Any, calls: Sequence[_ScriptCall]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            for i in pending:
                call = calls[i]
                pipe.execute_command(
                    "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
                )
            replies = self._execute(operation, pipe, len(pending))
            missing = []
            for i, reply in zip(pending, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)
                elif isinstance(reply, Exception):
                    # MOVED/ASK while slots migrate land here too: the exporter retries
                    # the whole batch later, by then with a refreshed slot map.
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
        if isinstance(exc, AuthenticationError):
            return StoreAuthenticationError(
                f"Redis at {self._url} rejected the configured credentials during {operation} "
                f"({detail}); check the username and password"
            )
        return StoreUnavailableError(f"Redis at {self._url} failed during {operation}: {detail}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

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


def _split_cluster_option(url: str) -> tuple[str, bool]:
    """Remove our ``cluster`` query option (redis-py would reject it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    cluster = any(name == "cluster" and value.lower() in _TRUE_WORDS for name, value in query)
    kept = [(name, value) for name, value in query if name != "cluster"]
    return urlunsplit(parts._replace(query=urlencode(kept))), cluster


def _url_secrets(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    secrets = [value for name, value in parse_qsl(parts.query) if name.lower() == "password"]
    if parts.password:
        # redis-py unquotes the password, so scrub both spellings.
        secrets += [parts.password, unquote(parts.password)]
    return tuple(sorted({s for s in secrets if s}, key=len, reverse=True))


def _mask_url(url: str) -> str:
    """The URL with any password (userinfo or ``?password=``) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if has_password else f"{user}@{hostport}"
    query = [
        (name, "***" if name.lower() == "password" else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


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
