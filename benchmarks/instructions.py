"""Instructions the plugin adds per run, as a multiple of the SDK's own, under cachegrind.

Process CPU time moves by tens of percent on a shared machine, and with two busy
threads it also counts what sharing one interpreter across cores costs. The number
of instructions executed does neither: valgrind runs the threads one at a time on
one simulated CPU. Each configuration (the SDK alone, the plugin with the in-memory
store, the plugin writing to a private ``redis-server``) runs in a child process under
``valgrind --tool=cachegrind --cache-sim=no`` twice, with the timed runs and with none
(same warm-up, same flush); the difference divided by the runs is the per-run count.
The runs are those of ``run_cost.py`` (an agent span, a step span, N LLM calls and 3
tools over 10 call sites).

Under valgrind everything runs about fifty times slower, while the learning interval
and plan rebuilds are timed in seconds, so they happen more often per run than at full
speed: single counts move by a few percent. Needs ``valgrind`` on PATH.

    python benchmarks/instructions.py [--calls 5 20] [--runs 600] [--store memory redis]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SITES = 10
WARMUP = 30
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def child(calls: int, runs: int, config: str, redis_url: str | None) -> None:
    """What valgrind runs: warm up, flush, then ``runs`` timed runs and a flush."""
    import logging
    import uuid

    from opentelemetry.sdk.trace import TracerProvider
    from redis_throughput import one_run

    from otel_adaptive import AdaptiveSpanProcessor

    logging.basicConfig(level=logging.ERROR)
    provider = TracerProvider()
    processor = None
    if config != "sdk":
        options: dict[str, object] = {"max_queue_size": 10**6, "max_runs_per_agent": 100_000}
        if config == "redis":
            options.update(redis_url=redis_url, key_prefix=f"instr:{uuid.uuid4().hex[:12]}:")
        processor = AdaptiveSpanProcessor(**options)  # type: ignore[arg-type]
        provider.add_span_processor(processor)
    tracer = provider.get_tracer("instructions")
    for i in range(WARMUP):
        one_run(tracer, calls, i % SITES)
    if processor is not None:
        processor.force_flush(600_000)
    for i in range(runs):
        one_run(tracer, calls, i % SITES)
    if processor is not None:
        processor.force_flush(600_000)
    provider.shutdown()


def count(calls: int, runs: int, config: str, redis_url: str | None) -> int:
    """Instructions of one child process under cachegrind."""
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, __file__, "--child", config, str(calls), str(runs), redis_url or "-",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    found = _REFS.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_run(calls: int, runs: int, config: str, redis_url: str | None) -> float:
    return (count(calls, runs, config, redis_url) - count(calls, 0, config, redis_url)) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--store", nargs="+", default=["memory"], choices=["memory", "redis"])
    parser.add_argument("--child", nargs=4, metavar=("CONFIG", "CALLS", "RUNS", "URL"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.child:
        config, calls, runs, url = args.child
        child(int(calls), int(runs), config, None if url == "-" else url)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not on PATH (Debian/Ubuntu: apt-get install valgrind)")
    from redis_throughput import private_redis

    lines = [
        "| LLM calls | configuration | instructions per run | added | added ÷ SDK |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    summary: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        url = stack.enter_context(private_redis()).url if "redis" in args.store else None
        for calls in args.calls:
            sdk = per_run(calls, args.runs, "sdk", None)
            lines.append(f"| {calls} | SDK alone | {sdk / 1e6:.2f} M | - | - |")
            summary[f"{calls} calls, SDK alone"] = {"instructions": sdk}
            for store in args.store:
                plugin = per_run(calls, args.runs, store, url)
                added = plugin - sdk
                lines.append(
                    f"| {calls} | plugin, {store} | {plugin / 1e6:.2f} M | {added / 1e6:.2f} M "
                    f"| **{added / sdk:.2f}** |"
                )
                summary[f"{calls} calls, plugin, {store}"] = {
                    "instructions": plugin, "added_over_sdk": added / sdk
                }  # fmt: skip
    print(f"valgrind cachegrind, {args.runs} timed runs minus none, per run\n")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "instructions.json"
    out.write_text(json.dumps({"args": vars(args), "summary": summary}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
