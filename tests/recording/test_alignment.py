"""Presentation times from RTCP sender reports (mediasrv/recording/pipeline.py), without a network.

Each test builds what a router sink would hand over — frames (extended timestamp, keyframe, data,
arrival_ms) and the sync point (sender NTP seconds, extended timestamp) of the last sender report —
and checks where the recorder places the frames on the recording's timeline.
"""

from __future__ import annotations

from mediasrv.recording.muxer import TrackSpec
from mediasrv.recording.pipeline import ARRIVAL, SENDER_REPORT, SenderClock, TrackRecorder

AUDIO = TrackSpec("a", "audio", "opus", 48000)
VIDEO = TrackSpec("v", "video", "VP8", 90000)
ORIGIN = 10_000  # recording start, server ms


class Writer:
    """Collects what the muxer would be given."""

    def __init__(self) -> None:
        self.frames: dict[str, list[tuple[int, bool, bytes]]] = {}
        self.ended: set[str] = set()

    def add_track(self, spec: TrackSpec) -> None:
        self.frames[spec.key] = []

    def write(self, key: str, frames: list[tuple[int, bool, bytes]]) -> None:
        self.frames[key] += frames

    def end_track(self, key: str) -> None:
        self.ended.add(key)

    def seconds(self, key: str, rate: int) -> list[float]:
        return [pts / rate for pts, _, _ in self.frames[key]]


class Sender:
    """One participant's encoder: its wallclock (NTP seconds) and each track's random RTP base."""

    def __init__(self, ntp_at_zero: float, delay_ms: float) -> None:
        self.ntp_at_zero = ntp_at_zero  # sender NTP time when the server clock reads 0 ms
        self.delay_ms = delay_ms  # network + buffering delay of the least-delayed frame

    def ntp(self, server_ms: float) -> float:
        return self.ntp_at_zero + server_ms / 1000

    def frame(self, base: int, rate: int, sampled_ms: float, extra_delay_ms: float = 0,
              key: bool = False) -> tuple[int, bool, bytes, int]:
        ts = base + round(sampled_ms * rate / 1000)
        return ts, key, b"x", int(sampled_ms + self.delay_ms + extra_delay_ms)

    def sync(self, base: int, rate: int, sampled_ms: float) -> tuple[float, int]:
        return self.ntp(sampled_ms), base + round(sampled_ms * rate / 1000)


def run(tracks: list[tuple[TrackRecorder, list[tuple[int, bool, bytes, int]], tuple[float, int] | None]],
        until_ms: int, step_ms: int = 20) -> None:
    """Delivers each track's frames at their arrival time, ticking every `step_ms`, then ends."""
    now = ORIGIN
    while now <= until_ms:
        for rec, frames, sync in tracks:
            n = 0  # frames leave in order, like from a jitter buffer
            while n < len(frames) and frames[n][3] <= now:
                n += 1
            rec.push(frames[:n], sync, now)
            del frames[:n]
        now += step_ms
    for rec, frames, _ in tracks:
        rec.finish(frames, now)


def test_audio_and_video_of_one_sender_line_up_as_sampled_despite_different_rtp_bases_and_delays() -> None:
    w, clock = Writer(), SenderClock()
    alice = Sender(ntp_at_zero=3_900_000_000.25, delay_ms=30)
    a_base, v_base = 2**32 + 1_234_567, 2**32 + 3_000_000_000
    arec = TrackRecorder(AUDIO, w, ORIGIN, clock, audio_follows_video=False)
    vrec = TrackRecorder(VIDEO, w, ORIGIN, clock)
    # both sampled from 10.5 s server time on; video frames arrive 70 ms later than audio (pacing)
    audio = [alice.frame(a_base, 48000, 10_500 + 20 * i) for i in range(200)]
    video = [alice.frame(v_base, 90000, 10_500 + 40 * i, extra_delay_ms=70, key=i == 0) for i in range(100)]
    run([(vrec, video, alice.sync(v_base, 90000, 9_000)), (arec, audio, alice.sync(a_base, 48000, 9_700))],
        until_ms=15_000)
    assert arec.alignment == vrec.alignment == SENDER_REPORT
    a, v = w.seconds("a", 48000), w.seconds("v", 90000)
    assert len(a) == 200 and len(v) == 100
    # sampled at 10.5 s, first heard with the least delay (30 ms): 0.53 s after the origin
    assert abs(a[0] - 0.530) < 0.001
    for i in range(100):  # video frame i and audio frame 2i were sampled together
        assert abs(v[i] - a[2 * i]) < 0.001
    assert w.ended == {"a", "v"}


def test_offset_comes_from_the_least_delayed_frame() -> None:
    w, clock = Writer(), SenderClock()
    bob = Sender(ntp_at_zero=100.0, delay_ms=20)
    base = 5000
    # extra delay of each frame; the second is the fastest (the sink hands frames over in order)
    jitter = [35, 0, 60, 12, 90] * 20
    audio = [bob.frame(base, 48000, 10_100 + 20 * i, extra_delay_ms=jitter[i]) for i in range(100)]
    rec = TrackRecorder(AUDIO, w, ORIGIN, clock)
    run([(rec, audio, bob.sync(base, 48000, 10_000))], until_ms=13_000)
    assert clock.offset_ms is not None and abs(clock.offset_ms - (-100_000.0 + 20)) < 1
    got = w.seconds("a", 48000)
    # every frame sits at its sampling time + the smallest delay, whatever its own delay was
    assert [round(s, 3) for s in got] == [round(0.120 + 0.020 * i, 3) for i in range(100)]


def test_participants_with_different_sender_clocks_share_the_server_timeline() -> None:
    w = Writer()
    alice = Sender(ntp_at_zero=3_900_000_000.0, delay_ms=25)
    carol = Sender(ntp_at_zero=3_900_003_600.7, delay_ms=25)  # her clock is an hour and 0.7 s ahead
    a = TrackRecorder(AUDIO, w, ORIGIN, SenderClock())
    c = TrackRecorder(TrackSpec("c", "audio", "opus", 48000), w, ORIGIN, SenderClock())
    # both speak at server time 11.0 s (clap), heard with the same least delay
    af = [alice.frame(7, 48000, 10_600 + 20 * i) for i in range(100)]
    cf = [carol.frame(2**40, 48000, 10_600 + 20 * i) for i in range(100)]
    run([(a, af, alice.sync(7, 48000, 10_000)), (c, cf, carol.sync(2**40, 48000, 10_000))], until_ms=14_000)
    assert w.seconds("a", 48000) == w.seconds("c", 48000)
    assert abs(w.seconds("a", 48000)[20] - 1.025) < 0.001  # sampled at 11.0 s


def test_known_round_trips_put_participants_on_different_paths_at_their_capture_time() -> None:
    w = Writer()
    far = Sender(ntp_at_zero=3_900_000_000.0, delay_ms=100)  # on a 200 ms round trip
    near = Sender(ntp_at_zero=3_900_003_600.7, delay_ms=10)  # on a 20 ms round trip
    far_clock, near_clock = SenderClock(), SenderClock()
    far_clock.one_way_ms, near_clock.one_way_ms = 100.0, 10.0
    f = TrackRecorder(AUDIO, w, ORIGIN, far_clock)
    n = TrackRecorder(TrackSpec("n", "audio", "opus", 48000), w, ORIGIN, near_clock)
    # both speak at server time 11.0 s (clap)
    ff = [far.frame(7, 48000, 10_600 + 20 * i) for i in range(100)]
    nf = [near.frame(2**40, 48000, 10_600 + 20 * i) for i in range(100)]
    run([(f, ff, far.sync(7, 48000, 10_000)), (n, nf, near.sync(2**40, 48000, 10_000))], until_ms=14_000)
    got_far, got_near = w.seconds("a", 48000), w.seconds("n", 48000)
    assert abs(got_far[20] - 1.0) < 0.001 and abs(got_near[20] - 1.0) < 0.001  # sampled at 11.0 s
    assert max(abs(a - b) for a, b in zip(got_far, got_near, strict=True)) < 0.001
    # Without round trips each would sit at its own least delay: 90 ms apart.
    w2 = Writer()
    f2 = TrackRecorder(AUDIO, w2, ORIGIN, SenderClock())
    n2 = TrackRecorder(TrackSpec("n", "audio", "opus", 48000), w2, ORIGIN, SenderClock())
    ff = [far.frame(7, 48000, 10_600 + 20 * i) for i in range(100)]
    nf = [near.frame(2**40, 48000, 10_600 + 20 * i) for i in range(100)]
    run([(f2, ff, far.sync(7, 48000, 10_000)), (n2, nf, near.sync(2**40, 48000, 10_000))], until_ms=14_000)
    assert abs(w2.seconds("a", 48000)[20] - w2.seconds("n", 48000)[20] - 0.090) < 0.001


def test_timestamps_across_the_32_bit_wrap_keep_their_spacing() -> None:
    w, clock = Writer(), SenderClock()
    dan = Sender(ntp_at_zero=50.0, delay_ms=10)
    base = 2 * 2**32 - 90000  # extended: one second of video before the second wrap
    video = [dan.frame(base, 90000, 10_000 + 33 * i, key=i == 0) for i in range(90)]
    sync = dan.sync(base, 90000, 10_000)  # the report came before the wrap
    rec = TrackRecorder(VIDEO, w, ORIGIN, clock)
    run([(rec, video, sync)], until_ms=14_000)
    got = w.frames["v"]
    assert len(got) == 90
    gaps = {b[0] - a[0] for a, b in zip(got, got[1:], strict=False)}
    assert gaps <= {2970}, gaps  # 33 ms in the 90 kHz clock, also where the wrap was crossed


def test_without_sender_reports_a_track_falls_back_to_arrival_time_after_a_bounded_wait() -> None:
    w = Writer()
    rec = TrackRecorder(AUDIO, w, ORIGIN, SenderClock(), sync_wait_ms=2000)
    frames = [(960 * i, False, b"x", ORIGIN + 200 + 20 * i) for i in range(200)]
    now, held_until = ORIGIN, None
    while frames and frames[0][3] <= ORIGIN + 3000:
        now += 20
        due = [f for f in frames if f[3] <= now]
        del frames[:len(due)]
        rec.push(due, None, now)
        if held_until is None and w.frames["a"]:
            held_until = now
    rec.finish(frames, now)
    assert rec.alignment == ARRIVAL
    assert held_until == ORIGIN + 200 + 2000  # frames waited for a report, then no longer
    got = w.seconds("a", 48000)
    assert len(got) == 200 and abs(got[0] - 0.2) < 0.001 and abs(got[-1] - (0.2 + 199 * 0.02)) < 0.001


def test_a_participants_audio_starts_with_their_first_video_frame() -> None:
    w, clock = Writer(), SenderClock()
    eve = Sender(ntp_at_zero=1000.0, delay_ms=40)
    arec = TrackRecorder(AUDIO, w, ORIGIN, clock)
    vrec = TrackRecorder(VIDEO, w, ORIGIN, clock)
    audio = [eve.frame(0, 48000, 10_000 + 20 * i) for i in range(150)]
    # the first keyframe (asked for when the sink was added) was sampled 0.45 s in
    video = [eve.frame(0, 90000, 10_450 + 33 * i, key=i == 0) for i in range(75)]
    run([(arec, audio, eve.sync(0, 48000, 9_000)), (vrec, video, eve.sync(0, 90000, 9_000))],
        until_ms=14_000)
    a, v = w.seconds("a", 48000), w.seconds("v", 90000)
    assert abs(a[0] - v[0]) <= 0.020  # within one audio frame
    assert arec.stats["frames_before_video"] + arec.stats["frames_before_origin"] + len(a) == 150


def test_an_audio_only_participant_is_not_held() -> None:
    w = Writer()
    gus = Sender(ntp_at_zero=1000.0, delay_ms=40)
    rec = TrackRecorder(AUDIO, w, ORIGIN, SenderClock())
    run([(rec, [gus.frame(0, 48000, 10_000 + 20 * i) for i in range(50)], gus.sync(0, 48000, 9_000))],
        until_ms=12_000)
    assert len(w.frames["a"]) == 50 and w.seconds("a", 48000)[0] == 0.04


def test_audio_sampled_before_the_origin_is_dropped_and_pts_never_go_negative() -> None:
    w, clock = Writer(), SenderClock()
    fay = Sender(ntp_at_zero=77.0, delay_ms=15)
    rec = TrackRecorder(AUDIO, w, ORIGIN, clock)
    audio = [fay.frame(0, 48000, 9_900 + 20 * i) for i in range(50)]
    run([(rec, audio, fay.sync(0, 48000, 9_000))], until_ms=12_000)
    got = w.frames["a"]
    assert rec.stats["frames_before_origin"] == 5  # sampled 9.90..9.98 s, + 15 ms < 10.0 s
    assert len(got) == 45 and got[0][0] == 48000 * 15 // 1000  # sampled at 10.0 s
