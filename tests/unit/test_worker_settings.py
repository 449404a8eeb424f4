"""The worker's settings: CPU detection, echo addresses, flags/env and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import config
from services.unsync_worker.settings import (
    ENV_PREFIX,
    PROG,
    EchoAddress,
    WorkerSettings,
    available_cpus,
    cgroup_cpu_limit,
    default_threads,
    echo_address,
    flag,
)


def load(argv: list[str] | None = None, env: dict[str, str] | None = None) -> WorkerSettings:
    return config.load_settings(
        WorkerSettings, prog=PROG, env_prefix=ENV_PREFIX, argv=argv or [], environ=env or {}
    )


# ------------------------------------------------------------------ CPUs


@pytest.mark.parametrize(
    ("content", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("100000 100000", 1.0), ("junk", None)],
)
def test_cgroup_v2_quota(tmp_path: Path, content: str, expected: float | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cgroup_cpu_limit(cpu_max, ()) == expected


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "missing", (v1,)) == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "missing", (v1,)) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing", (tmp_path / "nope",)) is None


@pytest.mark.parametrize(
    ("limit", "affinity", "expected"),
    [(None, 8, 8), (2.0, 8, 2), (1.5, 8, 2), (0.2, 8, 1), (16.0, 4, 4)],
)
def test_available_cpus_caps_affinity_by_quota(
    limit: float | None, affinity: int, expected: int
) -> None:
    assert available_cpus(limit=limit, affinity=affinity) == expected


def test_thread_default_follows_threadpoolexecutor_rule() -> None:
    assert default_threads(1) == 5
    assert default_threads(2) == 6
    assert default_threads(64) == 32


def test_pool_defaults_come_from_usable_cpus_not_cpu_count() -> None:
    settings = load()
    assert settings.processes == available_cpus()
    assert settings.threads == default_threads(available_cpus())


# ------------------------------------------------------------------ parsers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("trio-echo:9001", EchoAddress("trio-echo", 9001)),
        (" 127.0.0.1:9 ", EchoAddress("127.0.0.1", 9)),
        ("[::1]:9002", EchoAddress("::1", 9002)),
    ],
)
def test_echo_address_parses(raw: str, expected: EchoAddress) -> None:
    assert echo_address(raw) == expected


@pytest.mark.parametrize("raw", ["trio-echo", ":9001", "host:0", "host:99999", "host:x", "::1:9"])
def test_echo_address_rejects(raw: str) -> None:
    with pytest.raises(config.SettingError, match="HOST:PORT"):
        echo_address(raw)


def test_echo_address_repr_is_its_flag_form() -> None:
    assert repr(EchoAddress("trio-echo", 9001)) == "trio-echo:9001"
    assert str(EchoAddress("::1", 9)) == "[::1]:9"


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("Yes", True), ("off", False)])
def test_flag(raw: str, expected: bool) -> None:
    assert flag(raw) is expected


def test_flag_rejects_other_words() -> None:
    with pytest.raises(config.SettingError):
        flag("maybe")


# ------------------------------------------------------------------ loading


def test_defaults_match_the_contract() -> None:
    settings = load()
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.trio_echo_addr == EchoAddress("trio-echo", 9001)
    assert settings.uvloop_echo_addr == EchoAddress("uvloop-echo", 9002)
    assert settings.enable_test_tasks is False
    assert settings.sync_max_jobs == 20  # on, bounded
    assert settings.problem() is None


def test_flags_win_over_env() -> None:
    settings = load(
        ["--threads", "3", "--trio-echo-addr", "127.0.0.1:7"],
        {"WORKER_THREADS": "9", "WORKER_PROCESSES": "1", "WORKER_ENABLE_TEST_TASKS": "1"},
    )
    assert settings.threads == 3
    assert settings.processes == 1
    assert settings.trio_echo_addr == EchoAddress("127.0.0.1", 7)
    assert settings.enable_test_tasks is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_PROCESSES": "0"}, "--processes / WORKER_PROCESSES: '0' must be >= 1"),
        ({"WORKER_UVLOOP_ECHO_ADDR": "nope"}, "--uvloop-echo-addr / WORKER_UVLOOP_ECHO_ADDR"),
        ({"WORKER_MAX_TIMEOUT_S": "-1"}, "--max-timeout-s / WORKER_MAX_TIMEOUT_S"),
        (
            {"WORKER_SYNC_MAX_JOBS": "-1"},
            "--sync-max-jobs / WORKER_SYNC_MAX_JOBS: '-1' must be >= 0",
        ),
    ],
)
def test_bad_values_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load(env=env)
    assert exit_info.value.code == config.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_default_timeout_above_max_is_a_problem() -> None:
    settings = load(env={"WORKER_DEFAULT_TIMEOUT_S": "40", "WORKER_MAX_TIMEOUT_S": "30"})
    problem = settings.problem()
    assert problem is not None
    assert "--default-timeout-s / WORKER_DEFAULT_TIMEOUT_S" in problem
