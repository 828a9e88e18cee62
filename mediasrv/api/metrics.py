"""Prometheus metrics, collected at scrape time from the rooms and their native routers.

Nothing here runs per packet: the routers and the native media plane count natively, and this
collector reads their counters when /metrics is scraped. Bitrates are windowed natively (sampled by
the router's periodic poll); round-trip times come from subscribers' receiver reports.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import authenticate
from mediasrv.api.ratelimit import RATE_LIMITED
from mediasrv.api.room_protocol import SOCKETS_DROPPED
from mediasrv.api.whip_whep import MESSAGE_ROOM_PREFIX
from mediasrv.auth import bearer_token
from mediasrv.authz import require_admin
from mediasrv.media.candidate_stats import count_peers
from mediasrv.recording.recorder import TOTALS as RECORDING_TOTALS
from mediasrv.rooms import Room, RoomManager
from mediasrv.rooms.quality import Quality
from mediasrv.rooms.quality_monitor import SCOPES
from mediasrv.vitals.live import FRAMES as VITALS_FRAMES

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
    ("nacks_out", "rtcp_nacks_sent", "NACKs sent to publishers for packets lost on the way in"),
    ("rtx_in", "rtp_rtx_received", "retransmissions (RTX) received from publishers"),
    ("sr_out", "rtcp_sender_reports_sent", "sender reports sent to subscribers"),
    ("rr_out", "rtcp_receiver_reports_sent", "receiver reports sent to publishers"),
    ("tracks_started", "tracks_started", "tracks whose media started (or resumed) arriving"),
    ("tracks_stopped", "tracks_stopped", "tracks silent for the router's track timeout"),
    ("events_dropped", "router_events_dropped", "router events not kept because nobody drained them"),
    ("video_pauses", "video_pauses", "subscriber connections whose video was paused: their bandwidth estimate "
     "left too little for it after audio"),
    ("video_resumes", "video_resumes", "paused subscriber video resumed once the estimate recovered"),
    ("twcc_in", "rtcp_transport_cc_received", "transport-cc feedback packets from subscribers"),
    ("twcc_out", "rtcp_transport_cc_sent", "transport-cc feedback packets sent to publishers"),
    ("padding_out", "rtp_probe_padding_sent", "bandwidth probe padding sent to subscribers (on a paused video "
     "stream, or on the RTX stream of a flowing one)"),
    ("red_recovered", "rtp_red_recovered", "audio frames lost on the way in and recovered from the next RED "
     "packet's redundancy, for subscribers sent RED's primary alone"),
]
KEYFRAME_PREFIX = "keyframe_requests_"
RTT_BUCKET_PREFIX = "rtt_bucket_"

# (native plane counter, metric name, help)
PLANE_COUNTERS = [
    ("datagrams_in", "media_datagrams_received", "UDP datagrams received on the media port(s)"),
    ("bytes_in", "media_bytes_received", "UDP payload bytes received on the media port(s)"),
    ("datagrams_out", "media_datagrams_sent", "UDP datagrams sent by the media workers"),
    ("bytes_out", "media_bytes_sent", "UDP payload bytes sent by the media workers"),
    ("to_python", "media_datagrams_to_control", "datagrams passed to aioice/aiortc (STUN, DTLS, pre-handover)"),
]
# (recorder process total, metric name, help): `recording.recorder.TOTALS`, counted as each recorded
# track ends (stop, unpublish, mute, consent withdrawn), so a running track shows up when it ends; the
# writer's counts (frames_rejected, frames_dropped_backlog, writer_errors) when the recording stops.
RECORDING_COUNTERS = [
    ("frames_recorded", "recording_frames_recorded", "frames written into recordings (never decoded)"),
    ("frames_given_up", "recording_frames_given_up",
     "frames the recording sinks gave up: incomplete after loss, or undecodable until the next keyframe"),
    ("frames_before_start", "recording_frames_before_start",
     "frames left out at a track's start: audio sampled before the recording or the sender's first video frame"),
    ("frames_rejected", "recording_frames_rejected",
     "frames the muxer refused (e.g. an impossible timestamp), each dropped alone; the file is kept"),
    ("frames_dropped_backlog", "recording_frames_dropped_backlog",
     "frames dropped because the recording writer's backlog was full (the disk did not keep up)"),
    ("writer_errors", "recording_writer_errors",
     "recording writer failures (a file given up, e.g. on a full disk, or a failed writer step)"),
    ("sender_reports_distrusted", "recording_sender_reports_distrusted",
     "RTCP sender reports contradicting the current NTP/RTP mapping, not followed until the next confirms it"),
]
# (recorder process total, `by` label) of mediasrv_recording_tracks_aligned_total
RECORDING_ALIGNMENT = [("tracks_aligned_by_sender_report", "sender_report"),
                       ("tracks_aligned_by_arrival", "arrival")]
# Clock rates for turning RTP-unit jitter into seconds (Opus and every video codec we route).
CLOCK_RATE = {"audio": 48_000, "video": 90_000}


class MediasrvCollector(Collector):
    def __init__(self, rooms: RoomManager, sessions: dict[str, Any] | None = None) -> None:
        self.rooms = rooms
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
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
        receiving = GaugeMetricFamily("mediasrv_tracks_receiving", "tracks with media arriving now", labels=["kind"])
        for kind in ("audio", "video"):
            receiving.add_metric([kind], sum(_track_active(r, t.id) for r in rooms
                                             for t in list(r.tracks.values()) if t.kind == kind))
        yield receiving
        yield GaugeMetricFamily(
            "mediasrv_subscriptions", "subscriptions forwarding media",
            value=sum(s.active for p in participants for s in p.subscriptions.values()),
        )
        yield from self._live_objects(rooms)
        yield _connection_quality(rooms)
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
        keyframes = CounterMetricFamily("mediasrv_keyframe_requests", "PLIs sent to publishers, by reason",
                                        labels=["reason"])
        for key, value in sorted(totals.items()):
            if key.startswith(KEYFRAME_PREFIX):
                keyframes.add_metric([key.removeprefix(KEYFRAME_PREFIX)], value)
        yield keyframes
        yield rtt_histogram(totals)
        yield from _recording(rooms)
        yield CounterMetricFamily("mediasrv_room_messages_rate_limited",
                                  "room WebSocket messages refused for exceeding the connection's rate",
                                  value=RATE_LIMITED["refused"])
        yield CounterMetricFamily("mediasrv_room_rate_limit_disconnects",
                                  "room WebSockets closed (4429) for flooding", value=RATE_LIMITED["closed"])
        dropped_sockets = CounterMetricFamily(
            "mediasrv_room_sockets_dropped", "room WebSockets the server gave up: silent (nothing, not even "
            "a pong, for the idle limit) or stalled (a frame to the client not taken in 3 s, or 1000 events waiting for it)", labels=["reason"])
        for reason in ("silent", "stalled"):
            dropped_sockets.add_metric([reason], SOCKETS_DROPPED[reason])
        yield dropped_sockets
        if self.rooms.plane is not None:
            yield from self._plane(self.rooms.plane.native.stats(), self.rooms.plane)
            yield CounterMetricFamily("mediasrv_media_peer_moves",
                                      "handed-over peers followed to a new address (NAT rebinding, network move)",
                                      value=self.rooms.plane.moves)
            yield CounterMetricFamily("mediasrv_media_addresses_taken_over",
                                      "client addresses a new ICE session authenticated from while an older "
                                      "one still claimed them (a reused port): given to the new one",
                                      value=self.rooms.plane.addresses_taken_over)
            yield CounterMetricFamily("mediasrv_media_addresses_in_use",
                                      "checks of a new ICE session from an address an older session's "
                                      "handed-over peer still holds (the newcomer waits until it leaves)",
                                      value=self.rooms.plane.addresses_in_use)
            yield CounterMetricFamily("mediasrv_media_consent_expired",
                                      "handed-over peers disconnected because they stopped answering ICE "
                                      "consent checks (RFC 7675)", value=self.rooms.plane.consent_lost)
        yield from self._streams(rooms)

    def _live_objects(self, rooms: list[Room]) -> Iterator[GaugeMetricFamily]:
        """What a visit leaves alive until it ends: all back to their idle values once the load
        stops, or something leaks (the soak command checks exactly that)."""
        if self.sessions is not None:
            yield GaugeMetricFamily("mediasrv_sessions", "WHIP/WHEP sessions open", value=len(self.sessions))
        yield GaugeMetricFamily("mediasrv_peer_transports", "peer connections held by rooms",
                                value=sum(len(r.transports) for r in rooms))
        peers = GaugeMetricFamily("mediasrv_media_peers", "connected peer connections by the selected "
                                  "candidate pair: remote candidate type, and udp/tcp/tls (for relay: the "
                                  "client's protocol to its TURN server)", labels=["candidate", "transport"])
        counts = count_peers(t.pc for r in rooms for t in list(r.transports.values()) if not t.closed)
        for (kind, transport), n in sorted(counts.items()):
            peers.add_metric([kind, transport], n)
        yield peers
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # collected outside the event loop: nothing to count
            tasks = 0
        yield GaugeMetricFamily("mediasrv_event_loop_tasks", "asyncio tasks alive on the event loop",
                                value=tasks)

    def _plane(self, stats: dict[str, Any], plane: Any) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for key, name, help_text in PLANE_COUNTERS:
            yield CounterMetricFamily(f"mediasrv_{name}", help_text, value=stats[key])
        # Natively dropped and dropped by the Python demultiplexer, under one family.
        drops: Counter[str] = Counter(stats["dropped"])
        drops.update(plane.drops)
        dropped = CounterMetricFamily("mediasrv_media_datagrams_dropped",
                                      "datagrams the media plane dropped, by reason", labels=["reason"])
        for reason, value in sorted(drops.items()):
            dropped.add_metric([reason], value)
        yield dropped
        yield GaugeMetricFamily("mediasrv_media_admitted_sources",
                                "remote addresses ICE sessions talk to before handover (bounded per session)",
                                value=stats["admitted_sources"])
        cpu = CounterMetricFamily("mediasrv_media_worker_cpu_seconds", "CPU time of each media worker thread",
                                  labels=["worker"])
        for i, seconds in enumerate(stats["worker_cpu_seconds"]):
            cpu.add_metric([str(i)], seconds)
        yield cpu
        yield from _worker_load(stats)

    def _streams(self, rooms: list[Room]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Per published track (what the server receives) and per subscription (what it sends)."""
        labels = ["room", "track", "kind"]
        t_packets = CounterMetricFamily("mediasrv_track_packets", "RTP packets received per track", labels=labels)
        t_bytes = CounterMetricFamily("mediasrv_track_bytes", "RTP bytes received per track", labels=labels)
        t_lost = GaugeMetricFamily("mediasrv_track_packets_lost", "packets lost from the publisher (RFC 3550)",
                                   labels=labels)
        t_jitter = GaugeMetricFamily("mediasrv_track_jitter_seconds", "interarrival jitter from the publisher",
                                     labels=labels)
        t_nacks = CounterMetricFamily("mediasrv_track_nacks_sent", "NACKs sent to the publisher", labels=labels)
        t_bitrate = GaugeMetricFamily("mediasrv_track_bitrate_bps",
                                      "bits per second received per track (last 2 s)", labels=labels)
        t_target = GaugeMetricFamily("mediasrv_track_target_bitrate_bps",
                                     "video bitrate asked of the publisher for this track (its part of the "
                                     "REMB: what its viewers' links take)", labels=labels)
        t_rtt = GaugeMetricFamily("mediasrv_track_rtt_seconds",
                                  "round-trip time toward the publisher (its XR DLRR echo)", labels=labels)
        sub_labels = ["room", "track", "kind", "subscription"]
        s_packets = CounterMetricFamily("mediasrv_subscription_packets", "RTP packets sent per subscription",
                                        labels=sub_labels)
        s_bytes = CounterMetricFamily("mediasrv_subscription_bytes", "RTP bytes sent per subscription",
                                      labels=sub_labels)
        s_rtx = CounterMetricFamily("mediasrv_subscription_retransmissions",
                                    "packets resent after the subscriber's NACKs", labels=sub_labels)
        s_lost = GaugeMetricFamily("mediasrv_subscription_packets_lost",
                                   "cumulative loss the subscriber reports (RTCP RR)", labels=sub_labels)
        s_jitter = GaugeMetricFamily("mediasrv_subscription_jitter_seconds",
                                     "jitter the subscriber reports (RTCP RR)", labels=sub_labels)
        s_bitrate = GaugeMetricFamily("mediasrv_subscription_bitrate_bps",
                                      "bits per second sent per subscription (last 2 s, retransmissions excluded)",
                                      labels=sub_labels)
        s_rtt = GaugeMetricFamily("mediasrv_subscription_rtt_seconds",
                                  "round-trip time from the subscriber's last receiver report", labels=sub_labels)
        s_estimate = GaugeMetricFamily("mediasrv_subscription_estimate_bps",
                                       "bandwidth estimate of the subscriber's connection (transport-cc, else "
                                       "REMB and loss)", labels=sub_labels)
        # The SSRC a subscription is sent on, so a client (the load generator) can tell which
        # series are its own.
        s_info = GaugeMetricFamily("mediasrv_subscription_info", "the SSRC each subscription is sent on",
                                   labels=[*sub_labels, "ssrc"])
        paused = 0
        for room in rooms:
            for track in list(room.tracks.values()):
                try:
                    ts = room.router.track_stats(track.id)
                except KeyError:
                    continue
                lv = [room.name, str(track.id), track.kind]
                rate = CLOCK_RATE.get(track.kind, 90_000)
                t_packets.add_metric(lv, ts["packets"])
                t_bytes.add_metric(lv, ts["bytes"])
                t_lost.add_metric(lv, max(0, ts["lost"]))
                t_jitter.add_metric(lv, ts["jitter"] / rate)
                t_nacks.add_metric(lv, ts["nacks_out"])
                t_bitrate.add_metric(lv, ts["bitrate_bps"])
                if ts["target_bitrate_bps"] is not None:
                    t_target.add_metric(lv, ts["target_bitrate_bps"])
                if ts["rtt"] is not None:
                    t_rtt.add_metric(lv, ts["rtt"])
                for p in list(room.participants.values()):
                    sub = p.subscriptions.get(track.id)
                    if sub is None or not sub.active:
                        continue
                    try:
                        ss = room.router.subscription_stats(sub.id)
                    except KeyError:
                        continue
                    sv = [*lv, str(sub.id)]
                    s_packets.add_metric(sv, ss["packets"])
                    s_bytes.add_metric(sv, ss["bytes"])
                    s_rtx.add_metric(sv, ss["retransmissions"])
                    if ss["cumulative_lost"] is not None:
                        s_lost.add_metric(sv, max(0, ss["cumulative_lost"]))
                    if ss["jitter"] is not None:
                        s_jitter.add_metric(sv, ss["jitter"] / rate)
                    s_bitrate.add_metric(sv, ss["bitrate_bps"])
                    if ss["rtt"] is not None:
                        s_rtt.add_metric(sv, ss["rtt"])
                    if ss["estimate_bps"] is not None:
                        s_estimate.add_metric(sv, ss["estimate_bps"])
                    s_info.add_metric([*sv, str(ss["ssrc"])], 1)
                    paused += bool(ss["paused"])
        yield from (t_packets, t_bytes, t_lost, t_jitter, t_nacks, t_bitrate, t_target, t_rtt,
                    s_packets, s_bytes, s_rtx, s_lost, s_jitter, s_bitrate, s_rtt, s_estimate, s_info)
        yield GaugeMetricFamily("mediasrv_subscriptions_paused",
                                "video subscriptions paused for lack of bandwidth (audio continues)", value=paused)
        frames = CounterMetricFamily("mediasrv_vitals_frames", "vitals data-channel frames, by result",
                                     labels=["result"])
        for result, value in sorted(VITALS_FRAMES.items()):
            frames.add_metric([result], value)
        yield frames


def _recording(rooms: list[Room]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    active = GaugeMetricFamily("mediasrv_recordings_active", "recordings running, by kind (visit or message)",
                               labels=["kind"])
    running = Counter("message" if r.name.startswith(MESSAGE_ROOM_PREFIX) else "visit"
                      for r in rooms if r.recording.running)
    for kind in ("visit", "message"):
        active.add_metric([kind], running[kind])
    yield active
    recorder_sinks = sum(len(r.recording.recorder.sinks) for r in rooms if r.recording.recorder is not None)
    yield GaugeMetricFamily("mediasrv_recording_tracks_active", "tracks being recorded now (router sinks)",
                            value=recorder_sinks)
    for key, name, help_text in RECORDING_COUNTERS:
        yield CounterMetricFamily(f"mediasrv_{name}", help_text, value=RECORDING_TOTALS[key])
    aligned = CounterMetricFamily("mediasrv_recording_tracks_aligned",
                                  "recorded tracks by how they were placed on the recording's timeline: "
                                  "RTCP sender reports, or arrival time when none came in time", labels=["by"])
    for key, by in RECORDING_ALIGNMENT:
        aligned.add_metric([by], RECORDING_TOTALS[key])
    yield aligned


def _connection_quality(rooms: list[Room]) -> GaugeMetricFamily:
    """Participants per quality level of their uplink and downlink (rooms/quality_monitor.py): no
    identities in labels, every level present so a dashboard's series do not come and go."""
    levels: Counter[tuple[str, str]] = Counter()
    for r in rooms:
        levels.update(r.quality.levels())
    g = GaugeMetricFamily("mediasrv_connection_quality",
                          "participants by connection quality (excellent, good, poor, lost) of their uplink "
                          "(what they send) and downlink (what they receive)", labels=["scope", "quality"])
    for scope in SCOPES:
        for q in sorted(Quality, reverse=True):
            g.add_metric([scope, q.label], levels[(scope, q.label)])
    return g


def _track_active(room: Room, track_id: int) -> bool:
    try:
        return bool(room.router.track_stats(track_id)["active"])
    except KeyError:
        return False


# Per-worker series: (stats key, metric name, help, counter?).
_WORKER_SERIES = (
    ("worker_packets", "mediasrv_worker_packets",
     "packets each media worker handled: media in and datagrams out (worker 0 also counts every "
     "datagram it reads for the others)", True),
    ("worker_syscalls", "mediasrv_media_syscalls",
     "packet-path system calls of each media worker (poll, recvmmsg, sendmmsg, futex waits and "
     "wakes, receive gather sleeps)", True),
    ("worker_gather_waits", "mediasrv_media_gather_waits",
     "receive gather waits of each media worker (a short sleep after a partial read so the next "
     "read finds several datagrams)", True),
    ("worker_gather_empty", "mediasrv_media_gather_waits_empty",
     "gather waits after which the read found nothing; while most do, the worker stops waiting "
     "and reads each arrival as it lands", True),
    ("worker_rooms", "mediasrv_worker_rooms", "rooms placed on each media worker", False),
)


def _worker_load(stats: dict[str, Any]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """What each media worker carries: rooms are placed by its packets a second (and never moved)."""
    for key, name, doc, counter in _WORKER_SERIES:
        family = (CounterMetricFamily if counter else GaugeMetricFamily)(name, doc, labels=["worker"])
        for i, value in enumerate(stats.get(key, ())):
            family.add_metric([str(i)], value)
        yield family


def rtt_histogram(totals: Counter[str]) -> HistogramMetricFamily:
    """Subscribers' round-trip times, all rooms together (closed ones included): the routers count
    samples per bucket natively (`rtt_bucket_<le>ms`, not cumulative); Prometheus wants cumulative."""
    bounds: list[tuple[float, int]] = []
    for key, value in totals.items():
        if key.startswith(RTT_BUCKET_PREFIX):
            le = key.removeprefix(RTT_BUCKET_PREFIX)
            bounds.append((float("inf") if le == "inf" else int(le.removesuffix("ms")) / 1000, value))
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, value in sorted(bounds):
        running += value
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    if not buckets or buckets[-1][0] != "+Inf":
        buckets.append(("+Inf", running))
    return HistogramMetricFamily("mediasrv_subscriber_rtt_seconds",
                                 "round-trip times measured from subscribers' receiver reports",
                                 buckets=buckets, sum_value=totals.get("rtt_sum_us", 0) / 1e6)




class NodeCollector(Collector):
    """Which cluster node this is (join other series on it: every node exports the same names)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("mediasrv_node_info", "this node of the cluster (1), its id and state",
                              labels=["node_id", "state"])
        g.add_metric([self.cluster.node_id, self.cluster.state], 1)
        yield g


def setup_metrics(app: web.Application) -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MediasrvCollector(app[keys.ROOMS], app.get(keys.SESSIONS)))
    if app.get(keys.CLUSTER) is not None:
        reg.register(NodeCollector(app[keys.CLUSTER]))
    app[keys.METRICS_REGISTRY] = reg
    app.router.add_get("/metrics", metrics_handler)


async def metrics_handler(request: web.Request) -> web.Response:
    """Scrapers authenticate with the configured metrics token or an admin access token."""
    settings = request.app[keys.SETTINGS]
    presented = bearer_token(request.headers.get("Authorization"))
    if not (settings.metrics_token and presented
            and hmac.compare_digest(presented.encode(), settings.metrics_token.encode())):
        require_admin(authenticate(request))
    body = generate_latest(request.app[keys.METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
