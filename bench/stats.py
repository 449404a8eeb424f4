"""Statistics for the benchmark: latency histograms, repeat summaries, run order.

Pure functions and small value types with no I/O, so the unit tests can check
them exactly and the report can rebuild every figure from ``results.json``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

# Relative width of a latency bucket: 1% keeps p99.9 within 1% of the true value
# while a run of a million requests needs only a few hundred buckets.
BUCKET_GROWTH = 1.01

_LOG_GROWTH = math.log(BUCKET_GROWTH)


def bucket_of(value_ns: int) -> int:
    """Index of the log bucket holding ``value_ns`` (values below 1 ns share bucket 0)."""
    if value_ns <= 1:
        return 0
    return int(math.log(value_ns) / _LOG_GROWTH)


def bucket_value(index: int) -> float:
    """Representative value of bucket ``index``: the geometric middle of its bounds."""
    return float(BUCKET_GROWTH ** (index + 0.5))


@dataclass
class LogHistogram:
    """Counts of latencies (ns) in buckets of constant relative width :data:`BUCKET_GROWTH`.

    Mergeable across client processes and repeats; percentiles are exact to
    within one bucket (1%), clamped to the exact minimum and maximum seen.
    """

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    min_ns: int = 0
    max_ns: int = 0
    sum_ns: int = 0

    def add_many(self, values_ns: Iterable[int]) -> None:
        """Add every value; the caller records raw values in its hot loop and calls this after."""
        counts = self.counts
        for v in values_ns:
            b = bucket_of(v)
            counts[b] = counts.get(b, 0) + 1
            if self.total == 0 or v < self.min_ns:
                self.min_ns = v
            self.max_ns = max(self.max_ns, v)
            self.total += 1
            self.sum_ns += v

    def merge(self, other: LogHistogram) -> None:
        """Add ``other``'s counts to this histogram (``other`` is left unchanged)."""
        if other.total == 0:
            return
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.min_ns = other.min_ns if self.total == 0 else min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)
        self.total += other.total
        self.sum_ns += other.sum_ns

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) in ns; ``nan`` for an empty histogram."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be within 0..100, not {q}")
        if self.total == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.total))  # nearest-rank definition
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min(max(bucket_value(b), float(self.min_ns)), float(self.max_ns))
        return float(self.max_ns)

    def mean(self) -> float:
        return self.sum_ns / self.total if self.total else math.nan

    def to_json(self) -> dict[str, object]:
        return {
            "growth": BUCKET_GROWTH,
            "counts": {str(b): n for b, n in sorted(self.counts.items())},
            "total": self.total,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "sum_ns": self.sum_ns,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> LogHistogram:
        """Rebuild a histogram written by :meth:`to_json`; raises ValueError on another growth."""
        if data.get("growth") != BUCKET_GROWTH:
            raise ValueError(f"histogram growth {data.get('growth')} != {BUCKET_GROWTH}")
        counts = data["counts"]
        assert isinstance(counts, dict)
        return cls(
            counts={int(b): int(n) for b, n in counts.items()},
            total=int(str(data["total"])),
            min_ns=int(str(data["min_ns"])),
            max_ns=int(str(data["max_ns"])),
            sum_ns=int(str(data["sum_ns"])),
        )


@dataclass(frozen=True)
class Spread:
    """Summary of one figure over repeated runs: the median is the headline value."""

    median: float
    low: float
    high: float
    mean: float
    cv: float  # coefficient of variation: sample stdev / mean (0 for one run)
    n: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "mean": self.mean,
            "cv": self.cv,
            "n": self.n,
        }


def spread(values: Sequence[float]) -> Spread:
    """Median, range, mean and coefficient of variation of ``values`` (NaNs dropped).

    An empty input (every repeat failed) gives NaNs with ``n == 0``.
    """
    xs = [v for v in values if not math.isnan(v)]
    if not xs:
        return Spread(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(xs)
    cv = statistics.stdev(xs) / mean if len(xs) > 1 and mean else 0.0
    return Spread(statistics.median(xs), min(xs), max(xs), mean, cv, len(xs))


def abba_order(items: Sequence[T], repeats: int) -> list[list[T]]:
    """Run order for ``repeats`` rounds: forward, backward, forward, ... (A B | B A | A B).

    With an even number of rounds every item's mean run time is the same, so a
    slow linear drift of the machine (heat, a neighbour's load) cancels out.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    forward = list(items)
    return [forward if r % 2 == 0 else forward[::-1] for r in range(repeats)]


def ratio(value: float, reference: float) -> float:
    """``value / reference``, or NaN when either is missing or the reference is zero."""
    if math.isnan(value) or math.isnan(reference) or reference == 0:
        return math.nan
    return value / reference
