"""This machine as the registry sees it: a routable name, and what it can offer."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

# Same rules as the schemas' HOST and USER: the host name ends up in queue and routing keys.
HOST_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_host_name() -> str:
    """This machine's short name, made fit for a routing key."""
    short = socket.gethostname().split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]", "-", short).lstrip("-")[:63] or "builder"


def machine_resources(workdir: Path) -> tuple[int, int, int]:
    """(cpus, memory MiB, free disk GiB at workdir) for the enrolment profile."""
    try:
        cpus = len(os.sched_getaffinity(0))  # respects container and taskset limits
    except AttributeError:
        cpus = os.cpu_count() or 1
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        memory_mb = 0
    return cpus, memory_mb, shutil.disk_usage(workdir).free // 2**30
