"""Stored learned fields: the compact format, and values written by earlier releases."""

from __future__ import annotations

import msgspec
import pytest

from otel_adaptive.learners.trie import NodeStats
from otel_adaptive.stats import RunningStats


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
