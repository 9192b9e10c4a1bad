"""Mergeable running statistics: count, mean and M2 plus percentiles.

A :class:`RunningStats` summarises a stream of floats so that summaries built
in different processes merge into what one process would have built from all
the values: count, mean and M2 (the sum of squared deviations) merge with the
parallel formulas of Chan et al. (Welford's update generalised to two
summaries), and percentiles come from a mergeable quantile sketch.

Percentiles are exact while a summary holds at most :data:`EXACT_SAMPLE_LIMIT`
values: up to that size the raw values are kept (sorted) and percentiles are
computed with the same linear interpolation as ``numpy.percentile``, bit for bit.
Measured on fastdigest 0.12, the t-digest alone is not bit-exact there: it
differs from numpy in the last bits for many inputs (and by more after some
merges of small integer data), so it only takes over beyond that size, where
percentiles are estimates anyway.

Stored form (:meth:`RunningStats.to_bytes`, format 2): a version byte, a fixed
header (kind, count, mean, M2, min, max), then either the sorted samples as
little-endian doubles or fastdigest's own binary digest, then a CRC-32. Both
payloads are converted by native code (``array``, ``TDigest.from_bytes``) and
checked with builtins over whole sequences, never a Python loop per value.

Size, whatever the number of values summarised: 46 bytes of frame plus 8 per
sample while exact (at most :data:`MAX_EXACT_BYTES`, 846 B), then 126 bytes
plus 16 per centroid as a digest (:data:`DIGEST_BYTES`, 1,726 B, at the
centroid budget). A merge may leave a centroid or so over the budget; decoding
accepts at most twice the budget and nothing larger than
:data:`MAX_ENCODED_BYTES` (3,326 B). Format 1 (msgpack, written by earlier
releases) still decodes; new data is always written in format 2.
"""

from __future__ import annotations

import itertools
import math
import operator
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from fastdigest import TDigest

#: Centroid budget of the quantile sketch used beyond the exact range.
MAX_CENTROIDS = 100

#: Up to this many values the raw samples are kept and percentiles are exact.
EXACT_SAMPLE_LIMIT = MAX_CENTROIDS

#: Values whose magnitude exceeds this are ignored like NaN and infinities, so
#: squared deviations (M2) can never overflow to infinity.
MAX_MAGNITUDE = 1e100

_LEGACY_FORMAT_VERSION = 1  # msgpack body: still read, no longer written
_FORMAT_VERSION = 2
_CRC_SIZE = 4
# Format 2 header after the version byte: kind, count, mean, m2, min, max.
_HEADER = struct.Struct("<Bqdddd")
_KIND_EMPTY, _KIND_EXACT, _KIND_DIGEST = 0, 1, 2
# Version byte, header and checksum: what every format-2 encoding holds.
_FRAME_BYTES = 1 + _HEADER.size + _CRC_SIZE
# fastdigest 0.12's binary digest: a fixed part, then a mean and a weight per centroid.
_DIGEST_FIXED_BYTES = 80
_CENTROID_BYTES = 16
# Decoding accepts a merge's leftover centroids up to twice the budget, no more.
_MAX_DECODED_CENTROIDS = 2 * MAX_CENTROIDS

#: Largest encoding of an exact summary (:data:`EXACT_SAMPLE_LIMIT` samples).
MAX_EXACT_BYTES = _FRAME_BYTES + 8 * EXACT_SAMPLE_LIMIT
#: Encoding of a digest with :data:`MAX_CENTROIDS` centroids (its usual size).
DIGEST_BYTES = _FRAME_BYTES + _DIGEST_FIXED_BYTES + _CENTROID_BYTES * MAX_CENTROIDS
#: Largest encoding that decodes: a digest holding twice its centroid budget.
MAX_ENCODED_BYTES = _FRAME_BYTES + _DIGEST_FIXED_BYTES + _CENTROID_BYTES * _MAX_DECODED_CENTROIDS
_LITTLE_ENDIAN = sys.byteorder == "little"
# Merged into a digest over its budget to compress it; merges never change their inputs.
_EMPTY_DIGEST = TDigest.from_values([], max_centroids=MAX_CENTROIDS)


def _raw_centroids_readable() -> bool:
    """Does this fastdigest's binary form hold the centroids where decoding reads them?"""
    probe = TDigest.from_values([0.5, 1.5, 1.5, 4.0], max_centroids=MAX_CENTROIDS)
    raw = probe.to_bytes()
    pairs = array("d")
    try:
        pairs.frombytes(raw[_DIGEST_FIXED_BYTES:])
    except ValueError:
        return False
    if not _LITTLE_ENDIAN:
        pairs.byteswap()
    return [tuple(pairs[i : i + 2]) for i in range(0, len(pairs), 2)] == probe.centroids


_RAW_CENTROIDS = _raw_centroids_readable()


class _DigestState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_centroids: int
    n_values: int
    mass: float
    sum: float
    min: float
    max: float
    centroids: list[tuple[float, float]]


class _State(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    count: int
    mean: float
    m2: float
    min: float | None
    max: float | None
    samples: list[float] | None
    digest: _DigestState | None


_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_MSGPACK_DECODER = msgspec.msgpack.Decoder(_State)


def _combined_moments(
    count: int, mean: float, m2: float, other: RunningStats
) -> tuple[int, float, float]:
    """Count, mean and M2 of values summarised by (count, mean, m2) and by ``other``.

    The parallel update of Chan et al.; ``count`` and ``other.count`` are positive.
    """
    total = count + other._count
    delta = other._mean - mean
    return (
        total,
        mean + delta * (other._count / total),
        m2 + other._m2 + delta * delta * (count * other._count / total),
    )


def _accepts(value: float) -> bool:
    # A chained comparison is False for NaN as well as for out-of-range values.
    return -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE


def _linear_quantile(ordered: tuple[float, ...], q: float) -> float:
    """``numpy.percentile(values, 100 * q)`` with the default linear method."""
    last = len(ordered) - 1
    position = last * q
    if position >= last:
        return ordered[last]
    below = math.floor(position)
    gamma = position - below
    low = ordered[below]
    high = ordered[below + 1]
    spread = high - low
    # numpy interpolates from the nearer end to stay monotonic; mirror it exactly.
    if gamma >= 0.5:
        return high - spread * (1.0 - gamma)
    return low + spread * gamma


class RunningStats:
    """An immutable, mergeable summary of a stream of floats.

    Build one with :meth:`empty` or :meth:`of`; every operation returns a new
    object. Non-finite values (and values beyond :data:`MAX_MAGNITUDE`) are
    ignored, never raised on.
    """

    __slots__ = ("_count", "_digest", "_m2", "_max", "_mean", "_min", "_samples")

    _count: int
    _mean: float
    _m2: float
    _min: float | None
    _max: float | None
    # Sorted raw values while count <= EXACT_SAMPLE_LIMIT, else None.
    _samples: tuple[float, ...] | None
    # Quantile sketch once count > EXACT_SAMPLE_LIMIT, else None. Never mutated.
    _digest: TDigest | None

    def __init__(
        self,
        *,
        count: int,
        mean: float,
        m2: float,
        minimum: float | None,
        maximum: float | None,
        samples: tuple[float, ...] | None = None,
        digest: TDigest | None = None,
    ) -> None:
        # Internal constructor: callers go through empty/of/add/merge.
        self._count = count
        self._mean = mean
        self._m2 = m2
        self._min = minimum
        self._max = maximum
        self._samples = samples
        self._digest = digest

    # --- construction -----------------------------------------------------

    @classmethod
    def empty(cls) -> RunningStats:
        return _EMPTY

    @classmethod
    def of(cls, values: Iterable[float]) -> RunningStats:
        """Summarise many values at once: the fast path for learners.

        Mean and M2 come from two compensated passes (``math.fsum``), which is
        both faster in Python and more accurate than one Welford step per value.
        """
        limit = MAX_MAGNITUDE
        # Inline range test: also false for NaN, so non-finite values drop out.
        return _summarise([float(value) for value in values if -limit <= value <= limit])

    @classmethod
    def of_floats(cls, values: list[float]) -> RunningStats:
        """:meth:`of` for a list of floats, equal to it bit for bit, and cheaper.

        When every value is accepted (the usual case) the list is summarised as
        it is, without the filtering copy; it is never kept or changed.
        """
        if values:
            low = min(values)
            high = max(values)
            # min and max may step over a NaN; the exact sum cannot.
            if low >= -MAX_MAGNITUDE and high <= MAX_MAGNITUDE:
                total = math.fsum(values)
                if not math.isnan(total):
                    return _build(values, total, low, high)
        return cls.of(values)

    def add(self, value: float) -> RunningStats:
        """Return a summary that also holds ``value`` (a one-value merge)."""
        if not _accepts(value):
            return self
        return self.merge(_summarise([float(value)]))

    @classmethod
    def of_parts(cls, parts: Sequence[RunningStats], values: list[float]) -> RunningStats:
        """:meth:`of_floats` of ``values``, given the summaries of a partition of them.

        Count, moments and extremes combine the parts' (as :meth:`merge` does), so a
        value that feeds several summaries has its deviations summed once; samples or
        the sketch still come from ``values`` themselves. ``values`` must hold exactly
        the parts' values: when they differ in number (values a part ignored, NaN or
        out of range), ``values`` are summarised from scratch.
        """
        filled = [part for part in parts if part._count]
        if sum(part._count for part in filled) != len(values) or not filled:
            return cls.of_floats(values)
        first = filled[0]
        count, mean, m2 = first._count, first._mean, first._m2
        for part in filled[1:]:
            count, mean, m2 = _combined_moments(count, mean, m2, part)
        low = min(part._min for part in filled if part._min is not None)
        high = max(part._max for part in filled if part._max is not None)
        if count <= EXACT_SAMPLE_LIMIT:
            return RunningStats(
                count=count, mean=mean, m2=m2, minimum=low, maximum=high,
                samples=tuple(sorted(values)),
            )  # fmt: skip
        return RunningStats(
            count=count, mean=mean, m2=m2, minimum=low, maximum=high,
            digest=TDigest.from_values(values, max_centroids=MAX_CENTROIDS),
        )  # fmt: skip

    def merge(self, other: RunningStats) -> RunningStats:
        """Return the summary of both inputs' values (Chan et al. for the moments)."""
        if other._count == 0:
            return self
        if self._count == 0:
            return other
        count, mean, m2 = _combined_moments(self._count, self._mean, self._m2, other)
        assert self._min is not None and other._min is not None
        assert self._max is not None and other._max is not None
        minimum = min(self._min, other._min)
        maximum = max(self._max, other._max)
        if count <= EXACT_SAMPLE_LIMIT:
            assert self._samples is not None and other._samples is not None
            samples = tuple(sorted(self._samples + other._samples))
            return RunningStats(
                count=count, mean=mean, m2=m2, minimum=minimum, maximum=maximum, samples=samples
            )
        digest = _canonical(self._sketch().merge(other._sketch()))
        return RunningStats(
            count=count, mean=mean, m2=m2, minimum=minimum, maximum=maximum, digest=digest
        )

    def _sketch(self) -> TDigest:
        if self._digest is not None:
            return self._digest
        assert self._samples is not None
        return TDigest.from_values(self._samples, max_centroids=MAX_CENTROIDS)

    # --- reading ----------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    @property
    def mean(self) -> float:
        """Arithmetic mean; 0.0 when empty."""
        return self._mean

    @property
    def m2(self) -> float:
        """Sum of squared deviations from the mean."""
        return self._m2

    @property
    def variance(self) -> float:
        """Population variance (M2 / count); 0.0 when empty."""
        return self._m2 / self._count if self._count else 0.0

    @property
    def min(self) -> float | None:
        return self._min

    @property
    def max(self) -> float | None:
        return self._max

    @property
    def is_exact(self) -> bool:
        """True while percentiles are computed from the raw values."""
        return self._digest is None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (q in [0, 1]); None when empty.

        Equal to ``numpy.percentile(values, 100 * q)`` while exact, else the
        sketch's estimate clamped to the observed range.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
        if self._count == 0:
            return None
        if self._samples is not None:
            return _linear_quantile(self._samples, q)
        assert self._digest is not None and self._min is not None and self._max is not None
        return min(max(self._digest.quantile(q), self._min), self._max)

    @property
    def p50(self) -> float | None:
        return self.quantile(0.5)

    @property
    def p90(self) -> float | None:
        return self.quantile(0.9)

    @property
    def p95(self) -> float | None:
        return self.quantile(0.95)

    def summary(self) -> dict[str, Any]:
        """The wire-format metric object: sample_count, mean, p50, p90, p95."""
        if self._count == 0:
            return {"sample_count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0}
        return {
            "sample_count": self._count,
            "mean": self._mean,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p95": self.quantile(0.95),
        }

    # --- equality ---------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunningStats):
            return NotImplemented
        return (
            self._count == other._count
            and self._mean == other._mean
            and self._m2 == other._m2
            and self._min == other._min
            and self._max == other._max
            and self._samples == other._samples
            and self._digest == other._digest
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, yet holds a mutable sketch

    def __repr__(self) -> str:
        return (
            f"RunningStats(count={self._count}, mean={self._mean!r}, "
            f"variance={self.variance!r}, exact={self.is_exact})"
        )

    # --- serialisation ----------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact lossless encoding (format 2, see the module docstring)."""
        if self._count == 0:
            header = _HEADER.pack(_KIND_EMPTY, 0, 0.0, 0.0, 0.0, 0.0)
            payload = b""
        else:
            assert self._min is not None and self._max is not None
            kind = _KIND_EXACT if self._digest is None else _KIND_DIGEST
            header = _HEADER.pack(kind, self._count, self._mean, self._m2, self._min, self._max)
            if self._digest is None:
                assert self._samples is not None
                payload = _doubles_to_bytes(self._samples)
            else:
                payload = self._digest.to_bytes()
        body = bytes((_FORMAT_VERSION,)) + header + payload
        return body + zlib.crc32(body).to_bytes(_CRC_SIZE, "little")

    @classmethod
    def from_bytes(cls, data: bytes) -> RunningStats:
        """Decode :meth:`to_bytes` output (format 2 or 1); ``ValueError`` on anything else."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) <= 1 + _CRC_SIZE:
            raise ValueError("running stats: data too short")
        body, crc = raw[:-_CRC_SIZE], raw[-_CRC_SIZE:]
        if zlib.crc32(body).to_bytes(_CRC_SIZE, "little") != crc:
            raise ValueError("running stats: checksum mismatch (corrupt data)")
        if body[0] == _FORMAT_VERSION:
            return _decode_binary(body)
        if body[0] != _LEGACY_FORMAT_VERSION:
            raise ValueError(f"running stats: unsupported format version {body[0]}")
        try:
            state = _MSGPACK_DECODER.decode(body[1:])
        except msgspec.DecodeError as exc:
            raise ValueError(f"running stats: {exc}") from exc
        return cls._from_state(state)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that :meth:`from_dict` turns back into an equal object."""
        result: dict[str, Any] = msgspec.to_builtins(self._state())
        return result

    @classmethod
    def from_dict(cls, obj: Any) -> RunningStats:
        """Decode :meth:`to_dict` output; raises ``ValueError`` on anything else."""
        try:
            state = msgspec.convert(obj, _State)
        except msgspec.ValidationError as exc:
            raise ValueError(f"running stats: {exc}") from exc
        return cls._from_state(state)

    def _state(self) -> _State:
        digest = None
        sketch = self._digest
        if sketch is not None:
            digest = _DigestState(
                max_centroids=sketch.max_centroids,
                n_values=sketch.n_values,
                mass=sketch.mass(),
                sum=sketch.sum(),
                min=sketch.min(),
                max=sketch.max(),
                centroids=sketch.centroids,
            )
        return _State(
            version=_LEGACY_FORMAT_VERSION,
            count=self._count,
            mean=self._mean,
            m2=self._m2,
            min=self._min,
            max=self._max,
            samples=list(self._samples) if self._samples is not None else None,
            digest=digest,
        )

    @classmethod
    def _from_state(cls, state: _State) -> RunningStats:
        _check_state(state)
        if state.count == 0:
            return _EMPTY
        samples = tuple(state.samples) if state.samples is not None else None
        digest = _restore_digest(state.digest) if state.digest is not None else None
        return cls(
            count=state.count,
            mean=state.mean,
            m2=state.m2,
            minimum=state.min,
            maximum=state.max,
            samples=samples,
            digest=digest,
        )


def _check_state(state: _State) -> None:
    """Reject states that no RunningStats could have produced."""
    if state.version != _LEGACY_FORMAT_VERSION:
        raise ValueError(f"running stats: unsupported format version {state.version}")
    count = state.count
    if count < 0:
        raise ValueError("running stats: negative count")
    if not (math.isfinite(state.mean) and math.isfinite(state.m2)) or state.m2 < 0:
        raise ValueError("running stats: mean/m2 must be finite and m2 non-negative")
    if count == 0:
        if (state.mean, state.m2, state.min, state.max) != (0.0, 0.0, None, None):
            raise ValueError("running stats: empty summary with values")
        if state.samples or state.digest is not None:
            raise ValueError("running stats: empty summary with samples")
        return
    low, high = state.min, state.max
    if low is None or high is None or not (_accepts(low) and _accepts(high) and low <= high):
        raise ValueError("running stats: invalid min/max")
    if count <= EXACT_SAMPLE_LIMIT:
        _check_samples(state, low, high)
    else:
        _check_digest(state, low, high)


def _check_samples(state: _State, low: float, high: float) -> None:
    samples = state.samples
    if state.digest is not None or samples is None or len(samples) != state.count:
        raise ValueError("running stats: exact summary needs exactly `count` samples")
    if samples[0] != low or samples[-1] != high:
        raise ValueError("running stats: samples disagree with min/max")
    # Builtins do the loops (this runs for every value read back from a store): a sum
    # is finite only without NaN or inf, and sorted values between the accepted
    # min and max are all in range.
    if not math.isfinite(sum(samples)) or list(samples) != sorted(samples):
        raise ValueError("running stats: samples must be sorted finite values")


def _check_digest(state: _State, low: float, high: float) -> None:
    digest = state.digest
    if state.samples is not None or digest is None:
        raise ValueError("running stats: large summary needs a digest and no samples")
    if digest.max_centroids != MAX_CENTROIDS or digest.n_values != state.count:
        raise ValueError("running stats: digest size or budget mismatch")
    if digest.min != low or digest.max != high or not digest.centroids:
        raise ValueError("running stats: digest disagrees with min/max")
    if len(digest.centroids) > _MAX_DECODED_CENTROIDS:
        raise ValueError("running stats: too many centroids")
    # Centroid means are weighted averages: after merges they may stray from min/max
    # and from each other's order by rounding, a few ulps. Only more than that is bad.
    slack = (abs(low) + abs(high)) * 1e-12 + 1e-300
    means = [mean for mean, _ in digest.centroids]
    weights = [weight for _, weight in digest.centroids]
    if (
        not math.isfinite(sum(means))
        or min(means) < low - slack
        or max(means) > high + slack
        or (means != sorted(means) and not _nearly_sorted(means, slack))
        or not min(weights) > 0.0
        or max(weights) > state.count
    ):
        raise ValueError("running stats: invalid digest centroid")
    if not math.isclose(sum(weights), digest.mass, rel_tol=1e-12) or digest.mass != float(
        state.count
    ):
        raise ValueError("running stats: digest weights disagree with count")
    if not math.isfinite(digest.sum):
        raise ValueError("running stats: digest sum must be finite")


def _doubles_to_bytes(values: tuple[float, ...]) -> bytes:
    packed = array("d", values)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def _doubles_from_bytes(data: bytes) -> tuple[float, ...]:
    if len(data) % 8:
        raise ValueError("running stats: sample payload is not a whole number of doubles")
    unpacked = array("d")
    unpacked.frombytes(data)
    if not _LITTLE_ENDIAN:
        unpacked.byteswap()
    return tuple(unpacked)


def _decode_binary(body: bytes) -> RunningStats:
    """Decode a format-2 body (version byte included, checksum already verified)."""
    end = 1 + _HEADER.size
    if len(body) < end:
        raise ValueError("running stats: header too short")
    if len(body) + _CRC_SIZE > MAX_ENCODED_BYTES:
        # Checked before any decoding: no valid summary is this large.
        raise ValueError("running stats: encoding larger than any valid summary")
    kind, count, mean, m2, low, high = _HEADER.unpack_from(body, 1)
    payload = body[end:]
    if kind == _KIND_EMPTY:
        if (count, mean, m2, low, high) != (0, 0.0, 0.0, 0.0, 0.0) or payload:
            raise ValueError("running stats: empty summary with values")
        return _EMPTY
    if not (math.isfinite(mean) and math.isfinite(m2)) or m2 < 0:
        raise ValueError("running stats: mean/m2 must be finite and m2 non-negative")
    if count < 1 or not (_accepts(low) and _accepts(high) and low <= high):
        raise ValueError("running stats: invalid count or min/max")
    if kind == _KIND_EXACT:
        if count > EXACT_SAMPLE_LIMIT:
            raise ValueError("running stats: exact summary beyond the exact range")
        samples = _doubles_from_bytes(payload)
        if len(samples) != count or samples[0] != low or samples[-1] != high:
            raise ValueError("running stats: samples disagree with count or min/max")
        if not math.isfinite(sum(samples)) or list(samples) != sorted(samples):
            raise ValueError("running stats: samples must be sorted finite values")
        return RunningStats(
            count=count, mean=mean, m2=m2, minimum=low, maximum=high, samples=samples
        )
    if kind != _KIND_DIGEST or count <= EXACT_SAMPLE_LIMIT:
        raise ValueError("running stats: unknown kind or digest within the exact range")
    try:
        digest = TDigest.from_bytes(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"running stats: bad digest: {exc}") from exc
    _check_native_digest(digest, count, low, high, payload)
    return RunningStats(count=count, mean=mean, m2=m2, minimum=low, maximum=high, digest=digest)


def _centroid_arrays(digest: TDigest, payload: bytes) -> tuple[list[float], list[float]]:
    """The digest's centroid means and weights.

    Read straight from its binary form (a fixed part, then a mean and a weight per
    centroid, little-endian doubles) when this fastdigest lays it out so (checked once,
    at import); else from the digest's own list of pairs.
    """
    if _RAW_CENTROIDS:
        pairs = array("d")
        pairs.frombytes(payload[_DIGEST_FIXED_BYTES:])
        if not _LITTLE_ENDIAN:
            pairs.byteswap()
        if len(pairs) == 2 * digest.n_centroids:
            # Lists, not arrays: min, max and sum then read floats without boxing each.
            return pairs[0::2].tolist(), pairs[1::2].tolist()
    centroids = digest.centroids
    if not centroids:
        return [], []
    means, weights = zip(*centroids, strict=True)
    return list(means), list(weights)


def _check_native_digest(
    digest: TDigest, count: int, low: float, high: float, payload: bytes
) -> None:
    """The same checks as for a format-1 digest, on a natively decoded one."""
    if digest.max_centroids != MAX_CENTROIDS or digest.n_values != count:
        raise ValueError("running stats: digest size or budget mismatch")
    if digest.min() != low or digest.max() != high or digest.mass() != float(count):
        raise ValueError("running stats: digest disagrees with count or min/max")
    # A merge may leave up to twice the budget before compression (format 1 did too).
    size = digest.n_centroids
    if not 0 < size <= _MAX_DECODED_CENTROIDS or not math.isfinite(digest.sum()):
        raise ValueError("running stats: invalid digest size or sum")
    means, weights = _centroid_arrays(digest, payload)
    slack = (abs(low) + abs(high)) * 1e-12 + 1e-300
    if (
        len(means) != size
        or not math.isfinite(sum(means))
        or min(means) < low - slack
        or max(means) > high + slack
        or (means != sorted(means) and not _nearly_sorted(means, slack))
        or not min(weights) > 0.0
        or max(weights) > count
        or not math.isclose(sum(weights), float(count), rel_tol=1e-12)
    ):
        raise ValueError("running stats: invalid digest centroid")


def _canonical(digest: TDigest) -> TDigest:
    """The digest in the form it has after a save and a load.

    A merge may leave more centroids than the budget; restoring such a digest
    compresses it, so the one kept in memory would answer differently from the
    one read back. Compressing right away keeps both the same.

    Merging with an empty digest compresses it natively, to the very digest
    (every serialised bit) that the dict round trip ``from_dict(to_dict())``
    gives, about eight times faster (tests compare the two).
    """
    if digest.n_centroids <= digest.max_centroids:
        return digest
    return digest.merge(_EMPTY_DIGEST)


def _nearly_sorted(values: list[float], slack: float) -> bool:
    return all(later >= earlier - slack for earlier, later in itertools.pairwise(values))


def _restore_digest(state: _DigestState) -> TDigest:
    exported = {
        "max_centroids": state.max_centroids,
        "mass": state.mass,
        "sum": state.sum,
        "min": state.min,
        "max": state.max,
        "n_values": state.n_values,
        "centroids": [{"m": mean, "c": weight} for mean, weight in state.centroids],
    }
    try:
        digest = TDigest.from_dict(exported)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"running stats: bad digest: {exc}") from exc
    restored = digest.to_dict()
    # The digest recomputes its sum from the centroids, which may differ from the
    # stored one in the last bits; nothing reads it, so only the rest must match.
    restored.pop("sum")
    exported.pop("sum")
    if restored != exported or not math.isclose(digest.sum(), state.sum, rel_tol=1e-9):
        raise ValueError("running stats: digest does not round-trip")
    return digest


_EMPTY = RunningStats(count=0, mean=0.0, m2=0.0, minimum=None, maximum=None, samples=())


def _summarise(values: list[float]) -> RunningStats:
    """Summarise accepted values in bulk (two passes, compensated sums)."""
    if not values:
        return _EMPTY
    return _build(values, math.fsum(values), None, None)


def _build(
    values: list[float], total: float, low: float | None, high: float | None
) -> RunningStats:
    """The summary of non-empty accepted ``values`` whose exact sum is ``total``."""
    count = len(values)
    mean = total / count
    # map() with operator functions keeps the per-value work in C; same arithmetic.
    deviations = list(map(operator.sub, values, itertools.repeat(mean, count)))
    m2 = math.fsum(map(operator.mul, deviations, deviations))
    if count <= EXACT_SAMPLE_LIMIT:
        ordered = tuple(sorted(values))
        return RunningStats(
            count=count,
            mean=mean,
            m2=m2,
            minimum=ordered[0],
            maximum=ordered[-1],
            samples=ordered,
        )
    return RunningStats(
        count=count,
        mean=mean,
        m2=m2,
        minimum=min(values) if low is None else low,
        maximum=max(values) if high is None else high,
        digest=TDigest.from_values(values, max_centroids=MAX_CENTROIDS),
    )
