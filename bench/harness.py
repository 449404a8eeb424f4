"""Runs the grid: every contestant at every (message size, connections) point, ABBA-ordered.

The harness starts all contestants up front (idle servers cost nothing), pins
them to the server CPU and this process and its clients to the client CPU,
then for each grid point runs ``repeats`` rounds over the contestants, forward
then backward (A B | B A), so drift of a shared machine cancels. Each run is one
:func:`bench.loadgen.run_load`; failures are recorded, never raised, and a
contestant whose server died is dropped for the rest of the run. Every server
is stopped before :func:`run_bench` returns, whatever happened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import compose
from bench.loadgen import MAX_PROCESSES, SOCKET_BUFFER, CpuSampler, LoadResult, LoadSpec, run_load
from bench.procstat import CLK_TCK, machine_ticks, proc_available
from bench.servers import (
    CEILING,
    CONTESTANTS,
    PROJECT,
    Contestant,
    Placement,
    ServerProcess,
    build_c_server,
    choose_placement,
    module_present,
)
from bench.stats import LogHistogram, abba_order, spread
from services.common.logs import log_event

logger = logging.getLogger("bench.harness")

# Format version of results.json; the report refuses files it does not understand.
SCHEMA = 1

# Where the worker's experiments module writes its results (only read here).
EXPERIMENTS_DIR = Path("reports/experiments")

# The worker's experiments (threads vs processes vs async), run by --experiments run|auto.
EXPERIMENTS_MODULE = "services.unsync_worker.experiments"

# Bound on the experiments' run: they time pools on CPU and I/O work for a few minutes
# at most; a hung one must not stall the benchmark forever.
EXPERIMENTS_TIMEOUT_S = 900.0

# Runs in a row that may fail before a contestant is dropped: one failure can be a
# hiccup, three mean the server is broken under this load.
MAX_CONSECUTIVE_FAILURES = 3

# Per-run overhead beyond warm-up + duration (forking clients, connecting, joining);
# measured at about 0.1 s on the 2-core box; used only for the time estimate.
RUN_OVERHEAD_S = 0.1


@dataclass(frozen=True)
class Mode:
    """A grid and its timing. Full mode's numbers keep ``make bench`` near 11 minutes on
    2 cores: 9 contestants x 9 points x 4 repeats x (0.3 + 1.5 + 0.1) s."""

    name: str
    sizes: tuple[int, ...]
    connections: tuple[int, ...]
    warmup_s: float
    duration_s: float
    repeats: int

    def estimate_s(self, contestants: int) -> float:
        points = len(self.sizes) * len(self.connections)
        per_run = self.warmup_s + self.duration_s + RUN_OVERHEAD_S
        return points * contestants * self.repeats * per_run


MODES = {
    # CI: the two extremes of message size at a middle concurrency, AB BA: ~1 minute.
    "quick": Mode("quick", (1024, 102400), (4,), warmup_s=0.2, duration_s=1.0, repeats=2),
    # 1.5 s windows give >= ~100 clock ticks of server CPU at moderate load (1% resolution);
    # 4 repeats (ABBA twice) give a median and a spread.
    "full": Mode(
        "full", (1024, 10240, 102400), (1, 4, 16), warmup_s=0.3, duration_s=1.5, repeats=4
    ),
}


@dataclass
class Endpoint:
    """Something to benchmark: a contestant, its address and how to read its CPU time."""

    contestant: Contestant
    host: str
    port: int
    samplers: dict[str, CpuSampler]
    alive: Callable[[], bool]
    status: str = "ok"
    note: str = ""
    failures_in_row: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, kernel, memory and load average, as far as this OS tells."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = math.nan
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_gib": round(mem_gib, 1),
        "loadavg_start": os.getloadavg(),
        "hostname": platform.node(),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("trio", "uvloop", "matplotlib"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@contextlib.contextmanager
def local_endpoints(
    contestants: Sequence[Contestant], placement: Placement, log_dir: Path, notes: list[str]
) -> Iterator[list[Endpoint]]:
    """Start every available contestant, yield those that echo; stop them all on exit.

    Missing project modules and a missing C compiler become notes and skipped
    endpoints, never errors.
    """
    servers: list[ServerProcess] = []
    endpoints: list[Endpoint] = []
    try:
        for c in contestants:
            skip = ""
            if c.kind == CEILING:
                binary, why = build_c_server()
                skip = f"{why}: C ceiling skipped" if binary is None else ""
            elif c.module and not module_present(c.module):
                skip = f"{c.module} not present in this checkout: skipped"
            if skip:
                notes.append(f"{c.label}: {skip}")
                endpoints.append(Endpoint(c, "", 0, {}, lambda: False, "skipped", skip))
                continue
            server = ServerProcess(c, log_dir / f"{c.key}.log", placement.server)
            server.launch()
            servers.append(server)
            endpoints.append(
                Endpoint(
                    c,
                    server.host,
                    server.port,
                    {"server": server.cpu_ticks},
                    server.alive,
                    extra={"server": server},
                )
            )
        for ep in endpoints:
            proc = ep.extra.get("server")
            if not isinstance(proc, ServerProcess):
                continue
            try:
                proc.wait_ready()
            except RuntimeError as exc:
                ep.status, ep.note = "failed", f"did not start: {exc}"
                notes.append(f"{ep.contestant.label}: {ep.note}")
                proc.stop()
        yield endpoints
    finally:
        for server in servers:
            status = server.stop()
            log_event(logger, "server_stopped", key=server.contestant.key, status=status)


def compose_endpoints(
    contestants: Sequence[Contestant], ports: dict[str, int], notes: list[str]
) -> list[Endpoint]:
    """Endpoints for the compose stack: each published port via docker-proxy and direct.

    A port no container publishes becomes a skipped endpoint with a note.
    """
    by_key = {c.key: c for c in contestants}
    out: list[Endpoint] = []
    for runtime, port in ports.items():
        base = by_key["trio_service" if runtime == "trio" else "uvloop_service"]
        try:
            ep = compose.discover(port)
        except compose.ComposeError as exc:
            skip = Contestant(
                f"compose_{runtime}_proxy",
                f"{base.label} in compose",
                base.runtime,
                PROJECT,
                (),
                None,
                base.reference,
            )
            notes.append(f"{skip.label}: {exc}")
            out.append(Endpoint(skip, "", 0, {}, lambda: False, "skipped", str(exc)))
            continue
        alive = _pid_alive(ep.main_pid)
        proxied = Contestant(
            f"compose_{runtime}_proxy",
            f"{base.label.split(' (')[0]} (compose, docker-proxy)",
            base.runtime,
            PROJECT,
            (),
            None,
            base.reference,
        )
        samplers: dict[str, CpuSampler] = {"server": ep.server_ticks}
        if ep.proxy_pids:
            samplers["proxy"] = ep.proxy_ticks
        else:
            notes.append(f"port {port}: no docker-proxy process found (userland proxy off?)")
        info = {"container": ep.name, "main_pid": ep.main_pid, "proxy_pids": ep.proxy_pids}
        out.append(Endpoint(proxied, "127.0.0.1", port, samplers, alive, extra=info))
        if ep.container_ip:
            direct = Contestant(
                f"compose_{runtime}_direct",
                f"{base.label.split(' (')[0]} (compose, bridge IP)",
                base.runtime,
                PROJECT,
                (),
                None,
                base.reference,
            )
            out.append(
                Endpoint(
                    direct,
                    ep.container_ip,
                    ep.container_port,
                    {"server": ep.server_ticks},
                    alive,
                    extra=info,
                )
            )
        else:
            notes.append(f"{ep.name}: no bridge IP, direct path not measured")
    return out


def _pid_alive(pid: int) -> Callable[[], bool]:
    return lambda: Path(f"/proc/{pid}").exists()


# Sampler names for the whole machine's CPU time (see bench.procstat.machine_ticks).
SYS_BUSY, SYS_STEAL = "sys_busy", "sys_steal"


def machine_samplers() -> dict[str, CpuSampler]:
    """Samplers of the machine's busy and stolen CPU ticks: was the run alone on the box?"""
    return {
        SYS_BUSY: lambda: machine_ticks()[0],
        SYS_STEAL: lambda: machine_ticks()[1],
    }


def run_record(
    result: LoadResult, repeat: int, position: int, samplers: Iterable[str] = ("server",)
) -> dict[str, Any]:
    """One run as plain JSON-able figures, with the same keys whether it worked or not.

    ``samplers`` names the CPU samplers the run was given (besides the machine's):
    each gets ``<name>_cpu_s``, ``<name>_busy`` and a CPU-per-request figure
    (``cpu_us_per_req`` for the server, ``<name>_cpu_us_per_req`` otherwise).
    ``other_load`` and ``steal`` are always present too. A figure that is not
    known (the run failed, before or inside its window, or /proc gave nothing)
    is NaN, so summaries over runs never miss a key.

    ``other_load`` is the CPU time (in CPUs) the machine spent on anything but the
    server, the proxy and the clients during the window: other processes, and kernel
    softirq work not charged to a process. Near 0 means the run had the machine to itself.
    """
    nan = math.nan
    ok = result.ok
    window = result.window_s
    rec: dict[str, Any] = {
        "repeat": repeat,
        "position": position,
        "requests": result.requests,
        "window_s": window,
        "req_per_s": result.req_per_s if ok else nan,
        "mib_per_s": result.mib_per_s if ok else nan,
        "client_busy": result.client_cpu_s / window if ok and window else nan,
        "p50_us": result.histogram.percentile(50) / 1e3 if ok else nan,
        "p99_us": result.histogram.percentile(99) / 1e3 if ok else nan,
        "p999_us": result.histogram.percentile(99.9) / 1e3 if ok else nan,
        "other_load": nan,
        "steal": nan,
        "errors": result.errors,
    }
    ticks_by_name = dict(result.cpu_ticks)
    sys_busy = ticks_by_name.pop(SYS_BUSY, None)
    sys_steal = ticks_by_name.pop(SYS_STEAL, None)
    if sys_busy is not None and window:
        ours = sum(ticks_by_name.values()) / CLK_TCK + result.client_cpu_s
        rec["other_load"] = (sys_busy / CLK_TCK - ours) / window
    if sys_steal is not None and window:
        rec["steal"] = sys_steal / CLK_TCK / window
    names = dict.fromkeys([*samplers, *ticks_by_name])
    for name in names:
        if name in (SYS_BUSY, SYS_STEAL):
            continue
        ticks = ticks_by_name.get(name)
        cpu_s = ticks / CLK_TCK if ticks is not None and window else nan
        rec[f"{name}_cpu_s"] = cpu_s
        rec[f"{name}_busy"] = cpu_s / window if window else nan
        prefix = "" if name == "server" else f"{name}_"
        rec[f"{prefix}cpu_us_per_req"] = cpu_s / result.requests * 1e6 if ok else nan
    rec.setdefault("cpu_us_per_req", nan)
    return rec


# Figures summarised over repeats (median, range, CV) for every cell.
SUMMARY_FIGURES = (
    "req_per_s",
    "mib_per_s",
    "cpu_us_per_req",
    "proxy_cpu_us_per_req",
    "server_busy",
    "client_busy",
    "other_load",
    "steal",
    "p50_us",
    "p99_us",
    "p999_us",
)


def _figure(run: dict[str, Any], fig: str) -> float:
    """``run[fig]`` as a float; NaN when the run lacks it or it is null (NaN read back)."""
    value = run.get(fig)
    return float(value) if isinstance(value, int | float) else math.nan


def summarize_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, range and CV over ``runs`` of every summary figure any run has.

    NaN-aware: a run without a figure, or with NaN/null for it (a failed run),
    is left out of that figure's spread; all runs failing gives ``n == 0``.
    """
    return {
        fig: spread([_figure(r, fig) for r in runs]).to_json()
        for fig in SUMMARY_FIGURES
        if any(fig in r for r in runs)
    }


def run_experiments(policy: str, root: Path = Path(".")) -> str:
    """Run the worker's experiments module first, per ``policy``; returns a note or "".

    ``run``: always; ``auto``: only when its results.json is missing; ``include``
    and ``skip``: never. A missing module, a failure or a timeout becomes the
    note (the benchmark goes on); the subprocess is always reaped.
    """
    results = root / EXPERIMENTS_DIR / "results.json"
    if policy not in ("run", "auto") or (policy == "auto" and results.exists()):
        return ""
    if not module_present(EXPERIMENTS_MODULE):
        return f"{EXPERIMENTS_MODULE} not present in this checkout: experiments not run"
    log_event(logger, "experiments_start", module=EXPERIMENTS_MODULE)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", EXPERIMENTS_MODULE],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=EXPERIMENTS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"{EXPERIMENTS_MODULE} timed out after {EXPERIMENTS_TIMEOUT_S:.0f}s"
    elapsed = time.monotonic() - started
    log_event(logger, "experiments_done", status=proc.returncode, elapsed_s=elapsed)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"{EXPERIMENTS_MODULE} exited {proc.returncode}: {last}"
    return f"worker experiments run before the benchmark ({elapsed:.0f} s)"


def load_experiments(root: Path) -> dict[str, Any]:
    """The worker experiments' results.json and PNG names, or why they are missing."""
    path = root / EXPERIMENTS_DIR / "results.json"
    if not path.exists():
        return {
            "present": False,
            "note": f"{EXPERIMENTS_DIR}/results.json not found: run "
            "`python -m services.unsync_worker.experiments` (make experiments) first",
        }
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"present": False, "note": f"{path}: unreadable ({exc})"}
    pngs = sorted(p.name for p in (root / EXPERIMENTS_DIR).glob("*.png"))
    return {
        "present": True,
        "path": str(path),
        "data": data,
        "pngs": pngs,
    }


def run_bench(
    mode: Mode,
    *,
    target: str = "local",
    out_dir: Path = Path("reports/bench"),
    only: Sequence[str] | None = None,
    placement: Placement | None = None,
    compose_ports: dict[str, int] | None = None,
    root: Path = Path("."),
    experiments: bool = True,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the whole grid and return the results document (see :func:`write_json`).

    ``only`` restricts the contestants to these keys; ``notes`` are carried into
    the report; ``experiments`` includes the worker experiments' results. ``target="compose"``
    benchmarks the stack's published ports (plus the local C ceiling and minimal
    references for the ratios). Every started process is stopped on return.
    """
    started = time.monotonic()
    machine = machine_info()  # now, so the load average describes the machine before the run
    placement = placement or choose_placement()
    notes = [placement.note, *notes]
    if not proc_available():
        notes.append("/proc not readable: no CPU figures")
    contestants = [c for c in CONTESTANTS if not only or c.key in only]
    if target == "compose":
        keep = {"c_epoll", "trio_tutorial", "protocol_uvloop"}
        local = [c for c in contestants if c.key in keep]
        notes.append(
            "compose target: containers are not pinned (their CPU placement is Docker's); "
            "the local C ceiling and minimal references run pinned as usual"
        )
    else:
        local = contestants
    own_affinity = os.sched_getaffinity(0)
    if placement.client:
        os.sched_setaffinity(0, placement.client)
    grid_points = [(s, n) for s in mode.sizes for n in mode.connections]
    cells: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    hists: dict[tuple[str, int, int], LogHistogram] = {}
    log_dir = out_dir / "logs"
    all_endpoints: list[Endpoint] = []
    try:
        with local_endpoints(local, placement, log_dir, notes) as launched:
            endpoints = launched
            if target == "compose":
                ports = compose_ports or {"trio": 9001, "uvloop": 9002}
                endpoints = compose_endpoints(CONTESTANTS, ports, notes) + launched
            runnable = [ep for ep in endpoints if ep.status == "ok"]
            log_event(
                logger,
                "bench_start",
                mode=mode.name,
                target=target,
                contestants=len(runnable),
                points=len(grid_points),
                estimate_s=round(mode.estimate_s(len(runnable))),
            )
            for size, conns in grid_points:
                _run_point(
                    mode=mode,
                    placement=placement,
                    endpoints=runnable,
                    size=size,
                    conns=conns,
                    cells=cells,
                    hists=hists,
                )
            all_endpoints = endpoints
    finally:
        os.sched_setaffinity(0, own_affinity)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": mode.name,
            "target": target,
            "machine": {**machine, "loadavg_end": os.getloadavg()},
            "versions": versions(),
            "placement": {
                "server_cpus": sorted(placement.server or []),
                "client_cpus": sorted(placement.client or []),
                "note": placement.note,
            },
            "settings": {
                "sizes": list(mode.sizes),
                "connections": list(mode.connections),
                "warmup_s": mode.warmup_s,
                "duration_s": mode.duration_s,
                "repeats": mode.repeats,
                "order": "ABBA: rounds alternate forward and backward over the contestants",
                "max_client_processes": MAX_PROCESSES,
                "client_socket_buffer": SOCKET_BUFFER,
                "clk_tck": CLK_TCK,
            },
            "notes": notes,
            "elapsed_s": round(time.monotonic() - started, 1),
        },
        "contestants": [
            {
                "key": ep.contestant.key,
                "label": ep.contestant.label,
                "runtime": ep.contestant.runtime,
                "kind": ep.contestant.kind,
                "reference": ep.contestant.reference,
                "status": ep.status,
                "note": ep.note,
                "address": f"{ep.host}:{ep.port}" if ep.port else "",
                **{k: v for k, v in ep.extra.items() if k != "server"},
            }
            for ep in all_endpoints
        ],
        "cells": [
            {
                "contestant": key,
                "size": size,
                "connections": conns,
                "runs": runs,
                "summary": summarize_cell(runs),
                "latency_all_runs": {
                    "p50_us": hists[(key, size, conns)].percentile(50) / 1e3,
                    "p99_us": hists[(key, size, conns)].percentile(99) / 1e3,
                    "p999_us": hists[(key, size, conns)].percentile(99.9) / 1e3,
                    "max_us": hists[(key, size, conns)].max_ns / 1e3,
                },
            }
            for (key, size, conns), runs in cells.items()
        ],
        "experiments": load_experiments(root)
        if experiments
        else {"present": False, "note": "skipped (--experiments skip)"},
    }
    return results


def _run_point(
    *,
    mode: Mode,
    placement: Placement,
    endpoints: list[Endpoint],
    size: int,
    conns: int,
    cells: dict[tuple[str, int, int], list[dict[str, Any]]],
    hists: dict[tuple[str, int, int], LogHistogram],
) -> None:
    """All repeats of all endpoints at one grid point, in ABBA order."""
    for repeat, order in enumerate(abba_order(endpoints, mode.repeats)):
        for position, ep in enumerate(order):
            if ep.status != "ok":
                continue
            spec = LoadSpec(
                ep.host, ep.port, size, conns, mode.warmup_s, mode.duration_s, placement.client
            )
            result = run_load(spec, {**ep.samplers, **machine_samplers()})
            key = (ep.contestant.key, size, conns)
            rec = run_record(result, repeat, position, ep.samplers)
            cells.setdefault(key, []).append(rec)
            hist = hists.setdefault(key, LogHistogram())
            if result.ok:
                hist.merge(result.histogram)
                ep.failures_in_row = 0
            else:
                ep.failures_in_row += 1
                log_event(
                    logger,
                    "run_failed",
                    logging.WARNING,
                    key=ep.contestant.key,
                    size=size,
                    connections=conns,
                    errors="; ".join(result.errors)[:300],
                )
                if not ep.alive() or ep.failures_in_row >= MAX_CONSECUTIVE_FAILURES:
                    ep.status = "failed"
                    ep.note = (
                        f"dropped at {size} B x {conns} conns: "
                        f"{'server exited' if not ep.alive() else 'repeated failures'}: "
                        + "; ".join(result.errors)[:200]
                    )
            log_event(
                logger,
                "run",
                key=ep.contestant.key,
                size=size,
                connections=conns,
                repeat=repeat,
                req_s=round(rec["req_per_s"]) if result.ok else "nan",
                cpu_us=round(rec["cpu_us_per_req"], 2) if result.ok else "nan",
            )


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None so results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` as strict JSON (NaN -> null), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=1, sort_keys=False) + "\n")
