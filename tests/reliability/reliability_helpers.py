"""Workloads and probes shared by the reliability tests.

A "run" here is one agent span with LLM calls beneath it, made through a real
tracer; each helper returns what a test needs to count exactly.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import redis
from opentelemetry import trace

from otel_adaptive import AdaptiveSpanProcessor
from otel_adaptive.store.base import Store
from redis_servers import RedisServer
from spans import LLM, agent_attrs, timed_span, usage

#: Span events per run made by :func:`agent_run` with one LLM call (2 spans x start/end).
EVENTS_PER_ONE_CALL_RUN = 4


def agent_run(tracer: trace.Tracer, agent: str, llm_calls: int = 2, tokens: int = 7) -> float:
    """One agent run of ``llm_calls`` sequential LLM calls; returns the app-side seconds."""
    started = time.perf_counter()
    with timed_span(tracer, "run", 0, 100, agent_attrs(agent)):
        for k in range(llm_calls):
            with timed_span(
                tracer, "chat m", k * 10, k * 10 + 5, LLM, end_attributes=usage(tokens)
            ):
                pass
    return time.perf_counter() - started


def root_samples(store: Store, agent: str) -> int:
    """LLM calls the agent's stored trie learned at its root (each call is one sample)."""
    envelope = store.load_trie(agent)
    if envelope is None:
        return 0
    prediction = envelope["root"]["predictions_any_index"]
    if prediction is None:
        return 0
    count: int = prediction["output_tokens"]["sample_count"]
    return count


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll for an effect only a background task can bring about; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.02)


def flushed(processor: AdaptiveSpanProcessor, timeout_millis: int = 2_000) -> Callable[[], bool]:
    """A condition: a flush of everything so far succeeds (the store took it all)."""
    return lambda: processor.force_flush(timeout_millis)


def kill_server(server: RedisServer) -> None:
    """SIGKILL the redis-server behind ``server`` (one this test started), like a crash."""
    with server.admin() as client:
        pid = int(client.info("server")["process_id"])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _answers(server), "the killed server to stop answering", 10)


def _answers(server: RedisServer) -> bool:
    try:
        with server.admin(socket_timeout=0.2, socket_connect_timeout=0.2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def stored_bytes(client: redis.Redis, prefix: str) -> dict[bytes, bytes]:
    """Every key under ``prefix`` with its serialized value (DUMP: every byte Redis holds)."""
    everything: dict[bytes, bytes] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        dumped = client.dump(key)
        if dumped is not None:
            everything[key] = dumped
    return everything


def stored_members(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every field, member and value under ``prefix``, read by type (no serialization)."""
    found: list[Any] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            for field, value in client.hgetall(key).items():
                found += [field, value]
        elif kind == b"zset":
            found += client.zrange(key, 0, -1)
        elif kind == b"set":
            found += client.smembers(key)
        elif kind == b"string":
            found.append(client.get(key) or b"")
        elif kind == b"list":
            found += client.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected key type {kind!r} at {key!r}")
    return [item if isinstance(item, bytes) else str(item).encode() for item in found]
