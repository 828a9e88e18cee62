"""Soak: visits joining and leaving for a long time, and what the server keeps of them.

`visits` slots each run visit after visit: a visit connects (WHIP publishers, WHEP subscribers,
media through the native pump), stays `visit_length_s`, and leaves; the slots start staggered so
joins and leaves are spread out (about `visits * 60 / visit_length_s` visits a minute). Every
`interval_s` the server's RSS, open fds and threads (from /proc, when it is local) and its
live-object gauges from /metrics (rooms, participants, sessions, peer transports, subscriptions,
tracks, admitted media sources, event-loop tasks) are sampled. The report gives RSS growth after the
warm-up, and whether every live-object gauge went back to its idle value (read before the load)
once the load stopped: a gauge that does not is something a visit leaves behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import mediasrv_native

from mediasrv.loadtest import procstat
from mediasrv.loadtest.runner import Target
from mediasrv.loadtest.visit import MediaPlan, Visit
from mediasrv.media.host_addresses import configure_host_addresses

# Gauges of things a visit creates and must release. (/metrics name, report name)
LIVE_GAUGES = (
    ("mediasrv_rooms", "rooms"),
    ("mediasrv_participants", "participants"),
    ("mediasrv_sessions", "sessions"),
    ("mediasrv_peer_transports", "transports"),
    ("mediasrv_subscriptions", "subscriptions"),
    ("mediasrv_tracks", "tracks"),
    ("mediasrv_media_admitted_sources", "admitted_sources"),
    ("mediasrv_recordings_active", "recordings"),
    ("mediasrv_event_loop_tasks", "tasks"),
)
MAX_DURATION_S = 24 * 3600.0
MAX_VISITS = 200


@dataclass
class SoakOptions:
    visits: int = 3  # visits at once (slots)
    visit_length_s: float = 20.0
    publishers_per_room: int = 2
    subscribers_per_room: int = 1
    plan: MediaPlan = field(default_factory=lambda: MediaPlan(video_kbps=500))
    duration_s: float = 300.0  # of load; the settle phase comes after
    warmup_s: float = 60.0  # RSS growth is measured from here to the end of the load
    interval_s: float = 5.0
    settle_timeout_s: float = 60.0  # how long the gauges get to return to idle
    seed: int = 1
    progress: bool = True
    client_addresses: tuple[str, ...] = ("127.0.0.1",)

    def check(self) -> None:
        if not 1 <= self.visits <= MAX_VISITS:
            raise ValueError(f"--visits must be 1..{MAX_VISITS}")
        if self.publishers_per_room < 1 or self.subscribers_per_room < 0:
            raise ValueError("need at least one publisher per visit and no negative subscribers")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"--duration must be in (0, {MAX_DURATION_S:.0f}] seconds")
        if not 0 <= self.warmup_s < self.duration_s:
            raise ValueError("--warmup must be shorter than --duration")
        if self.visit_length_s <= 0 or self.interval_s <= 0 or self.settle_timeout_s < 0:
            raise ValueError("--visit-length and --interval must be positive, --settle-timeout not negative")
        if not (self.plan.audio or self.plan.video):
            raise ValueError("nothing to send: enable audio or video")


def proc_counts(pid: int) -> dict[str, int] | None:
    """Open file descriptors and threads of a local process; None when it is gone or not ours."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    except (OSError, StopIteration, ValueError):
        return None
    return {"fds": fds, "threads": threads}


class SoakSampler:
    """One sample: time, phase, server process figures and the live-object gauges."""

    def __init__(self, pid: int | None, counters: Callable[[], Awaitable[dict[str, float]]] | None) -> None:
        self.pid, self.counters = pid, counters
        self.t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self.errors = 0

    async def gauges(self) -> dict[str, float] | None:
        if self.counters is None:
            return None
        try:
            values = await self.counters()
        except Exception:  # a scrape that fails (server busy, restarting) is a gap, not the end
            self.errors += 1
            return None
        return {short: values.get(name, 0.0) for name, short in LIVE_GAUGES if name in values}

    async def sample(self, phase: str, **extra: Any) -> dict[str, Any]:
        point: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 2), "phase": phase, **extra}
        if self.pid:
            mem = procstat.sample(self.pid)
            if mem is not None:
                point["rss_mb"] = round(mem.rss_bytes / 2**20, 2)
                point["cpu_s"] = round(mem.cpu_s, 2)
            point.update(proc_counts(self.pid) or {})
        gauges = await self.gauges()
        if gauges is not None:
            point["gauges"] = gauges
        self.samples.append(point)
        return point


def _slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope (units per minute) of (t seconds, value) points."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def rss_figures(samples: list[dict[str, Any]], warmup_end_t: float) -> dict[str, Any]:
    load = [s for s in samples if s["phase"] == "load" and "rss_mb" in s]
    if not load:
        return {"measured": False}
    after_warmup = [s for s in load if s["t"] >= warmup_end_t] or load[-1:]
    first, warm, last = load[0]["rss_mb"], after_warmup[0]["rss_mb"], load[-1]["rss_mb"]
    settled = [s["rss_mb"] for s in samples if s["phase"] == "settled" and "rss_mb" in s]
    idle = [s["rss_mb"] for s in samples if s["phase"] == "idle" and "rss_mb" in s]
    return {
        "measured": True,
        "idle_mb": idle[0] if idle else None,
        "load_start_mb": first,
        "after_warmup_mb": warm,
        "end_of_load_mb": last,
        "peak_mb": max(s["rss_mb"] for s in load),
        "settled_mb": settled[-1] if settled else None,
        "growth_after_warmup_pct": round(100.0 * (last - warm) / warm, 2) if warm else None,
        "slope_after_warmup_mb_per_min": _round(_slope_per_min([(s["t"], s["rss_mb"]) for s in after_warmup])),
        # The second half alone: a leak keeps its slope, a warm-up that ran long flattens out.
        "slope_last_half_mb_per_min": _round(_slope_per_min(
            [(s["t"], s["rss_mb"]) for s in after_warmup[len(after_warmup) // 2:]])),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def back_to_idle(idle: dict[str, float], now: dict[str, float]) -> dict[str, bool]:
    return {name: now.get(name) == value for name, value in idle.items()}


async def run_soak(opts: SoakOptions, target: Target) -> dict[str, Any]:
    opts.check()
    configure_host_addresses(list(target.client_addresses or opts.client_addresses))
    sampler = SoakSampler(target.pid, target.counters)
    idle_point = await sampler.sample("idle")
    idle = idle_point.get("gauges") or {}
    pump = mediasrv_native.ClientPump(seed=opts.seed)
    signaling = target.signaling()
    stop_at = time.monotonic() + opts.duration_s
    warmup_end_t = idle_point["t"] + opts.warmup_s
    started = completed = 0
    failures: list[str] = []
    live: dict[int, Visit] = {}  # by id(): Visit is an unhashable dataclass

    async def slot(n: int) -> None:
        nonlocal started, completed
        await asyncio.sleep(opts.visit_length_s * n / opts.visits)  # staggered joins
        cycle = 0
        while time.monotonic() < stop_at:
            visit = Visit(f"soak{opts.seed}-s{n}-c{cycle}", opts.publishers_per_room,
                          opts.subscribers_per_room, opts.plan, signaling, pump)
            live[id(visit)] = visit
            started += 1
            try:
                await visit.start()
                await asyncio.sleep(max(0.0, min(opts.visit_length_s, stop_at - time.monotonic())))
            finally:
                await visit.stop()
                live.pop(id(visit), None)
            failures.extend(visit.failures)
            completed += 1
            cycle += 1

    async def sampling() -> None:
        while True:
            await asyncio.sleep(opts.interval_s)
            point = await sampler.sample("load", visits_live=len(live))
            if opts.progress:
                g = point.get("gauges", {})
                print(f"\r[soak {point['t']:7.1f}s] visits {started} started, {len(live)} live"
                      f"  rss {point.get('rss_mb', '-')} MiB  fds {point.get('fds', '-')}"
                      f"  threads {point.get('threads', '-')}  tasks {g.get('tasks', '-')}"
                      f"  participants {g.get('participants', '-')}   ", end="", file=sys.stderr, flush=True)

    sampler_task = asyncio.get_running_loop().create_task(sampling())
    try:
        await asyncio.gather(*(slot(n) for n in range(opts.visits)))
    finally:
        sampler_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler_task
        for visit in list(live.values()):
            await visit.stop()
        await signaling.aclose()
        pump.close()
        if opts.progress:
            print(file=sys.stderr)
    load_end = await sampler.sample("stopped")

    # Settle: the gauges get `settle_timeout_s` to return to their idle values.
    deadline = time.monotonic() + opts.settle_timeout_s
    point = load_end
    while idle and not all(back_to_idle(idle, point.get("gauges") or {}).values()) \
            and time.monotonic() < deadline:
        await asyncio.sleep(min(1.0, opts.interval_s))
        point = await sampler.sample("settling")
    point = await sampler.sample("settled")
    after = point.get("gauges") or {}
    returned = back_to_idle(idle, after)
    procs = [s for s in sampler.samples if "fds" in s]
    return {
        "server": target.name,
        "url": target.url,
        "server_pid": target.pid,
        "options": {k: v for k, v in asdict(opts).items() if k not in ("progress", "client_addresses")},
        "visits_started": started,
        "visits_completed": completed,
        "visits_per_min": round(started * 60.0 / opts.duration_s, 2),
        "setup_failures": len(failures),
        "failures": failures[:20],
        "load_s": round(load_end["t"] - idle_point["t"], 1),
        "settle_s": round(point["t"] - load_end["t"], 1),
        "rss": rss_figures(sampler.samples, warmup_end_t),
        "fds": _span(procs, "fds"),
        "threads": _span(procs, "threads"),
        "idle_gauges": idle,
        "gauges_after_load": after,
        "back_to_idle": returned,
        "all_back_to_idle": bool(idle) and all(returned.values()),
        "scrape_errors": sampler.errors,
        "timeline": sampler.samples,
    }


def _span(samples: list[dict[str, Any]], key: str) -> dict[str, int] | None:
    if not samples:
        return None
    idle = next((s[key] for s in samples if s["phase"] == "idle"), samples[0][key])
    return {"idle": idle, "max": max(s[key] for s in samples), "settled": samples[-1][key]}


def soak_table(report: dict[str, Any]) -> str:
    rss, opts = report["rss"], report["options"]
    rows: list[tuple[str, str]] = [
        ("server", f"{report['server']} ({report['url']})"),
        ("load", f"{opts['visits']} visits at once x {opts['visit_length_s']:g} s each, "
                 f"{opts['publishers_per_room']} pub + {opts['subscribers_per_room']} sub, "
                 f"{report['load_s']:g} s"),
        ("visits started / per minute", f"{report['visits_started']} / {report['visits_per_min']:g}"),
        ("setup failures", str(report["setup_failures"])),
    ]
    if rss.get("measured"):
        rows += [
            ("RSS idle / after warm-up / end / peak",
             f"{rss['idle_mb']} / {rss['after_warmup_mb']} / {rss['end_of_load_mb']} / {rss['peak_mb']} MiB"),
            ("RSS growth after warm-up", f"{rss['growth_after_warmup_pct']} %"),
            ("RSS slope after warm-up / last half",
             f"{rss['slope_after_warmup_mb_per_min']} / {rss['slope_last_half_mb_per_min']} MiB/min"),
            ("RSS after settling", f"{rss['settled_mb']} MiB"),
        ]
    for key in ("fds", "threads"):
        span = report[key]
        if span:
            rows.append((f"{key} idle / max / settled", f"{span['idle']} / {span['max']} / {span['settled']}"))
    for name, value in report["idle_gauges"].items():
        after = report["gauges_after_load"].get(name)
        mark = "ok" if report["back_to_idle"].get(name) else "NOT BACK"
        peak = max((s.get("gauges", {}).get(name, 0) for s in report["timeline"]), default=0)
        rows.append((f"gauge {name}", f"idle {value:g}, peak {peak:g}, after {after if after is None else f'{after:g}'}"
                                      f" ({mark})"))
    rows.append(("every gauge back to idle", "yes" if report["all_back_to_idle"] else "NO"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
