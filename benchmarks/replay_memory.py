"""Peak memory of ``otel-adaptive replay`` on a large OTLP/JSON file, against a small one.

Writes a synthetic OTLP/JSON-lines file (agent runs of 2 LLM calls and 2 parallel
tools, one ExportTraceServiceRequest per run, spread over time like a real export)
of about ``--size-mb`` megabytes, and a ``--baseline-mb`` one with the same runs,
then replays each in a fresh process (in-memory store) and reports the peak RSS of
that process (``ru_maxrss``), CPU time, and spans per CPU second. Replay streams its
input, so the large file's peak RSS should be close to the small file's, not
grow with the file (the whole file in memory would be several times its size).

    python benchmarks/replay_memory.py [--size-mb 100] [--baseline-mb 5] [--gzip]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
MS = 1_000_000
START_NS = 1_700_000_000 * 1_000_000_000


def _attr(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _span(
    trace: int, span: int, parent: int | None, name: str, start: int, end: int, **attrs: object
) -> dict[str, Any]:
    return {
        "traceId": f"{trace:032x}",
        "spanId": f"{span:016x}",
        "parentSpanId": "" if parent is None else f"{parent:016x}",
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        "status": {},
    }


def run_line(index: int) -> str:
    """One run as one OTLP request line; runs start 200 ms apart."""
    trace = 0x10_0000 + index
    t = START_NS + index * 200 * MS
    llm = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "sim-1"}
    spans = [
        _span(trace, 2, 1, "chat sim-1", t + 1 * MS, t + 20 * MS, **llm,
              **{"gen_ai.usage.output_tokens": 40 + index % 50}),
        _span(trace, 3, 1, "execute_tool lookup", t + 21 * MS, t + 40 * MS,
              **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}),
        _span(trace, 4, 1, "execute_tool search", t + 22 * MS, t + 45 * MS,
              **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        _span(trace, 5, 1, "chat sim-1", t + 46 * MS, t + 90 * MS, **llm,
              **{"gen_ai.usage.output_tokens": 200 + index % 100}),
        _span(trace, 1, None, "invoke_agent bench-agent", t, t + 100 * MS,
              **{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench-agent"}),
    ]  # fmt: skip
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", "bench-svc")]},
                "scopeSpans": [{"scope": {"name": "bench"}, "spans": spans}],
            }
        ]
    }
    return json.dumps(request, separators=(",", ":")) + "\n"


def write_file(path: Path, size_mb: float, compress: bool) -> tuple[int, int]:
    """Write about ``size_mb`` MB of uncompressed JSON; (runs, bytes on disk)."""
    limit = int(size_mb * 1_000_000)
    written = runs = 0
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as out:
        while written < limit:
            line = run_line(runs)
            out.write(line)
            written += len(line)
            runs += 1
    return runs, path.stat().st_size


def replay(path: Path) -> dict[str, Any]:
    """Replay ``path`` in a fresh process; its peak RSS, CPU and what it learned."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_ADAPTIVE_")}
    result = subprocess.run(
        [sys.executable, "-m", "otel_adaptive.cli", "replay", str(path), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    document = json.loads(result.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        # ru_maxrss of children is the largest child so far: replays run smallest first.
        "peak_rss_mb": after.ru_maxrss / 1024,
        "cpu_seconds": cpu,
        "spans": document["spans_read"],
        "runs": sum(document["runs_learned"].values()),
        "spans_per_cpu_second": document["spans_read"] / cpu if cpu else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100.0)
    parser.add_argument("--baseline-mb", type=float, default=5.0)
    parser.add_argument("--gzip", action="store_true", help="compress both files")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for label, size in (("baseline", args.baseline_mb), ("large", args.size_mb)):
            path = Path(directory) / f"{label}.jsonl{'.gz' if args.gzip else ''}"
            runs, on_disk = write_file(path, size, args.gzip)
            measured = replay(path)
            assert measured["runs"] == runs, (measured, runs)
            rows.append({"file": label, "json_mb": size, "disk_mb": on_disk / 1e6, **measured})
    print(f"{'file':<9} {'JSON MB':>8} {'disk MB':>8} {'spans':>9} {'runs':>7} "
          f"{'peak RSS MB':>12} {'CPU s':>7} {'spans/CPU s':>12}")  # fmt: skip
    for row in rows:
        print(
            f"{row['file']:<9} {row['json_mb']:>8.0f} {row['disk_mb']:>8.1f} {row['spans']:>9} "
            f"{row['runs']:>7} {row['peak_rss_mb']:>12.1f} {row['cpu_seconds']:>7.1f} "
            f"{row['spans_per_cpu_second']:>12.0f}"
        )
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    growth = rows[1]["json_mb"] / rows[0]["json_mb"]
    print(f"peak RSS, large / baseline: {ratio:.2f}x for {growth:.0f}x the input")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay_memory.json").write_text(
        json.dumps({"rows": rows, "rss_ratio": ratio}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
