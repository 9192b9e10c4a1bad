"""Fixtures of the reliability suite (the top-level ones, such as ``redis_server``, apply too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redis_servers import RedisServer, find_redis_server


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    """A private server that fsyncs every write before it answers, so that what it
    acknowledged survives a SIGKILL and counts after a crash can be exact."""
    executable = find_redis_server()
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable, extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:
        yield server
    finally:
        server.close()
