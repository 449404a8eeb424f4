"""Experiments: the same jobs in each mode, timed end to end over HTTP.

``python -m services.unsync_worker.experiments`` starts a worker subprocess on
a free loopback port (default settings and pools, except the two that would
refuse a batch: see :func:`start_worker`), or uses ``--url``; then for each
scenario it sends N jobs at once and measures the wall time until the last answer:

* ``primes`` (pure Python, holds the GIL) in sync, thread and process modes:
  threads cannot beat one core, processes use every core;
* ``pbkdf2`` (hashlib's C code, releases the GIL) in the same modes: here
  threads scale as well as processes;
* ``sleep`` (an I/O stand-in) in sync, thread and async modes: threads are
  capped by the pool size, the event loop is not.

It prints a table, and writes ``results.json``, ``results.md`` and PNG plots
(matplotlib, Agg backend) under ``--out``. Speed is measured here, never in tests.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.common.ports import free_port
from services.common.probe import ProbeError, probe_http
from services.unsync_worker.settings import DEFAULT_SYNC_MAX_JOBS, available_cpus

# ~0.3 s per job on an idle core of the lab machine: long enough to dwarf HTTP and
# pool overheads, short enough that the whole run stays around a minute.
DEFAULT_PRIMES_N = 200_000
# ~0.25 s per job on one core, the same order as a primes job.
DEFAULT_PBKDF2_ITERATIONS = 1_000_000
# Jobs per CPU scenario: a few per core, so both cores are kept busy throughout.
DEFAULT_JOBS = 8
# I/O jobs: more than the default thread pool (usable CPUs + 4) so its cap shows.
DEFAULT_IO_JOBS = 20
# Long enough to dwarf per-request overhead, short enough for a 20-job sync batch (4 s).
DEFAULT_SLEEP_MS = 200
# Each scenario runs this often and keeps its best wall time (others share the machine).
DEFAULT_REPEAT = 2
# Generous per-job timeout: a sync scenario serialises all N jobs. A worker given
# by --url may allow less (the container's maximum is 30 s): then its maximum.
JOB_TIMEOUT_S = 60.0
# Starting the worker (imports, forkserver, pool warm-up) on a loaded machine.
START_TIMEOUT_S = 60.0
# SIGTERM drain plus pool shutdown, with room to spare.
STOP_TIMEOUT_S = 20.0
# Readiness poll interval: only bounds how late we notice the worker is up.
POLL_S = 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    task: str
    args: dict[str, Any]
    modes: tuple[str, ...]
    jobs: int
    baseline: str = "sync"


@dataclass
class Row:
    scenario: str
    task: str
    mode: str
    jobs: int
    wall_s: float
    speedup: float
    pids: int
    threads: int
    mean_run_ms: float


# ------------------------------------------------------------------ HTTP client


def post_job(host: str, port: int, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """POST one job and return the JSON answer; raises RuntimeError unless 200."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "POST", "/jobs", json.dumps(body), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        data: dict[str, Any] = json.loads(response.read())
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"{body['task']}/{body['mode']}: HTTP {response.status}: {data}")
    return data


def get_json(host: str, port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        data: dict[str, Any] = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return data


def max_timeout_s(host: str, port: int) -> float:
    """The largest ``timeout_s`` the worker accepts, capped at :data:`JOB_TIMEOUT_S`.

    Read from the worker's OpenAPI schema; :data:`JOB_TIMEOUT_S` if it does not say.
    """
    schema = get_json(host, port, "/openapi.json")
    try:
        body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
        timeout = body["schema"]["oneOf"][0]["properties"]["timeout_s"]["anyOf"][0]
        return min(JOB_TIMEOUT_S, float(timeout["maximum"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return JOB_TIMEOUT_S


def run_batch(
    host: str,
    port: int,
    *,
    task: str,
    args: dict[str, Any],
    mode: str,
    jobs: int,
    timeout_s: float,
) -> tuple[float, list[dict[str, Any]]]:
    """Send ``jobs`` identical jobs at once; return the wall time and the answers."""
    body = {"task": task, "args": args, "mode": mode, "timeout_s": timeout_s}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        start = time.perf_counter()
        futures = [pool.submit(post_job, host, port, body, JOB_TIMEOUT_S + 10) for _ in range(jobs)]
        answers = [f.result() for f in futures]
        wall = time.perf_counter() - start
    return wall, answers


# ------------------------------------------------------------------ worker process


def start_worker(log_path: Path, sync_jobs: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m services.unsync_worker`` on a free loopback port; wait for /healthz.

    Default settings (``WORKER_*`` variables in our environment still apply),
    except two that would refuse a batch: WORKER_MAX_TIMEOUT_S is raised to
    :data:`JOB_TIMEOUT_S`, and WORKER_SYNC_MAX_JOBS to ``sync_jobs`` (the
    largest sync batch) if the default is lower.
    """
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WORKER_MAX_TIMEOUT_S": str(JOB_TIMEOUT_S),
        "WORKER_SYNC_MAX_JOBS": str(max(sync_jobs, DEFAULT_SYNC_MAX_JOBS)),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.unsync_worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}; see {log_path}")
        try:
            probe_http("127.0.0.1", port, "/healthz", timeout=1.0)
            return proc, port
        except ProbeError:
            if time.monotonic() > deadline:
                stop_worker(proc)
                raise RuntimeError(f"worker not healthy after {START_TIMEOUT_S} s") from None
            time.sleep(POLL_S)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the worker drains and exits 0), SIGKILL if it overstays; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ experiments


def scenarios(opts: argparse.Namespace) -> list[Scenario]:
    return [
        Scenario(
            "primes", "primes", {"n": opts.primes_n}, ("sync", "thread", "process"), opts.jobs
        ),
        Scenario(
            "pbkdf2",
            "pbkdf2",
            {"iterations": opts.pbkdf2_iterations},
            ("sync", "thread", "process"),
            opts.jobs,
        ),
        Scenario(
            "sleep", "sleep", {"ms": opts.sleep_ms}, ("sync", "thread", "async"), opts.io_jobs
        ),
    ]


def measure(host: str, port: int, scenario: Scenario, repeat: int, timeout_s: float) -> list[Row]:
    """Run one scenario in each of its modes; the best of ``repeat`` wall times counts."""
    rows: list[Row] = []
    for mode in scenario.modes:
        # One small job first: pools, imports and connections are warm for the timing.
        post_job(
            host,
            port,
            {
                "task": scenario.task,
                "args": scenario.args,
                "mode": mode,
                "timeout_s": timeout_s,
            },
            JOB_TIMEOUT_S,
        )
        best: tuple[float, list[dict[str, Any]]] | None = None
        for _ in range(repeat):
            wall, answers = run_batch(
                host,
                port,
                task=scenario.task,
                args=scenario.args,
                mode=mode,
                jobs=scenario.jobs,
                timeout_s=timeout_s,
            )
            if best is None or wall < best[0]:
                best = (wall, answers)
        assert best is not None
        wall, answers = best
        rows.append(
            Row(
                scenario=scenario.name,
                task=scenario.task,
                mode=mode,
                jobs=scenario.jobs,
                wall_s=round(wall, 3),
                speedup=0.0,
                pids=len({a["pid"] for a in answers}),
                threads=len({(a["pid"], a["thread"]) for a in answers}),
                mean_run_ms=round(sum(a["run_ms"] for a in answers) / len(answers), 1),
            )
        )
        print(f"  {scenario.name:7} {mode:8} {wall:7.2f} s", flush=True)
    base = next((r.wall_s for r in rows if r.mode == scenario.baseline), rows[0].wall_s)
    for row in rows:
        row.speedup = round(base / row.wall_s, 2)
    return rows


def ratio(rows: Sequence[Row], scenario: str, faster: str, slower: str) -> float:
    wall = {r.mode: r.wall_s for r in rows if r.scenario == scenario}
    return round(wall[slower] / wall[faster], 2)


def table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows (also readable as plain text)."""
    lines = [
        "| scenario | mode | jobs | wall s | speed-up vs sync | pids | threads | mean run ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.scenario} | {r.mode} | {r.jobs} | {r.wall_s:.2f} | {r.speedup:.2f}x | "
        f"{r.pids} | {r.threads} | {r.mean_run_ms:.1f} |"
        for r in rows
    ]
    return "\n".join(lines)


def plot(rows: Sequence[Row], out: Path, subtitle: str) -> list[Path]:
    """One bar chart of wall times per scenario, plus all three side by side."""
    import matplotlib  # noqa: PLC0415 - only the experiments need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colours = {"sync": "#999999", "thread": "#1f77b4", "process": "#d62728", "async": "#2ca02c"}
    names = list(dict.fromkeys(r.scenario for r in rows))
    written: list[Path] = []

    def draw(ax: Any, name: str) -> None:
        picked = [r for r in rows if r.scenario == name]
        bars = ax.bar(
            [r.mode for r in picked],
            [r.wall_s for r in picked],
            color=[colours.get(r.mode, "#444444") for r in picked],
        )
        for bar, r in zip(bars, picked, strict=True):
            ax.annotate(
                f"{r.wall_s:.2f} s\n{r.speedup:.2f}x",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(f"{name}: {picked[0].jobs} jobs at once")
        ax.set_ylabel("wall time, s (lower is better)")
        ax.set_ylim(0, max(r.wall_s for r in picked) * 1.25)

    for name in names:
        fig, ax = plt.subplots(figsize=(5, 4))
        draw(ax, name)
        fig.suptitle(subtitle, fontsize=8)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4))
    for ax, name in zip(axes, names, strict=True):
        draw(ax, name)
    fig.suptitle(f"unsync worker modes: {subtitle}", fontsize=9)
    fig.tight_layout()
    path = out / "summary.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.unsync_worker.experiments",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--url", help="use a running worker (http://host:port) instead of starting one"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/experiments"))
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="jobs per CPU batch")
    parser.add_argument("--io-jobs", type=int, default=DEFAULT_IO_JOBS, help="jobs per I/O batch")
    parser.add_argument("--primes-n", type=int, default=DEFAULT_PRIMES_N)
    parser.add_argument("--pbkdf2-iterations", type=int, default=DEFAULT_PBKDF2_ITERATIONS)
    parser.add_argument("--sleep-ms", type=int, default=DEFAULT_SLEEP_MS)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    opts = parser.parse_args(argv)
    for name in ("jobs", "io_jobs", "repeat"):
        if getattr(opts, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    proc = None
    if opts.url:
        parts = urlsplit(opts.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
    else:
        proc, port = start_worker(out / "worker.log", max(opts.jobs, opts.io_jobs))
        host = "127.0.0.1"
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        health = get_json(host, port, "/healthz")
        print(
            f"worker {host}:{port}: threads={health['threads']} processes={health['processes']}",
            flush=True,
        )
        timeout_s = max_timeout_s(host, port) if opts.url else JOB_TIMEOUT_S
        rows: list[Row] = []
        for scenario in scenarios(opts):
            rows += measure(host, port, scenario, opts.repeat, timeout_s)
    finally:
        if proc is not None:
            stop_worker(proc)
    ratios = {
        "primes_process_vs_thread": ratio(rows, "primes", "process", "thread"),
        "pbkdf2_process_vs_thread": ratio(rows, "pbkdf2", "process", "thread"),
        "sleep_async_vs_thread": ratio(rows, "sleep", "async", "thread"),
    }
    now = datetime.datetime.now(datetime.UTC)
    machine = {
        "usable_cpus": available_cpus(),
        "os_cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # Others' work on the machine skews the timings; recorded, not corrected for.
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    subtitle = (
        f"{machine['usable_cpus']} CPUs, {now:%Y-%m-%d}, best of {opts.repeat}, "
        f"load avg {machine['loadavg_1min_before']}"
    )
    text = table(rows)
    print()
    print(text)
    print()
    print(
        "process / thread speed-up: primes {primes_process_vs_thread}x, "
        "pbkdf2 {pbkdf2_process_vs_thread}x; async / thread for sleep: "
        "{sleep_async_vs_thread}x".format(**ratios)
    )
    plots = [] if opts.no_plots else plot(rows, out, subtitle)
    results = {
        "date": now.isoformat(timespec="seconds"),
        "machine": machine,
        "worker": {k: health[k] for k in ("threads", "processes", "concurrency")},
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
        "plots": [str(p) for p in plots],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(
        f"Measured {now:%Y-%m-%d} on {machine['usable_cpus']} usable CPUs "
        f"({machine['platform']}, Python {machine['python']}); worker threads="
        f"{health['threads']}, processes={health['processes']}; best of {opts.repeat}; "
        f"1-min load average {machine['loadavg_1min_before']} before, "
        f"{machine['loadavg_1min_after']} after.\n\n" + text + "\n"
    )
    for path in [out / "results.json", out / "results.md", *plots]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
