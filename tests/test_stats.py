"""Tests for RunningStats: mergeable moments and percentiles.

Oracles: exact rational arithmetic (``fractions.Fraction``) for count, mean and
M2, and ``numpy.percentile`` / ``numpy.quantile`` (linear method) for
percentiles.
"""

from __future__ import annotations

import json
import math
import random
import sys
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from fastdigest import TDigest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from otel_adaptive import stats as stats_module
from otel_adaptive.stats import (
    EXACT_SAMPLE_LIMIT,
    MAX_CENTROIDS,
    MAX_MAGNITUDE,
    RunningStats,
    _canonical,
    _centroid_arrays,
)

# Beyond the exact range a percentile must lie between the numpy quantiles at
# q - 0.05 and q + 0.05 (a rank error of 5 points). Measured worst case for
# fastdigest 0.12 at 100 centroids: 0.033, on integer data with many ties.
RANK_TOLERANCE = 0.05
EPS = sys.float_info.epsilon

finite = st.floats(
    min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
# Integer-valued data is what the learners feed (tokens, call counts) and has ties.
integral = st.integers(min_value=-1000, max_value=100_000).map(float)
value = st.one_of(finite, integral)
small_lists = st.lists(value, min_size=1, max_size=EXACT_SAMPLE_LIMIT)


def split(values: list[float], cuts: list[int]) -> list[list[float]]:
    points = sorted({c % (len(values) + 1) for c in cuts})
    bounds = [0, *points, len(values)]
    return [values[a:b] for a, b in pairwise(bounds)]


def merged(parts: list[list[float]]) -> RunningStats:
    result = RunningStats.empty()
    for part in parts:
        result = result.merge(RunningStats.of(part))
    return result


def exact_moments(values: list[float]) -> tuple[Fraction, Fraction]:
    exact = [Fraction(v) for v in values]
    mean = sum(exact, Fraction(0)) / len(exact)
    m2 = sum(((v - mean) ** 2 for v in exact), Fraction(0))
    return mean, m2


def assert_moments(stats: RunningStats, values: list[float]) -> None:
    """Count exact; mean and M2 within what rounding the data's scale allows.

    "Relative" is measured against the data's magnitude: a mean near zero of
    values near 1e9 cannot be known to 1e-12 of itself, only of the values.
    M2 may also carry the first-order error of a mean rounded once, which no
    floating-point algorithm avoids.
    """
    assert stats.count == len(values)
    mean, m2 = exact_moments(values)
    scale = max(abs(v) for v in values)
    assert abs(Fraction(stats.mean) - mean) <= Fraction(1e-12) * Fraction(scale)
    spread = math.sqrt(float(m2) / len(values))
    allowed = 1e-9 * float(m2) + 8 * len(values) * EPS * scale * (spread + EPS * scale)
    # Squares of tiny values round in the subnormal range, where the relative bound
    # above underflows to zero: allow a few of its steps too.
    allowed += 4 * math.ulp(0.0)
    assert abs(float(Fraction(stats.m2) - m2)) <= allowed
    assert stats.min == min(values)
    assert stats.max == max(values)


def assert_exact_percentiles(stats: RunningStats, values: list[float]) -> None:
    assert stats.is_exact
    assert stats.p50 == np.percentile(values, 50)
    assert stats.p90 == np.percentile(values, 90)
    assert stats.p95 == np.percentile(values, 95)
    for q in (0.0, 0.01, 0.25, 0.333, 0.75, 0.99, 1.0):
        assert stats.quantile(q) == np.quantile(values, q)


# --- merge of k parts equals all samples ----------------------------------


@settings(max_examples=150, deadline=None)
@given(values=small_lists, cuts=st.lists(st.integers(0, 200), max_size=6))
def test_merge_of_parts_equals_all_samples_while_exact(
    values: list[float], cuts: list[int]
) -> None:
    stats = merged(split(values, cuts))
    assert_moments(stats, values)
    assert_exact_percentiles(stats, values)


@settings(max_examples=100, deadline=None)
@given(values=small_lists, q=st.floats(0.0, 1.0))
def test_quantile_matches_numpy_at_any_rank(values: list[float], q: float) -> None:
    assert RunningStats.of(values).quantile(q) == np.quantile(values, q)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(value, min_size=EXACT_SAMPLE_LIMIT + 1, max_size=600),
    cuts=st.lists(st.integers(0, 1000), max_size=6),
)
def test_merge_beyond_exact_range_is_close(values: list[float], cuts: list[int]) -> None:
    stats = merged(split(values, cuts))
    assert_moments(stats, values)
    assert not stats.is_exact
    for q in (0.5, 0.9, 0.95):
        estimate = stats.quantile(q)
        assert estimate is not None
        low = np.quantile(values, max(q - RANK_TOLERANCE, 0.0))
        high = np.quantile(values, min(q + RANK_TOLERANCE, 1.0))
        assert low <= estimate <= high


def test_crossing_the_exact_limit_switches_to_the_sketch() -> None:
    values = [float(v % 17) for v in range(EXACT_SAMPLE_LIMIT)]
    at_limit = RunningStats.of(values)
    assert at_limit.is_exact
    beyond = at_limit.add(3.0)
    assert not beyond.is_exact
    assert beyond.count == EXACT_SAMPLE_LIMIT + 1
    assert MAX_CENTROIDS == 100


# --- algebra ----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(a=small_lists, b=small_lists, c=small_lists)
def test_merge_is_commutative_and_associative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    sa, sb, sc = RunningStats.of(a), RunningStats.of(b), RunningStats.of(c)
    everything = a + b + c
    scale = max(abs(v) for v in everything)
    orders = [
        sa.merge(sb).merge(sc),
        sa.merge(sb.merge(sc)),
        sc.merge(sb).merge(sa),
        sb.merge(sc.merge(sa)),
    ]
    for result in orders:
        assert result.count == len(everything)
        assert result.mean == pytest.approx(orders[0].mean, rel=0, abs=1e-12 * scale)
        assert_moments(result, everything)
    if len(everything) <= EXACT_SAMPLE_LIMIT:
        # Same sorted samples whatever the order, so percentiles are identical.
        for result in orders:
            assert result.p50 == orders[0].p50
            assert result.p95 == orders[0].p95


@settings(max_examples=60, deadline=None)
@given(values=small_lists, extra=value)
def test_add_equals_building_with_the_value(values: list[float], extra: float) -> None:
    assume(len(values) < EXACT_SAMPLE_LIMIT)
    added = RunningStats.of(values).add(extra)
    assert_moments(added, [*values, extra])
    assert_exact_percentiles(added, [*values, extra])


def test_merge_with_empty_returns_the_other_unchanged() -> None:
    stats = RunningStats.of([1.0, 2.0, 4.0])
    empty = RunningStats.empty()
    assert stats.merge(empty) is stats
    assert empty.merge(stats) is stats
    assert empty.merge(empty).count == 0


def test_variance_is_population_variance() -> None:
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    stats = RunningStats.of(values)
    assert stats.variance == pytest.approx(float(np.var(values)), rel=1e-15)
    assert stats.variance == pytest.approx(4.0, rel=1e-15)
    assert RunningStats.empty().variance == 0.0


# --- edge values ------------------------------------------------------------


def test_non_finite_and_out_of_range_values_are_ignored() -> None:
    noisy = [math.nan, 1.0, math.inf, -math.inf, 3.0, 2 * MAX_MAGNITUDE, -2 * MAX_MAGNITUDE]
    assert RunningStats.of(noisy) == RunningStats.of([1.0, 3.0])
    stats = RunningStats.of([5.0])
    assert stats.add(math.nan) is stats
    assert stats.add(math.inf) is stats
    assert RunningStats.of([math.nan]).count == 0


def test_integers_are_accepted_as_floats() -> None:
    stats = RunningStats.of([1, 2, 3])
    assert stats.mean == 2.0
    assert stats.p50 == 2.0


def test_empty_summary_is_all_zeros() -> None:
    empty = RunningStats.empty()
    assert empty.count == 0
    assert empty.quantile(0.5) is None
    assert empty.p90 is None
    assert empty.min is None
    assert empty.summary() == {"sample_count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0}
    assert RunningStats.of([]) == empty


def test_summary_is_the_wire_metric() -> None:
    stats = RunningStats.of([10.0, 20.0, 30.0, 40.0])
    assert stats.summary() == {
        "sample_count": 4,
        "mean": 25.0,
        "p50": 25.0,
        "p90": float(np.percentile([10, 20, 30, 40], 90)),
        "p95": float(np.percentile([10, 20, 30, 40], 95)),
    }


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_quantile_outside_unit_interval_is_rejected(q: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        RunningStats.of([1.0]).quantile(q)


# --- serialisation ----------------------------------------------------------

any_size_lists = st.one_of(
    st.lists(value, max_size=EXACT_SAMPLE_LIMIT),
    st.lists(value, min_size=EXACT_SAMPLE_LIMIT + 1, max_size=300),
)


@settings(max_examples=40, deadline=None)
@given(values=any_size_lists, cuts=st.lists(st.integers(0, 400), max_size=4))
def test_bytes_and_dict_round_trips_are_exact(values: list[float], cuts: list[int]) -> None:
    stats = merged(split(values, cuts)) if values else RunningStats.empty()
    from_bytes = RunningStats.from_bytes(stats.to_bytes())
    assert from_bytes == stats
    assert from_bytes.to_bytes() == stats.to_bytes()
    as_json = json.dumps(stats.to_dict(), allow_nan=False)
    from_dict = RunningStats.from_dict(json.loads(as_json))
    assert from_dict == stats
    for q in (0.0, 0.5, 0.9, 0.95, 1.0):
        assert from_bytes.quantile(q) == stats.quantile(q)
        assert from_dict.quantile(q) == stats.quantile(q)
    # A decoded summary keeps merging like the original. fastdigest's merge is not
    # bit-for-bit repeatable on data spanning subnormals to 1e9 (the same two digests
    # merged twice in one process can differ in the last bits), so the sketch is
    # compared by its answers, the moments exactly.
    extra = RunningStats.of([1.0, 2.0])
    again, original = from_bytes.merge(extra), stats.merge(extra)
    assert (again.count, again.mean, again.m2, again.min, again.max) == (
        original.count,
        original.mean,
        original.m2,
        original.min,
        original.max,
    )
    for q in (0.0, 0.5, 0.9, 1.0):
        assert again.quantile(q) == pytest.approx(original.quantile(q), rel=1e-9, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_from_bytes_rejects_arbitrary_bytes(data: bytes) -> None:
    with pytest.raises(ValueError):
        RunningStats.from_bytes(data)


_ENCODINGS = [
    RunningStats.empty().to_bytes(),
    RunningStats.of([1.5, -2.0, 7.25]).to_bytes(),
    RunningStats.of([float(v % 23) for v in range(400)]).to_bytes(),
]


@settings(max_examples=300, deadline=None)
@given(
    original=st.sampled_from(_ENCODINGS),
    position=st.integers(min_value=0),
    flip=st.integers(1, 255),
)
def test_from_bytes_rejects_any_corrupted_byte(original: bytes, position: int, flip: int) -> None:
    encoded = bytearray(original)
    encoded[position % len(encoded)] ^= flip
    with pytest.raises(ValueError):
        RunningStats.from_bytes(bytes(encoded))


def test_from_bytes_rejects_truncation_and_wrong_types() -> None:
    encoded = RunningStats.of([1.0, 2.0]).to_bytes()
    for cut in range(len(encoded)):
        with pytest.raises(ValueError):
            RunningStats.from_bytes(encoded[:cut])
    with pytest.raises(ValueError):
        RunningStats.from_bytes("not bytes")  # type: ignore[arg-type]


def _tampered(values: list[float], **changes: object) -> dict[str, object]:
    document = RunningStats.of(values).to_dict()
    document.update(changes)
    return document


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(None, id="not-a-dict"),
        pytest.param({"count": 1}, id="missing-fields"),
        pytest.param(_tampered([1.0], version=2), id="future-version"),
        pytest.param(_tampered([1.0], extra=1), id="unknown-field"),
        pytest.param(_tampered([1.0], count=-1), id="negative-count"),
        pytest.param(_tampered([1.0, 2.0], count=3), id="count-vs-samples"),
        pytest.param(_tampered([1.0, 2.0], samples=[2.0, 1.0]), id="unsorted-samples"),
        pytest.param(_tampered([1.0, 2.0], min=0.0), id="min-vs-samples"),
        pytest.param(_tampered([1.0, 2.0], m2=-1.0), id="negative-m2"),
        pytest.param(_tampered([1.0, 2.0], mean="x"), id="mean-not-a-number"),
        pytest.param(_tampered([1.0, 2.0], mean=True), id="mean-bool"),
        pytest.param(_tampered([1.0], samples=None), id="exact-without-samples"),
        pytest.param(_tampered([], mean=1.0), id="empty-with-mean"),
    ],
)
def test_from_dict_rejects_inconsistent_documents(document: object) -> None:
    with pytest.raises(ValueError):
        RunningStats.from_dict(document)


def _large_document() -> dict[str, object]:
    return RunningStats.of([float(v % 37) for v in range(250)]).to_dict()


def _with_digest(**changes: object) -> dict[str, object]:
    document = _large_document()
    digest = dict(document["digest"])  # type: ignore[call-overload]
    digest.update(changes)
    document["digest"] = digest
    return document


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_with_digest(n_values=1), id="digest-count"),
        pytest.param(_with_digest(max_centroids=1000), id="digest-budget"),
        pytest.param(_with_digest(centroids=[]), id="digest-empty"),
        pytest.param(_with_digest(centroids=[[1.0, 250.0], [0.5, 0.0]]), id="digest-order"),
        pytest.param(_with_digest(mass=1.0), id="digest-mass"),
        pytest.param(_with_digest(min=-1.0), id="digest-min"),
        pytest.param({**_large_document(), "digest": None}, id="large-without-digest"),
        pytest.param({**_large_document(), "samples": [1.0]}, id="large-with-samples"),
    ],
)
def test_from_dict_rejects_inconsistent_digests(document: dict[str, object]) -> None:
    assert RunningStats.from_dict(_large_document()).count == 250
    with pytest.raises(ValueError):
        RunningStats.from_dict(document)


def test_a_digest_whose_sum_is_recomputed_on_restore_still_decodes() -> None:
    # Captured from Redis after many merges: restoring this digest recomputes its
    # sum, which then differs from the stored one in the last bits. Nothing reads
    # that sum, so the stats must decode (they once failed as "corrupt").
    data = (Path(__file__).parent / "data" / "digest_sum_roundtrip.bin").read_bytes()
    stats = RunningStats.from_bytes(data)
    assert stats.count > 100
    assert stats.p50 is not None
    again = RunningStats.from_bytes(stats.to_bytes())
    assert (again.count, again.mean, again.p90) == (stats.count, stats.mean, stats.p90)


def test_the_captured_format_1_value_is_rewritten_in_the_compact_format() -> None:
    # The captured value is format 1 (msgpack, version byte 1); writing it again gives
    # format 2, which decodes to the same summary and is smaller.
    data = (Path(__file__).parent / "data" / "digest_sum_roundtrip.bin").read_bytes()
    assert data[0] == 1
    stats = RunningStats.from_bytes(data)
    rewritten = stats.to_bytes()
    assert rewritten[0] == 2
    assert len(rewritten) < len(data)
    again = RunningStats.from_bytes(rewritten)
    assert again == stats
    assert [again.quantile(q) for q in (0.1, 0.5, 0.99)] == [
        stats.quantile(q) for q in (0.1, 0.5, 0.99)
    ]


def test_format_1_exact_summaries_still_decode() -> None:
    import zlib

    import msgspec

    stats = RunningStats.of([3.0, 1.0, 2.5])
    body = bytes((1,)) + msgspec.msgpack.encode(stats.to_dict())
    legacy = body + zlib.crc32(body).to_bytes(4, "little")
    assert RunningStats.from_bytes(legacy) == stats


@settings(max_examples=30, deadline=None)
@given(values=any_size_lists)
def test_encoded_size_is_bounded_whatever_the_number_of_values(values: list[float]) -> None:
    # Exact: header and 8 bytes per sample; beyond: fastdigest's header and 16 bytes
    # per centroid, never more than the centroid budget however many values.
    exact_bound = 46 + 8 * EXACT_SAMPLE_LIMIT
    digest_bound = 46 + 100 + 16 * MAX_CENTROIDS
    for repeat in (1, 7, 40):
        stats = RunningStats.of(values * repeat)
        assert len(stats.to_bytes()) <= (exact_bound if stats.is_exact else digest_bound)


def test_centroids_off_their_bounds_by_rounding_still_decode() -> None:
    # Merged digests can hold a centroid mean one ulp above max (seen with the
    # sensitivity metric: 0.16666666666666682 against a max of 0.1666666666666668).
    stats = RunningStats.of([i / 6 for i in range(150)])
    data = stats.to_dict()
    last = data["digest"]["centroids"][-1]
    data["digest"]["centroids"][-1] = [math.nextafter(data["digest"]["max"], math.inf), last[1]]
    assert RunningStats.from_dict(data).count == 150
    # A centroid far outside the range is still corrupt.
    data["digest"]["centroids"][-1] = [data["digest"]["max"] * 2 + 1, last[1]]
    with pytest.raises(ValueError, match="centroid"):
        RunningStats.from_dict(data)


def test_merged_digests_survive_a_save_and_load_after_every_merge() -> None:
    # A merge may leave more centroids than the budget (many ties do it); loading
    # compresses them. The summary in memory must answer like the one read back
    # (seen in Redis as "digest does not round-trip" once the budget was passed).
    rng = random.Random(0)
    stats = RunningStats.empty()
    for _ in range(40):
        size = rng.choice([5, 25, 60, 150])
        values = [rng.choice([0.0, 1 / 12, 7 / 12, 1.0, 0.5]) for _ in range(size)]
        stats = stats.merge(RunningStats.of(values))
        loaded = RunningStats.from_bytes(stats.to_bytes())
        assert (loaded.count, loaded.p50, loaded.p90, loaded.p95) == (
            stats.count,
            stats.p50,
            stats.p90,
            stats.p95,
        )


# --- the batch constructor: of_floats --------------------------------

# Anything a learner could hand over, including what must be ignored.
any_float = st.one_of(
    value,
    st.sampled_from([math.nan, math.inf, -math.inf, 2 * MAX_MAGNITUDE, -2 * MAX_MAGNITUDE]),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(any_float, max_size=3 * EXACT_SAMPLE_LIMIT))
def test_of_floats_is_of_bit_for_bit(values: list[float]) -> None:
    copy = list(values)
    fast = RunningStats.of_floats(values)
    assert fast == RunningStats.of(values)
    assert fast.to_bytes() == RunningStats.of(values).to_bytes()
    assert values == copy or any(math.isnan(v) for v in values)  # never changed


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(value, min_size=1, max_size=3 * EXACT_SAMPLE_LIMIT),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_of_parts_summarises_the_values_from_their_parts(
    values: list[float], cuts: list[int]
) -> None:
    # Moments and extremes come from the parts, samples or sketch from the values:
    # the summary is the values' own, up to the rounding of combining moments.
    parts = split(values, cuts)
    stats = RunningStats.of_parts([RunningStats.of_floats(part) for part in parts], values)
    whole = RunningStats.of_floats(values)
    assert_moments(stats, values)
    assert stats.is_exact == whole.is_exact
    if whole.is_exact:
        assert_exact_percentiles(stats, values)
    else:
        assert stats._sketch().to_bytes() == whole._sketch().to_bytes()
    assert RunningStats.from_bytes(stats.to_bytes()) == stats


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(any_float, max_size=2 * EXACT_SAMPLE_LIMIT),
    cuts=st.lists(st.integers(0, 400), max_size=4),
)
def test_of_parts_with_values_a_part_ignored_summarises_them_afresh(
    values: list[float], cuts: list[int]
) -> None:
    parts = [RunningStats.of_floats(part) for part in split(values, cuts)]
    stats = RunningStats.of_parts(parts, values)
    accepted = [v for v in values if -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE]
    if accepted:
        assert_moments(stats, accepted)
    else:
        assert stats.count == 0
    assert stats.count == len(accepted)


def test_of_parts_of_nothing_is_empty() -> None:
    assert RunningStats.of_parts([], []) == RunningStats.empty()
    assert RunningStats.of_parts([RunningStats.empty()], []) == RunningStats.empty()


def test_of_floats_ignores_a_nan_wherever_it_is() -> None:
    # min and max step over a NaN that is not first, so only the sum can reveal it.
    for position in range(4):
        values = [1.0, 2.0, 3.0]
        values.insert(position, math.nan)
        stats = RunningStats.of_floats(values)
        assert (stats.count, stats.mean, stats.min, stats.max) == (3, 2.0, 1.0, 3.0)


def test_a_merged_digest_is_compressed_as_a_dict_round_trip_would() -> None:
    # The native compression must give what restoring the digest from its dict gives
    # (what this code did before), bit for bit, for merges that pass the budget.
    rng = random.Random(4)
    over_budget = 0
    for _ in range(300):
        stats = RunningStats.empty()
        for _ in range(8):
            size = rng.choice([5, 60, 150, 1500])
            values = [
                rng.choice([0.0, 1 / 12, 7 / 12, 0.5, 1.0])
                if rng.random() < 0.6
                else rng.random() * 10 ** rng.randint(0, 6)
                for _ in range(size)
            ]
            other = RunningStats.of(values)
            if stats.count + other.count > EXACT_SAMPLE_LIMIT:
                raw = stats._sketch().merge(other._sketch())
                if raw.n_centroids > MAX_CENTROIDS:
                    over_budget += 1
                    expected = TDigest.from_dict(raw.to_dict())
                    assert _canonical(raw).to_bytes() == expected.to_bytes()
            stats = stats.merge(other)
    assert over_budget > 200


# --- decoding digests: centroids read from the binary form -------------------------


def test_this_fastdigest_lays_its_centroids_out_where_decoding_reads_them() -> None:
    assert stats_module._RAW_CENTROIDS  # else decoding falls back to the slower list


@settings(max_examples=60, deadline=None)
@given(values=st.lists(value, min_size=EXACT_SAMPLE_LIMIT + 1, max_size=400))
def test_centroids_read_from_the_binary_form_are_the_digests_own(values: list[float]) -> None:
    digest = RunningStats.of_floats(values)._sketch()
    means, weights = _centroid_arrays(digest, digest.to_bytes())
    assert list(zip(means, weights, strict=True)) == digest.centroids


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(value, min_size=EXACT_SAMPLE_LIMIT + 1, max_size=300),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_decoding_reads_what_the_digests_own_centroids_say(
    monkeypatch: pytest.MonkeyPatch, values: list[float], position: int, flip: int
) -> None:
    # The same answers, and the same rejections, with the binary form read or not.
    encoded = RunningStats.of_floats(values).to_bytes()
    corrupt = bytearray(encoded)
    corrupt[position % len(corrupt)] ^= flip

    def outcome(data: bytes) -> object:
        try:
            return RunningStats.from_bytes(data).to_bytes()
        except ValueError:
            return ValueError

    fast = (outcome(encoded), outcome(bytes(corrupt)))
    with monkeypatch.context() as patch:
        patch.setattr(stats_module, "_RAW_CENTROIDS", False)
        slow = (outcome(encoded), outcome(bytes(corrupt)))
    assert fast == slow
    assert fast[0] == encoded
