"""``otel-adaptive replay``: learn offline from exported traces."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from otel_adaptive.cli._common import (
    FAILED,
    OK,
    CommandError,
    add_store_options,
    check_reachable,
    fail,
    load_config,
    open_store,
    print_json,
    stdout_console,
    store_label,
    store_overrides,
)
from otel_adaptive.learners.base import Mergeable
from otel_adaptive.otlp_json import Rejection, SpanReader, replay_spans
from otel_adaptive.processor import AdaptiveSpanProcessor
from otel_adaptive.records import RunRecord
from otel_adaptive.store.base import AgentDelta, Store

#: Rejections listed in the human-readable report (all of them are in --json).
_SHOWN_REJECTIONS = 50


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "replay",
        help="learn from exported traces (OTLP/JSON lines or JSON arrays of spans)",
        description=(
            "Read OTLP/JSON trace files (the Collector's file exporter: one "
            "ExportTraceServiceRequest per line) or JSON spans in the SDK's to_json() shape "
            "(one per line, arrays of them, or the console exporter's output), replay them "
            "through the adaptive processor and store what it learns. Malformed records are "
            "reported with their line numbers and skipped. Use '-' to read standard input. "
            "Retention applies as usual: with OTEL_ADAPTIVE_RUN_MAX_AGE_SECONDS set, runs older "
            "than that are not kept (what they taught is)."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to read ('-': stdin)")
    add_store_options(parser, "Redis to store into (default: OTEL_ADAPTIVE_REDIS_URL)")
    parser.add_argument(
        "--agent-id",
        metavar="AGENT_ID",
        help="agent id for runs whose root is not an agent span (default: OTEL_ADAPTIVE_AGENT_ID,"
        " else the spans' service.name)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(run=run)


class _CountingStore(Store):
    """Passes everything to another store and counts the distinct runs saved per agent."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.learners)
        self._inner = inner
        self._saved: dict[str, set[str]] = {}

    def runs_saved(self) -> dict[str, int]:
        return {agent: len(ids) for agent, ids in sorted(self._saved.items())}

    def describe(self) -> dict[str, object]:
        describe = getattr(self._inner, "describe", None)
        return dict(describe()) if callable(describe) else {"kind": type(self._inner).__name__}

    def save_runs(self, runs: Sequence[RunRecord]) -> int:
        written = self._inner.save_runs(runs)
        for run in runs:  # after the write: a failed write is retried, and counted then
            self._saved.setdefault(run.agent_id, set()).add(run.id)
        return written

    def agent_versions(self) -> Mapping[str, int | None]:
        return self._inner.agent_versions()

    def list_runs(self, agent_id: str, limit: int | None = None) -> list[RunRecord]:
        return self._inner.list_runs(agent_id, limit)

    def run_count(self, agent_id: str) -> int:
        return self._inner.run_count(agent_id)

    def agents(self) -> list[str]:
        return self._inner.agents()

    def merge(self, batch_id: str, deltas: Sequence[AgentDelta]) -> bool:
        return self._inner.merge(batch_id, deltas)

    def load_fields(self, agent_id: str, learner: str) -> dict[str, Mergeable]:
        return self._inner.load_fields(agent_id, learner)

    def close(self) -> None:
        self._inner.close()


def run(args: argparse.Namespace) -> int:
    overrides = store_overrides(args)
    overrides["enabled"] = True
    if args.agent_id:
        overrides["agent_id"] = args.agent_id
    config = load_config(**overrides)
    if isinstance(config, str):
        return fail(config)

    reader = SpanReader()
    for name in args.files:
        if name == "-":
            reader.read_text(sys.stdin.read(), "<stdin>")
        else:
            reader.read_file(name)
    spans = reader.spans()

    store = _CountingStore(open_store(config))
    if config.redis_url is not None:
        try:
            check_reachable(store)  # an unusable Redis is reported before any work
        except CommandError:
            store.close()
            raise
    processor = AdaptiveSpanProcessor(config, store=store)
    try:
        stored = replay_spans(spans, processor)
        stats = processor.stats()
    finally:
        processor.shutdown()

    runs = store.runs_saved()
    if args.json:
        print_json(
            {
                "store": store.describe(),
                "records_read": reader.records_read,
                "spans_read": len(spans),
                "runs_learned": runs,
                "runs_completed": stats["runs_completed"],
                "spans_outside_runs": stats["spans_outside_runs"],
                "attributes_skipped": reader.attributes_skipped,
                "stored": stored,
                "rejected": [
                    {"file": r.source, "line": r.line, "reason": r.reason}
                    for r in reader.rejections
                ],
            }
        )
    else:
        _report(reader, len(spans), runs, stats, store_label(store))
    if not stored:
        return fail(f"not everything learned could be written to the {store_label(store)}")
    return OK if spans else FAILED


def _report(
    reader: SpanReader, span_count: int, runs: dict[str, int], stats: dict[str, int], where: str
) -> None:
    console = stdout_console()
    console.print(f"Read {span_count} spans from {reader.records_read} JSON records")
    if runs:
        table = Table(title=f"Runs learned into the {where}", title_justify="left")
        table.add_column("agent")
        table.add_column("runs", justify="right")
        for agent, count in runs.items():
            table.add_row(agent, str(count))
        console.print(table)
    else:
        console.print("No runs were learned.")
    if stats["spans_outside_runs"]:
        console.print(f"{stats['spans_outside_runs']} spans belonged to no run")
    if where.startswith("in-memory"):
        console.print(
            "Learned state was kept in memory and is gone now; use --redis-url to keep it."
        )
    _report_rejections(reader.rejections)


def _report_rejections(rejections: list[Rejection]) -> None:
    if not rejections:
        return
    lines = Counter((r.source, r.line) for r in rejections)
    console = stdout_console()
    console.print(
        f"Rejected {len(rejections)} records or spans on {len(lines)} lines:", markup=False
    )
    for rejection in rejections[:_SHOWN_REJECTIONS]:
        console.print(f"  {rejection}", markup=False)
    if len(rejections) > _SHOWN_REJECTIONS:
        console.print(
            f"  ... and {len(rejections) - _SHOWN_REJECTIONS} more (see --json)", markup=False
        )
