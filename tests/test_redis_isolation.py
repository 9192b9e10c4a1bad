"""One agent's bad or huge state never stops other agents' writes or reads.

State is read back in bounded chunks (HSCAN), never one blocking call over a
whole hash; a value over the per-value limit is left out, an agent over the
per-agent limit is skipped; each is reported once, and every other agent goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from otel_adaptive.store import redis as redis_store
from otel_adaptive.store.redis import RedisStore
from redis_helpers import Tally, learners, tally_delta

LOGGER = "otel_adaptive.store.redis"


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisStore]:
    created = RedisStore.from_url(redis_url, key_prefix=key_prefix, learners=learners())
    yield created
    created.close()


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_huge_fat_and_corrupt_agents_are_skipped_once_and_others_go_on(
    store: RedisStore, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    agents = ["good", "huge", "fat", "corrupt"]
    store.merge("b1", [tally_delta(agent, runs=Tally(1)) for agent in agents])
    huge = store.keys.learned("huge", "tally")
    for first in range(0, 100_000, 10_000):  # more fields than one agent may have
        admin.hset(
            huge, mapping={f"f{i}": Tally(1).to_bytes() for i in range(first, first + 10_000)}
        )
    fat = store.keys.learned("fat", "tally")
    admin.hset(fat, "big", b"\x00" * (redis_store._MAX_VALUE_BYTES + 1))
    admin.hset(fat, "small", Tally(5).to_bytes())
    corrupt = store.keys.learned("corrupt", "tally")
    admin.hset(corrupt, "runs", b"garbage")
    caplog.set_level(logging.WARNING, logger=LOGGER)

    for _ in range(2):  # refresh twice: reported once, counted twice
        before = store.stats()["round_trips"]
        assert store.load_fields("huge", "tally") == {}
        # Chunked: many bounded calls, never one over the whole hash.
        assert store.stats()["round_trips"] - before > 100_000 // redis_store._SCAN_COUNT // 2
        fat_fields = store.load_fields("fat", "tally")
        assert set(fat_fields) == {"runs", "small"}  # the oversized value alone is left out
        corrupt_fields = store.load_fields("corrupt", "tally")
        assert list(corrupt_fields) == ["runs"]
        assert corrupt_fields["runs"] == Tally(1)  # this writer's shard; the base is bad
        assert store.load_fields("good", "tally") == {"runs": Tally(1)}

    # Writes to every agent, the bad ones included, still go on.
    assert store.merge("b2", [tally_delta(agent, runs=Tally(1)) for agent in agents])
    assert store.load_fields("good", "tally") == {"runs": Tally(2)}
    assert store.stats()["batches_applied"] == 2 * len(agents)
    assert store.bad_data_by_reason == {"oversized": 4, "corrupt": 2}
    warned = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warned) == 3  # one line per bad key and reason
    assert any("huge" in m for m in warned) and any(fat in m for m in warned)


def test_a_value_past_the_call_budget_is_fetched_by_a_later_call(
    store: RedisStore, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "_MAX_CALL_BYTES", 100)
    key = store.keys.learned("agent", "tally")
    values = {f"f{i}": Tally(i, (1.0,) * 5).to_bytes() for i in range(20)}  # 52 bytes each
    admin.hset(key, mapping=values)
    before = store.stats()["round_trips"]
    loaded = store.load_fields("agent", "tally")
    assert {name: value.to_bytes() for name, value in loaded.items()} == values
    # At most one value per call once the budget is spent, so ~one call per value.
    assert store.stats()["round_trips"] - before >= 10


def test_an_absurd_decoded_count_is_rejected_as_bad_data(
    redis_url: str, key_prefix: str, admin: redis.Redis
) -> None:
    from otel_adaptive.learners import ToolParallelismLearner
    from otel_adaptive.learners.parallelism import RUNS_FIELD

    learner = ToolParallelismLearner()
    store = RedisStore.from_url(redis_url, key_prefix=key_prefix, learners={learner.name: learner})
    try:
        key = store.keys.learned("poisoned", learner.name)
        admin.hset(key, RUNS_FIELD, b'{"v":1,"runs":1000000000000000000000000000000}')
        admin.hset(store.keys.learned("fine", learner.name), RUNS_FIELD, b'{"v":1,"runs":3}')
        assert store.load_fields("poisoned", learner.name) == {}
        assert store.bad_data_by_reason == {"corrupt": 1}
        assert store.load_plan("fine").runs_observed == 3
    finally:
        store.close()
