"""The load test's pass/fail gate and its options, as plain functions (no Locust run)."""

from __future__ import annotations

import configargparse  # type: ignore[import-untyped]
import pytest

from loadtest import options
from loadtest.gate import Limit, NameStats, RunSummary, Thresholds, evaluate, parse_limit
from services.common.config import SettingError


def stats(name: str, requests: int = 100, failures: int = 0, p95: float = 5, p99: float = 9):
    return NameStats("tcp", name, requests, failures, p95, p99)


HEALTHY = RunSummary(names=[stats("trio-echo"), stats("uvloop-echo")], workers=2)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("500", Limit(500.0)),
        (" 0.5 ", Limit(0.5)),
        ("off", Limit(None)),
        ("500,jobs:sleep:*=1500", Limit(500.0, (("jobs:sleep:*", 1500.0),))),
        ("jobs:*=2000, 300", Limit(300.0, (("jobs:*", 2000.0),))),
        ("jobs:*=2000", Limit(None, (("jobs:*", 2000.0),))),
    ],
)
def test_parse_limit(raw: str, expected: Limit) -> None:
    assert parse_limit(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("fast", "not a number"),
        ("-1", ">= 0"),
        ("nan", "finite"),
        ("1,2", "more than one default"),
        ("=5", "no name pattern"),
    ],
)
def test_parse_limit_rejects(raw: str, reason: str) -> None:
    with pytest.raises(SettingError, match=reason):
        parse_limit(raw)


def test_first_matching_override_wins() -> None:
    limit = parse_limit("100,jobs:sleep:*=900,jobs:*=400")
    assert limit.for_name("trio-echo") == 100
    assert limit.for_name("jobs:sleep:thread") == 900
    assert limit.for_name("jobs:primes:process") == 400
    assert str(limit) == "100,jobs:sleep:*=900,jobs:*=400"


def test_healthy_run_passes() -> None:
    assert evaluate(HEALTHY, Thresholds(min_workers=2)) == []


def test_zero_requests_fail() -> None:
    (problem,) = evaluate(RunSummary(names=[]), Thresholds())
    assert "only 0 requests" in problem
    assert "--gate-min-requests" in problem


def test_failure_ratio_per_name_and_total() -> None:
    run = RunSummary(names=[stats("trio-echo", 1000, 0), stats("jobs:sleep:process", 10, 5)])
    # The total (5/1010 = 0.50%) is within 1%; the job name alone is not.
    assert evaluate(run, Thresholds(max_fail_ratio=Limit(0.01))) == [
        "failure ratio of tcp jobs:sleep:process is 50.00% (5/10) > 1.00% (--gate-max-fail-ratio)"
    ]
    # An override for the jobs leaves only the total to judge.
    relaxed = Thresholds(max_fail_ratio=parse_limit("0.01,jobs:*=0.6"))
    assert evaluate(run, relaxed) == []


def test_total_failure_ratio_counts_everything() -> None:
    run = RunSummary(names=[stats("a", 100, 2), stats("b", 100, 2)])
    problems = evaluate(run, Thresholds(max_fail_ratio=parse_limit("0.01,*=1")))
    assert problems == [
        "failure ratio of all requests is 2.00% (4/200) > 1.00% (--gate-max-fail-ratio)"
    ]


def test_any_failure_fails_a_zero_ratio() -> None:
    run = RunSummary(names=[stats("trio-echo", 10_000, 1)])
    problems = evaluate(run, Thresholds(max_fail_ratio=Limit(0.0)))
    assert len(problems) == 2  # the name and the total


def test_percentiles_per_name_with_overrides() -> None:
    run = RunSummary(
        names=[stats("trio-echo", p95=20, p99=40), stats("jobs:sleep:thread", p95=700, p99=1500)]
    )
    problems = evaluate(run, Thresholds(max_p95_ms=Limit(500), max_p99_ms=Limit(1000)))
    assert problems == [
        "p95 response time of tcp jobs:sleep:thread is 700 ms > 500 ms (--gate-max-p95-ms)",
        "p99 response time of tcp jobs:sleep:thread is 1500 ms > 1000 ms (--gate-max-p99-ms)",
    ]
    lenient = Thresholds(max_p95_ms=parse_limit("500,jobs:*=800"), max_p99_ms=parse_limit("off"))
    assert evaluate(run, lenient) == []


def test_too_few_workers_fail() -> None:
    (problem,) = evaluate(HEALTHY, Thresholds(min_workers=3))
    assert problem == "2 Locust worker(s) took part, fewer than 3 (--gate-min-workers)"
    standalone = RunSummary(names=HEALTHY.names, workers=None)
    assert "0 Locust worker(s)" in evaluate(standalone, Thresholds(min_workers=2))[0]
    assert evaluate(standalone, Thresholds(min_workers=0)) == []


def test_cpu_warning_fails_unless_ignored() -> None:
    hot = RunSummary(names=HEALTHY.names, workers=2, cpu_warning="workers")
    (problem,) = evaluate(hot, Thresholds())
    assert "CPU warning level on the workers" in problem
    assert "--gate-cpu-warning" in problem
    assert evaluate(hot, Thresholds(fail_on_cpu_warning=False)) == []


def test_user_code_exceptions_fail() -> None:
    buggy = RunSummary(names=HEALTHY.names, user_exceptions=2)
    (problem,) = evaluate(buggy, Thresholds())
    assert "raised 2 distinct exception(s)" in problem


def test_every_broken_threshold_is_reported() -> None:
    run = RunSummary(names=[stats("x", 10, 10, p95=900, p99=2000)], workers=1, cpu_warning="master")
    problems = evaluate(run, Thresholds(min_workers=2))
    assert len(problems) == 6  # total ratio, name ratio, p95, p99, workers, cpu


# -- options -------------------------------------------------------------------


def parse(argv: list[str], env: dict[str, str] | None = None) -> options.LoadtestOptions:
    parser = configargparse.ArgumentParser()
    options.add_arguments(parser)
    return options.read(parser.parse_args(argv, env_vars=env or {}), expect_workers=4)


def test_defaults_aim_at_the_compose_services() -> None:
    opts = options.read(None)
    assert opts.trio_echo == ("trio-echo", 9001)
    assert opts.uvloop_echo == ("uvloop-echo", 9002)
    assert opts.worker_url == "http://unsync-worker:8080"
    assert opts.echo_payload_bytes == 1024
    assert opts.thresholds == Thresholds(min_workers=0)
    assert parse([]).thresholds.min_workers == 4  # -1: follow --expect-workers


def test_flags_win_over_environment() -> None:
    env = {"LOADTEST_TRIO_ECHO": "10.0.0.9:7", "LOADTEST_GATE_MAX_P95_MS": "250,jobs:*=900"}
    opts = parse(["--trio-echo", "127.0.0.1:19001", "--echo-payload-bytes", "4096"], env)
    assert opts.trio_echo == ("127.0.0.1", 19001)
    assert opts.echo_payload_bytes == 4096
    assert opts.thresholds.max_p95_ms == Limit(250.0, (("jobs:*", 900.0),))


@pytest.mark.parametrize(
    "argv",
    [
        ["--trio-echo", "no-port"],
        ["--worker-url", "unsync-worker:8080"],
        ["--echo-payload-bytes", "0"],
        ["--worker-modes", "auto,warp"],
        ["--gate-max-p99-ms", "soon"],
        ["--gate-cpu-warning", "maybe"],
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_values_from_the_web_ui_are_reparsed() -> None:
    class Parsed:  # the web UI stores what the user typed, as strings
        echo_payload_bytes = "2048"
        gate_max_fail_ratio = "0"
        worker_modes = "thread, process"

    opts = options.read(Parsed())
    assert opts.echo_payload_bytes == 2048
    assert opts.thresholds.max_fail_ratio == Limit(0.0)
    assert opts.worker_modes == ("thread", "process")
