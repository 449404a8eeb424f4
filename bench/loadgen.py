"""The load generator: blocking sockets, strict ping-pong, one process per connection group.

A measurement forks ``processes`` client processes (pinned to the client CPUs
when given). Each opens its group of connections (TCP_NODELAY), then loops:
send one message on every connection of its group, then read each echo back in
full and check it byte for byte. So every connection has exactly one request in
flight (strict ping-pong) and one process drives several connections without
threads or an event loop in the client's hot path.

Clients start together, warm up, and count only the requests completed inside
the measured window ``[t_start, t_end)`` (CLOCK_MONOTONIC, shared by all
processes). The parent samples the server's CPU time at ``t_start`` and
``t_end``, so CPU per request covers exactly the requests counted. Latencies
are recorded raw in an ``array`` during the run (a single append per request)
and turned into a :class:`~bench.stats.LogHistogram` afterwards.

Every socket wait is bounded by kernel send/receive timeouts, every phase by a
deadline, and the parent kills client processes that outlive them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import socket
import struct
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.stats import LogHistogram

logger = logging.getLogger("bench.loadgen")

# A blocked send or receive longer than this means the server stalled: the run fails
# instead of hanging. Far above any echo round trip, even for 100 KiB on a busy box.
IO_TIMEOUT_S = 10.0

# Time allowed for every client to connect and report ready, and, after t_end, to
# finish its last round trip and send its histogram back.
PHASE_TIMEOUT_S = 20.0

# Most client processes per measurement: one per connection up to this many, then
# connections are grouped. On a 2-core box with the clients on one CPU, more
# processes only add context switches (measured: 4 x 4 beats 16 x 1 at 16 connections).
MAX_PROCESSES = 4

# Client socket buffers: large enough that a whole 100 KiB request fits in the send
# buffer and its whole echo in the receive window, so a blocking sendall() never waits
# for the server to drain and the server never stalls on a full client window.
SOCKET_BUFFER = 1024 * 1024

# fork: the parent has no threads, and forking is much cheaper than spawning a fresh
# interpreter per measurement.
_MP = multiprocessing.get_context("fork")

CpuSampler = Callable[[], int]


@dataclass(frozen=True)
class LoadSpec:
    """One measurement: where, what size, how many connections, for how long."""

    host: str
    port: int
    size: int
    connections: int
    warmup_s: float
    duration_s: float
    client_cpus: frozenset[int] | None = None  # pin client processes here; None: don't pin
    max_processes: int = MAX_PROCESSES

    def groups(self) -> list[int]:
        """Connections per client process: as even as possible, at most ``max_processes``."""
        procs = max(1, min(self.connections, self.max_processes))
        base, extra = divmod(self.connections, procs)
        return [base + (1 if i < extra else 0) for i in range(procs)]


@dataclass
class LoadResult:
    """What one measurement observed; ``errors`` non-empty means it must not be used."""

    spec: LoadSpec
    requests: int = 0
    window_s: float = 0.0
    histogram: LogHistogram = field(default_factory=LogHistogram)
    cpu_ticks: dict[str, int] = field(default_factory=dict)  # per sampler: delta in window
    client_cpu_s: float = 0.0  # user+sys of all client processes inside the window
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.requests > 0

    @property
    def req_per_s(self) -> float:
        return self.requests / self.window_s if self.window_s else 0.0

    @property
    def mib_per_s(self) -> float:
        """Echoed payload per second, one direction (each request moves ``size`` each way)."""
        return self.req_per_s * self.spec.size / (1024 * 1024)


def _set_io_timeouts(sock: socket.socket, seconds: float) -> None:
    # Kernel-side timeouts keep the socket in plain blocking mode: Python's own
    # settimeout() would add a poll() call before every send and receive.
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _client(
    pipe: Connection,
    *,
    host: str,
    port: int,
    size: int,
    nconn: int,
    seed: int,
    cpus: frozenset[int] | None,
) -> None:
    """Client process body: connect, report ready, run until t_end, send results back.

    Always answers on ``pipe`` with ("done", requests, histogram, cpu_s) or
    ("error", text) and closes its sockets.
    """
    socks: list[socket.socket] = []
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        message = random.Random(seed).randbytes(size)
        for _ in range(nconn):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            _set_io_timeouts(sock, IO_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Before connect(), so the window scale offered covers the buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sock.connect((host, port))
        pipe.send(("ready",))
        if not pipe.poll(PHASE_TIMEOUT_S):
            raise TimeoutError("no start signal from the harness")
        t_start, t_end = pipe.recv()
        requests, latencies, cpu_s = _run(socks, message, t_start, t_end)
        hist = LogHistogram()
        hist.add_many(latencies)
        pipe.send(("done", requests, hist, cpu_s))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        for sock in socks:
            sock.close()
        pipe.close()


def _run(
    socks: list[socket.socket], message: bytes, t_start: int, t_end: int
) -> tuple[int, array[int], float]:
    """The hot loop: ping-pong on every socket until t_end; returns (count, latencies, cpu_s).

    Only requests completed in [t_start, t_end) are counted and their latencies
    (send of the round to this echo's last byte, ns) recorded. Raises
    ConnectionError on an early close or a wrong byte, OSError on socket errors.
    """
    now = time.monotonic_ns
    size = len(message)
    buf = bytearray(size)
    view = memoryview(buf)
    latencies: array[int] = array("q")
    record = latencies.append
    cpu_at_start: float | None = None
    while True:
        t0 = now()
        if t0 >= t_end:
            break
        if cpu_at_start is None and t0 >= t_start:
            times = os.times()
            cpu_at_start = times.user + times.system
        for sock in socks:
            sock.sendall(message)
        for sock in socks:
            got = sock.recv_into(buf, size)
            while got < size:
                n = sock.recv_into(view[got:], size - got)
                if n == 0:
                    raise ConnectionError(f"server closed after {got} of {size} bytes")
                got += n
            if buf != message:
                raise ConnectionError("echoed bytes differ from those sent")
            t1 = now()
            if t_start <= t1 < t_end:
                record(t1 - t0)
    times = os.times()
    cpu_s = times.user + times.system - (cpu_at_start if cpu_at_start is not None else 0.0)
    return len(latencies), latencies, cpu_s


def run_load(spec: LoadSpec, samplers: Mapping[str, CpuSampler] | None = None) -> LoadResult:
    """Run one measurement against ``spec.host:spec.port`` and return what it saw.

    ``samplers`` return cumulative CPU clock ticks (e.g. of the server process);
    each is called at t_start and t_end and the difference is stored in
    ``cpu_ticks``. Never raises for a failing server: problems land in
    ``errors``. All client processes are reaped (killed if they overstay).
    """
    samplers = samplers or {}
    result = LoadResult(spec)
    procs: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        for i, nconn in enumerate(spec.groups()):
            parent_end, child_end = _MP.Pipe()
            seed = spec.port * 1000 + i
            proc = _MP.Process(
                target=_client,
                args=(child_end,),
                kwargs={
                    "host": spec.host,
                    "port": spec.port,
                    "size": spec.size,
                    "nconn": nconn,
                    "seed": seed,
                    "cpus": spec.client_cpus,
                },
                daemon=True,
            )
            proc.start()
            child_end.close()
            procs.append((proc, parent_end))
        for _, pipe in procs:
            msg = _receive(pipe, PHASE_TIMEOUT_S)
            if msg[0] != "ready":
                result.errors.append(str(msg[1]))
        if result.errors:
            return result
        t_start = time.monotonic_ns() + int(spec.warmup_s * 1e9)
        t_end = t_start + int(spec.duration_s * 1e9)
        for _, pipe in procs:
            pipe.send((t_start, t_end))
        _sleep_until(t_start)
        before = {name: sample() for name, sample in samplers.items()}
        _sleep_until(t_end)
        after = {name: sample() for name, sample in samplers.items()}
        result.cpu_ticks = {name: after[name] - before[name] for name in samplers}
        result.window_s = (t_end - t_start) / 1e9
        for _, pipe in procs:
            msg = _receive(pipe, PHASE_TIMEOUT_S + IO_TIMEOUT_S)
            if msg[0] == "done":
                _, requests, hist, cpu_s = msg
                result.requests += int(requests)
                result.histogram.merge(hist)
                result.client_cpu_s += float(cpu_s)
            else:
                result.errors.append(str(msg[1]))
    except OSError as exc:
        result.errors.append(f"harness: {type(exc).__name__}: {exc}")
    finally:
        for p, pipe in procs:
            p.join(timeout=PHASE_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join()
            pipe.close()
    return result


def _receive(pipe: Connection, timeout: float) -> tuple[Any, ...]:
    if not pipe.poll(timeout):
        return ("error", f"client process silent for {timeout:.0f}s")
    try:
        msg = pipe.recv()
    except EOFError:
        return ("error", "client process died")
    assert isinstance(msg, tuple)
    return msg


def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)
