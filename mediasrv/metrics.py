"""Prometheus metrics, collected at scrape time from the rooms and their native routers.

Nothing here runs per packet: the routers count natively, and this collector reads their counters
when /metrics is scraped.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import keys
from .auth import bearer_token
from .httputil import require_admin
from .sfu.rooms import RoomManager
from .vitals.live import FRAMES as VITALS_FRAMES

# (router counter, metric name, help)
RTP_COUNTERS = [
    ("rtp_packets_in", "rtp_packets_received", "RTP packets received from publishers"),
    ("rtp_bytes_in", "rtp_bytes_received", "RTP bytes (headers included) received from publishers"),
    ("payload_bytes_in", "rtp_payload_bytes_received", "RTP payload bytes received from publishers"),
    ("rtp_packets_out", "rtp_packets_forwarded", "RTP packets forwarded to subscribers"),
    ("rtp_bytes_out", "rtp_bytes_forwarded", "RTP bytes forwarded to subscribers"),
    ("payload_bytes_out", "rtp_payload_bytes_forwarded", "RTP payload bytes forwarded (first transmissions)"),
    ("retransmissions_out", "rtp_retransmissions", "packets resent to subscribers after a NACK"),
    ("nacks_in", "rtcp_nacks_received", "NACK feedback packets from subscribers"),
    ("plis_in", "rtcp_plis_received", "PLI feedback packets from subscribers"),
    ("plis_out", "rtcp_plis_sent", "keyframe requests sent to publishers"),
    ("remb_out", "rtcp_remb_sent", "REMB bandwidth estimates sent to publishers"),
    ("rtcp_packets_in", "rtcp_packets_received", "RTCP packets received"),
]


class MediasrvCollector(Collector):
    def __init__(self, rooms: RoomManager) -> None:
        self.rooms = rooms

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rooms = [r for r in self.rooms.list() if not r.closed]
        participants = [p for r in rooms for p in r.participants.values()]
        yield GaugeMetricFamily("mediasrv_rooms", "rooms open", value=len(rooms))
        g = GaugeMetricFamily("mediasrv_participants", "participants connected", labels=["admitted"])
        g.add_metric(["true"], sum(p.admitted for p in participants))
        g.add_metric(["false"], sum(not p.admitted for p in participants))
        yield g
        tracks = GaugeMetricFamily("mediasrv_tracks", "tracks published", labels=["kind"])
        for kind in ("audio", "video"):
            tracks.add_metric([kind], sum(t.kind == kind for r in rooms for t in r.tracks.values()))
        yield tracks
        yield GaugeMetricFamily(
            "mediasrv_subscriptions", "subscriptions forwarding media",
            value=sum(s.active for p in participants for s in p.subscriptions.values()),
        )
        totals: Counter[str] = Counter(self.rooms.retired)
        drops: Counter[str] = Counter(self.rooms.retired_drops)
        for r in rooms:
            stats = r.router.stats()
            for key, value in stats.items():
                if key == "dropped":
                    drops.update(value)
                elif isinstance(value, int):
                    totals[key] += value
            drops.update(r.drops)
        for key, name, help_text in RTP_COUNTERS:
            yield CounterMetricFamily(f"mediasrv_{name}", help_text, value=totals.get(key, 0))
        dropped = CounterMetricFamily("mediasrv_rtp_packets_dropped", "packets dropped, by reason",
                                      labels=["reason"])
        for reason, value in sorted(drops.items()):
            dropped.add_metric([reason], value)
        yield dropped
        frames = CounterMetricFamily("mediasrv_vitals_frames", "vitals data-channel frames, by result",
                                     labels=["result"])
        for result, value in sorted(VITALS_FRAMES.items()):
            frames.add_metric([result], value)
        yield frames


METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry")


def setup_metrics(app: web.Application) -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MediasrvCollector(app[keys.ROOMS]))
    app[METRICS_REGISTRY] = reg
    app.router.add_get("/metrics", metrics_handler)


async def metrics_handler(request: web.Request) -> web.Response:
    """Scrapers authenticate with the configured metrics token or an admin access token."""
    settings = request.app[keys.SETTINGS]
    presented = bearer_token(request.headers.get("Authorization"))
    if not (settings.metrics_token and presented
            and hmac.compare_digest(presented.encode(), settings.metrics_token.encode())):
        require_admin(request)
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
