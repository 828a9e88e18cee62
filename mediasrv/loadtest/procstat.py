"""CPU time and memory of a local server process, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcSample:
    cpu_s: float  # user + system, this process and its reaped children
    rss_bytes: int
    peak_rss_bytes: int


def sample(pid: int) -> ProcSample | None:
    """None when the process is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after its closing ')'.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    mem = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            mem[key] = int(value.split()[0]) * 1024
    return ProcSample(cpu_s=(utime + stime + cutime + cstime) / CLK_TCK,
                      rss_bytes=mem.get("VmRSS", 0), peak_rss_bytes=mem.get("VmHWM", 0))


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system

