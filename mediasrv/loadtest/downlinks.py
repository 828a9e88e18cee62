"""Subscribers on impaired downlinks: which simulated subscribers get a poor link, the server's
estimate of each subscriber's link (read from its /metrics), and the report per group.

The impairment is applied by the native pump on the receiving side (`native/loadgen/src/impair.rs`):
random loss, then a link of a fixed rate with a bounded queue, tail drop. A packet counts as
received, and is acknowledged in the subscriber's transport-cc feedback, only once it is out of that
link, at that time; so the server's estimator sees the queue and the losses as a browser behind such
a link would report them. Each impaired subscriber connection has a link of its own.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

RATE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}
MAX_RATE_BPS = 100_000_000
ESTIMATE_METRIC = "mediasrv_subscription_estimate_bps"
INFO_METRIC = "mediasrv_subscription_info"
_SAMPLE = re.compile(r"^(\w+)\{(.*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_rate(text: str) -> int:
    """`300k`, `1.5M`, `300000` (bits per second; a trailing `bit/s` or `bps` is allowed)."""
    t = text.strip().lower().removesuffix("bit/s").removesuffix("bps").strip()
    unit = t[-1:] if t[-1:] in ("k", "m") else ""
    try:
        value = float(t.removesuffix(unit)) * RATE_UNITS[unit]
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (e.g. 300k, 1.5M)") from None
    return int(value)


@dataclass(frozen=True)
class Impairment:
    """What `--impair-*` asks for: a share of the subscribers behind a link of this rate and loss."""

    rate_bps: int = 0  # 0: no rate limit (loss only)
    loss_pct: float = 0.0
    queue_ms: int = 250
    share: float = 0.0  # fraction of subscribers (viewers) impaired

    @property
    def active(self) -> bool:
        return self.share > 0 and (self.rate_bps > 0 or self.loss_pct > 0)

    def check(self) -> None:
        if not 0 <= self.rate_bps <= MAX_RATE_BPS:
            raise ValueError(f"--impair-rate must be 0..{MAX_RATE_BPS} bit/s")
        if self.rate_bps and self.rate_bps < 10_000:
            raise ValueError("--impair-rate below 10k is not a link")
        if not 0 <= self.loss_pct <= 100:
            raise ValueError("--impair-loss must be 0..100 (percent)")
        if not 1 <= self.queue_ms <= 10_000:
            raise ValueError("--impair-queue must be 1..10000 ms")
        if not 0 <= self.share <= 1:
            raise ValueError("--impair-share must be 0..1")
        if self.share > 0 and not (self.rate_bps or self.loss_pct):
            raise ValueError("--impair-share needs --impair-rate or --impair-loss")


def impaired_viewers(viewers_per_room: int, rooms: int, share: float) -> list[frozenset[int]]:
    """Which viewers of each room are impaired: `share` of all viewers, spread evenly over the run
    (viewer g of the run is impaired when floor((g+1)·share) passes an integer)."""
    out = []
    for r in range(rooms):
        chosen = set()
        for i in range(viewers_per_room):
            g = r * viewers_per_room + i
            if int((g + 1) * share + 1e-9) > int(g * share + 1e-9):
                chosen.add(i)
        out.append(frozenset(chosen))
    return out


@dataclass
class Downlink:
    """One subscriber connection the pump receives for (a viewer watching one publisher)."""

    peer: int
    room: str
    viewer: str
    publisher: str
    impaired: bool


def parse_labelled(text: str, names: tuple[str, ...]) -> list[tuple[str, dict[str, str], float]]:
    """The samples of the metrics in `names`, with their labels, from a Prometheus exposition."""
    out = []
    for line in text.splitlines():
        if not line.startswith(names):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1) not in names:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(_LABEL.findall(m.group(2))), value))
    return out


def estimates_by_ssrc(text: str) -> dict[int, float]:
    """The server's estimate of each subscriber connection, keyed by the SSRC of its video."""
    samples = parse_labelled(text, (ESTIMATE_METRIC, INFO_METRIC))
    ssrc_of = {(lb.get("room"), lb.get("subscription")): lb.get("ssrc") for name, lb, _ in samples
               if name == INFO_METRIC and lb.get("kind") == "video"}
    out: dict[int, float] = {}
    for name, lb, value in samples:
        ssrc = ssrc_of.get((lb.get("room"), lb.get("subscription")))
        if name == ESTIMATE_METRIC and ssrc is not None and ssrc.isdigit():
            out[int(ssrc)] = value
    return out


@dataclass
class EstimateWatch:
    """Reads the server's per-subscription estimates once a second while the load runs."""

    read_metrics: Callable[[], Awaitable[str]]
    t0: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, dict[int, float]]] = field(default_factory=list)
    errors: int = 0

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                text = await self.read_metrics()
            except Exception:  # optional figure: a missed scrape is counted, never fatal
                self.errors += 1
                continue
            self.samples.append((time.monotonic() - self.t0, estimates_by_ssrc(text)))

    def of(self, ssrc: int | None, since: float) -> list[float]:
        if ssrc is None:
            return []
        return [s[ssrc] for t, s in self.samples if t >= since and ssrc in s]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def estimate_timeline(downlinks: list[Downlink], end: dict[int, dict[str, Any]],
                      watch: EstimateWatch) -> list[dict[str, float | None]]:
    """Per scrape: seconds since the run began and the median estimate (kbit/s) of each group."""
    ssrcs = {True: [end[d.peer].get("video_ssrc") for d in downlinks if d.impaired and d.peer in end],
             False: [end[d.peer].get("video_ssrc") for d in downlinks if not d.impaired and d.peer in end]}
    out = []
    for t, sample in watch.samples:
        row: dict[str, float | None] = {"t": round(t, 2)}
        for impaired, name in ((True, "impaired_kbps"), (False, "unimpaired_kbps")):
            values = [sample[x] / 1000 for x in ssrcs[impaired] if x in sample]
            row[name] = _median(values)
        out.append(row)
    return out


def group_summary(downlinks: list[Downlink], start: dict[int, dict[str, Any]], end: dict[int, dict[str, Any]],
                  window_s: float, watch: EstimateWatch | None, since: float) -> dict[str, Any]:
    """Per group (impaired, unimpaired): what its subscribers received over the steady window, the
    server's estimate of their links, and the pauses, resumes and video SSRC changes they saw."""
    groups: dict[str, Any] = {}
    for name, impaired in (("impaired", True), ("unimpaired", False)):
        members = [d for d in downlinks if d.impaired == impaired and d.peer in end]
        per_sub = []
        for d in members:
            e, s = end[d.peer], start.get(d.peer, {})
            est = watch.of(e.get("video_ssrc"), since) if watch else []
            per_sub.append({
                **asdict(d),
                "received_kbps": (e["bytes"] - s.get("bytes", 0)) * 8 / window_s / 1000 if window_s > 0 else None,
                "video_kbps": (e["video_bytes"] - s.get("video_bytes", 0)) * 8 / window_s / 1000
                if window_s > 0 else None,
                "estimate_kbps_mean": statistics.fmean(est) / 1000 if est else None,
                "estimate_kbps_last": est[-1] / 1000 if est else None,
                **{k: e[k] for k in ("pauses", "resumes", "paused", "video_ssrc_changes", "dropped_loss",
                                     "dropped_queue", "max_queue_ms", "feedback_packets", "packets",
                                     "padding_packets", "video_ssrc", "first_pause_after_ms",
                                     "last_resume_after_ms")},
            })
        estimates = [p["estimate_kbps_mean"] for p in per_sub if p["estimate_kbps_mean"] is not None]
        lasts = [p["estimate_kbps_last"] for p in per_sub if p["estimate_kbps_last"] is not None]
        received = [p["received_kbps"] for p in per_sub if p["received_kbps"] is not None]
        groups[name] = {
            "subscribers": len(per_sub),
            "received_kbps_mean": _mean(received),
            "video_kbps_mean": _mean([p["video_kbps"] for p in per_sub if p["video_kbps"] is not None]),
            "estimate_kbps_mean": _mean(estimates),
            "estimate_kbps_min": min(estimates) if estimates else None,
            "estimate_kbps_max": max(estimates) if estimates else None,
            "estimate_kbps_last_median": statistics.median(lasts) if lasts else None,
            "pauses": sum(p["pauses"] for p in per_sub),
            "resumes": sum(p["resumes"] for p in per_sub),
            "subscribers_paused_once": sum(p["pauses"] > 0 for p in per_sub),
            # Seconds from a subscriber's first packet to its first pause (median over the group).
            "first_pause_after_s_median": _median([p["first_pause_after_ms"] / 1000 for p in per_sub
                                                   if p["first_pause_after_ms"] is not None]),
            "paused_at_end": sum(bool(p["paused"]) for p in per_sub),
            "video_ssrc_changes": sum(p["video_ssrc_changes"] for p in per_sub),
            "dropped_by_link": sum(p["dropped_loss"] + p["dropped_queue"] for p in per_sub),
            "delivered_packets": sum(p["packets"] for p in per_sub),
            "feedback_packets": sum(p["feedback_packets"] for p in per_sub),
            "per_subscriber": per_sub,
        }
    return groups


def table_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the run's table: one line per figure, impaired | unimpaired."""
    d = report.get("downlinks")
    if not d:
        return []
    imp, ok = d["groups"]["impaired"], d["groups"]["unimpaired"]
    spec = d["impairment"]

    def both(key: str, digits: int = 0) -> str:
        def f(v: Any) -> str:
            return "-" if v is None else f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"
        return f"{f(imp[key])} | {f(ok[key])}"

    link = (f"{spec['rate_bps'] / 1000:g} kbit/s" if spec["rate_bps"] else "no rate limit") + \
        f", {spec['loss_pct']:g} % loss, {spec['queue_ms']} ms queue"
    return [
        ("impaired downlink", f"{link}; {imp['subscribers']} of {imp['subscribers'] + ok['subscribers']} "
                              "subscriber connections"),
        ("per subscriber: impaired | unimpaired", ""),
        ("  received (mean, kbit/s)", both("received_kbps_mean")),
        ("  video received (mean, kbit/s)", both("video_kbps_mean")),
        ("  server's estimate (mean / last median, kbit/s)",
         f"{both('estimate_kbps_mean')}  /  {both('estimate_kbps_last_median')}"),
        ("  pauses / resumes (generator-observed)", f"{both('pauses')}  /  {both('resumes')}"),
        ("  subscribers paused at least once / at the end",
         f"{both('subscribers_paused_once')}  /  {both('paused_at_end')}"),
        ("  first pause after (median, s)", both("first_pause_after_s_median", 1)),
        ("  video SSRC changes (layer switches seen)", both("video_ssrc_changes")),
        ("  packets dropped by the simulated link", both("dropped_by_link")),
        ("  transport-cc feedback packets sent", both("feedback_packets")),
        ("server: video pauses / resumes (all subscribers)",
         f"{d.get('server_video_pauses', '-')} / {d.get('server_video_resumes', '-')}"),
    ]
