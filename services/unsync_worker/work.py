"""The work itself, free of unsync, HTTP and pydantic: plain functions a job calls.

Each function is bounded by its arguments (the catalogue enforces the limits),
so a job that nobody waits for any more still ends on its own within seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# pbkdf2's password and salt: fixed, because the digest is not the point, the CPU time is.
PBKDF2_PASSWORD = b"unsync-worker"
PBKDF2_SALT = b"concurrency-lab"


@dataclass(frozen=True)
class Ran:
    """What a job returns from wherever it ran: its result plus where and when it ran.

    ``started``/``finished`` are ``time.monotonic()`` readings; on Linux that clock
    is system-wide, so readings from a pool process compare with the server's.
    Module-level and frozen so it pickles back from a process pool.
    """

    result: Any
    pid: int
    thread: str
    started: float
    finished: float


def ran(started: float, result: Any) -> Ran:
    """Wrap ``result`` with this process's pid, this thread's name and the timings."""
    return Ran(result, os.getpid(), threading.current_thread().name, started, time.monotonic())


def count_primes_below(n: int) -> int:
    """Count primes below ``n`` by trial division in pure Python.

    Deliberately slow and GIL-holding (a sieve would finish too fast to show
    anything): about 0.2 s for n=100000 on one core of the lab machine.
    """
    count = 0
    for k in range(2, n):
        d = 2
        while d * d <= k:
            if k % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


def pbkdf2_digest(iterations: int) -> str:
    """PBKDF2-HMAC-SHA256 of a fixed password; hashlib runs it in C without the GIL."""
    return hashlib.pbkdf2_hmac("sha256", PBKDF2_PASSWORD, PBKDF2_SALT, iterations).hex()


def sleep_blocking(ms: int) -> int:
    """Block this thread for ``ms`` milliseconds; returns the milliseconds slept."""
    start = time.monotonic()
    time.sleep(ms / 1000)
    return round((time.monotonic() - start) * 1000)


async def sleep_async(ms: int) -> int:
    """Await ``ms`` milliseconds without blocking the loop; cancellable at once."""
    start = time.monotonic()
    await asyncio.sleep(ms / 1000)
    return round((time.monotonic() - start) * 1000)


# --------------------------------------------------------------------------- echo probe


class EchoError(Exception):
    """An echo service could not be reached or did not echo; the message says which and why."""


@dataclass(frozen=True)
class EchoTarget:
    """One echo service to probe: its name in the API and its address."""

    name: str
    host: str
    port: int

    def describe(self) -> str:
        return f"{self.name} echo at {self.host}:{self.port}"


def payload(size: int) -> bytes:
    """A recognisable, non-repeating-at-small-scale message of ``size`` bytes."""
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def rtt_stats(
    target: EchoTarget, rtts_s: Sequence[float], size: int, wall_s: float
) -> dict[str, Any]:
    """Summarise round-trip times (seconds) as milliseconds: min, mean, p50, p95, max."""
    ordered = sorted(rtts_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "target": target.name,
        "address": f"{target.host}:{target.port}",
        "count": len(ordered),
        "size": size,
        "rtt_ms": {
            "min": round(ordered[0] * 1000, 3),
            "mean": round(statistics.fmean(ordered) * 1000, 3),
            "p50": round(statistics.median(ordered) * 1000, 3),
            "p95": round(p95 * 1000, 3),
            "max": round(ordered[-1] * 1000, 3),
        },
        "wall_ms": round(wall_s * 1000, 3),
    }


def probe_blocking(
    target: EchoTarget, count: int, size: int, io_timeout_s: float
) -> dict[str, Any]:
    """``count`` round trips of ``size`` bytes over one blocking TCP connection.

    Every socket operation is bounded by ``io_timeout_s``; the socket is always
    closed. Raises :class:`EchoError` if the service is unreachable, stalls,
    closes early or echoes other bytes.
    """
    message = payload(size)
    rtts: list[float] = []
    start = time.perf_counter()
    try:
        with socket.create_connection((target.host, target.port), timeout=io_timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            view = bytearray(size)
            for _ in range(count):
                sent_at = time.perf_counter()
                sock.sendall(message)
                got = 0
                while got < size:
                    n = sock.recv_into(memoryview(view)[got:])
                    if n == 0:
                        raise EchoError(f"{target.describe()}: closed after {got} of {size} bytes")
                    got += n
                rtts.append(time.perf_counter() - sent_at)
                if view != message:
                    raise EchoError(f"{target.describe()}: echoed bytes differ from those sent")
    except TimeoutError:
        raise EchoError(f"{target.describe()}: no answer within {io_timeout_s} s") from None
    except OSError as exc:
        raise EchoError(f"{target.describe()}: {exc.strerror or exc}") from None
    return rtt_stats(target, rtts, size, time.perf_counter() - start)


async def probe_async(
    target: EchoTarget, count: int, size: int, io_timeout_s: float
) -> dict[str, Any]:
    """The asyncio twin of :func:`probe_blocking`, with the same bounds and errors.

    The connection is closed on every path, including cancellation.
    """
    message = payload(size)
    rtts: list[float] = []
    start = time.perf_counter()
    try:
        async with asyncio.timeout(io_timeout_s):
            reader, writer = await asyncio.open_connection(target.host, target.port)
    except TimeoutError:
        raise EchoError(f"{target.describe()}: no answer within {io_timeout_s} s") from None
    except OSError as exc:
        raise EchoError(f"{target.describe()}: {exc.strerror or exc}") from None
    try:
        for _ in range(count):
            sent_at = time.perf_counter()
            writer.write(message)
            async with asyncio.timeout(io_timeout_s):
                await writer.drain()
                echoed = await reader.readexactly(size)
            rtts.append(time.perf_counter() - sent_at)
            if echoed != message:
                raise EchoError(f"{target.describe()}: echoed bytes differ from those sent")
    except TimeoutError:
        raise EchoError(f"{target.describe()}: no answer within {io_timeout_s} s") from None
    except asyncio.IncompleteReadError as exc:
        raise EchoError(
            f"{target.describe()}: closed after {len(exc.partial)} of {size} bytes"
        ) from None
    except OSError as exc:
        raise EchoError(f"{target.describe()}: {exc.strerror or exc}") from None
    finally:
        writer.close()
    return rtt_stats(target, rtts, size, time.perf_counter() - start)


def probe_all_blocking(
    targets: Sequence[EchoTarget], count: int, size: int, io_timeout_s: float
) -> dict[str, Any]:
    """Probe the targets one after the other (thread and sync modes)."""
    start = time.perf_counter()
    results = [probe_blocking(t, count, size, io_timeout_s) for t in targets]
    return {"targets": results, "wall_ms": round((time.perf_counter() - start) * 1000, 3)}


async def probe_all_async(
    targets: Sequence[EchoTarget], count: int, size: int, io_timeout_s: float
) -> dict[str, Any]:
    """Probe the targets concurrently (async mode); the first failure cancels the rest."""
    start = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(probe_async(t, count, size, io_timeout_s)) for t in targets]
    except ExceptionGroup as group_error:
        first = group_error.exceptions[0]
        raise first from None
    results = [task.result() for task in tasks]
    return {"targets": results, "wall_ms": round((time.perf_counter() - start) * 1000, 3)}
