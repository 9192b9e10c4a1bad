"""Processes forked after the provider was set up, as gunicorn and multiprocessing do."""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

import pytest
from reliability_helpers import agent_run, root_samples

from otel_adaptive import AdaptiveSpanProcessor
from spans import make_processor

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

RUNS_STORED_BEFORE_FORK, RUNS_QUEUED_AT_FORK, CHILD_RUNS, LLM_CALLS = 5, 7, 4, 2
EVENTS_PER_RUN = 2 * (1 + LLM_CALLS)
CHILD_TIMEOUT_SECONDS = 30


def _parent_with_queued_runs(url: str, cluster: bool, key_prefix: str) -> tuple[Any, Any, Any]:
    """A provider whose exporter has written some runs and still holds others in its queue."""
    provider, processor, tracer = make_processor(
        redis_url=url, redis_cluster=cluster, key_prefix=key_prefix
    )
    for _ in range(RUNS_STORED_BEFORE_FORK):
        agent_run(tracer, "parent", LLM_CALLS)
    assert processor.force_flush(10_000)  # connected, and these are stored
    for _ in range(RUNS_QUEUED_AT_FORK):
        agent_run(tracer, "parent", LLM_CALLS)
    # The long schedule delay keeps these queued while the children are forked.
    assert processor.stats()["queue_depth"] == RUNS_QUEUED_AT_FORK * EVENTS_PER_RUN
    return provider, processor, tracer


def _child_work(processor: AdaptiveSpanProcessor, tracer: Any) -> dict[str, Any]:
    for _ in range(CHILD_RUNS):
        agent_run(tracer, "child", LLM_CALLS)
    # Like any batching processor, a child that ends with os._exit (multiprocessing
    # does) must flush first: its atexit handlers do not run.
    flushed = processor.force_flush(10_000)
    return {"flushed": flushed, **processor.stats()}


def _check_child(result: dict[str, Any]) -> None:
    assert "error" not in result, result.get("error")
    assert result["flushed"]
    # The child saw only its own spans: nothing of the parent's queue came with it.
    assert result["spans_ended"] == CHILD_RUNS * (1 + LLM_CALLS)
    assert result["runs_completed"] == result["runs_stored"] == CHILD_RUNS


def _check_store(processor: AdaptiveSpanProcessor, children: int) -> None:
    assert processor.force_flush(10_000)
    store = processor.store
    parent_runs = RUNS_STORED_BEFORE_FORK + RUNS_QUEUED_AT_FORK
    assert store.run_count("parent") == parent_runs
    assert root_samples(store, "parent") == parent_runs * LLM_CALLS
    assert store.run_count("child") == children * CHILD_RUNS
    assert root_samples(store, "child") == children * CHILD_RUNS * LLM_CALLS
    assert processor.stats()["runs_stored"] == parent_runs


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_os_fork_child_stores_its_runs_and_the_parents_are_not_duplicated(
    topology: str, request: pytest.FixtureRequest, key_prefix: str
) -> None:
    cluster = topology == "cluster"
    url = request.getfixturevalue("redis_cluster" if cluster else "redis_url")
    provider, processor, tracer = _parent_with_queued_runs(url, cluster, key_prefix)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = 1
        try:
            os.close(read_fd)
            try:
                result = _child_work(processor, tracer)
                provider.shutdown()  # what a gunicorn worker's exit does (atexit)
            except BaseException:
                result = {"error": traceback.format_exc()}
            os.write(write_fd, json.dumps(result).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], CHILD_TIMEOUT_SECONDS)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the forked child did not report within {CHILD_TIMEOUT_SECONDS} s")
        with os.fdopen(read_fd, closefd=False) as pipe:
            child = json.loads(pipe.read() or '{"error": "no report"}')
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    _check_child(child)
    _check_store(processor, children=1)
    provider.shutdown()


def _process_target(processor: AdaptiveSpanProcessor, tracer: Any, conn: Connection) -> None:
    try:
        conn.send(_child_work(processor, tracer))
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def test_multiprocessing_fork_children_store_their_runs_once(
    redis_url: str, key_prefix: str
) -> None:
    provider, processor, tracer = _parent_with_queued_runs(redis_url, False, key_prefix)
    context = multiprocessing.get_context("fork")
    children = 3
    pipes = [context.Pipe(duplex=False) for _ in range(children)]
    workers = [
        context.Process(target=_process_target, args=(processor, tracer, sender))
        for _, sender in pipes
    ]
    for worker in workers:
        worker.start()
    results = []
    for (receiver, sender), worker in zip(pipes, workers, strict=True):
        sender.close()
        if not receiver.poll(CHILD_TIMEOUT_SECONDS):
            worker.kill()
            pytest.fail(f"a forked worker did not report within {CHILD_TIMEOUT_SECONDS} s")
        results.append(receiver.recv())
        worker.join(CHILD_TIMEOUT_SECONDS)
        assert worker.exitcode == 0
    for result in results:
        _check_child(result)
    _check_store(processor, children=children)
    provider.shutdown()
