"""What a merge into this process's own shard costs: bytes and commands sent, work done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from otel_adaptive.store import redis as redis_store
from otel_adaptive.store.redis import RedisStore
from redis_helpers import Tally, learners, tally_delta
from redis_servers import RedisProxy, RedisServer

# RESP framing of one argument: "$<length>\r\n<bytes>\r\n", at most this much beyond the bytes.
FRAMING = 8


@pytest.fixture
def proxied(redis_server: RedisServer, key_prefix: str) -> Iterator[tuple[RedisStore, RedisProxy]]:
    proxy = RedisProxy(redis_server.port)
    store = RedisStore.from_url(proxy.url, key_prefix=key_prefix, learners=learners())
    yield store, proxy
    store.close()
    proxy.close()


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def fields(count: int) -> dict[str, Tally]:
    return {f"field-{i:04d}": Tally(1) for i in range(count)}


def sent_for(store: RedisStore, proxy: RedisProxy, batch: str, count: int) -> tuple[int, int]:
    """(request bytes, commands) for merging ``count`` fields into the agent "a"."""
    before_bytes, before = proxy.request_bytes, store.stats()
    assert store.merge(batch, [tally_delta("a", **fields(count))])
    return proxy.request_bytes - before_bytes, store.stats()["commands"] - before["commands"]


def command_calls(admin: redis.Redis, *names: str) -> dict[str, int]:
    stats = admin.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names}


def test_a_merge_into_its_own_shard_sends_only_the_fields_and_values(
    proxied: tuple[RedisStore, RedisProxy],
) -> None:
    store, proxy = proxied
    assert store.merge("warm-up", [tally_delta("a", **fields(400))])  # shard written: known

    small, small_commands = sent_for(store, proxy, "b-100", 100)
    large, large_commands = sent_for(store, proxy, "b-300", 300)

    assert small_commands == large_commands == 1  # one script call, no read, no retry
    name_and_value = len("field-0000") + len(Tally(2).to_bytes())
    per_field = (large - small) / 200
    # Each field costs its name and new value: no digest of the value it replaces
    # (a SHA-1 in hex is 40 bytes) nor anything else per field.
    assert per_field <= name_and_value + 2 * FRAMING
    assert store.stats()["merge_retries"] == 0


def test_the_server_checks_nothing_per_field_on_an_owned_shard(
    proxied: tuple[RedisStore, RedisProxy], admin: redis.Redis
) -> None:
    store, _ = proxied
    assert store.merge("warm-up", [tally_delta("a", **fields(50))])
    before = command_calls(admin, "hmget", "hget", "hset", "evalsha")

    for i in range(5):
        assert store.merge(f"b{i}", [tally_delta("a", **fields(50))])

    after = command_calls(admin, "hmget", "hget", "hset", "evalsha")
    done = {name: after[name] - before[name] for name in after}
    assert done["evalsha"] == 5
    assert done["hmget"] == 0  # no field is read back
    # Per merge: the schema version and this writer's entry are read once each.
    assert done["hget"] == 5 * 2
    assert done["hset"] == 5 * 2  # the fields in one HSET, the writer entry in another
    assert store.load_fields("a", "tally")["field-0007"] == Tally(6)


def test_a_writer_unsure_of_its_shard_asks_with_names_only_then_writes(
    proxied: tuple[RedisStore, RedisProxy],
) -> None:
    store, proxy = proxied
    assert store.merge("warm-up", [tally_delta("a", **fields(200))])
    store._distrust_own("a")  # as after a lost reply

    before_bytes, before = proxy.request_bytes, store.stats()
    assert store.merge("b1", [tally_delta("a", **fields(200))])
    stats = store.stats()
    assert stats["round_trips"] - before["round_trips"] == 2  # the question, then the write
    assert stats["merge_retries"] - before["merge_retries"] == 1
    name_and_value = len("field-0000") + len(Tally(2).to_bytes())
    # The question carries no values: both calls together send less than two writes.
    assert proxy.request_bytes - before_bytes < 200 * (2 * name_and_value + 4 * FRAMING) + 2000
    assert store.load_fields("a", "tally")["field-0123"] == Tally(2)

    # Known again: the next merge is one call.
    _, commands = sent_for(store, proxy, "b2", 200)
    assert commands == 1
    assert store.load_fields("a", "tally")["field-0123"] == Tally(3)


def test_a_shard_changed_behind_the_writer_is_read_again_and_nothing_is_lost(
    proxied: tuple[RedisStore, RedisProxy], admin: redis.Redis
) -> None:
    store, _ = proxied
    assert store.merge("b1", [tally_delta("a", runs=Tally(1), kept=Tally(1))])
    shard = store.keys.shard("a", "tally", store._writer)
    writers = store.keys.writers("a")
    # As a fold step does: the field moves to the base and the writer entry changes.
    admin.hset(store.keys.learned("a", "tally"), "runs", Tally(1).to_bytes())
    admin.hdel(shard, "runs")
    entry = admin.hget(writers, store._writer)
    assert entry is not None
    admin.hset(writers, store._writer, entry + b"+")

    assert store.merge("b2", [tally_delta("a", runs=Tally(10), kept=Tally(10))])
    assert store.stats()["merge_retries"] == 1
    loaded = store.load_fields("a", "tally")
    assert loaded["runs"] == Tally(11)  # 1 in the base, 10 in the shard: not 12
    assert loaded["kept"] == Tally(11)


def test_a_writer_of_more_agents_than_it_remembers_never_takes_a_written_shard_for_empty(
    redis_server: RedisServer, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory for agents written stays bounded, and forgetting never loses data: past
    the bound, every agent's shard counts as maybe written (read back, not overwritten)."""
    monkeypatch.setattr(redis_store, "_OWN_AGENTS_CACHED", 1)  # shard views go at once
    monkeypatch.setattr(redis_store, "_WRITTEN_AGENTS_REMEMBERED", 3)
    store = RedisStore.from_url(redis_server.url, key_prefix=key_prefix, learners=learners())
    try:
        agents = [f"agent-{i}" for i in range(8)]
        for rounds in (1, 2, 3):
            for agent in agents:
                assert store.merge(f"{agent}-{rounds}", [tally_delta(agent, f=Tally(1))])
            assert len(store._written) <= 3
        assert store._written_overflow
        for agent in agents:
            assert store.load_fields(agent, "tally")["f"] == Tally(3)  # nothing overwritten
    finally:
        store.close()
