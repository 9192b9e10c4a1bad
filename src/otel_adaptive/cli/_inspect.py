"""``otel-adaptive inspect``: what is stored about one agent."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from otel_adaptive.cli._common import (
    FAILED,
    OK,
    add_store_options,
    check_reachable,
    describe_store,
    fail,
    load_config,
    open_store,
    plan_table,
    print_json,
    stdout_console,
    store_label,
    store_overrides,
    trie_table,
)
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import Store, StoreUnavailableError

_NOTHING_TO_INSPECT = (
    "nothing to inspect: no Redis is configured (pass --redis-url or set "
    "OTEL_ADAPTIVE_REDIS_URL). Without Redis, learned state lives inside the application's "
    "own process and ends with it; read it there through processor.store "
    "(list_runs, load_trie, load_plan)."
)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "inspect",
        help="show the runs and learned state stored for an agent",
        description=(
            "Show what is stored for one agent: run count and retention, the prediction trie "
            "(path, call index, samples, p50/p90 output tokens, mean remaining calls, "
            "interarrival, latency sensitivity) and the parallel tool groups with support."
        ),
    )
    parser.add_argument("--agent", required=True, metavar="AGENT_ID", help="the agent id")
    add_store_options(parser, "Redis to read (default: OTEL_ADAPTIVE_REDIS_URL)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(**store_overrides(args))
    if isinstance(config, str):
        return fail(config)
    if config.redis_url is None:
        return fail(_NOTHING_TO_INSPECT)
    store = open_store(config)
    try:
        check_reachable(store)
        return _inspect(args, config, store)
    except StoreUnavailableError as exc:
        return fail(str(exc))
    finally:
        store.close()


def _inspect(args: argparse.Namespace, config: AdaptiveConfig, store: Store) -> int:
    agent = args.agent
    runs = store.list_runs(agent)
    envelope = store.load_trie(agent)
    plan = store.load_plan(agent)
    if not runs and envelope is None and plan.runs_observed == 0:
        known = store.agents()
        listing = ", ".join(repr(a) for a in known[:20]) if known else "none"
        more = f" and {len(known) - 20} more" if len(known) > 20 else ""
        return fail(
            f"no runs or learned state for agent {agent!r} in the {store_label(store)}; "
            f"agents stored there: {listing}{more}"
        )
    retention = {
        "max_runs_per_agent": config.max_runs_per_agent,
        "run_max_age_seconds": config.run_max_age_seconds,
    }
    if args.json:
        print_json(
            {
                "agent_id": agent,
                "store": describe_store(store),
                "runs": {
                    "count": len(runs),
                    "oldest_start": _timestamp(min((r.start_ns for r in runs), default=None)),
                    "newest_end": _timestamp(max((r.end_ns for r in runs), default=None)),
                },
                "retention": retention,
                "trie": envelope,
                "plan": plan.to_dict(),
            }
        )
        return OK
    console = stdout_console()
    console.print(f"Agent [bold]{agent}[/] in the {store_label(store)}")
    console.print(_runs_line(runs))
    console.print(_retention_line(config))
    if envelope is None:
        console.print("No LLM calls learned yet.")
    else:
        console.print(trie_table(envelope, "Prediction trie (per scope path and call index)"))
    if plan.groups:
        console.print(plan_table(plan, f"Parallel tool groups ({plan.runs_observed} runs)"))
    else:
        console.print(f"No parallel tool groups in {plan.runs_observed} observed runs.")
    return OK if runs or envelope is not None or plan.groups else FAILED


def _runs_line(runs: list[RunRecord]) -> str:
    if not runs:
        return "Runs retained: 0"
    oldest = _timestamp(min(r.start_ns for r in runs))
    newest = _timestamp(max(r.end_ns for r in runs))
    return f"Runs retained: {len(runs)} (oldest started {oldest}, newest ended {newest})"


def _retention_line(config: AdaptiveConfig) -> str:
    age = (
        "no age limit"
        if config.run_max_age_seconds is None
        else f"at most {config.run_max_age_seconds:g} s old"
    )
    return (
        f"Retention (this configuration): newest {config.max_runs_per_agent} runs per agent, {age}"
    )


def _timestamp(ns: int | None) -> str | None:
    if ns is None:
        return None
    moment = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds")
