"""One load run: start visits (ramped), let media flow for the duration, sample once a second,
tear everything down and return the report as a plain dict (see `report.py` for the fields)."""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import mediasrv_native

from mediasrv.loadtest import procstat
from mediasrv.loadtest.downlinks import (
    EstimateWatch,
    Impairment,
    estimate_timeline,
    group_summary,
    impaired_viewers,
)
from mediasrv.loadtest.signaling import Signaling, WhipWhep
from mediasrv.loadtest.visit import MediaPlan, Visit
from mediasrv.media.host_addresses import configure_host_addresses

SAMPLE_INTERVAL_S = 1.0
DRAIN_S = 0.5
# Upper bounds that keep any run finite, whatever the options say.
MAX_ROOMS = 500
MAX_DURATION_S = 3600.0


@dataclass
class LoadOptions:
    rooms: int = 2
    publishers_per_room: int = 2
    subscribers_per_room: int = 2
    plan: MediaPlan = field(default_factory=MediaPlan)
    duration_s: float = 30.0
    ramp_s: float = 5.0
    progress: bool = True
    seed: int = 1
    # 1:1 (or 1:n) visits: every publisher also watches every other one of its room, and there are
    # no separate viewers (`compare --mode visits`).
    mutual: bool = False
    # Addresses the simulated clients gather ICE candidates on (aioice skips loopback by itself).
    client_addresses: tuple[str, ...] = ("127.0.0.1",)
    # Subscribers negotiate transport-cc and send feedback (always when some are impaired).
    transport_cc: bool = False
    impairment: Impairment = field(default_factory=Impairment)

    @property
    def feedback(self) -> bool:
        return self.transport_cc or self.impairment.active

    @property
    def viewers_per_room(self) -> int:
        return self.publishers_per_room if self.mutual else self.subscribers_per_room

    def check(self) -> None:
        if not 1 <= self.rooms <= MAX_ROOMS:
            raise ValueError(f"--rooms must be 1..{MAX_ROOMS}")
        if self.mutual and self.publishers_per_room < 2:
            raise ValueError("a visit needs at least two participants")
        if self.publishers_per_room < 1 or self.subscribers_per_room < 0:
            raise ValueError("need at least one publisher per room and no negative subscribers")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"--duration must be in (0, {MAX_DURATION_S:.0f}] seconds")
        if self.ramp_s < 0:
            raise ValueError("--ramp must not be negative")
        if not (self.plan.audio or self.plan.video):
            raise ValueError("nothing to send: enable audio or video")
        if not 30 <= self.plan.video_kbps <= 20_000:
            raise ValueError("--video-kbps must be 30..20000")
        self.impairment.check()


@dataclass
class Target:
    """A server under load: where it is, how clients talk to it, and (if local) its process."""

    name: str
    url: str
    api_secret: str | None = None
    pid: int | None = None
    make_signaling: Callable[[], Signaling] | None = None
    # Reads the server's own counters (e.g. mediasrv's /metrics); None when it has none.
    counters: Callable[[], Awaitable[dict[str, float]]] | None = None
    # Client ICE addresses this server needs (Janus only pairs with its own veth address).
    client_addresses: tuple[str, ...] | None = None
    # The server's /metrics as text (mediasrv): per-subscription estimates for impaired runs.
    metrics_text: Callable[[], Awaitable[str]] | None = None

    def signaling(self) -> Signaling:
        if self.make_signaling is not None:
            return self.make_signaling()
        return WhipWhep(self.url, self.api_secret)


async def _worker_counters(target: Target) -> dict[str, float]:
    if target.counters is None:
        return {}
    try:
        return await target.counters()
    except Exception:  # the figure is optional; the run's own numbers do not depend on it
        return {}


WORKER_PACKETS = "mediasrv_worker_packets_total"
WORKER_CPU = "mediasrv_media_worker_cpu_seconds_total"


def _worker_load(before: dict[str, float], after: dict[str, float] | None, metric: str) -> dict[str, float]:
    """Per-worker increase of `metric` over the window, from its `{worker="i"}` samples."""
    if not after:
        return {}
    return {k.split('"')[1]: v - before.get(k, 0.0) for k, v in sorted(after.items())
            if k.startswith(metric + "{")}


SETUP_PHASES = ("answer", "connected", "handover")


def setup_phases(visits: list[Visit]) -> dict[str, dict[str, float]]:
    """p50 / p99 / max of each setup phase (milliseconds), over the connections that came up: which
    part of a slow setup was the server's answer, ICE and DTLS, or the generator's own hand-over
    (`answer_http`, the answer's HTTP exchange, where every connection had one: WHIP/WHEP)."""
    out: dict[str, dict[str, float]] = {}
    done = [c for v in visits for c in v.set_up()]
    http = ("answer_http",) if done and all("answer_http" in c.phases_s for c in done) else ()
    for phase in (*SETUP_PHASES, *http):
        values = sorted(c.phases_s[phase] for c in done)
        out[phase] = {"p50": 1000 * _quantile(values, 0.5), "p99": 1000 * _quantile(values, 0.99),
                      "max": 1000 * (values[-1] if values else 0.0)}
    return out


def slowest_setups(visits: list[Visit], t_start: float, n: int = 5) -> list[dict[str, Any]]:
    """The `n` slowest setups: role, when each began (seconds into the run) and its phases (ms)."""
    done = sorted((c for v in visits for c in v.set_up()), key=lambda c: c.setup_s or 0.0, reverse=True)
    return [{"role": c.role, "started_s": round(c.started - t_start, 3), "ms": round(1000 * (c.setup_s or 0.0), 1),
             **{f"{k}_ms": round(1000 * v, 1) for k, v in c.phases_s.items()}} for c in done[:n]]


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class Sampler:
    """Once a second: pump counters, server CPU and memory; keeps the timeline and a progress line."""

    def __init__(self, pump: Any, pid: int | None, progress: bool, label: str) -> None:
        self.pump, self.pid, self.progress, self.label = pump, pid, progress, label
        self.t0 = time.monotonic()
        self.timeline: list[dict[str, float]] = []
        self.peak_rss = 0
        self._last: tuple[float, dict[str, Any], float | None] | None = None
        self.visits_up = 0
        self.visits_total = 0

    def server(self) -> procstat.ProcSample | None:
        s = procstat.sample(self.pid) if self.pid else None
        if s:
            self.peak_rss = max(self.peak_rss, s.peak_rss_bytes, s.rss_bytes)
        return s

    def tick(self) -> dict[str, Any]:
        now = time.monotonic()
        snap = self.pump.snapshot(interval=True)
        srv = self.server()
        cpu = srv.cpu_s if srv else None
        if self._last is not None:
            t_prev, prev, cpu_prev = self._last
            dt = max(now - t_prev, 1e-6)
            expected = snap["expected"] - prev["expected"]
            lost = max(0, snap["lost"] - prev["lost"])
            point = {
                "t": round(now - self.t0, 2),
                "tx_pps": (snap["packets_sent"] - prev["packets_sent"]) / dt,
                "rx_pps": (snap["packets_received"] - prev["packets_received"]) / dt,
                "rx_mbps": (snap["bytes_received"] - prev["bytes_received"]) * 8 / dt / 1e6,
                "loss_pct": 100.0 * lost / expected if expected > 0 else 0.0,
                "latency_p50_ms": snap["interval_latency_p50_ms"],
                "latency_p99_ms": snap["interval_latency_p99_ms"],
                "latency_max_ms": snap["interval_latency_max_ms"],
                # Longest gap between two pump passes: a generator-side stall shows here.
                "pump_max_gap_ms": snap["interval_pump_max_gap_ms"],
                "generator_pump_cpu_pct": 100.0 * (snap["pump_cpu_s"] - prev["pump_cpu_s"]) / dt,
                "server_cpu_pct": 100.0 * (cpu - cpu_prev) / dt if cpu is not None and cpu_prev is not None else None,
                "peers": snap["peers"],
            }
            self.timeline.append(point)
            if self.progress:
                cpu_txt = f"  server cpu {point['server_cpu_pct']:5.1f}%" if point["server_cpu_pct"] is not None else ""
                print(f"\r[{self.label} {point['t']:6.1f}s] visits {self.visits_up}/{self.visits_total}"
                      f"  peers {snap['peers']}  tx {point['tx_pps']:7.0f} pps  rx {point['rx_pps']:7.0f} pps"
                      f"  loss {point['loss_pct']:5.2f}%  p99 {point['latency_p99_ms']:6.2f} ms{cpu_txt}   ",
                      end="", file=sys.stderr, flush=True)
        self._last = (now, snap, cpu)
        return snap

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.tick()


async def run_load(opts: LoadOptions, target: Target) -> dict[str, Any]:
    opts.check()
    configure_host_addresses(list(target.client_addresses or opts.client_addresses))
    if opts.feedback:
        # Process-wide: aiortc offers (and so negotiates) the transport-cc extension and feedback.
        from mediasrv.media.sdp import negotiate_transport_cc

        negotiate_transport_cc()
    pump = mediasrv_native.ClientPump(seed=opts.seed)
    signaling = target.signaling()
    sampler = Sampler(pump, target.pid, opts.progress, target.name)
    sampler.visits_total = opts.rooms
    sampler.tick()
    loop = asyncio.get_running_loop()
    sampling = loop.create_task(sampler.run())
    watch = EstimateWatch(target.metrics_text) if opts.feedback and target.metrics_text else None
    watching = loop.create_task(watch.run()) if watch else None
    impaired = impaired_viewers(opts.viewers_per_room, opts.rooms,
                                opts.impairment.share if opts.impairment.active else 0.0)
    visits = [Visit(f"load{opts.seed}-r{i}", opts.publishers_per_room, opts.subscribers_per_room,
                    opts.plan, signaling, pump, mutual=opts.mutual, feedback=opts.feedback,
                    impairment=opts.impairment if opts.impairment.active else None, impaired=impaired[i])
              for i in range(opts.rooms)]
    gen_cpu0 = procstat.own_cpu_s()
    srv0 = sampler.server()
    threads_steady: dict[str, float] = {}
    threads_end: dict[str, float] = {}
    t_start = time.monotonic()
    try:
        async def start(i: int, v: Visit) -> None:
            await asyncio.sleep(opts.ramp_s * i / max(opts.rooms, 1))
            await v.start()
            sampler.visits_up += 1

        # The generator's own cyclic collector waits for the ramp to end: its full collections of
        # hundreds of client connections' objects (up to ~110 ms at 50 visits) stalled every setup
        # in flight and showed up as the server's setup tail. Once every visit is up it collects,
        # before the steady window.
        gc.disable()
        try:
            await asyncio.gather(*(start(i, v) for i, v in enumerate(visits)))
        finally:
            gc.enable()
        setup_done = time.monotonic()
        gc.collect()
        # Steady window: every visit up; server CPU per forwarded packet is measured over it.
        steady_snap = pump.snapshot(interval=False)
        receivers_steady = pump.receiver_stats()
        watch_since = time.monotonic() - watch.t0 if watch else 0.0
        srv_steady = sampler.server()
        if target.pid:
            threads_steady = procstat.thread_cpu_s(target.pid)
        worker_steady = await _worker_counters(target)
        gen_cpu_steady = procstat.own_cpu_s()
        await asyncio.sleep(opts.duration_s)
        # Stop sending and let in-flight packets land, so our counts and the server's line up.
        pump.set_paused(True)
        await asyncio.sleep(DRAIN_S)
        final = pump.snapshot(interval=False)
        receivers_end = pump.receiver_stats()
        srv_end = sampler.server()
        if target.pid:
            threads_end = procstat.thread_cpu_s(target.pid)
        gen_cpu_end = procstat.own_cpu_s()
        steady_s = time.monotonic() - setup_done
        server_counters = await target.counters() if target.counters else None
    finally:
        sampling.cancel()
        if watching:
            watching.cancel()
        if opts.progress:
            print(file=sys.stderr)
        for v in visits:
            await v.stop()
        await signaling.aclose()
        pump.close()

    setup = sorted(t for v in visits for t in v.setup_times())
    failures = [f for v in visits for f in v.failures]
    subs, pubs = opts.subscribers_per_room, opts.publishers_per_room
    if opts.mutual:
        subs = 0
    idle_rss = srv0.rss_bytes if srv0 else None
    rss_above_idle = srv_end.rss_bytes - idle_rss if srv_end and idle_rss is not None else None
    thread_cpu = procstat.thread_cpu_delta(threads_steady, threads_end)
    worker_packets = _worker_load(worker_steady, server_counters, WORKER_PACKETS)
    worker_cpu = _worker_load(worker_steady, server_counters, WORKER_CPU)
    window_rx = final["packets_received"] - steady_snap["packets_received"]
    pump_window = final["pump_cpu_s"] - steady_snap["pump_cpu_s"]
    cpu_window = (srv_end.cpu_s - srv_steady.cpu_s) if srv_end and srv_steady else None
    report: dict[str, Any] = {
        "server": target.name,
        "url": target.url,
        "options": {
            "rooms": opts.rooms, "publishers_per_room": pubs, "subscribers_per_room": subs,
            "mutual": opts.mutual,
            **asdict(opts.plan), "duration_s": opts.duration_s, "ramp_s": opts.ramp_s,
        },
        "visits": opts.rooms,
        "connections": sum(len(v.connections) for v in visits),
        "setup_failures": len(failures),
        "failures": failures[:20],
        "streams_sent": final["streams_sending"],
        "streams_expected": sum(v.streams_watched() for v in visits) * opts.plan.tracks,
        "streams_received": final["streams_receiving"],
        "packets_sent": final["packets_sent"],
        "packets_received": final["packets_received"],
        "bytes_sent": final["bytes_sent"],
        "bytes_received": final["bytes_received"],
        "packets_expected": final["expected"],
        "packets_lost": final["lost"],
        "loss_pct": 100.0 * final["lost"] / final["expected"] if final["expected"] else 0.0,
        "latency_ms": {k: final[f"latency_{k}_ms"] for k in ("p50", "p95", "p99", "mean", "max")},
        "latency_samples": final["latency_samples"],
        "jitter_ms": final["jitter_ms"],
        "nacks": final["nacks"], "plis": final["plis"], "firs": final["firs"], "rembs": final["rembs"],
        "sender_reports": final["sender_reports"], "receiver_reports": final["receiver_reports"],
        "srtp_errors": final["srtp_errors"], "send_errors": final["send_errors"],
        "setup_ms": {"p50": 1000 * _quantile(setup, 0.5), "p99": 1000 * _quantile(setup, 0.99),
                     "max": 1000 * (setup[-1] if setup else 0.0)},
        "setup_phases_ms": setup_phases(visits),
        "setup_slowest": slowest_setups(visits, t_start),
        "setup_s_total": setup_done - t_start,
        "steady_s": steady_s,
        "generator_cpu_s": gen_cpu_end - gen_cpu0,
        "generator_cpu_s_steady": gen_cpu_end - gen_cpu_steady,
        # The pump thread's CLOCK_THREAD_CPUTIME_ID (all native send/receive work).
        "generator_pump_cpu_s": final["pump_cpu_s"],
        "generator_pump_cpu_s_steady": pump_window,
        "generator_pump_us_per_packet": 1e6 * pump_window / window_rx if window_rx else None,
        "server_us_per_packet": 1e6 * cpu_window / window_rx if cpu_window and window_rx else None,
        "pump_max_gap_ms": final["pump_max_gap_ms"],
        "server_pid": target.pid,
        "server_cpu_s": (srv_end.cpu_s - srv0.cpu_s) if srv_end and srv0 else None,
        "server_cpu_s_steady": cpu_window,
        "server_peak_rss_mb": sampler.peak_rss / 2**20 if sampler.peak_rss else None,
        "server_idle_rss_mb": idle_rss / 2**20 if idle_rss else None,
        # RSS at the end of the steady window above the server's RSS before the first visit.
        "server_rss_above_idle_mb": rss_above_idle / 2**20 if rss_above_idle is not None else None,
        "server_rss_per_visit_mb": rss_above_idle / 2**20 / opts.rooms if rss_above_idle is not None else None,
        # Server CPU seconds per thread (same-named threads summed) over the steady window.
        "server_thread_cpu_s": thread_cpu,
        # Packets each media worker handled over the steady window (mediasrv's /metrics).
        "worker_packets_steady": worker_packets,
        "worker_cpu_s_steady": worker_cpu,
        "forwarded_packets_steady": window_rx,
        "forwarded_per_cpu_s": window_rx / cpu_window if cpu_window else None,
        "server_counters": server_counters,
        "timeline": sampler.timeline,
    }
    if opts.feedback:
        downlinks = [d for v in visits for d in v.downlinks]
        report["options"]["transport_cc"] = True
        report["feedback_sent"] = final["feedback_sent"]
        report["downlinks"] = {
            "impairment": asdict(opts.impairment) if opts.impairment.active else None,
            "groups": group_summary(downlinks, receivers_steady, receivers_end, steady_s, watch, watch_since),
            "estimate_timeline": estimate_timeline(downlinks, receivers_end, watch) if watch else [],
            "estimate_scrapes": len(watch.samples) if watch else 0,
            "estimate_scrape_errors": watch.errors if watch else 0,
            "server_video_pauses": (server_counters or {}).get("mediasrv_video_pauses_total"),
            "server_video_resumes": (server_counters or {}).get("mediasrv_video_resumes_total"),
        }
    return report
