"""Settings: flags beat the environment, which beats defaults; bad values exit 2 with one line."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from services.common import config, probe
from services.common.echo import EchoSettings
from tests.helpers import REPO_ROOT


def load(argv=(), environ=None):
    return config.load_settings(
        EchoSettings, prog="test", env_prefix="T_", argv=list(argv), environ=environ or {}
    )


def test_defaults():
    s = load()
    assert (s.host, s.port, s.max_connections) == ("0.0.0.0", 9001, 1000)


def test_environment_fallback_and_flag_precedence():
    env = {"T_PORT": "7000", "T_IDLE_TIMEOUT_S": "2.5"}
    assert load(environ=env).port == 7000
    assert load(environ=env).idle_timeout_s == 2.5
    assert load(["--port", "7100"], env).port == 7100


@pytest.mark.parametrize(
    ("argv", "environ", "needle"),
    [
        (["--port", "abc"], {}, "--port / T_PORT: 'abc' is not an integer"),
        ([], {"T_PORT": "70000"}, "--port / T_PORT: '70000' must be <= 65535"),
        (["--max-connections", "0"], {}, "must be >= 1"),
        (["--idle-timeout-s", "nan"], {}, "must be a finite number"),
        (["--drain-s", "-1"], {}, "must be >= 0.0"),
        (["--host", "localhost:80"], {}, "give the port separately"),
        (["--log-level", "loud"], {}, "must be one of debug, info, warning, error"),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_values_exit_2_with_one_line(capsys, argv, environ, needle):
    with pytest.raises(SystemExit) as exc:
        load(argv, environ)
    assert exc.value.code == config.EXIT_USAGE
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1, err


def test_subclass_overrides_default_and_adds_fields():
    @dataclass(frozen=True)
    class Sub(EchoSettings):
        port: int = config.setting(9002, help="p", parse=config.port)
        loop: str = config.setting("uvloop", help="l", parse=config.choice("uvloop", "asyncio"))

    s = config.load_settings(Sub, prog="t", env_prefix="U_", argv=[], environ={"U_LOOP": "ASYNCIO"})
    assert (s.port, s.loop) == (9002, "asyncio")


def test_probe_cli_reports_unhealthy_without_traceback():
    # Nothing listens on port 1 of loopback: the probe must say so and exit 1.
    proc = subprocess.run(
        [sys.executable, "-m", "services.common.probe", "127.0.0.1", "1", "--timeout", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("probe: unhealthy: 127.0.0.1:1")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["127.0.0.1", "70000"], "argument port: '70000' must be <= 65535"),
        (["127.0.0.1", "0"], "argument port: '0' must be >= 1"),
        (["127.0.0.1", "http"], "argument port: 'http' is not an integer"),
        (["127.0.0.1", "9001", "--timeout", "-1"], "argument --timeout: '-1' must be >= 0.0"),
    ],
)
def test_probe_bad_usage_exits_2_with_one_line(capsys, argv, needle):
    # In-process: argparse's exit is a SystemExit here, a traceback would be any other error.
    with pytest.raises(SystemExit) as exc:
        probe.main(argv)
    assert exc.value.code == config.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("probe: error: ")
    assert needle in err
    assert err.count("\n") == 1, err
