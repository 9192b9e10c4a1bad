"""Redis that changes underneath: empty restarts, flushes, slot migrations, node restarts.

After each change, every run written after recovery is stored exactly once, every
batch merged after it is learned exactly once, and ``store.agents()`` lists every
agent that wrote since. Writes are retried the way the exporter retries them
(same run ids, same batch ids) until the store takes them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from redis.cluster import RedisCluster

from otel_adaptive.store.base import StoreUnavailableError
from otel_adaptive.store.redis import RedisStore
from redis_helpers import BASE_NS, MS, Tally, learners, make_run, tally_delta
from redis_servers import RedisClusterServers, RedisServer


def make_store(url: str, prefix: str, *, cluster: bool = False) -> RedisStore:
    return RedisStore.from_url(
        url,
        cluster=cluster,
        key_prefix=prefix,
        learners=learners(),
        max_runs_per_agent=100_000,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )


def until_stored(write: Callable[[], object], timeout: float = 30.0) -> int:
    """Retry ``write`` like the exporter does until the store takes it; failures seen."""
    failures = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            write()
            return failures
        except StoreUnavailableError:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Writer:
    """Writes numbered runs and one-run batches per agent, remembering what it sent."""

    def __init__(self, store: RedisStore, name: str = "w") -> None:
        self.store = store
        self.name = name
        self.sent: dict[str, int] = {}

    def write(self, agent: str, count: int = 1) -> int:
        failures = 0
        for _ in range(count):
            n = self.sent.get(agent, 0)
            run = make_run(agent, f"{self.name}-{agent}-r{n}", BASE_NS + n * MS)
            failures += until_stored(lambda: self.store.save_runs([run]))  # noqa: B023
            batch = f"{self.name}-{agent}-b{n}"
            delta = tally_delta(agent, runs=Tally(1))
            failures += until_stored(lambda: self.store.merge(batch, [delta]))  # noqa: B023
            self.sent[agent] = n + 1
        return failures


def tally(store: RedisStore, agent: str) -> int:
    value = store.load_fields(agent, "tally").get("runs")
    assert value is None or isinstance(value, Tally)
    return 0 if value is None else value.count


# --- standalone -------------------------------------------------------------------------------


def test_an_empty_restart_re_registers_every_agent_and_counts_exactly(
    redis_server: RedisServer, key_prefix: str
) -> None:
    store = make_store(redis_server.url, key_prefix)
    writer = Writer(store)
    writer.write("a", 5)
    writer.write("b", 3)
    assert store.agents() == ["a", "b"]

    redis_server.stop()
    with pytest.raises(StoreUnavailableError):
        store.save_runs([make_run("a", "lost")])
    redis_server.start()  # no persistence: empty

    after = Writer(store, "after")
    after.write("a", 4)  # known before the restart: must be registered again
    after.write("c", 2)
    assert store.agents() == ["a", "c"]
    assert store.run_count("a") == 4 and store.run_count("c") == 2
    assert tally(store, "a") == 4 and tally(store, "c") == 2
    store.close()


def test_a_flush_without_any_error_re_registers_the_agents_that_write_again(
    redis_server: RedisServer, key_prefix: str
) -> None:
    store = make_store(redis_server.url, key_prefix)
    writer = Writer(store)
    writer.write("a", 2)
    writer.write("b", 2)
    with redis_server.admin() as admin:
        admin.flushall()  # a throwaway server owned by this test
    writer.write("a", 3)  # runs only: the meta hash tells the store the agent is new here
    assert store.agents() == ["a"]
    assert store.run_count("a") == 3
    assert tally(store, "a") == 3
    assert store.stats()["registry_rebuilds"] == 1  # 'b' was checked, and is gone: not listed

    with redis_server.admin() as admin:
        admin.flushall()
    # A merge alone (no runs) reveals it too.
    store.merge("only-merge", [tally_delta("b", runs=Tally(7))])
    assert store.agents() == ["b"]
    assert tally(store, "b") == 7
    store.close()


def test_a_lost_registry_is_rebuilt_with_every_agent_this_store_wrote(
    redis_server: RedisServer, key_prefix: str
) -> None:
    store = make_store(redis_server.url, key_prefix)
    writer = Writer(store)
    for agent in ("a", "b", "c"):
        writer.write(agent, 1)
    with redis_server.admin() as admin:
        admin.delete(store.keys.registry)  # the registry alone is gone
    writer.write("d", 1)  # a new agent's registration notices the registry was absent
    assert store.agents() == ["a", "b", "c", "d"]
    assert store.stats()["registry_rebuilds"] == 1
    store.close()


# --- cluster ---------------------------------------------------------------------------------



def owner(cluster: RedisClusterServers, admin: RedisCluster, key: str) -> RedisServer:
    port = admin.get_node_from_key(key).port
    return next(node for node in cluster.nodes if node.port == port)


def test_writes_follow_a_slot_migration_mid_stream(
    own_cluster: RedisClusterServers, key_prefix: str
) -> None:
    store = make_store(own_cluster.url, key_prefix, cluster=True)
    admin = RedisCluster.from_url(own_cluster.url)
    moved, stays = "moved-agent", "other-agent"
    meta = store.keys.meta(moved)
    source = owner(own_cluster, admin, meta)
    target = next(node for node in own_cluster.nodes if node is not source)
    slot = admin.keyslot(meta)
    writer = Writer(store)
    writer.write(moved, 10)
    writer.write(stays, 10)

    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_writing() -> None:
        try:
            while not stop.is_set():
                writer.write(moved, 1)
                writer.write(stays, 1)
        except BaseException as exc:  # reported by the test, never swallowed
            errors.append(exc)

    def mid_way() -> None:
        time.sleep(0.3)  # writes land on the source while the slot is MIGRATING

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        own_cluster.migrate_slot(slot, source, target, between=mid_way)
        time.sleep(0.5)  # and keep going after the slot has moved
    finally:
        stop.set()
        thread.join(60)
    assert not errors
    writer.write(moved, 5)
    writer.write(stays, 5)

    assert owner_port_after(store, meta) == target.port
    assert store.stats()["cluster_redirects"] >= 1  # the old slot map was followed, then fixed
    for agent in (moved, stays):
        assert store.run_count(agent) == writer.sent[agent]
        assert tally(store, agent) == writer.sent[agent]
    assert store.agents() == sorted([moved, stays])
    admin.close()
    store.close()


def owner_port_after(store: RedisStore, key: str) -> int:
    client = store._client_for("test")
    assert isinstance(client, RedisCluster)
    return int(client.get_node_from_key(key).port)


def test_a_node_restart_mid_stream_loses_nothing_written_after_it(
    own_cluster: RedisClusterServers, key_prefix: str
) -> None:
    store = make_store(own_cluster.url, key_prefix, cluster=True)
    admin = RedisCluster.from_url(own_cluster.url)
    agents_by_node: dict[int, str] = {}
    for i in range(300):
        agent = f"agent-{i}"
        agents_by_node.setdefault(admin.get_node_from_key(store.keys.meta(agent)).port, agent)
    registry_port = admin.get_node_from_key(store.keys.registry).port
    admin.close()
    # Restart the node holding the registry, so both the agent's data and the
    # registry are lost, and some other agents are not affected at all.
    restarted = next(node for node in own_cluster.nodes if node.port == registry_port)
    victim = agents_by_node[restarted.port]
    agents = sorted(agents_by_node.values())
    before = Writer(store, "before")
    for agent in agents:
        before.write(agent, 3)

    restarted.stop()
    with pytest.raises(StoreUnavailableError):
        store.save_runs([make_run(victim, "while-down")])
    restarted.start()  # same port, same cluster config file, no data

    after = Writer(store, "after")
    for _ in range(4):
        for agent in agents:
            after.write(agent, 1)
    for agent in agents:
        expected = after.sent[agent] + (0 if agent == victim else before.sent[agent])
        assert store.run_count(agent) == expected, agent
        assert tally(store, agent) == expected, agent
    assert store.agents() == agents
    store.close()
