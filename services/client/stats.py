"""Round-trip statistics for a load run: counts, rates and latency percentiles.

Pure functions and plain data, so they are tested without a network and the
load loop stays free of anything but timing and comparing bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

# Bytes in a MiB: throughput is reported in MiB/s, the unit the servers' docs use.
MIB = 1024 * 1024

# Kinds of failed round trips, in report order (a failed connect stops the run instead).
ERROR_KINDS = ("eof", "timeout", "broken", "mismatch")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 if there are none).

    Nearest rank returns a value that was actually observed, so p99 of 1000
    samples is the 990th smallest, and p100 is the maximum.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    if not sorted_values:
        return 0.0
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[rank - 1]


def split_count(count: int, parts: int) -> list[int]:
    """``count`` split into ``parts`` shares that differ by at most one, larger first."""
    if parts < 1 or count < 0:
        raise ValueError("parts must be >= 1 and count >= 0")
    share, extra = divmod(count, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class LatencyMs:
    p50: float
    p99: float
    max: float
    mean: float


@dataclass
class Report:
    """What one ``echo`` run did; ``ok`` means every requested round trip succeeded."""

    host: str
    port: int
    backend: str
    size: int
    count: int
    concurrency: int
    completed: int  # round trips that came back in full (matching or not)
    errors: dict[str, int]  # per kind in ERROR_KINDS, mismatches included
    not_run: int  # round trips never attempted because their connection had failed
    elapsed_s: float
    requests_per_s: float
    mib_per_s: float
    latency_ms: LatencyMs
    first_error: str = ""
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = self.error_count == 0 and self.not_run == 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields, rounded to what the clock can tell (1 µs) and rates to 0.1."""
        data = asdict(self)
        data["elapsed_s"] = round(self.elapsed_s, 6)
        data["requests_per_s"] = round(self.requests_per_s, 1)
        data["mib_per_s"] = round(self.mib_per_s, 3)
        data["latency_ms"] = {k: round(v, 3) for k, v in asdict(self.latency_ms).items()}
        return data

    def to_text(self) -> str:
        """A few aligned lines for a human; the JSON form has the same numbers."""
        lat = self.latency_ms
        lines = [
            f"echo {self.host}:{self.port}  backend={self.backend}  size={self.size} B  "
            f"count={self.count}  concurrency={self.concurrency}",
            f"round trips  {self.completed - self.errors['mismatch']} ok, "
            f"{self.error_count} errors, {self.not_run} not run in {self.elapsed_s:.3f} s",
            f"throughput   {self.requests_per_s:,.0f} req/s, "
            f"{self.mib_per_s:,.2f} MiB/s of payload each way",
            f"latency      p50 {lat.p50:.3f} ms  p99 {lat.p99:.3f} ms  "
            f"max {lat.max:.3f} ms  mean {lat.mean:.3f} ms",
        ]
        if self.error_count:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.errors.items() if n)
            lines.append(f"errors       {kinds}; first: {self.first_error}")
        return "\n".join(lines)


def build_report(
    *,
    host: str,
    port: int,
    backend: str,
    size: int,
    count: int,
    concurrency: int,
    latencies_s: list[float],
    errors: dict[str, int],
    not_run: int,
    elapsed_s: float,
    first_error: str = "",
) -> Report:
    """Summarise a run. ``latencies_s`` (one per completed round trip) is sorted in place."""
    latencies_s.sort()
    completed = len(latencies_s)
    good = completed - errors.get("mismatch", 0)
    rate = good / elapsed_s if elapsed_s > 0 else 0.0
    mean = sum(latencies_s) / completed if completed else 0.0
    return Report(
        host=host,
        port=port,
        backend=backend,
        size=size,
        count=count,
        concurrency=concurrency,
        completed=completed,
        errors={kind: errors.get(kind, 0) for kind in ERROR_KINDS},
        not_run=not_run,
        elapsed_s=elapsed_s,
        requests_per_s=rate,
        mib_per_s=rate * size / MIB,
        latency_ms=LatencyMs(
            p50=percentile(latencies_s, 0.50) * 1000,
            p99=percentile(latencies_s, 0.99) * 1000,
            max=(latencies_s[-1] if latencies_s else 0.0) * 1000,
            mean=mean * 1000,
        ),
        first_error=first_error,
    )
