"""Connection quality from the router's stats: a publisher whose packets are lost, then stop, and a
subscriber whose receiver reports tell of loss and whose video is paused, each going to poor or
lost and back, with the `connection_quality` events the room sends and the /metrics gauge.

The first test drives a native Router and the monitor on one simulated clock (exact times); the
second runs a real room on the server, whose tick polls the monitor, and scrapes /metrics; the rest
give the monitor stats of their own (bandwidth share vs the stream, the round trip's fallback, a
publisher still connecting)."""

from __future__ import annotations

import asyncio
import struct
import time
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from mediasrv.clock import now_ms
from mediasrv.rooms.models import Participant, Subscription, Track
from mediasrv.rooms.quality_monitor import QualityMonitor
from tests.test_stream_pause import remb

mediasrv_native = pytest.importorskip("mediasrv_native")

PUB, SUB_T = 20_001, 20_002
AUDIO, VIDEO = 21_001, 21_002
SUB_AUDIO, SUB_VIDEO = 22_001, 22_002
PAT_AUDIO = 21_003
AUDIO_SSRC, VIDEO_SSRC = 0x3333, 0x1111
SUB_AUDIO_SSRC, SUB_VIDEO_SSRC = 0x5001, 0x5002
OPUS = [(111, "opus", 48000, None)]
SUB_CODECS = [(120, "VP8", 90000, None), (109, "opus", 48000, None)]


def opus(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, seq * 960 & 0xFFFFFFFF, AUDIO_SSRC) + b"\xfc" + bytes(60)


def receiver_report(about_ssrc: int, fraction_lost: float) -> bytes:
    """An RR block about one of our streams; no SR echoed (no round trip)."""
    lost = round(fraction_lost * 256) << 24
    return struct.pack("!BBHI", 0x81, 201, 7, 0x7777) + struct.pack("!IIIIII", about_ssrc, lost, 0, 0, 0, 0)


def router() -> Any:
    r = mediasrv_native.Router(sender_reports=True, seed=1)
    r.add_publisher(PUB, 0xAAAA, {})
    r.add_track(AUDIO, PUB, "audio", "1", OPUS, [AUDIO_SSRC])
    r.add_track(VIDEO, PUB, "video", "0", [(96, "VP8", 90000, None)], [VIDEO_SSRC])
    r.add_subscription(SUB_AUDIO, AUDIO, SUB_T, SUB_AUDIO_SSRC, SUB_CODECS, {})
    r.add_subscription(SUB_VIDEO, VIDEO, SUB_T, SUB_VIDEO_SSRC, SUB_CODECS, {})
    return r


def participants(events: dict[str, list[Any]]) -> dict[str, Participant]:
    """A clinician publishing audio and video, a patient receiving both, a guest in the waiting room."""
    def sink(identity: str) -> Any:
        async def send(event: dict[str, Any]) -> None:
            events[identity].append(event)
        return send

    pub: Any = SimpleNamespace(handle=PUB, owner="dr", connected=True)
    sub: Any = SimpleNamespace(handle=SUB_T, owner="pat", connected=True)
    dr = Participant(identity="dr", role="clinician", name="Dr", session="room", events=sink("dr"), publisher=pub)
    for tid, kind in ((AUDIO, "audio"), (VIDEO, "video")):
        dr.tracks[tid] = Track(id=tid, owner="dr", kind=kind, source="camera", mid="0", transport=pub)
    pat = Participant(identity="pat", role="patient", name="Pat", session="room", events=sink("pat"), subscriber=sub)
    for sid, tid in ((SUB_AUDIO, AUDIO), (SUB_VIDEO, VIDEO)):
        pat.subscriptions[tid] = Subscription(id=sid, track=dr.tracks[tid], transport=sub,
                                              transceiver=None,  # type: ignore[arg-type]
                                              active=True)
    guest = Participant(identity="guest", role="guest", name="G", session="room", admitted=False,
                        events=sink("guest"))
    return {"dr": dr, "pat": pat, "guest": guest}


def up(quality: str) -> dict[str, Any]:
    return {"type": "connection_quality", "participant": "dr", "scope": "uplink", "quality": quality}


def down(quality: str, **tracks: str) -> dict[str, Any]:
    return {"type": "connection_quality", "participant": "pat", "scope": "downlink", "quality": quality,
            "tracks": [{"track_id": {"audio": AUDIO, "video": VIDEO}[k], "quality": q} for k, q in tracks.items()]}


class Sim:
    """Simulated time: an audio packet every 20 ms from the clinician, the patient's RR and REMB every
    500 ms, the router polled every 10 ms and the monitor every second."""

    def __init__(self) -> None:
        self.r = router()
        self.events: dict[str, list[Any]] = {"dr": [], "pat": [], "guest": []}
        self.people = participants(self.events)
        room: Any = SimpleNamespace(participants=self.people, router=self.r,
                                    settings=SimpleNamespace(video_resume_bitrate=250_000))
        self.monitor = QualityMonitor(room)
        self.now = 0
        self.seq = 0
        self.told: list[tuple[int, dict[str, Any]]] = []  # (second, event) as the clinician got them
        self.levels: dict[tuple[str, str], int] = {}

    async def run(self, until_s: int, *, drop_every: int = 0, silent: bool = False, rr_loss: float = 0.0,
                  remb_bps: int = 2_000_000) -> None:
        """Up to `until_s`, losing every `drop_every`-th packet on the way in (0: none) or sending
        none (`silent`); the patient reports `rr_loss` and estimates `remb_bps`."""
        while self.now < until_s * 1000:
            self.now += 10
            now = self.now
            if now % 20 == 0 and not silent:
                self.seq += 1
                if not drop_every or self.seq % drop_every:
                    self.r.route_rtp(PUB, opus(self.seq), now)
            if now % 500 == 0:
                self.r.handle_rtcp(SUB_T, receiver_report(SUB_AUDIO_SSRC, rr_loss), now)
                self.r.handle_rtcp(SUB_T, remb(SUB_VIDEO_SSRC, remb_bps), now)
            self.r.poll(now)
            if now % 1000 == 0:
                out = self.monitor.poll(now / 1000)
                await self.monitor.deliver(out)
                self.told.extend((now // 1000, e) for p, e in out if p.identity == "dr")
                self.levels = {k: v for k, v in self.monitor.levels().items() if v}

    def take(self) -> list[tuple[int, dict[str, Any]]]:
        told, self.told = self.told, []
        return told


async def test_quality_follows_loss_silence_and_pause_on_a_simulated_clock() -> None:
    sim = Sim()
    await sim.run(5)  # a clean start: nothing to tell
    assert sim.take() == []
    assert sim.levels == {("uplink", "excellent"): 1, ("downlink", "excellent"): 1}

    # Uplink. One packet in 25 lost on the way in (4 %): good once that held 2 s (the window 5-6 s
    # is the first lossy one, read at 6 s); one in five (20 %): poor; none: excellent after 4 s.
    await sim.run(10, drop_every=25)
    assert sim.take() == [(8, up("good"))]
    await sim.run(14, drop_every=5)
    assert sim.take() == [(13, up("poor"))]
    assert sim.levels == {("uplink", "poor"): 1, ("downlink", "excellent"): 1}
    await sim.run(20)
    assert sim.take() == [(19, up("excellent"))]
    # Nothing arrives from 20 s: lost 3 s later, at once; back 4 s after packets arrive again.
    await sim.run(25, silent=True)
    assert sim.take() == [(23, up("lost"))]
    assert sim.levels == {("uplink", "lost"): 1, ("downlink", "excellent"): 1}
    await sim.run(31)
    assert sim.take() == [(30, up("excellent"))]

    # Downlink. The patient reports 15 % of the clinician's audio lost (RR at 31.5 s): poor at 34 s.
    await sim.run(36, rr_loss=0.15)
    assert sim.take() == [(34, down("poor", audio="poor"))]
    await sim.run(42)
    assert sim.take() == [(41, down("excellent"))]
    # Its estimate falls to 100 kbit/s (REMB at 42.5 s): the router pauses its video, poor at 45 s.
    await sim.run(46, remb_bps=100_000)
    assert sim.take() == [(45, down("poor", video="poor"))]
    assert sim.levels == {("uplink", "excellent"): 1, ("downlink", "poor"): 1}
    # Meanwhile the guest in the waiting room was told nothing; admitted, it gets what is not
    # excellent at the next poll, then the changes.
    assert sim.events["guest"] == []
    sim.people["guest"].admitted = True
    await sim.run(47, remb_bps=100_000)
    assert sim.events["guest"] == [down("poor", video="poor")]
    # 2 Mbit/s again (REMB at 47.5 s): the router resumes the video after its 2 s hold, seen at the
    # 50 s poll; excellent 4 s later.
    await sim.run(60)
    assert sim.take() == [(54, down("excellent"))]
    assert sim.events["guest"][-1] == down("excellent")
    assert sim.levels == {("uplink", "excellent"): 1, ("downlink", "excellent"): 1}
    # The patient got the same events as the clinician.
    assert len(sim.events["pat"]) == len(sim.events["dr"]) == 9
    # Unpublished: the uplink is no longer measured (nothing told: it was excellent).
    sim.people["dr"].tracks.clear()
    await sim.run(61)
    assert sim.take() == []
    assert sim.levels == {("downlink", "excellent"): 1}


async def test_a_simulcast_publishers_loss_on_one_layer_counts_in_its_uplink() -> None:
    """A simulcast camera's layers arrive on their own SSRCs: loss on one of them is the uplink's
    loss (the router keeps reception statistics per layer, as its receiver reports show). Here a
    fifth of the top layer: 8 % of all the clinician sends, good, not excellent."""
    low, high = 0x1111, 0x2222
    r = mediasrv_native.Router(sender_reports=True, seed=1)
    r.add_publisher(PUB, 0xAAAA, {})
    r.add_track(AUDIO, PUB, "audio", "1", OPUS, [AUDIO_SSRC])
    r.add_track(VIDEO, PUB, "video", "0", [(96, "VP8", 90000, None)], [])
    r.set_track_layers(VIDEO, 0, [], [low, high])
    r.add_subscription(SUB_AUDIO, AUDIO, SUB_T, SUB_AUDIO_SSRC, SUB_CODECS, {})
    r.add_subscription(SUB_VIDEO, VIDEO, SUB_T, SUB_VIDEO_SSRC, SUB_CODECS, {})
    events: dict[str, list[Any]] = {"dr": [], "pat": [], "guest": []}
    room: Any = SimpleNamespace(participants=participants(events), router=r,
                                settings=SimpleNamespace(video_resume_bitrate=250_000))
    monitor = QualityMonitor(room)

    def vp8(ssrc: int, seq: int) -> bytes:  # a keyframe's first packet, then the rest of frames
        first = seq % 10 == 1
        desc = (b"\x90\x80\x00\x01" + (b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00" if first else b"\x01"))
        return struct.pack("!BBHII", 0x80, 96 | (0x80 if seq % 3 == 0 else 0), seq & 0xFFFF,
                           (seq // 3) * 3000 & 0xFFFFFFFF, ssrc) + desc + bytes(300)

    told = []
    for seq, now in enumerate(range(10, 12_001, 10), start=1):
        if now % 20 == 0:
            r.route_rtp(PUB, opus(now // 20), now)
        r.route_rtp(PUB, vp8(low, seq), now)
        if now < 4000 or seq % 5:  # from 4 s one packet in five of the top layer is lost
            r.route_rtp(PUB, vp8(high, seq), now)
        r.poll(now)
        if now % 1000 == 0:
            told += [(now // 1000, e["quality"]) for p, e in monitor.poll(now / 1000)
                     if p.identity == "dr" and e["scope"] == "uplink"]
    assert len(told) == 1 and told[0][1] == "good" and 5 <= told[0][0] <= 8, told
    lost = [layer["lost"] for layer in r.track_layers(VIDEO)]
    assert lost[0] == 0 and 8000 // 10 // 5 * 0.9 <= lost[1] <= 8000 // 10 // 5, lost
    assert r.track_stats(VIDEO)["lost"] == lost[1]


async def _quality_metric(session: aiohttp.ClientSession, url: str, token: str) -> dict[str, float]:
    async with session.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {line.split("{")[1].split("}")[0]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith("mediasrv_connection_quality{")}


async def _told(messages: list[dict[str, Any]], quality: str, timeout_s: float = 30.0) -> float:
    """Seconds until a downlink `connection_quality` at `quality` arrived (a functional bound)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if any(m.get("scope") == "downlink" and m["quality"] == quality for m in messages):
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise AssertionError(f"no connection_quality {quality} in {messages}")


async def test_a_room_tells_everyone_when_a_subscriber_link_turns_poor_and_back(server) -> None:
    """The room's own tick: a patient whose estimate falls to 100 kbit/s (its video paused) is poor
    for everyone in the room and in /metrics, and excellent again after it recovers."""
    room = server.rooms.get_or_create("cq")
    r = room.router
    r.add_publisher(PUB, 7, {})
    r.add_track(VIDEO, PUB, "video", "0", [(96, "VP8", 90000, None)], [VIDEO_SSRC])
    r.add_subscription(SUB_VIDEO, VIDEO, SUB_T, SUB_VIDEO_SSRC, [(96, "VP8", 90000, None)], {})
    got: dict[str, list[dict[str, Any]]] = {"dr": [], "pat": []}

    def sink(identity: str) -> Any:
        async def send(event: dict[str, Any]) -> None:
            if event["type"] == "connection_quality":
                got[identity].append(event)
        return send

    # No real connection behind it (closed: /metrics counts no candidate pair for it).
    transport: Any = SimpleNamespace(owner="pat", handle=SUB_T, connected=True, closed=True)
    dr = Participant(identity="dr", role="clinician", name=None, session="room", events=sink("dr"))
    pat = Participant(identity="pat", role="patient", name=None, session="room", events=sink("pat"))
    track = Track(id=VIDEO, owner="dr", kind="video", source="camera", mid="0", transport=transport)
    pat.subscriptions[VIDEO] = Subscription(id=SUB_VIDEO, track=track, transport=transport,
                                            transceiver=None,  # type: ignore[arg-type]
                                            active=True)
    room.participants.update(dr=dr, pat=pat)
    room.transports[SUB_T] = transport
    admin = server.token("ops", "admin")
    try:
        async with aiohttp.ClientSession() as session:
            r.handle_rtcp(SUB_T, remb(SUB_VIDEO_SSRC, 100_000), now_ms())
            poor_s = await _told(got["dr"], "poor")
            assert got["dr"] == got["pat"] == [down("poor", video="poor")]
            metric = await _quality_metric(session, server.url, admin)
            assert metric['quality="poor",scope="downlink"'] == 1, metric
            assert metric['quality="excellent",scope="downlink"'] == 0, metric
            assert sum(v for k, v in metric.items() if "uplink" in k) == 0, metric  # dr publishes nothing here
            r.handle_rtcp(SUB_T, remb(SUB_VIDEO_SSRC, 2_000_000), now_ms())
            back_s = await _told(got["pat"], "excellent")
            print(f"\n[connection quality] poor {poor_s:.1f} s after the estimate fell, excellent "
                  f"{back_s:.1f} s after it recovered")
            assert got["dr"] == got["pat"] == [down("poor", video="poor"), down("excellent")]
            metric = await _quality_metric(session, server.url, admin)
            assert metric['quality="excellent",scope="downlink"'] == 1, metric
            assert metric['quality="poor",scope="downlink"'] == 0, metric
    finally:
        room.participants.pop("dr", None)
        room.participants.pop("pat", None)
        room.transports.pop(SUB_T, None)
        await server.rooms.close("cq", "done")


class FakeRouter:
    """The router's stats calls, answering what a test sets."""

    def __init__(self) -> None:
        self.tracks: dict[int, dict[str, Any]] = {}
        self.subs: dict[int, dict[str, Any]] = {}
        self.downlinks: dict[int, dict[str, Any]] = {}
        self.layers: dict[int, list[dict[str, Any]]] = {}

    def track_stats(self, track: int) -> dict[str, Any]:
        return self.tracks[track]

    def subscription_stats(self, sub: int) -> dict[str, Any]:
        return self.subs[sub]

    def downlink_stats(self, transport: int) -> dict[str, Any] | None:
        return self.downlinks.get(transport)

    def track_layers(self, track: int) -> list[dict[str, Any]] | None:
        return self.layers.get(track)


def _track(packets: int = 0, rtt: float | None = None, bitrate: int = 0) -> dict[str, Any]:
    return {"packets": packets, "lost": 0, "duplicates": 0, "jitter": 0, "rtt": rtt, "bitrate_bps": bitrate}


def _sub(rtt: float | None = None) -> dict[str, Any]:
    return {"fraction_lost": 0, "jitter": 0, "rtt": rtt, "paused": False}


def _levels(monitor: QualityMonitor, until: int, start: int = 1,
            each: Any = None) -> list[tuple[int, str, str, str]]:
    told = []
    for t in range(start, until + 1):
        if each is not None:
            each(t)
        told += [(t, e["participant"], e["scope"], e["quality"]) for p, e in monitor.poll(t)
                 if p.identity == "pat"]
    return told


def _fake_room() -> tuple[Any, FakeRouter]:
    events: dict[str, list[Any]] = {"dr": [], "pat": [], "guest": []}
    people = participants(events)
    fake = FakeRouter()
    room: Any = SimpleNamespace(participants=people, router=fake,
                                settings=SimpleNamespace(video_resume_bitrate=250_000))
    return room, fake


def test_a_single_layer_stream_wider_than_the_share_is_good_and_simulcast_is_not_compared() -> None:
    room, fake = _fake_room()
    room.participants["dr"].tracks.clear()  # only the patient's downlink here
    fake.tracks = {AUDIO: _track(bitrate=40_000), VIDEO: _track(bitrate=1_500_000)}
    fake.subs = {SUB_AUDIO: _sub(), SUB_VIDEO: _sub()}
    # 1.1 Mbit/s estimate, 100 kbit/s of audio: 1 Mbit/s for the one video stream, under 75 % of 1.5
    fake.downlinks = {SUB_T: {"estimate_bps": 1_100_000, "audio_bps": 100_000, "video_streams": 1}}
    monitor = QualityMonitor(room)
    assert _levels(monitor, 4) == [(3, "pat", "downlink", "good")]
    # The same track as simulcast: the router picks the layer that fits, nothing to compare.
    fake.layers[VIDEO] = [{"rid": "q"}, {"rid": "f"}]
    assert _levels(monitor, 9, start=5) == [(9, "pat", "downlink", "excellent")]


def test_an_uplink_without_an_rtt_echo_takes_the_client_round_trip_as_a_subscriber() -> None:
    room, fake = _fake_room()
    fake.tracks = {AUDIO: _track(), VIDEO: _track()}
    fake.subs = {SUB_AUDIO: _sub(rtt=0.6), SUB_VIDEO: _sub(rtt=0.7)}  # 600 ms to the patient

    def sending(t: int) -> None:  # the patient publishes audio, 50 packets a second
        fake.tracks[PAT_AUDIO] = {**_track(packets=50 * t), "rtt": None}

    room.participants["dr"].tracks.clear()
    pat = room.participants["pat"]
    pub: Any = SimpleNamespace(handle=PUB + 10, owner="pat", connected=True)
    pat.publisher = pub
    pat.tracks[PAT_AUDIO] = Track(id=PAT_AUDIO, owner="pat", kind="audio", source="microphone", mid="0",
                                  transport=pub)
    monitor = QualityMonitor(room)
    # Its downlink is as poor (the same round trip), and its uplink takes that round trip.
    assert _levels(monitor, 4, each=sending) == [(3, "pat", "uplink", "poor"), (3, "pat", "downlink", "poor")]


def test_a_publisher_still_connecting_is_not_lost() -> None:
    room, fake = _fake_room()
    fake.tracks = {AUDIO: _track(), VIDEO: _track()}  # nothing has arrived
    fake.subs = {SUB_AUDIO: _sub(), SUB_VIDEO: _sub()}
    room.participants["dr"].publisher.connected = False
    monitor = QualityMonitor(room)
    assert [e for t in range(1, 10) for _, e in monitor.poll(t)] == []
    # Connected from 10 s and still silent: lost 3 s later.
    room.participants["dr"].publisher.connected = True
    told = [(t, e["quality"]) for t in range(10, 14) for p, e in monitor.poll(t) if p.identity == "dr"]
    assert told == [(13, "lost")]


async def test_polls_are_delivered_in_order_and_a_slow_socket_holds_up_only_its_own() -> None:
    room, _ = _fake_room()
    got: list[tuple[str, str]] = []
    slow = asyncio.Event()

    def sink(identity: str) -> Any:
        async def send(event: dict[str, Any]) -> None:
            if identity == "pat" and event["quality"] == "poor":
                await slow.wait()  # the patient's socket, on its poor link, takes its time
            got.append((identity, event["quality"]))
        return send

    pat = Participant(identity="pat", role="patient", name=None, session="room", events=sink("pat"))
    dr = Participant(identity="dr", role="clinician", name=None, session="room", events=sink("dr"))
    monitor = QualityMonitor(room)
    first = asyncio.ensure_future(monitor.deliver([(pat, up("poor")), (dr, up("poor"))]))
    second = asyncio.ensure_future(monitor.deliver([(pat, up("excellent")), (dr, up("excellent"))]))
    await asyncio.sleep(0.01)
    assert got == [("dr", "poor"), ("dr", "excellent")]
    slow.set()
    await asyncio.gather(first, second)
    assert got[2:] == [("pat", "poor"), ("pat", "excellent")]
