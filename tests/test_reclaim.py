"""Closed peer connections are freed soon after they close, not whenever the cyclic collector next
runs a full collection (rarely, on a busy server: the slow RSS growth of a soak); what that frees is
given back to the kernel (malloc_trim, rate-limited); and a published track starts no thread."""

from __future__ import annotations

import asyncio
import gc
import platform
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from mediasrv.api import appkeys as keys
from mediasrv.media import reclaim
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Only explicit collections: what a server sees between its rare full collections."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_a_closed_connection_is_collected_once_within_the_interval(no_automatic_gc: None) -> None:
    interval = 1.5
    r = reclaim.Reclaimer(min_interval_s=interval, settle_s=0.05)

    class Times(list[float]):
        def hook(self) -> None:  # runs at each collection
            self.append(time.monotonic())
    times = Times()
    r.before_collect(times.hook)

    async def collected(n: int) -> float:
        for _ in range(400):  # bounded: 20 s
            if r.collections >= n:
                return times[n - 1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no collection {n}")

    first = _Cycle()
    alive = weakref.ref(first)
    del first
    r.closed()
    r.closed()  # one collection covers both
    first_at = await collected(1)
    assert alive() is None and r.collections == 1
    second = _Cycle()
    alive = weakref.ref(second)
    del second
    r.closed()
    second_at = await collected(2)
    assert alive() is None and r.collections == 2
    # Not before the interval since the last collection (a loaded machine only makes it later).
    assert second_at - first_at >= interval - 0.01, second_at - first_at


def _publisher_pc(server: Any) -> weakref.ref[Any]:
    (session,) = server.app[keys.SESSIONS].values()
    return weakref.ref(session.participant.publisher.pc)


async def test_a_whip_session_ended_frees_its_peer_connection(
        server: Any, no_automatic_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reclaim.RECLAIMER, "min_interval_s", 0.0)
    monkeypatch.setattr(reclaim.RECLAIMER, "settle_s", 0.2)
    trims: list[None] = []
    monkeypatch.setattr(reclaim.RECLAIMER, "_trim", lambda: trims.append(None))
    monkeypatch.setattr(reclaim.RECLAIMER, "_last_trim", float("-inf"))
    before = reclaim.RECLAIMER.collections
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp",
               "Authorization": f"Bearer {server.token('pat-gc', 'patient', 'gc-room')}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/whip/gc-room", data=pc.localDescription.sdp, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            location = resp.headers["Location"]
        server_pc = _publisher_pc(server)
        async with http.delete(server.url + location, headers=headers) as resp:
            assert resp.status == 200
    await pc.close()
    for _ in range(40):
        if server_pc() is None:
            break
        await asyncio.sleep(0.05)
    assert server_pc() is None, "the server's closed RTCPeerConnection is still in memory"
    assert reclaim.RECLAIMER.collections > before
    assert trims, "the collection was not followed by malloc_trim"


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_malloc_trim_follows_a_collection_at_most_once_per_interval() -> None:
    clock = _Clock()
    trims: list[float] = []
    r = reclaim.Reclaimer(trim_interval_s=30.0, trim=lambda: trims.append(clock.t), clock=clock)
    r._collect()
    assert trims == [1000.0] and r.trims == 1, "the first collection is trimmed at once"
    clock.t = 1010.0
    r._collect()
    assert trims == [1000.0], "not again within the interval"
    pending = r._pending_trim
    assert pending is not None, "but scheduled for when it is due"
    assert pending.when() - asyncio.get_running_loop().time() == pytest.approx(20.0, abs=0.5)
    clock.t = 1020.0
    r._collect()
    assert r._pending_trim is pending, "one scheduled trim covers later collections"
    pending.cancel()
    clock.t = 1030.0
    r._trim_now()  # what the timer does when it fires
    assert trims == [1000.0, 1030.0] and r._pending_trim is None
    clock.t = 1061.0
    r._collect()
    assert trims == [1000.0, 1030.0, 1061.0] and r.trims == 3 and r.collections == 4


async def test_no_trim_without_glibc() -> None:
    r = reclaim.Reclaimer(trim=None)
    r._collect()
    assert r.collections == 1 and r.trims == 0 and r._pending_trim is None


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_malloc_trim_is_found_and_runs() -> None:
    assert reclaim.MALLOC_TRIM is not None
    reclaim.MALLOC_TRIM()


def _decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-decoder")]


async def test_a_published_track_starts_no_decoder_thread(server: Any) -> None:
    """The server takes received RTP at the DTLS transport (native plane or Python datapath), so
    aiortc's decoder thread per received track would only sit idle: it is not started."""
    threads_before = len(threading.enumerate())
    decoders_before = _decoder_threads()
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")  # sendonly: this client starts no decoder either
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp",
               "Authorization": f"Bearer {server.token('pat-thr', 'patient', 'thr-room')}"}
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"{server.url}/whip/thr-room", data=pc.localDescription.sdp, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            answer = await resp.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        (session,) = server.app[keys.SESSIONS].values()
        publisher = session.participant.publisher
        receivers = [t.receiver for t in publisher.pc.getTransceivers()]
        assert len(receivers) == 2
        for _ in range(400):  # aiortc calls receive() on each receiver once DTLS is up
            if publisher.connected and all(r._RTCRtpReceiver__started for r in receivers):
                break
            await asyncio.sleep(0.05)
        assert publisher.connected and all(r._RTCRtpReceiver__started for r in receivers)
        if publisher.host.plane is not None:  # the native datapath (the default)
            assert publisher.handed_over
        assert _decoder_threads() == decoders_before
        assert len(threading.enumerate()) <= threads_before + 1  # at most the default executor's
        tracks = [r.track for r in receivers]
        await publisher.close()
        for track in tracks:  # the track still ends with its receiver, as aiortc's decoder would end it
            with pytest.raises(MediaStreamError):
                await asyncio.wait_for(track.recv(), 5)
    finally:
        await pc.close()


def test_allocator_tuning_leaves_an_operators_environment_alone() -> None:
    assert not reclaim.tune_allocator({reclaim.M_ARENA_MAX: 1}, environ={"MALLOC_ARENA_MAX": "4"})
    assert not reclaim.tune_allocator({reclaim.M_ARENA_MAX: 1},
                                      environ={"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_allocator_tuning_applies_with_glibc() -> None:
    # 0 is glibc's own default for the arena limit: the test process is left as it was.
    assert reclaim.tune_allocator({reclaim.M_ARENA_MAX: 0}, environ={})


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freezing_start_up_objects_keeps_them_out_of_collections_and_frees_earlier_garbage() -> None:
    garbage = _Cycle()
    gone = weakref.ref(garbage)
    del garbage
    kept = _Cycle()
    try:
        frozen = reclaim.freeze_startup_objects()
        assert gone() is None, "garbage made before the freeze is collected, not frozen"
        assert frozen == gc.get_freeze_count() > 1000
        # A full collection no longer walks the frozen objects (`kept` among them).
        assert not any(o is kept for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())
