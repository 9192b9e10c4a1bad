"""Builds the store a configuration asks for."""

from __future__ import annotations

from collections.abc import Mapping

from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.learners.base import Learner
from otel_adaptive.store.base import Store
from otel_adaptive.store.memory import MemoryStore


def create_store(config: AdaptiveConfig, learners: Mapping[str, Learner]) -> Store:
    """The Redis store when ``redis_url`` is set, else the in-memory store.

    Creating a Redis store does not connect: the exporter connects (and retries)
    in the background, so an application starts even while Redis is down.
    """
    if config.redis_url is None:
        return MemoryStore(
            max_runs_per_agent=config.max_runs_per_agent,
            run_max_age_seconds=config.run_max_age_seconds,
            max_agents=config.max_agents,
            learners=learners,
        )
    from otel_adaptive.store.redis import RedisStore

    return RedisStore.from_url(
        config.redis_url,
        cluster=config.redis_cluster,
        ssl_ca_certs=config.redis_ssl_ca_certs,
        ssl_certfile=config.redis_ssl_certfile,
        ssl_keyfile=config.redis_ssl_keyfile,
        socket_timeout=config.redis_socket_timeout_seconds,
        socket_connect_timeout=config.redis_connect_timeout_seconds,
        key_prefix=config.key_prefix,
        learners=learners,
        max_runs_per_agent=config.max_runs_per_agent,
        run_max_age_seconds=config.run_max_age_seconds,
        on_bad_data=config.on_bad_data,
    )
