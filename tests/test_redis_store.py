"""RedisStore against a real redis-server: runs, merges, bad data, outages."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import struct
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from otel_adaptive.store import _redis_lua
from otel_adaptive.store.base import AgentDelta, StoreUnavailableError
from otel_adaptive.store.redis import STORE_SCHEMA_VERSION, RedisKeyLayout, RedisStore
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
from redis_servers import BlackholeServer, RedisProxy, RedisServer

SECOND_NS = 1_000_000_000
LOGGER = "otel_adaptive.store.redis"


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def redis_port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def make_store(url: str, prefix: str, **kwargs: object) -> RedisStore:
    return RedisStore.from_url(url, key_prefix=prefix, learners=learners(), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisStore]:
    created = make_store(redis_url, key_prefix)
    yield created
    created.close()


def tally_count(store: RedisStore, agent_id: str, field: str = "runs") -> int:
    value = store.load_fields(agent_id, "tally")[field]
    assert isinstance(value, Tally)
    return value.count


def warnings_about(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and key in r.getMessage()]


# -- runs --------------------------------------------------------------------------------------


def test_runs_come_back_oldest_first_and_limit_takes_the_newest(store: RedisStore) -> None:
    ends = [5, 1, 4, 2, 3]
    store.save_runs([make_run("agent", f"r{end}", BASE_NS + end * MS) for end in ends])

    assert [r.id for r in store.list_runs("agent")] == ["r1", "r2", "r3", "r4", "r5"]
    assert [r.id for r in store.list_runs("agent", limit=2)] == ["r4", "r5"]
    assert [r.id for r in store.list_runs("agent", limit=50)] == ["r1", "r2", "r3", "r4", "r5"]
    assert store.list_runs("agent", limit=0) == []
    assert store.list_runs("someone-else") == []
    assert store.run_count("agent") == 5
    with pytest.raises(ValueError, match="limit"):
        store.list_runs("agent", limit=-1)


def test_a_stored_run_decodes_to_an_equal_record(store: RedisStore) -> None:
    run = make_run("agent", "r1", llm_calls=3)
    store.save_runs([run])
    assert store.list_runs("agent") == [run]


def test_retention_by_count_keeps_the_newest_and_the_hash_in_step(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    store = make_store(redis_url, key_prefix, max_runs_per_agent=3)
    store.save_runs([make_run("agent", f"r{i}", BASE_NS + i * MS) for i in range(4)])
    store.save_runs([make_run("agent", f"r{i}", BASE_NS + i * MS) for i in range(4, 6)])

    assert [r.id for r in store.list_runs("agent")] == ["r3", "r4", "r5"]
    assert store.run_count("agent") == 3
    assert admin.hlen(store.keys.runs("agent")) == 3
    assert store.stats()["runs_expired"] == 3


def test_retention_by_age_drops_runs_that_ended_too_long_ago(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    store = make_store(redis_url, key_prefix, run_max_age_seconds=60)
    now_ns = time.time_ns()
    store.save_runs(
        [
            make_run("agent", "old", now_ns - 120 * SECOND_NS),
            make_run("agent", "recent", now_ns - 10 * SECOND_NS),
        ]
    )
    assert [r.id for r in store.list_runs("agent")] == ["recent"]
    assert admin.hkeys(store.keys.runs("agent")) == [b"recent"]


def test_saving_a_run_again_replaces_it(store: RedisStore) -> None:
    store.save_runs([make_run("agent", "r1", BASE_NS), make_run("agent", "r2", BASE_NS + MS)])
    store.save_runs([make_run("agent", "r1", BASE_NS), make_run("agent", "r2", BASE_NS + MS)])
    assert store.run_count("agent") == 2

    moved = make_run("agent", "r1", BASE_NS + 5 * MS, llm_calls=4)
    store.save_runs([moved])
    assert store.run_count("agent") == 2
    assert store.list_runs("agent")[-1] == moved


def test_a_batch_of_many_agents_is_one_round_trip(store: RedisStore) -> None:
    store.save_runs([make_run("warm-up", "r0")])  # loads the scripts
    before = store.stats()
    store.save_runs(
        [make_run(f"agent-{a}", f"r{i}", BASE_NS + i * MS) for a in range(3) for i in range(40)]
    )
    after = store.stats()
    assert after["round_trips"] - before["round_trips"] == 1
    # One script per agent plus one registry update.
    assert after["commands"] - before["commands"] == 4
    assert store.agents() == ["agent-0", "agent-1", "agent-2", "warm-up"]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(agent_id=st.text(max_size=12), other=st.text(max_size=12))
def test_every_key_of_an_agent_shares_one_slot_and_agents_never_collide(
    agent_id: str, other: str
) -> None:
    layout = RedisKeyLayout("p:", ["tally", "trie"])
    keys = layout.agent_keys(agent_id)
    assert len({key_slot(k.encode()) for k in keys}) == 1
    if other != agent_id:
        assert not set(keys) & set(layout.agent_keys(other))


@pytest.mark.parametrize("agent_id", ["", "{", "}", "a}b{c", "%7B", "x{}", "ünï cødé"])
def test_awkward_agent_ids_round_trip(store: RedisStore, agent_id: str) -> None:
    store.save_runs([make_run(agent_id, "r1")])
    assert store.merge("b1", [tally_delta(agent_id, runs=Tally(1))])
    assert [r.agent_id for r in store.list_runs(agent_id)] == [agent_id]
    assert tally_count(store, agent_id) == 1
    assert store.agents() == [agent_id]


def test_braces_in_the_prefix_are_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        make_store(redis_url, "app{1}:")


# -- merge -------------------------------------------------------------------------------------


def test_a_batch_id_is_applied_once(store: RedisStore) -> None:
    assert store.merge("batch-1", [tally_delta("agent", runs=Tally(3))]) is True
    assert store.merge("batch-1", [tally_delta("agent", runs=Tally(3))]) is False
    assert store.merge("batch-2", [tally_delta("agent", runs=Tally(4))]) is True

    assert tally_count(store, "agent") == 7
    stats = store.stats()
    assert stats["batches_deduplicated"] == 1
    assert stats["batches_applied"] == 2


def test_one_batch_merges_many_agents_learners_and_repeated_deltas(store: RedisStore) -> None:
    trie_fields = learners()["trie"].learn([make_run("a", "r1", llm_calls=3)])["a"]
    deltas = [
        tally_delta("a", runs=Tally(1), other=Tally(5)),
        tally_delta("a", runs=Tally(2)),
        tally_delta("b", runs=Tally(10)),
        AgentDelta(agent_id="a", learner="trie", fields=trie_fields),
    ]
    assert store.merge("batch", deltas)

    assert tally_count(store, "a") == 3
    assert tally_count(store, "a", "other") == 5
    assert tally_count(store, "b") == 10
    loaded = store.load_fields("a", "trie")
    assert set(loaded) == set(trie_fields)
    assert all(loaded[k].to_bytes() == v.to_bytes() for k, v in trie_fields.items())
    assert store.agents() == ["a", "b"]


def test_merging_into_an_unknown_learner_is_a_programming_error(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="nope"):
        store.merge("b", [AgentDelta(agent_id="a", learner="nope", fields={"x": Tally(1)})])
    with pytest.raises(ValueError, match="nope"):
        store.load_fields("a", "nope")


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=st.lists(finite_or_not, max_size=20), second=st.lists(finite_or_not, max_size=20))
def test_floats_survive_a_merge_bit_for_bit(
    store: RedisStore, first: list[float], second: list[float]
) -> None:
    # Named by the exact bits: repr() shows every NaN alike, and an example that only
    # differs from an earlier one in a NaN's sign would find that one's agent.
    bits = struct.pack(f"<{len(first)}d", *first) + b"|" + struct.pack(f"<{len(second)}d", *second)
    agent = f"floats-{hashlib.sha1(bits).hexdigest()}"
    store.merge(f"{agent}-1", [tally_delta(agent, runs=Tally(1, tuple(first)))])
    store.merge(f"{agent}-2", [tally_delta(agent, runs=Tally(1, tuple(second)))])

    loaded = store.load_fields(agent, "tally")["runs"]
    assert isinstance(loaded, Tally)
    expected = first + second
    assert struct.pack(f"<{len(expected)}d", *loaded.samples) == struct.pack(
        f"<{len(expected)}d", *expected
    )


def test_a_merge_whose_reply_is_lost_counts_once_when_retried(
    redis_url: str, key_prefix: str
) -> None:
    proxy = RedisProxy(redis_port(redis_url))
    store = make_store(proxy.url, key_prefix)
    try:
        assert store.merge("warm-up", [tally_delta("agent", runs=Tally(1))])
        write_sha = hashlib.sha1(_redis_lua.MERGE_SHARD.encode()).hexdigest().encode()
        proxy.drop_reply_to(write_sha)

        with pytest.raises(StoreUnavailableError):
            store.merge("batch-2", [tally_delta("agent", runs=Tally(10))])
        assert proxy.dropped.is_set()  # Redis applied the write; the reply was lost

        assert store.merge("batch-2", [tally_delta("agent", runs=Tally(10))]) is False
        assert tally_count(store, "agent") == 11
    finally:
        store.close()
        proxy.close()


def test_a_killed_connection_then_a_retry_counts_once(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    name = f"store-{key_prefix.replace(':', '-')}"
    client = redis.Redis.from_url(redis_url, client_name=name)
    store = RedisStore(client, key_prefix=key_prefix, learners=learners())
    assert store.merge("batch-1", [tally_delta("agent", runs=Tally(2))])
    # Kill only this store's connection: the server may be shared ($REDIS_URL).
    addresses = [c["addr"] for c in admin.client_list() if c["name"] == name]
    assert addresses
    for address in addresses:
        admin.client_kill(address)

    for _ in range(2):  # the first call may see the dead connection
        try:
            applied = store.merge("batch-1", [tally_delta("agent", runs=Tally(2))])
            break
        except StoreUnavailableError:
            continue
    assert applied is False
    assert tally_count(store, "agent") == 2


def test_four_processes_lose_no_update(redis_url: str, key_prefix: str) -> None:
    processes, runs_each = 4, 250
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        stats = pool.starmap(
            fleet_worker,
            [(redis_url, False, key_prefix, "fleet", w, runs_each) for w in range(processes)],
        )

    store = make_store(redis_url, key_prefix, max_runs_per_agent=100_000)
    total_runs = processes * runs_each
    assert store.run_count("fleet") == total_runs
    assert tally_count(store, "fleet") == total_runs
    root = store.load_fields("fleet", "trie")[ROOT_ANY_FIELD]
    assert root.remaining_calls.count == 2 * total_runs  # type: ignore[attr-defined]
    assert sum(s["batches_applied"] for s in stats) == total_runs


def test_merge_cost_does_not_grow_with_stored_state(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    # Through a proxy, so only this store's reply bytes are counted.
    proxy = RedisProxy(redis_port(redis_url))
    store = make_store(proxy.url, key_prefix)
    try:
        store.merge("seed-small", [tally_delta("small", **{f"f{i}": Tally(1) for i in range(10)})])
        store.merge("seed-big", [tally_delta("big", **{f"f{i}": Tally(1) for i in range(10_000)})])
        assert admin.hlen(store.keys.shard("big", "tally", store._writer)) == 10_000

        def cost(agent: str, batch: str) -> tuple[int, int, int]:
            before_stats, before_bytes = store.stats(), proxy.reply_bytes
            store.merge(batch, [tally_delta(agent, **{f"f{i}": Tally(1) for i in range(5)})])
            after_stats, after_bytes = store.stats(), proxy.reply_bytes
            return (
                after_stats["commands"] - before_stats["commands"],
                after_stats["round_trips"] - before_stats["round_trips"],
                after_bytes - before_bytes,
            )

        small_commands, small_trips, small_bytes = cost("small", "next-small")
        big_commands, big_trips, big_bytes = cost("big", "next-big")
        # One script call: this process wrote the shard, so it knows what is there.
        assert (big_commands, big_trips) == (small_commands, small_trips) == (1, 1)
        # Reading the whole big state would send back ~10,000 fields; a merge reads none.
        assert big_bytes == small_bytes
        assert tally_count(store, "big", "f3") == 2
    finally:
        store.close()
        proxy.close()


# -- bad data ----------------------------------------------------------------------------------


def test_corrupt_field_bytes_are_skipped_logged_once_and_counted(
    store: RedisStore, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store.merge("b1", [tally_delta("agent", runs=Tally(1), good=Tally(7))])
    key = store.keys.learned("agent", "tally")  # the base, as an older layout left it
    admin.hset(key, mapping={"runs": b"\x00garbage", "old": Tally(3).to_bytes()})
    caplog.set_level(logging.WARNING, logger=LOGGER)

    assert set(store.load_fields("agent", "tally")) == {"good", "runs", "old"}
    assert set(store.load_fields("agent", "tally")) == {"good", "runs", "old"}
    assert store.merge("b2", [tally_delta("agent", runs=Tally(1), good=Tally(1))])

    assert len(warnings_about(caplog, key)) == 1
    assert "cannot be decoded" in warnings_about(caplog, key)[0]
    assert store.bad_data_count == 2
    assert store.bad_data_by_reason == {"corrupt": 2}
    # ignore: the bad value is left alone, every good value still counts.
    assert admin.hget(key, "runs") == b"\x00garbage"
    assert tally_count(store, "agent", "good") == 8
    assert tally_count(store, "agent", "runs") == 2
    assert tally_count(store, "agent", "old") == 3


def test_replace_mode_overwrites_a_corrupt_field_on_the_next_merge(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    store = make_store(redis_url, key_prefix, on_bad_data="replace")
    store.merge("b1", [tally_delta("agent", runs=Tally(1))])
    shard = store.keys.shard("agent", "tally", store._writer)
    admin.hset(shard, "runs", b"\x00garbage")
    # This process's shard is only ever written by it: what it knows it wrote wins.
    assert store.merge("b2", [tally_delta("agent", runs=Tally(5))])
    assert tally_count(store, "agent") == 6
    # Once it cannot trust its shard (a lost reply), a bad value is found and replaced.
    store._distrust_own("agent")
    admin.hset(shard, "runs", b"\x00garbage")
    assert store.merge("b3", [tally_delta("agent", runs=Tally(5))])
    assert tally_count(store, "agent") == 5
    assert store.bad_data_by_reason == {"corrupt": 1}


def test_a_key_of_the_wrong_type_never_raises(
    store: RedisStore, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    runs_key = store.keys.runs("agent")
    learned_key = store.keys.shard("agent", "tally", store._writer)
    admin.set(runs_key, "not a hash")
    admin.rpush(learned_key, "not", "a", "hash")
    admin.set(store.keys.run_index("other"), "not a zset")

    store.save_runs([make_run("agent", "r1")])
    store.save_runs([make_run("agent", "r2")])
    assert store.list_runs("agent") == []
    assert store.run_count("other") == 0
    assert store.merge("b1", [tally_delta("agent", runs=Tally(1))])
    assert store.load_fields("agent", "tally") == {}

    assert len(warnings_about(caplog, runs_key)) == 1
    assert "wrong type (string)" in warnings_about(caplog, runs_key)[0]
    assert len(warnings_about(caplog, learned_key)) == 1
    # Runs twice, list, run count, merge; the skipped merge listed no shard to read.
    assert store.bad_data_by_reason == {"wrong_type": 5}
    assert admin.get(runs_key) == b"not a hash"  # ignore leaves it alone


def test_replace_mode_repairs_keys_of_the_wrong_type(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    store = make_store(redis_url, key_prefix, on_bad_data="replace")
    admin.set(store.keys.runs("agent"), "not a hash")
    admin.set(store.keys.learned("agent", "tally"), "not a hash")
    admin.set(store.keys.registry, "not a set")

    store.save_runs([make_run("agent", "r1")])
    assert store.merge("b1", [tally_delta("agent", runs=Tally(2))])

    assert [r.id for r in store.list_runs("agent")] == ["r1"]
    assert tally_count(store, "agent") == 2
    assert store.agents() == ["agent"]
    assert store.bad_data_by_reason == {"wrong_type": 3}


def test_data_of_another_schema_version_is_left_alone(
    store: RedisStore, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    meta = store.keys.meta("agent")
    admin.hset(meta, "schema_version", "99")
    admin.hset(store.keys.learned("agent", "tally"), "runs", Tally(40).to_bytes())

    store.save_runs([make_run("agent", "r1")])
    assert store.merge("b1", [tally_delta("agent", runs=Tally(1))])
    assert store.load_fields("agent", "tally") == {}
    assert store.list_runs("agent") == []

    messages = warnings_about(caplog, meta)
    assert len(messages) == 1 and "another schema version (99)" in messages[0]
    assert store.bad_data_by_reason == {"schema_version": 4}
    assert admin.hget(meta, "schema_version") == b"99"
    assert admin.hget(store.keys.learned("agent", "tally"), "runs") == Tally(40).to_bytes()


def test_replace_mode_starts_an_agent_of_another_schema_version_afresh(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    store = make_store(redis_url, key_prefix, on_bad_data="replace")
    admin.hset(store.keys.meta("agent"), "schema_version", "99")
    admin.hset(store.keys.learned("agent", "tally"), "runs", Tally(40).to_bytes())

    assert store.merge("b1", [tally_delta("agent", runs=Tally(1))])
    store.save_runs([make_run("agent", "r1")])

    assert (
        admin.hget(store.keys.meta("agent"), "schema_version") == str(STORE_SCHEMA_VERSION).encode()
    )
    assert tally_count(store, "agent") == 1
    assert [r.id for r in store.list_runs("agent")] == ["r1"]
    assert store.bad_data_by_reason == {"schema_version": 1}


def test_a_corrupt_run_record_is_skipped_and_counted(store: RedisStore, admin: redis.Redis) -> None:
    store.save_runs([make_run("agent", "good", BASE_NS)])
    admin.hset(store.keys.runs("agent"), "bad", b"{not json")
    admin.zadd(store.keys.run_index("agent"), {"bad": BASE_NS / 1e9 + 1})

    assert [r.id for r in store.list_runs("agent")] == ["good"]
    assert store.bad_data_by_reason == {"corrupt": 1}


# -- outages and secrets -----------------------------------------------------------------------


def test_a_stopped_server_fails_fast_and_the_store_recovers(
    redis_server: RedisServer, key_prefix: str
) -> None:
    timeout = 0.5
    store = make_store(
        redis_server.url, key_prefix, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    store.save_runs([make_run("agent", "r1")])
    redis_server.stop()

    calls = [
        lambda: store.save_runs([make_run("agent", "r2")]),
        lambda: store.merge("b1", [tally_delta("agent", runs=Tally(1))]),
        lambda: store.list_runs("agent"),
        lambda: store.load_fields("agent", "tally"),
        lambda: store.run_count("agent"),
        store.agents,
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            call()
        assert time.monotonic() - started < 2 * (timeout + timeout) + 0.5
        assert isinstance(caught.value.__cause__, redis.ConnectionError)

    redis_server.start()  # empty again: no persistence
    store.save_runs([make_run("agent", "r3")])
    assert [r.id for r in store.list_runs("agent")] == ["r3"]


def test_a_server_that_never_answers_times_out(key_prefix: str) -> None:
    blackhole = BlackholeServer()
    store = make_store(blackhole.url, key_prefix, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="during merge"):
            store.merge("b1", [tally_delta("agent", runs=Tally(1))])
        assert time.monotonic() - started < 2 * 0.4 + 0.5
    finally:
        store.close()
        blackhole.close()


def test_passwords_stay_out_of_repr_describe_and_errors(key_prefix: str) -> None:
    blackhole = BlackholeServer()
    secret = "s3cr3t-p4ss"
    url = f"redis://alice:{secret}@127.0.0.1:{blackhole.port}/2?password={secret}"
    store = make_store(url, key_prefix, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        assert secret not in repr(store)
        assert store.describe() == {
            "url": f"redis://alice:***@127.0.0.1:{blackhole.port}/2?password=***",
            "cluster": False,
            "key_prefix": key_prefix,
            "schema_version": STORE_SCHEMA_VERSION,
        }
        with pytest.raises(StoreUnavailableError) as caught:
            store.agents()
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)
    finally:
        store.close()
        blackhole.close()


def test_a_store_built_from_a_client_masks_its_password(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=1, username="bob", password="hunter2", db=3)
    store = RedisStore(client, key_prefix=key_prefix, learners=learners())
    assert store.describe()["url"] == "redis://bob:***@127.0.0.1:1/3"
    assert "hunter2" not in repr(store)


def test_url_options_are_checked_and_cluster_is_a_url_option(redis_url: str) -> None:
    with pytest.raises(ValueError, match="rediss://"):
        RedisStore.from_url(redis_url, ssl_ca_certs="/nowhere/ca.pem", learners=learners())
    # No connection is made until first use, so any address will do here.
    store = RedisStore.from_url("redis://127.0.0.1:1?cluster=true", learners=learners())
    assert store.describe()["cluster"] is True
    assert store.describe()["url"] == "redis://127.0.0.1:1"


def test_a_client_that_decodes_replies_is_refused() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(redis.Redis(decode_responses=True), learners=learners())


@settings(max_examples=40, deadline=None)
@given(
    user=st.text(alphabet="abcxyz", min_size=1, max_size=8),
    secret=st.text(min_size=12, max_size=30).filter(lambda s: s.strip() == s),
)
def test_no_password_leaks_whatever_its_characters(user: str, secret: str) -> None:
    quoted = quote(secret, safe="")
    # Port 1 refuses at once: the error path runs without waiting.
    store = RedisStore.from_url(
        f"redis://{user}:{quoted}@127.0.0.1:1/0", key_prefix="p:", learners=learners()
    )
    with pytest.raises(StoreUnavailableError) as caught:
        store.agents()
    for text in (repr(store), str(store.describe()), str(caught.value), repr(caught.value)):
        assert secret not in text
        assert quoted not in text


def test_big_batches_cross_the_scripts_chunk_size_with_few_commands(
    redis_url: str, key_prefix: str
) -> None:
    store = make_store(redis_url, key_prefix, max_runs_per_agent=5000)
    runs = [make_run("bulk", f"r{i}", end_ns=BASE_NS + i * 1_000_000) for i in range(1201)]
    store.save_runs(runs)
    assert [r.id for r in store.list_runs("bulk")] == [r.id for r in runs]
    fields = {f"f{i}": Tally(i) for i in range(1201)}
    hset_before = _server_calls(redis_url, "hset")
    assert store.merge("bulk-1", [tally_delta("bulk", **fields)])
    assert store.merge("bulk-2", [tally_delta("bulk", **fields)])
    # Inside the scripts, writes go 500 fields at a time, not one command per field
    # (the server is shared by the session: only a bound on the difference holds).
    assert _server_calls(redis_url, "hset") - hset_before < 100
    loaded = store.load_fields("bulk", "tally")
    assert all(loaded[f"f{i}"] == Tally(2 * i) for i in range(1201))
    store.close()


def _server_calls(url: str, command: str) -> int:
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
