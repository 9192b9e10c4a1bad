"""RedisStore over TLS (a self-signed test CA) with an ACL user and password."""

from __future__ import annotations

import pytest
import redis

from otel_adaptive.store.base import StoreUnavailableError
from otel_adaptive.store.redis import RedisStore, StoreAuthenticationError
from redis_helpers import Tally, learners, make_run, tally_delta
from redis_servers import TlsRedis


def tls_store(tls_redis: TlsRedis, url: str, prefix: str, **options: str) -> RedisStore:
    return RedisStore.from_url(
        url,
        ssl_ca_certs=str(tls_redis.files.ca_cert),
        key_prefix=prefix,
        learners=learners(),
        **options,  # type: ignore[arg-type]
    )


def test_tls_with_an_acl_user_stores_and_merges(tls_redis: TlsRedis, key_prefix: str) -> None:
    url = tls_redis.url_with(tls_redis.username, tls_redis.password)
    store = tls_store(tls_redis, url, key_prefix)
    try:
        store.save_runs([make_run("agent", "r1")])
        assert store.merge("b1", [tally_delta("agent", runs=Tally(3))])
        assert [r.id for r in store.list_runs("agent")] == ["r1"]
        assert store.agents() == ["agent"]

        description = store.describe()
        assert description["url"] == (
            f"rediss://{tls_redis.username}:***@127.0.0.1:{tls_redis.server.port}/0"
        )
        assert tls_redis.password not in repr(store)
        assert tls_redis.password not in str(description)
    finally:
        store.close()


def test_a_client_certificate_can_be_presented(tls_redis: TlsRedis, key_prefix: str) -> None:
    url = tls_redis.url_with(tls_redis.username, tls_redis.password)
    store = tls_store(
        tls_redis,
        url,
        key_prefix,
        ssl_certfile=str(tls_redis.files.client_cert),
        ssl_keyfile=str(tls_redis.files.client_key),
    )
    try:
        assert store.run_count("agent") == 0
    finally:
        store.close()


def test_a_wrong_password_is_a_clear_error_without_the_password(
    tls_redis: TlsRedis, key_prefix: str
) -> None:
    wrong = "not-the-password-42"
    store = tls_store(tls_redis, tls_redis.url_with(tls_redis.username, wrong), key_prefix)
    try:
        with pytest.raises(StoreAuthenticationError) as caught:
            store.save_runs([make_run("agent", "r1")])
    finally:
        store.close()
    error = caught.value
    assert isinstance(error, StoreUnavailableError)
    assert isinstance(error.__cause__, redis.AuthenticationError)
    assert "credentials" in str(error) and tls_redis.username in str(error)
    for text in (str(error), repr(error), repr(store), str(store.describe())):
        assert wrong not in text
        assert tls_redis.password not in text


def test_the_default_user_is_refused(tls_redis: TlsRedis, key_prefix: str) -> None:
    store = tls_store(tls_redis, tls_redis.url, key_prefix)
    try:
        with pytest.raises(StoreUnavailableError):
            store.agents()
    finally:
        store.close()


def test_an_untrusted_server_certificate_is_refused(tls_redis: TlsRedis, key_prefix: str) -> None:
    url = tls_redis.url_with(tls_redis.username, tls_redis.password)
    store = RedisStore.from_url(url, key_prefix=key_prefix, learners=learners())
    try:
        with pytest.raises(StoreUnavailableError, match=r"(?i)certificate"):
            store.agents()
    finally:
        store.close()
