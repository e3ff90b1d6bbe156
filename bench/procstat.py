"""CPU time and memory of a process, read from /proc (Linux only)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its descendants in seconds (fields 14 and 15 of
    /proc/<pid>/stat): a broker of several processes (`--workers`) counts whole."""
    total = 0.0
    for process in _tree(pid):
        try:
            with open(f"/proc/{process}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            if process == pid:
                raise
            continue  # a child that just ended
        # The command name (field 2) is in parentheses and may contain spaces.
        fields = stat[stat.rindex(b")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND
    return total


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` and its descendants in KiB (VmRSS in /proc/<pid>/status)."""
    total = 0
    for process in _tree(pid):
        try:
            with open(f"/proc/{process}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            if process == pid:
                raise ValueError(f"no VmRSS for process {pid}") from None
    return total


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/<pid>/task/<tid>/children)."""
    found = [pid]
    for process in found:
        try:
            tasks = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{process}/task/{task}/children") as f:
                    found.extend(int(child) for child in f.read().split())
            except OSError:
                continue
    return found


def machine_busy_seconds(cpu: int | None = None) -> float:
    """CPU seconds spent not idle by one CPU, or by all together (None), from /proc/stat."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0] == name:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
                return (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND
    raise ValueError(f"no {name} line in /proc/stat")


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall: float
    cpu: tuple[float, ...]  # one entry per watched process
    machine: float  # all CPUs, busy


class CpuMeter:
    """Share of one core used by some processes between `start()` and `stop()`.

    `other` is then what else ran: on `watched_cpu` besides the first process
    (the broker, pinned there), or on the whole machine besides all of them.
    """

    def __init__(self, pids: list[int], watched_cpu: int | None = None) -> None:
        self.pids = pids
        self.watched_cpu = watched_cpu
        self._start: CpuSample | None = None
        self.other = float("nan")  # percent of a core, after stop()

    def sample(self) -> CpuSample:
        return CpuSample(time.monotonic(), tuple(_cpu_or_nan(pid) for pid in self.pids),
                         machine_busy_seconds(self.watched_cpu))

    def start(self) -> None:
        self._start = self.sample()

    def stop(self) -> list[float]:
        """Percent of one core per process since `start()`."""
        assert self._start is not None, "CpuMeter.stop() before start()"
        end = self.sample()
        elapsed = end.wall - self._start.wall
        shares = [100 * (after - before) / elapsed
                  for before, after in zip(self._start.cpu, end.cpu, strict=True)]
        # Other processes, and kernel work no process is charged with (some softirq).
        charged = shares[0] if self.watched_cpu is not None else sum(shares)
        self.other = max(0.0, 100 * (end.machine - self._start.machine) / elapsed - charged)
        return shares


def _cpu_or_nan(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError):
        return float("nan")


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE as far as allowed towards `wanted`; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted
