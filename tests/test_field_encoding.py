"""Stored learned fields: the compact format, and values written by earlier releases."""

from __future__ import annotations

import random
import zlib

import msgspec
import pytest

from otel_adaptive.learners.trie import (
    DIGEST_NODE_BYTES,
    MAX_EXACT_NODE_BYTES,
    MAX_NODE_BYTES,
    NodeStats,
)
from otel_adaptive.stats import (
    DIGEST_BYTES,
    EXACT_SAMPLE_LIMIT,
    MAX_ENCODED_BYTES,
    MAX_EXACT_BYTES,
    RunningStats,
)


def _node(values: list[float]) -> NodeStats:
    return NodeStats(
        RunningStats.of(values),
        RunningStats.of(values[1:]),
        RunningStats.of([v * 3 for v in values]),
        RunningStats.of([v / 1000 for v in values]),
    )


def test_node_stats_round_trip_in_the_compact_format() -> None:
    node = _node([float(v % 13) for v in range(300)])
    data = node.to_bytes()
    assert data[0] == 2
    assert NodeStats.from_bytes(data) == node


def test_node_stats_written_in_format_1_still_decode() -> None:
    node = _node([1.0, 4.0, 9.0])
    metrics = (node.remaining_calls, node.interarrival_ms, node.output_tokens, node.sensitivity)
    parts = tuple(metric.to_bytes() for metric in metrics)
    legacy = bytes((1,)) + msgspec.msgpack.encode(parts)
    assert NodeStats.from_bytes(legacy) == node


@pytest.mark.parametrize("cut", [1, 5, 17, -1])
def test_truncated_or_padded_node_stats_are_rejected(cut: int) -> None:
    data = _node([1.0, 2.0]).to_bytes()
    with pytest.raises(ValueError):
        NodeStats.from_bytes(data[:cut])
    with pytest.raises(ValueError):
        NodeStats.from_bytes(data + b"\x00")


# --- size bounds (docs/storage.md, "Size of a learned field") ---------------------------


def _tie_heavy(rng: random.Random, size: int) -> list[float]:
    # Ties and clusters are what make a merge leave centroids over the budget.
    return [
        rng.choice([0.0, 1 / 12, 7 / 12, 0.5, 1.0]) if rng.random() < 0.6 else rng.random() * 1e4
        for _ in range(size)
    ]


def test_an_exact_summary_is_46_bytes_plus_8_per_sample() -> None:
    for count in range(EXACT_SAMPLE_LIMIT + 1):
        encoded = RunningStats.of([float(v) for v in range(count)]).to_bytes()
        assert len(encoded) == 46 + 8 * count
    assert len(RunningStats.of(range(EXACT_SAMPLE_LIMIT)).to_bytes()) == MAX_EXACT_BYTES == 846


def test_digest_summaries_stay_near_the_budget_and_within_the_bound() -> None:
    rng = random.Random(12)
    largest = 0
    for _ in range(60):
        stats = RunningStats.empty()
        for _ in range(25):
            stats = stats.merge(RunningStats.of(_tie_heavy(rng, rng.choice([5, 60, 150, 2000]))))
            if stats.is_exact:
                continue
            encoded = stats.to_bytes()
            centroids = RunningStats.from_bytes(encoded)._digest.n_centroids  # type: ignore[union-attr]
            assert len(encoded) == 126 + 16 * centroids
            largest = max(largest, len(encoded))
    # Measured on fastdigest 0.12: merges leave at most one centroid over the budget.
    assert DIGEST_BYTES == 1726
    assert DIGEST_BYTES - 16 * 12 <= largest <= DIGEST_BYTES + 16 <= MAX_ENCODED_BYTES


def test_node_stats_sizes_in_each_phase() -> None:
    exact = RunningStats.of(range(EXACT_SAMPLE_LIMIT))
    node = NodeStats(exact, exact, exact, exact)
    assert len(node.to_bytes()) == MAX_EXACT_NODE_BYTES == 3401
    rng = random.Random(3)
    digests = [RunningStats.of(_tie_heavy(rng, 5000)) for _ in range(4)]
    encoded = NodeStats(*digests).to_bytes()
    assert len(encoded) <= DIGEST_NODE_BYTES == 6921
    assert MAX_NODE_BYTES == 13321


def test_encodings_larger_than_any_valid_field_are_rejected_before_decoding() -> None:
    stats = RunningStats.of([float(v % 7) for v in range(500)])
    body = stats.to_bytes()[:-4]
    padded = body + bytes(MAX_ENCODED_BYTES - 4 - len(body) + 1)  # one byte over the bound
    forged = padded + zlib.crc32(padded).to_bytes(4, "little")
    assert len(forged) == MAX_ENCODED_BYTES + 1
    with pytest.raises(ValueError, match="larger than any valid summary"):
        RunningStats.from_bytes(forged)
    node = NodeStats(stats, stats, stats, stats).to_bytes()
    with pytest.raises(ValueError, match="larger than any valid field"):
        NodeStats.from_bytes(node + bytes(MAX_NODE_BYTES - len(node) + 1))
