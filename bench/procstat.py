"""CPU time of processes from Linux ``/proc``: what a server spent serving a run.

``/proc/<pid>/stat`` gives user and system time in clock ticks (``SC_CLK_TCK``,
usually 100 per second) for all threads of a process. The harness samples it
at the start and end of a measured interval; the difference divided by the
requests served is the server's CPU time per request.
"""

from __future__ import annotations

import os
from pathlib import Path

# Clock ticks per second of the utime/stime fields (100 on Linux almost always).
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Field positions (0-based, counted after the ") " that ends the command name) of
# ppid, utime and stime in /proc/<pid>/stat; see proc(5).
_PPID, _UTIME, _STIME = 1, 11, 12


def _fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_ticks(pid: int) -> int:
    """user+system clock ticks used so far by every thread of ``pid`` (not its children).

    Raises OSError (FileNotFoundError) when the process is gone or /proc is absent.
    """
    f = _fields(pid)
    return int(f[_UTIME]) + int(f[_STIME])


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (by scanning /proc for parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_fields(int(entry.name))[_PPID])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked, or unreadable
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_cpu_ticks(pids: list[int]) -> int:
    """Sum of :func:`cpu_ticks` over ``pids``, skipping processes that have exited."""
    total = 0
    for pid in pids:
        try:
            total += cpu_ticks(pid)
        except OSError:
            continue
    return total


def proc_available() -> bool:
    """True when this process can read its own /proc/<pid>/stat (Linux)."""
    try:
        cpu_ticks(os.getpid())
    except (OSError, ValueError, IndexError):
        return False
    return True


# Columns of a "cpu" line in /proc/stat (after the label), see proc(5): user nice system
# idle iowait irq softirq steal ...; busy = everything but idle, iowait and steal.
_BUSY_COLUMNS = (0, 1, 2, 5, 6)
_STEAL_COLUMN = 7


def machine_ticks(cpus: frozenset[int] | None = None) -> tuple[int, int]:
    """(busy, steal) clock ticks so far, summed over ``cpus`` (None: the whole machine).

    Busy counts user, nice, system, irq and softirq time of every process and the
    kernel; steal is time the hypervisor gave to other guests. Raises OSError when
    /proc/stat is unreadable.
    """
    busy = steal = 0
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            break
        label, *values = line.split()
        if cpus is None:
            if label != "cpu":
                continue
        elif label == "cpu" or int(label[3:]) not in cpus:
            continue
        nums = [int(v) for v in values]
        busy += sum(nums[i] for i in _BUSY_COLUMNS)
        steal += nums[_STEAL_COLUMN] if len(nums) > _STEAL_COLUMN else 0
    return busy, steal
