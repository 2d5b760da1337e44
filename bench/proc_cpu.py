"""CPU time (user + system) of the processes of a benchmark run, read from /proc (Linux).

Less sensitive to a busy machine than a rate: a process that waits for the CPU is not charged
for the wait. PostgreSQL counts as its postmaster with every backend (live ones, and through
the postmaster's `cutime` the ones that exited), RabbitMQ as its beam.smp process (every
scheduler thread).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces: the fields after it follow the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def seconds(pid: int, children: bool = False) -> float:
    """CPU seconds `pid` used so far; with `children`, those of its reaped children too."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    # After the ')': state is [0], utime [11], stime [12], cutime [13], cstime [14].
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def tree_seconds(parent: int) -> float:
    """CPU seconds of `parent`, its reaped children and its live children (a postmaster and
    its backends)."""
    total = seconds(parent, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def pid_file(path: Path) -> int:
    return int(path.read_text().split()[0])


class Meter:
    """CPU seconds each named process (or tree) uses between `start` and `stop`."""

    def __init__(self, readers: Mapping[str, Callable[[], float]]) -> None:
        self.readers = dict(readers)
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: read() for name, read in self.readers.items()}

    def stop(self) -> dict[str, float]:
        self.used = {name: read() - self._start[name] for name, read in self.readers.items()}
        return self.used
