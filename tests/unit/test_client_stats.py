"""The client's statistics and flag parsing: pure code, no network."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.client import cli
from services.client.stats import ERROR_KINDS, MIB, build_report, percentile, split_count


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 1001)]  # 1..1000
    assert percentile(values, 0.50) == 500.0
    assert percentile(values, 0.99) == 990.0
    assert percentile(values, 1.0) == 1000.0
    assert percentile([7.0], 0.5) == 7.0
    assert percentile([], 0.99) == 0.0
    with pytest.raises(ValueError):
        percentile(values, 0.0)


@given(
    st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=200),
    st.floats(0.001, 1.0),
)
def test_percentile_is_an_observed_value_within_range(values: list[float], q: float) -> None:
    values.sort()
    p = percentile(values, q)
    assert p in values
    assert values[0] <= p <= values[-1]


@given(st.integers(0, 10_000), st.integers(1, 100))
def test_split_count_shares_differ_by_at_most_one(count: int, parts: int) -> None:
    shares = split_count(count, parts)
    assert len(shares) == parts
    assert sum(shares) == count
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)


def report(**overrides: object):
    fields: dict[str, object] = dict(
        host="127.0.0.1",
        port=9001,
        backend="trio",
        size=1024,
        count=4,
        concurrency=2,
        latencies_s=[0.004, 0.001, 0.003, 0.002],
        errors={},
        not_run=0,
        elapsed_s=0.5,
    )
    fields.update(overrides)
    return build_report(**fields)  # type: ignore[arg-type]


def test_report_rates_latencies_and_text() -> None:
    r = report()
    assert r.ok
    assert r.completed == 4
    assert r.requests_per_s == 8.0
    assert r.mib_per_s == 8.0 * 1024 / MIB
    assert (r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max) == (2.0, 4.0, 4.0)
    assert r.latency_ms.mean == pytest.approx(2.5)
    text = r.to_text()
    assert "4 ok, 0 errors, 0 not run" in text
    assert "8 req/s" in text
    assert "p50 2.000 ms  p99 4.000 ms  max 4.000 ms" in text
    assert "errors " not in text.replace("0 errors", "")


def test_report_counts_mismatches_and_unrun_round_trips_as_failures() -> None:
    r = report(errors={"mismatch": 1, "eof": 1}, not_run=2, first_error="server closed")
    assert not r.ok
    assert r.error_count == 2
    assert list(r.errors) == list(ERROR_KINDS)
    assert r.requests_per_s == 6.0  # mismatched round trips are not counted as done
    assert "1 eof, 1 mismatch; first: server closed" in r.to_text()
    data = json.loads(json.dumps(r.to_dict()))
    assert data["ok"] is False
    assert data["errors"]["mismatch"] == 1
    assert data["latency_ms"]["max"] == 4.0


def test_defaults() -> None:
    args = cli.build_parser().parse_args(["echo"])
    assert (args.host, args.port, args.size, args.count, args.concurrency) == (
        "127.0.0.1",
        9001,
        1024,
        1000,
        8,
    )
    assert args.backend == cli.DEFAULT_BACKEND
    assert args.timeout == cli.DEFAULT_TIMEOUT_S
    assert args.json is False


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["echo", "--size", "0"], "argument --size: '0' must be >= 1"),
        (["echo", "--port", "70000"], "argument --port: '70000' must be <= 65535"),
        (["echo", "--count", "many"], "argument --count: 'many' is not an integer"),
        (["echo", "--timeout", "-1"], "argument --timeout: '-1' must be >= 0.0"),
        (["echo", "--host", "h:1"], "give the port separately"),
        (["echo", "--backend", "gevent"], "argument --backend: invalid choice: 'gevent'"),
        (["echo", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("client")
    assert "error:" in err
    assert needle in err
