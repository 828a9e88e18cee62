"""/metrics after real recordings: the recorder's process totals (`mediasrv_recording_*_total`, the
writer's refused frames among them), the running-recordings gauge and the router's `recorder`
keyframe requests, scraped over HTTP from a real server. The visit is recorded through a real Router's sinks into the server's encrypted store."""

from __future__ import annotations

import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mediasrv.api.whip_whep import MESSAGE_ROOM_PREFIX
from mediasrv.auth import Identity
from mediasrv.recording.consent import RecordingConsent
from mediasrv.recording.recorder import Recorder
from mediasrv.rooms import RoomOptions

from .router_feed import replay
from .test_pipeline import encode_opus, encode_vp8, packetize_vp8, rtp
from .test_recorder_sinks import OPUS, VP8, FakeRoom, FakeTrack
from .test_router_sink import sender_report

Sample = tuple[str, frozenset[tuple[str, str]]]
T0_MS = 10_000  # server clock when both publishers start sending
ORIGIN_MS = T0_MS + 100  # the recording starts 100 ms later: earlier audio is left out
NTP0 = 3_900_000_000.0
MIC_SSRC = 0xA


async def scrape(server) -> dict[Sample, float]:
    headers = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/metrics", headers=headers) as r:
        assert r.status == 200
        text = await r.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


async def test_running_recordings_are_counted_by_kind(server) -> None:
    room = server.rooms.create(MESSAGE_ROOM_PREFIX + "metrics", RoomOptions(recording_allowed=True))
    sender = Identity(sub="pat", role="patient", room=room.name, name=None, exp=int(time.time()) + 600)
    await room.recording.start_for_message(sender)
    running = await scrape(server)
    assert running[sample("mediasrv_recordings_active", kind="message")] == 1
    assert running[sample("mediasrv_recordings_active", kind="visit")] == 0
    assert running[sample("mediasrv_recording_tracks_active")] == 0  # the sender has published nothing yet
    await room.recording.stop(sender)
    stopped = await scrape(server)
    assert stopped[sample("mediasrv_recordings_active", kind="message")] == 0


async def test_recorded_frames_alignment_and_keyframe_requests_are_exported(server) -> None:
    before = await scrape(server)
    video = encode_vp8(2)  # 30 fps, keyframes at frames 0 and 45
    audio = encode_opus(2)
    room = FakeRoom()
    room.publish(FakeTrack(1, "dr", "video", "camera", VP8), 7)  # packetize_vp8 sends on SSRC 7
    room.publish(FakeTrack(2, "pat", "audio", "microphone", OPUS), MIC_SSRC)
    consent = RecordingConsent(recording_allowed=True)
    consent.request("dr", "clinician", ["dr", "pat"])
    consent.answer("pat", True)
    consent.check_start()
    store = server.rooms.recording_store
    rid = await store.create("visit-metrics", "dr")
    rec = Recorder(room, store, rid, consent)  # type: ignore[arg-type]
    rec.origin_ms = ORIGIN_MS
    rec.update()
    assert len(rec.sinks) == 2

    # (arrival ms, packet): each frame sent when sampled. The camera's frame 10 never arrives (no
    # retransmission): the chain breaks until the next keyframe and the sink asks for one. Only the
    # camera sends sender reports; the microphone is placed by arrival time.
    events = [(T0_MS, sender_report(7, NTP0, 0))]
    vpk = packetize_vp8(video, 1)
    lost = next(p for p in vpk if int.from_bytes(p[4:8], "big") == video[10][0])
    events += [(T0_MS + int.from_bytes(p[4:8], "big") // 90, p) for p in vpk if p is not lost]
    events += [(T0_MS + i * 20, rtp(10 + i, ts, False, data, 111, MIC_SSRC)) for i, (ts, data) in enumerate(audio)]
    events.sort(key=lambda e: e[0])
    for now in replay(room.router, 1, events, T0_MS):
        room.router.poll(now)  # the router's periodic work, where a sink's keyframe needs become PLIs
        rec.drain(now)
    # A frame the muxer refuses (a timestamp past int64), as a corrupt sender clock could produce:
    # dropped alone and counted by the writer when the recording stops.
    mic = next(s.recorder.spec.key for s in rec.sinks.values() if s.recorder.spec.kind == "audio")
    rec.writer.write(mic, [(2**63, True, b"bad")])
    await rec.stop()
    assert rec.sinks == {} and not rec.writer.errors
    server.rooms.retire_stats(room.router.stats())  # the visit's room closes (what Room.close does)

    after = await scrape(server)

    def added(name: str, **labels: str) -> float:
        return after[sample(name, **labels)] - before.get(sample(name, **labels), 0.0)

    recorded = added("mediasrv_recording_frames_recorded_total")
    given_up = added("mediasrv_recording_frames_given_up_total")
    before_start = added("mediasrv_recording_frames_before_start_total")
    assert recorded == rec.stats["frames_recorded"] > 0
    assert given_up == rec.stats["frames_given_up"] > 0
    assert before_start == rec.stats["frames_before_start"] == 5  # audio sampled at T0..T0+80 ms
    # Every frame sent is accounted for: the lost frame 10 (its gap in the sequence numbers) and the
    # delta frames after it are given up, the camera resumes at the keyframe.
    assert recorded + given_up + before_start == len(video) + len(audio)
    assert added("mediasrv_recording_tracks_aligned_total", by="sender_report") == 1  # the camera
    assert added("mediasrv_recording_tracks_aligned_total", by="arrival") == 1  # the microphone
    assert added("mediasrv_recording_frames_rejected_total") == rec.stats["frames_rejected"] == 1
    for key in ("frames_dropped_backlog", "writer_errors", "sender_reports_distrusted"):  # none in this visit
        assert added(f"mediasrv_recording_{key}_total") == rec.stats[key] == 0, key
    requests = added("mediasrv_keyframe_requests_total", reason="recorder")
    assert requests >= 1 and requests == room.router.stats()["keyframe_requests_recorder"]
    assert added("mediasrv_keyframe_requests_total", reason="new_subscriber") == 0
    filed = await store.get(rid)
    assert filed is not None and filed["state"] == "ready" and len(filed["files"]) == 2
