"""Worker processes for fleet tests: a real processor and provider writing to Redis."""

from __future__ import annotations

from typing import Any

from spans import LLM, agent_attrs, make_processor, timed_span, usage


def run_agent_fleet_worker(
    redis_url: str, key_prefix: str, cluster: bool, runs: int, llm_calls: int
) -> dict[str, Any]:
    """Run ``runs`` agent runs through an AdaptiveSpanProcessor into Redis; report stats."""
    provider, processor, tracer = make_processor(
        redis_url=redis_url,
        redis_cluster=cluster,
        key_prefix=key_prefix,
        max_export_batch_size=64,
        schedule_delay_millis=50,
        redis_socket_timeout_seconds=5.0,
        max_runs_per_agent=100_000,
    )
    for _ in range(runs):
        with timed_span(tracer, "fleet-run", 0, 100, agent_attrs("fleet")):
            for k in range(llm_calls):
                with timed_span(tracer, "chat m", k * 10, k * 10 + 5, LLM, end_attributes=usage(7)):
                    pass
    flushed = processor.force_flush(60_000)
    stats = processor.stats()
    store_stats = {f"store_{k}": v for k, v in processor.store.stats().items()}  # type: ignore[attr-defined]
    provider.shutdown()
    return {"flushed": flushed, **stats, **store_stats}
