"""Learner CPU per run, for runs of 5 and of 20 LLM calls (plus 3 tools, 2 overlapping).

Each learner's ``learn()`` is timed over batches of runs, as the exporter calls
it (one batch per learning interval: its size is the runs completed in it). As a
baseline measured in the same run, the cost of encoding the same runs to JSON
(what storing them costs at least) is reported next to it. ``+ merge`` rows also
fold every batch's delta into a running state, field by field, as the in-memory
store does: the steady-state cost of learning, once the state has grown.

    python benchmarks/learn.py [--runs 2000] [--batch 32 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from otel_adaptive.learners import PredictionTrieLearner, ToolParallelismLearner
from otel_adaptive.learners.base import Learner, Mergeable
from otel_adaptive.records import CallRecord, RunRecord, encode_run

RESULTS = Path(__file__).parent / "results"
MS = 1_000_000


def make_run(index: int, llm_calls: int, rng: random.Random) -> RunRecord:
    calls: list[CallRecord] = []
    t = 0
    for k in range(llm_calls):
        duration = rng.randint(50, 400) * MS
        scope = ("agent", "plan") if k < llm_calls // 2 else ("agent", "act")
        calls.append(
            CallRecord(
                kind="llm",
                name="chat m",
                span_id=f"{index:08x}{k:08x}",
                parent_span_id=f"{hash(scope) & 0xFFFFFFFF:016x}",
                path=scope,
                start_ns=t,
                end_ns=t + duration,
                output_tokens=rng.randint(20, 800),
                prompt_tokens=100,
                model_name="m",
            )
        )
        t += duration + rng.randint(1, 20) * MS
    for j, (start, end) in enumerate(
        [(t, t + 100 * MS), (t + 10 * MS, t + 90 * MS), (t + 120 * MS, t + 150 * MS)]
    ):
        calls.append(
            CallRecord(
                kind="tool",
                name=f"tool{j}",
                span_id=f"{index:08x}f{j:07x}",
                parent_span_id="00000000000000aa",
                path=("agent", "act"),
                start_ns=start,
                end_ns=end,
            )
        )
    return RunRecord(
        id=f"run-{index}",
        agent_id="bench",
        trace_id=f"{index:032x}",
        start_ns=0,
        end_ns=t + 200 * MS,
        calls=tuple(calls),
    )


def per_run_us(work: object, runs: list[RunRecord], batch: int, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.process_time()
        for i in range(0, len(runs), batch):
            work(runs[i : i + batch])  # type: ignore[operator]
        samples.append((time.process_time() - t0) / len(runs) * 1e6)
    return samples


def learn_and_merge(learner: Learner) -> Callable[[list[RunRecord]], None]:
    """``learner.learn`` plus the merge of each delta into one growing state."""
    state: dict[tuple[str, str], Mergeable] = {}

    def work(batch: list[RunRecord]) -> None:
        for agent_id, fields in learner.learn(batch).items():
            for key, value in fields.items():
                current = state.get((agent_id, key))
                state[(agent_id, key)] = value if current is None else current.merge(value)

    return work


def encode(batch: list[RunRecord]) -> None:
    for run in batch:
        encode_run(run)


def measure(
    llm_calls: int, runs: list[RunRecord], batch: int, repeats: int
) -> dict[str, dict[str, float]]:
    learners: list[Learner] = [PredictionTrieLearner(), ToolParallelismLearner()]
    samples = {"encode runs to JSON (baseline)": per_run_us(encode, runs, batch, repeats)}
    for learner in learners:
        samples[f"{learner.name}.learn"] = per_run_us(learner.learn, runs, batch, repeats)
    samples["trie.learn + merge"] = per_run_us(
        learn_and_merge(PredictionTrieLearner()), runs, batch, repeats
    )
    base = statistics.median(samples["encode runs to JSON (baseline)"])
    rows = {}
    for what, values in samples.items():
        median = statistics.median(values)
        rows[what] = {"median_us": median, "min_us": min(values), "max_us": max(values)}
        print(
            f"{llm_calls:9} {batch:5} {what:30} {median:8.1f} {min(values):8.1f} "
            f"{max(values):8.1f} {median / base:10.1f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    report: dict[str, object] = {"runs": args.runs, "batch": args.batch, "results": {}}
    print(f"CPU µs per run (median of {args.repeats}; batches of {args.batch} runs)")
    print(
        f"{'LLM calls':>9} {'batch':>5} {'what':30} {'median':>8} {'min':>8} {'max':>8} "
        f"{'x baseline':>10}"
    )
    for llm_calls in (5, 20):
        runs = [make_run(i, llm_calls, rng) for i in range(args.runs)]
        for batch in args.batch:
            rows = measure(llm_calls, runs, batch, args.repeats)
            report["results"][f"llm_calls_{llm_calls}_batch_{batch}"] = rows  # type: ignore[index]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "learn.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
