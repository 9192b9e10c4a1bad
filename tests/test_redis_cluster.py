"""RedisStore against a real three-master Redis Cluster."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from otel_adaptive.store.redis import RedisStore
from redis_helpers import (
    BASE_NS,
    MS,
    ROOT_ANY_FIELD,
    Tally,
    fleet_worker,
    learners,
    make_run,
    tally_delta,
)


@pytest.fixture
def store(redis_cluster: str, key_prefix: str) -> Iterator[RedisStore]:
    created = RedisStore.from_url(
        f"{redis_cluster}?cluster=true", key_prefix=key_prefix, learners=learners()
    )
    yield created
    created.close()


@pytest.fixture
def cluster_admin(redis_cluster: str) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster)
    yield client
    client.close()


def agents_on_every_node(cluster_admin: RedisCluster, store: RedisStore) -> list[str]:
    """Agent ids whose keys land on each of the three masters."""
    chosen: dict[str, str] = {}
    for i in range(200):
        agent = f"agent-{i}"
        node = cluster_admin.get_node_from_key(store.keys.meta(agent))
        chosen.setdefault(node.name, agent)
    assert len(chosen) == 3
    return sorted(chosen.values())


def test_an_agents_keys_live_in_one_slot(store: RedisStore, cluster_admin: RedisCluster) -> None:
    agent = "x{y}z"
    store.save_runs([make_run(agent, "r1")])
    store.merge("b1", [tally_delta(agent, runs=Tally(1))])
    slots = {
        cluster_admin.keyslot(key)
        for key in store.keys.agent_keys(agent)
        if cluster_admin.exists(key)
    }
    assert len(slots) == 1
    assert cluster_admin.exists(store.keys.registry)


def test_runs_and_merges_across_every_node(store: RedisStore, cluster_admin: RedisCluster) -> None:
    agents = agents_on_every_node(cluster_admin, store)
    store.save_runs([make_run(a, f"r{i}", BASE_NS + i * MS) for a in agents for i in range(5)])
    assert store.merge("b1", [tally_delta(a, runs=Tally(2)) for a in agents])
    assert store.merge("b1", [tally_delta(a, runs=Tally(2)) for a in agents]) is False

    assert store.agents() == agents
    for agent in agents:
        assert [r.id for r in store.list_runs(agent, limit=2)] == ["r3", "r4"]
        assert store.run_count(agent) == 5
        value = store.load_fields(agent, "tally")["runs"]
        assert isinstance(value, Tally) and value.count == 2
    assert store.stats()["batches_deduplicated"] == 3


def test_a_batch_is_one_pipeline_per_node_without_key_lookups(
    store: RedisStore, cluster_admin: RedisCluster
) -> None:
    agents = agents_on_every_node(cluster_admin, store)
    store.save_runs([make_run(a, "warm-up") for a in agents])  # loads scripts on every node
    before, getkeys_before = store.stats(), _count_getkeys(cluster_admin)
    store.save_runs([make_run(a, f"r{i}") for a in agents for i in range(20)])
    after = store.stats()
    assert after["round_trips"] - before["round_trips"] == len(agents)  # one per node
    assert after["commands"] - before["commands"] == len(agents)
    # A cluster pipeline would ask each node for the keys of every EVALSHA first.
    assert _count_getkeys(cluster_admin) == getkeys_before


def _count_getkeys(cluster_admin: RedisCluster) -> int:
    total = 0
    for node in cluster_admin.get_primaries():
        stats = cluster_admin.get_redis_connection(node).info("commandstats")
        total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total


def test_four_processes_lose_no_update_on_a_cluster(redis_cluster: str, key_prefix: str) -> None:
    processes, runs_each = 4, 250
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.starmap(
            fleet_worker,
            [(redis_cluster, True, key_prefix, "fleet", w, runs_each) for w in range(processes)],
        )

    store = RedisStore.from_url(
        redis_cluster,
        cluster=True,
        key_prefix=key_prefix,
        learners=learners(),
        max_runs_per_agent=100_000,
    )
    total_runs = processes * runs_each
    assert store.run_count("fleet") == total_runs
    tally = store.load_fields("fleet", "tally")["runs"]
    assert isinstance(tally, Tally) and tally.count == total_runs
    root = store.load_fields("fleet", "trie")[ROOT_ANY_FIELD]
    assert root.remaining_calls.count == 2 * total_runs  # type: ignore[attr-defined]
    store.close()


def test_a_store_can_wrap_an_existing_cluster_client(redis_cluster: str, key_prefix: str) -> None:
    client = RedisCluster.from_url(redis_cluster)
    store = RedisStore(client, key_prefix=key_prefix, learners=learners())
    try:
        assert store.describe()["cluster"] is True
        store.save_runs([make_run("agent", "r1")])
        assert [r.id for r in store.list_runs("agent")] == ["r1"]
    finally:
        client.close()
