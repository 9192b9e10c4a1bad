"""``otel-adaptive replay``: learn offline from exported traces."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
from otel_adaptive.cli._progress import ReplayProgress
from otel_adaptive.learners.base import Mergeable
from otel_adaptive.otlp_json import Rejection, SpanReader
from otel_adaptive.processor import AdaptiveSpanProcessor
from otel_adaptive.records import RunRecord
from otel_adaptive.replay import TraceReplayer
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
            "(one per line, arrays of them, or the console exporter's output), gzip-compressed "
            "or not, replay them through the adaptive processor and store what it learns. "
            "Files are streamed (memory stays bounded whatever their size). Replaying the same "
            "spans again learns nothing twice. Malformed records are reported with their line "
            "numbers and skipped. Use '-' to read standard input. "
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

    def merge_batches(self, batches: Sequence[tuple[str, Sequence[AgentDelta]]]) -> list[bool]:
        # Forwarded, not left to the default: one write per agent for a replay's many batches.
        return self._inner.merge_batches(batches)

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

    store = _CountingStore(open_store(config))
    if config.redis_url is not None:
        try:
            check_reachable(store)  # an unusable Redis is reported before any work
        except CommandError:
            store.close()
            raise
    # One merge per run, under an id of the run: replaying the same spans again teaches nothing.
    processor = AdaptiveSpanProcessor(config, store=store, per_run_batches=True)
    started = time.monotonic()
    try:
        replayer = TraceReplayer(processor)
        reader = SpanReader(on_span=replayer.add)
        with ReplayProgress(_input_bytes(args.files), enabled=not args.json) as progress:
            for name in args.files:
                progress.start_file(name)

                def on_record(done: int, name: str = name) -> None:
                    replayer.end_of_record()
                    progress.update(name, done, replayer.spans_replayed, processor)

                if name == "-":
                    reader.read_stream(sys.stdin, "<stdin>", lambda: on_record(0))
                else:
                    reader.read_file(name, on_record)
            stored = replayer.finish()
        stats = processor.stats()
    finally:
        processor.shutdown()
    summary = _Summary(
        reader=reader,
        spans=replayer.spans_replayed,
        runs=store.runs_saved(),
        stats=stats,
        seconds=time.monotonic() - started,
        where=store_label(store),
        stored=stored,
    )
    if args.json:
        print_json(summary.document(store.describe()))
    else:
        summary.print()
    if not stored:
        return fail(f"not everything learned could be written to the {store_label(store)}")
    return OK if replayer.spans_replayed else FAILED


def _input_bytes(files: Sequence[str]) -> int | None:
    """The size of every input, None when one is not a regular file (stdin, a pipe)."""
    total = 0
    for name in files:
        path = Path(name)
        if name == "-" or not path.is_file():
            return None if name == "-" else total
        total += path.stat().st_size
    return total


@dataclass(frozen=True)
class _Summary:
    reader: SpanReader
    spans: int
    runs: dict[str, int]
    stats: dict[str, int]
    seconds: float
    where: str
    stored: bool

    @property
    def runs_already_learned(self) -> int:
        # With one merge batch per run, a skipped batch is a run learned before.
        return self.stats["batches_deduplicated"]

    def document(self, store: dict[str, object]) -> dict[str, Any]:
        return {
            "store": store,
            "records_read": self.reader.records_read,
            "spans_read": self.spans,
            "runs_learned": self.runs,
            "runs_completed": self.stats["runs_completed"],
            "runs_already_learned": self.runs_already_learned,
            "spans_outside_runs": self.stats["spans_outside_runs"],
            "attributes_skipped": self.reader.attributes_skipped,
            "seconds": round(self.seconds, 3),
            "stored": self.stored,
            "rejected": [
                {"file": r.source, "line": r.line, "reason": r.reason}
                for r in self.reader.rejections
            ],
        }

    def print(self) -> None:
        console = stdout_console()
        console.print(
            f"Read {self.spans} spans from {self.reader.records_read} JSON records "
            f"in {self.seconds:.1f} s"
        )
        if self.runs:
            table = Table(title=f"Runs learned into the {self.where}", title_justify="left")
            table.add_column("agent", overflow="fold")
            table.add_column("runs", justify="right")
            for agent, count in self.runs.items():
                table.add_row(agent, str(count))
            console.print(table)
        else:
            console.print("No runs were learned.")
        if self.runs_already_learned:
            console.print(
                f"{self.runs_already_learned} of these runs had been learned before (an earlier "
                "replay of the same spans): what they teach was not counted twice."
            )
        if self.stats["spans_outside_runs"]:
            console.print(f"{self.stats['spans_outside_runs']} spans belonged to no run")
        if self.where.startswith("in-memory"):
            console.print(
                "Learned state was kept in memory and is gone now; use --redis-url to keep it."
            )
        _report_rejections(self.reader.rejections)


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
