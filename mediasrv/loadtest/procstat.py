"""CPU time and memory of a local server process, from /proc (Linux)."""

from __future__ import annotations

import os
import re
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



def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread of a process, summed over threads of the same name
    (digits dropped, so `media-worker-3` stays itself but eighty `ThreadPoolExecutor-0_12` become
    one `ThreadPoolExecutor-_` row). Empty when the process is gone."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.find("(") + 1: stat.rfind(")")]
        if tid == str(pid):
            name = "main"
        elif not name.startswith("media-worker"):
            name = re.sub(r"\d+", "_", name)
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def thread_cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each thread group used between two `thread_cpu_s` samples, largest first.
    Idle groups are left out, but not the main thread or a media worker: "0.0" is their figure
    (at a few visits the event loop can use less than a clock tick in a short window)."""
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    kept = ((k, v) for k, v in delta.items() if v > 0 or k == "main" or k.startswith("media-worker"))
    return dict(sorted(kept, key=lambda kv: -kv[1]))
