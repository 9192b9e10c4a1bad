"""``otel-adaptive demo``: watch the processor learn a simulated agent.

The agent is faked locally (no network, no model): each run plans with one LLM
call, fans out to three tools on worker threads, drafts with one to three LLM
calls and answers with a last one. The spans go through a real SDK
``TracerProvider`` with an :class:`AdaptiveSpanProcessor`, exactly as in an
application, and the hints served to every call are recorded: for each call of
the last run, and for the answering call run by run.
"""

from __future__ import annotations

import argparse
import contextvars
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from otel_adaptive.cli._common import (
    FAILED,
    OK,
    CommandError,
    check_reachable,
    fail,
    load_config,
    open_store,
    plan_table,
    print_json,
    stdout_console,
    store_label,
)
from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.hints import AgentHints
from otel_adaptive.processor import AdaptiveSpanProcessor

DEFAULT_AGENT = "otel-adaptive-demo"
_TOOLS = ("search_web", "search_docs", "get_weather")
_ANSWER_PATH = ("research", "answer")
#: How many drafting LLM calls a run makes, at least and at most (drawn per run).
_DRAFT_CALLS = (1, 3)
_SCHEDULE_DELAY_MILLIS = 50


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run a simulated agent and show what was learned",
        description=(
            "Run a simulated multi-step agent (LLM and tool calls faked locally, some tools in "
            "parallel) through a real TracerProvider with the adaptive processor, then show the "
            "learned hints per call site, the parallel tool groups, and how the hints changed "
            "as runs accumulated. Learned state stays in this process unless --redis-url is "
            "given (OTEL_ADAPTIVE_REDIS_URL is deliberately not used by the demo)."
        ),
    )
    parser.add_argument("--runs", type=_positive, default=30, help="agent runs (default: 30)")
    parser.add_argument(
        "--redis-url", metavar="URL", help="store runs and learned state in this Redis"
    )
    parser.add_argument("--key-prefix", metavar="PREFIX", help="prefix of every Redis key")
    parser.add_argument(
        "--agent-id",
        default=DEFAULT_AGENT,
        help=f"name of the simulated agent (default: {DEFAULT_AGENT})",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


@dataclass(frozen=True)
class _Step:
    run: int
    hints: AgentHints | None


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        "enabled": True,
        "redis_url": args.redis_url,  # never the environment's: the demo must not touch it
        "schedule_delay_millis": _SCHEDULE_DELAY_MILLIS,
    }
    if args.key_prefix:
        overrides["key_prefix"] = args.key_prefix
    config = load_config(**overrides)
    if isinstance(config, str):
        return fail(config)
    store = open_store(config)
    if config.redis_url is not None:
        try:
            check_reachable(store)  # fail now, not after every run was simulated
        except CommandError:
            store.close()
            raise
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-adaptive-demo"}))
    processor = AdaptiveSpanProcessor(config, store=store)
    provider.add_span_processor(processor)
    try:
        return _demo(args, config, processor, provider.get_tracer("otel_adaptive.demo"))
    finally:
        provider.shutdown()


def _demo(
    args: argparse.Namespace,
    config: AdaptiveConfig,
    processor: AdaptiveSpanProcessor,
    tracer: Tracer,
) -> int:
    agent = _SimulatedAgent(tracer, processor, args.agent_id, random.Random(args.seed))
    history: list[_Step] = []
    stored_everything = True
    console = stdout_console()
    with ThreadPoolExecutor(max_workers=len(_TOOLS), thread_name_prefix="demo-tool") as pool:
        progress = Progress(
            TextColumn("simulating runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=args.json,
        )
        with progress:
            task = progress.add_task("runs", total=args.runs)
            for number in range(1, args.runs + 1):
                history.append(_Step(number, agent.run(pool)))
                # Let the next run see what this one taught.
                stored_everything = processor.force_flush() and stored_everything
                progress.advance(task)
    if not stored_everything:
        return fail(f"some runs could not be stored in the {store_label(processor.store)}")
    store = processor.store
    envelope = store.load_trie(args.agent_id)
    plan = store.load_plan(args.agent_id)
    sites = agent.last_calls
    if args.json:
        print_json(
            {
                "agent_id": args.agent_id,
                "runs": args.runs,
                "store": store_label(store),
                "call_sites": [
                    {"path": list(path), "call_index": index, "hints": _hints_dict(hints)}
                    for path, index, hints in sites
                ],
                "hint_history": [
                    {"run": step.run, "hints": _hints_dict(step.hints)} for step in history
                ],
                "trie": envelope,
                "plan": plan.to_dict(),
            }
        )
        return OK
    console.print(f"\nAgent [bold]{args.agent_id}[/]: {args.runs} runs, {store_label(store)}")
    console.print(_sites_table(sites))
    if plan.groups:
        console.print(plan_table(plan, "Tools that ran in parallel"))
    else:
        console.print("No parallel tool groups were learned.")
    console.print(_history_table(history))
    if config.redis_url is None:
        console.print(
            "Learned state lived in this process only; run with --redis-url to keep it, "
            f"then: otel-adaptive inspect --agent {args.agent_id} --redis-url URL"
        )
    else:
        console.print(
            f"Stored. See it again with: otel-adaptive inspect --agent {args.agent_id} "
            "--redis-url URL"
        )
    return OK if envelope is not None else FAILED


# --- the simulated agent --------------------------------------------------------------------


class _SimulatedAgent:
    """One agent shape, with timings and token counts drawn from a seeded generator."""

    def __init__(
        self, tracer: Tracer, processor: AdaptiveSpanProcessor, name: str, rng: random.Random
    ) -> None:
        self._tracer = tracer
        self._processor = processor
        self._name = name
        self._rng = rng
        #: (path, call index at that path, hints served) for each LLM call of the last run.
        self.last_calls: list[tuple[tuple[str, ...], int, AgentHints | None]] = []
        self._chains: list[str] = []

    def run(self, pool: ThreadPoolExecutor) -> AgentHints | None:
        """One run; returns the hints the answering LLM call was given."""
        agent_attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self._name,
        }
        self.last_calls = []
        with self._tracer.start_as_current_span("research", attributes=agent_attributes):
            with self._chain("plan"):
                self._llm(60)
            with self._chain("gather"):
                delays = [self._rng.uniform(0.002, 0.004) for _ in _TOOLS]
                # Tools run on worker threads; each carries the current context along.
                futures = [
                    pool.submit(contextvars.copy_context().run, self._tool, name, delay)
                    for name, delay in zip(_TOOLS, delays, strict=True)
                ]
                for future in futures:
                    future.result()
            with self._chain("draft"):
                for _ in range(self._rng.randint(*_DRAFT_CALLS)):
                    self._llm(200)
            with self._chain("answer"):
                return self._llm(400)

    @contextmanager
    def _chain(self, name: str) -> Iterator[None]:
        with self._tracer.start_as_current_span(
            name, attributes={"openinference.span.kind": "CHAIN"}
        ):
            self._chains.append(name)
            try:
                yield
            finally:
                self._chains.pop()

    def _llm(self, typical_tokens: int) -> AgentHints | None:
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "sim-1"}
        with self._tracer.start_as_current_span("chat sim-1", attributes=attributes) as span:
            hints = self._processor.current_hints()  # what a real client would send along
            path = ("research", *self._chains)
            index = 1 + sum(1 for done, _, _ in self.last_calls if done == path)
            self.last_calls.append((path, index, hints))
            time.sleep(self._rng.uniform(0.001, 0.003))
            tokens = max(1, int(self._rng.gauss(typical_tokens, typical_tokens / 10)))
            span.set_attribute("gen_ai.usage.output_tokens", tokens)
            span.set_attribute("gen_ai.usage.input_tokens", 150)
        time.sleep(self._rng.uniform(0.0005, 0.0015))  # the agent reads the answer
        return hints

    def _tool(self, name: str, delay: float) -> None:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        with self._tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes):
            time.sleep(delay)


# --- reporting ------------------------------------------------------------------------------


def _hints_dict(hints: AgentHints | None) -> dict[str, Any] | None:
    return None if hints is None else hints.to_dict()


def _sites_table(sites: list[tuple[tuple[str, ...], int, AgentHints | None]]) -> Table:
    table = Table(title="Learned hints per call site", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("call", justify="right")
    table.add_column("osl", justify="right")
    table.add_column("iat ms", justify="right")
    table.add_column("latency sensitivity", justify="right")
    table.add_column("total requests", justify="right")
    for path, index, hints in sites:
        if hints is None:
            table.add_row("/".join(path), str(index), "-", "-", "-", "-")
            continue
        table.add_row(
            "/".join(path),
            str(index),
            str(hints.osl),
            str(hints.iat),
            str(hints.latency_sensitivity),
            str(hints.total_requests),
        )
    return table


def _history_table(history: list[_Step]) -> Table:
    table = Table(
        title=f"Hints sent with the {'/'.join(_ANSWER_PATH)} call as runs accumulated",
        title_justify="left",
    )
    table.add_column("run", justify="right")
    table.add_column("osl", justify="right")
    table.add_column("iat ms", justify="right")
    table.add_column("latency sensitivity", justify="right")
    table.add_column("total requests", justify="right")
    for step in _checkpoints(history):
        hints = step.hints
        if hints is None:
            table.add_row(str(step.run), "nothing learned yet", "", "", "")
            continue
        table.add_row(
            str(step.run),
            str(hints.osl),
            str(hints.iat),
            str(hints.latency_sensitivity),
            str(hints.total_requests),
        )
    return table


def _checkpoints(history: list[_Step]) -> list[_Step]:
    """Runs 1, 2, 5, 10, 20, 50, 100, ... and the last one."""
    wanted = {len(history)}
    decade = 1
    while decade <= len(history):
        wanted.update(decade * step for step in (1, 2, 5))
        decade *= 10
    return [step for step in history if step.run in wanted]
