"""20,000 throwaway agent names beside one real agent: bounded memory, the real agent served.

Each throwaway agent makes one run; the real agent makes one run every
``_REAL_EVERY`` runs. Process memory (resident set) is measured after a quarter of
the flood and at its end: with agents bounded by ``max_agents`` it stays flat (the
assembler's bounded memory of emitted spans still fills up meanwhile, ~5 MB at most),
without the bound every new name adds learned state and a published plan. The real
agent keeps every run, is learned
and gets hints, and no span end on the application thread takes 50 ms.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from opentelemetry import trace

from otel_adaptive import AdaptiveSpanProcessor
from otel_adaptive.store.base import Store
from spans import LLM, agent_attrs, make_processor, usage

_AGENTS = 20_000
_REAL_EVERY = 100
_MAX_AGENTS = 200
#: Growth allowed between a quarter of the flood and its end. Without the bound the
#: 15,000 names in between cost tens of MB (learned state, plans, stored runs).
_MAX_GROWTH_BYTES = 12 * 1024 * 1024


class _EndTimer:
    """Wraps ``span.end`` calls to keep the longest one seen on this thread."""

    def __init__(self) -> None:
        self.longest = 0.0

    def end(self, span: trace.Span) -> None:
        started = time.perf_counter()
        span.end()
        self.longest = max(self.longest, time.perf_counter() - started)


def _run(tracer: trace.Tracer, agent: str, timer: _EndTimer, tokens: int = 40) -> None:
    root = tracer.start_span("agent", attributes=agent_attrs(agent))
    with trace.use_span(root, end_on_exit=False):
        call = tracer.start_span("chat test-model", attributes=LLM)
        for key, value in usage(tokens).items():
            call.set_attribute(key, value)
        timer.end(call)
    timer.end(root)


def _flood(
    tracer: trace.Tracer, processor: AdaptiveSpanProcessor, timer: _EndTimer
) -> tuple[int, int]:
    """Play the flood; returns traced memory after a quarter of it and at its end."""
    quarter = 0
    for i in range(_AGENTS):
        if i % _REAL_EVERY == 0:
            _run(tracer, "real", timer)
        _run(tracer, f"throwaway-{i}", timer)
        if i == _AGENTS // 4:
            quarter = _settled_memory(processor)
        elif i % 500 == 499:
            # Paced like a busy service, not a tight loop: the queue never overflows,
            # so every run of the real agent must arrive.
            assert processor.force_flush(60_000)
    return quarter, _settled_memory(processor)


def _settled_memory(processor: AdaptiveSpanProcessor) -> int:
    assert processor.force_flush(60_000)
    gc.collect()
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _check(
    tracer: trace.Tracer, processor: AdaptiveSpanProcessor, store: Store, quarter: int, end: int
) -> None:
    stats = processor.stats()
    real_runs = _AGENTS // _REAL_EVERY
    assert stats["events_dropped"] == 0
    assert stats["agents_learned"] <= _MAX_AGENTS
    assert stats["agents_over_limit"] > 0
    assert len(processor.cache) <= _MAX_AGENTS
    # The in-memory store keeps at most max_agents agents with runs and as many with learned state.
    assert store.shared or len(store.agents()) <= 2 * _MAX_AGENTS
    assert end - quarter < _MAX_GROWTH_BYTES, f"grew {(end - quarter) / 1e6:.1f} MB"
    # The real agent keeps every run, is learned from all of them and is served hints.
    assert store.run_count("real") == real_runs
    envelope = store.load_trie("real")
    assert envelope is not None
    samples = envelope["root"]["predictions_any_index"]["output_tokens"]["sample_count"]
    assert samples == real_runs
    with tracer.start_as_current_span("agent", attributes=agent_attrs("real")):
        hints = processor.current_hints()
    assert hints is not None


def _processor(**config: Any) -> tuple[Any, AdaptiveSpanProcessor, trace.Tracer]:
    return make_processor(
        max_agents=_MAX_AGENTS,
        max_runs_per_agent=real_runs_kept(),
        schedule_delay_millis=50,
        learn_interval_millis=200,
        **config,
    )


def real_runs_kept() -> int:
    return _AGENTS // _REAL_EVERY


def test_a_flood_of_agents_in_memory_costs_bounded_memory() -> None:
    provider, processor, tracer = _processor()
    timer = _EndTimer()
    try:
        quarter, end = _flood(tracer, processor, timer)
        _check(tracer, processor, processor.store, quarter, end)
        assert timer.longest < 0.050, f"longest span end {timer.longest * 1000:.1f} ms"
    finally:
        provider.shutdown()


def test_a_flood_of_agents_into_redis_costs_bounded_memory(redis_url: str, key_prefix: str) -> None:
    provider, processor, tracer = _processor(redis_url=redis_url, key_prefix=key_prefix)
    timer = _EndTimer()
    try:
        quarter, end = _flood(tracer, processor, timer)
        _check(tracer, processor, processor.store, quarter, end)
        assert timer.longest < 0.050, f"longest span end {timer.longest * 1000:.1f} ms"
    finally:
        provider.shutdown()
