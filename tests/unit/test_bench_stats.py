"""bench.stats: log histogram percentiles, repeat summaries and ABBA run order."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import BUCKET_GROWTH, LogHistogram, abba_order, ratio, spread


def exact_percentile(values, q):
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@given(st.lists(st.integers(min_value=1, max_value=10**10), min_size=1, max_size=300))
def test_percentiles_within_one_bucket_of_exact(values):
    hist = LogHistogram()
    hist.add_many(values)
    for q in (0, 50, 90, 99, 99.9, 100):
        exact = exact_percentile(values, q)
        got = hist.percentile(q)
        assert exact / BUCKET_GROWTH <= got <= exact * BUCKET_GROWTH, (q, exact, got)
    assert hist.total == len(values)
    assert (hist.min_ns, hist.max_ns) == (min(values), max(values))
    assert hist.mean() == pytest.approx(sum(values) / len(values))


def test_merge_equals_adding_everything_and_json_round_trips():
    rng = random.Random(7)
    a_vals = [rng.randint(10_000, 90_000) for _ in range(2000)]
    b_vals = [rng.randint(50_000, 5_000_000) for _ in range(500)]
    a, b, both = LogHistogram(), LogHistogram(), LogHistogram()
    a.add_many(a_vals)
    b.add_many(b_vals)
    both.add_many(a_vals + b_vals)
    a.merge(b)
    assert a == both
    assert LogHistogram.from_json(a.to_json()) == a
    assert b.total == 500  # merge leaves its argument alone


def test_empty_histogram_and_bad_percentile():
    hist = LogHistogram()
    assert math.isnan(hist.percentile(99))
    hist.merge(LogHistogram())
    assert hist.total == 0
    with pytest.raises(ValueError):
        hist.percentile(101)


def test_spread_summarises_repeats_and_ignores_failed_runs():
    s = spread([10.0, 12.0, math.nan, 11.0, 13.0])
    assert (s.median, s.low, s.high, s.n) == (11.5, 10.0, 13.0, 4)
    assert s.cv == pytest.approx(1.2909944 / 11.5)
    assert spread([5.0]).cv == 0.0
    empty = spread([math.nan])
    assert empty.n == 0 and math.isnan(empty.median)


def test_abba_order_balances_positions():
    rounds = abba_order(["A", "B", "C"], 4)
    assert rounds == [["A", "B", "C"], ["C", "B", "A"], ["A", "B", "C"], ["C", "B", "A"]]
    mean_pos = {x: sum(r.index(x) for r in rounds) / len(rounds) for x in "ABC"}
    assert len(set(mean_pos.values())) == 1  # drift cancels: same mean position
    with pytest.raises(ValueError):
        abba_order(["A"], 0)


def test_ratio_handles_missing_values():
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
