"""Forwarded packets per CPU-second: the native media plane vs a Python per-packet path, same run.

Both sides forward the same 1.2 KB SRTP (AEAD_AES_128_GCM) VP8 packets, sent over real UDP sockets
on loopback by a separate sender process, through the same router configuration (1 publisher →
1, 10 or 50 subscribers, each behind its own UDP socket):

- native: `mediasrv_native.MediaPlane` with one worker; recvmmsg → SRTP unprotect → route →
  SRTP protect per subscriber → sendmmsg, no Python. CPU = the worker thread's CPU time.
- python: the skeleton's per-packet structure in its cheapest form — a blocking socket loop that
  calls pylibsrtp unprotect, `Router.route_rtp`, pylibsrtp protect and `sendto` per packet. The real
  aiortc-hooked path adds ~20-27 µs a packet (aioice, asyncio queue, DTLS transport), so the ratios
  here understate the gain over the skeleton. CPU = that thread's CPU time.

A third test runs the whole server for 1→1: a WHIP publisher and a WHEP viewer, both aiortc peers
in child processes, the server on `datapath = "python"` (the skeleton's aiortc-hooked path) and
then on `"native"`; CPU = the server's event-loop thread plus its media workers. It needs loopback
ICE, so run it inside `unshare -n` like the browser tests.

The figure of merit is the ratio (recorded in extra_info and the end-of-run table); nothing asserts
on timing. Run:
  .venv/bin/python -m pytest loadtest/benchmarks/test_bench_forwarding.py --benchmark-only -s
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

mediasrv_native = pytest.importorskip("mediasrv_native")
pylibsrtp = pytest.importorskip("pylibsrtp")

PROFILE = "SRTP_AEAD_AES_128_GCM"
PACKET_SIZE = 1200
PUB_SSRC = 0x1234_5678
PUB, TRACK, ROOM = 1, 10, 1
VP8 = [(96, "VP8", 90_000, None)]
# Each round queues PER_ROUND packets in the server's socket while it does not read, then lets it
# drain them: both sides are measured in the saturated regime (full batches), where CPU matters.
PER_ROUND = 8_000
ROUNDS = {1: 8, 10: 3, 50: 1}
KEY_LEN, SALT_LEN = mediasrv_native.srtp_key_lengths(PROFILE)


def _keys() -> tuple[bytes, bytes]:
    return os.urandom(KEY_LEN), os.urandom(SALT_LEN)


def _packets(n: int, key: bytes, salt: bytes) -> list[bytes]:
    """n protected VP8 packets of PACKET_SIZE bytes; the first starts a keyframe."""
    session = mediasrv_native.SrtpSession(PROFILE, key, salt, key, salt)
    out = []
    for seq in range(n):
        descriptor = b"\x10\x00" if seq == 0 else b"\x00\x01"  # S bit; VP8 P bit clear = keyframe
        header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, (seq // 4) * 3000, PUB_SSRC)
        body = descriptor + bytes(PACKET_SIZE - 12 - len(descriptor))
        out.append(session.protect_rtp(header + body))
    return out


def _send(sock: socket.socket, packets: list[bytes], to: tuple[str, int]) -> None:
    for p in packets:
        with contextlib.suppress(OSError):
            sock.sendto(p, to)


def _router(fanout: int, transport_cc: bool = False) -> Any:
    """1 → fanout. With `transport_cc` every subscriber negotiated it: each packet sent is stamped
    with a transport-wide sequence number and recorded by that subscriber's estimator, and the
    allocation runs at each poll (the sinks send no feedback, so feedback parsing is not in it)."""
    router = mediasrv_native.Router(seed=1)
    router.add_publisher(PUB, 0xAAAA_0001, {})
    router.add_track(TRACK, PUB, "video", "0", VP8, [PUB_SSRC])
    ext = {"transport-cc": 5} if transport_cc else {}
    for i in range(fanout):
        router.add_subscription(100 + i, TRACK, 2 + i, 0x5000_0000 + i, VP8, ext)
    return router


def _udp(rcvbuf: int = 32 << 20) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # room for a whole round (needs CAP_NET_ADMIN, as the native plane's socket has)
        s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    return s


def _sink() -> socket.socket:
    """A subscriber's socket. Nobody reads it: with a small buffer the kernel drops what does not
    fit and recycles the memory at once, as it would after handing a datagram to a NIC (a big
    unread buffer would make every send allocate fresh kernel memory instead)."""
    return _udp(rcvbuf=64 * 1024)


def _send_round(sock: socket.socket, packets: list[bytes], to: tuple[str, int]) -> None:
    """Send from a child process, so the sender's CPU is nobody's measurement."""
    proc = multiprocessing.get_context("fork").Process(target=_send, args=(sock, packets, to))
    proc.start()
    proc.join()


def native_rate(fanout: int, transport_cc: bool = False) -> tuple[float, int, float]:
    """(forwarded packets per CPU-second, forwarded, CPU seconds) of the native plane."""
    pub_key, pub_salt = _keys()
    rounds = ROUNDS[fanout]
    packets = _packets(PER_ROUND * rounds, pub_key, pub_salt)
    sinks = [_sink() for _ in range(fanout)]
    sender = _udp()
    plane = mediasrv_native.MediaPlane(["127.0.0.1"], 0, 1)
    try:
        router = _router(fanout, transport_cc)
        plane.attach_room(ROOM, router)
        out_key, out_salt = _keys()
        plane.register_peer(PUB, ROOM, 0, *sender.getsockname(), PROFILE, out_key, out_salt, pub_key, pub_salt)
        for i, sink in enumerate(sinks):
            plane.register_peer(2 + i, ROOM, 0, *sink.getsockname(), PROFILE, out_key, out_salt, *_keys())
        cpu = 0.0
        for r in range(rounds):
            plane.set_receiving(False)
            time.sleep(0.05)
            _send_round(sender, packets[r * PER_ROUND:(r + 1) * PER_ROUND], plane.sockets()[0])
            cpu0 = plane.stats()["worker_cpu_seconds"][0]
            plane.set_receiving(True)
            last = -1
            while (now := plane.stats()["datagrams_in"]) != last:  # until the socket is drained
                last = now
                time.sleep(0.2)
            cpu += plane.stats()["worker_cpu_seconds"][0] - cpu0
        forwarded = router.stats()["rtp_packets_out"]
        return forwarded / cpu, forwarded, cpu
    finally:
        plane.close()
        sender.close()
        for s in sinks:
            s.close()


def python_rate(fanout: int) -> tuple[float, int, float]:
    """(forwarded packets per CPU-second, forwarded, CPU seconds) of the Python per-packet loop."""
    pub_key, pub_salt = _keys()
    rounds = ROUNDS[fanout]
    packets = _packets(PER_ROUND * rounds, pub_key, pub_salt)
    sinks = [_sink() for _ in range(fanout)]
    addrs = {2 + i: s.getsockname() for i, s in enumerate(sinks)}
    server, sender = _udp(), _udp()
    server.setblocking(False)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
    rx = pylibsrtp.Session(pylibsrtp.Policy(key=pub_key + pub_salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                            srtp_profile=profile))
    out_key, out_salt = _keys()
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=out_key + out_salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                            srtp_profile=profile))
    router = _router(fanout)
    forwarded = 0
    cpu = 0.0
    try:
        for r in range(rounds):
            _send_round(sender, packets[r * PER_ROUND:(r + 1) * PER_ROUND], server.getsockname())
            cpu0 = time.thread_time()
            while True:
                try:
                    data = server.recv(2048)
                except BlockingIOError:
                    break
                plain = rx.unprotect(data)
                for transport, rtp in router.route_rtp(PUB, plain, int(time.monotonic() * 1000)):
                    server.sendto(tx.protect(rtp), addrs[transport])
                    forwarded += 1
            cpu += time.thread_time() - cpu0
    finally:
        for s in (server, sender, *sinks):
            s.close()
    return forwarded / cpu, forwarded, cpu


@pytest.mark.parametrize("fanout", [1, 10, 50])
def test_forwarded_packets_per_cpu_second(benchmark, speedup_report, fanout):
    result: dict[str, tuple[float, int, float]] = {}

    def run() -> None:
        result["python"] = python_rate(fanout)
        result["native"] = native_rate(fanout)

    benchmark.pedantic(run, rounds=1, iterations=1)
    (py_pps, py_fwd, py_cpu), (nat_pps, nat_fwd, nat_cpu) = result["python"], result["native"]
    assert py_fwd > 0 and nat_fwd > 0
    benchmark.extra_info.update({
        "fanout": fanout, "python_pps_per_cpu_s": round(py_pps), "native_pps_per_cpu_s": round(nat_pps),
        "python_forwarded": py_fwd, "python_cpu_s": round(py_cpu, 3),
        "native_forwarded": nat_fwd, "native_cpu_s": round(nat_cpu, 3), "ratio": round(nat_pps / py_pps, 1),
    })
    print(f"\n1→{fanout}: python {py_pps:,.0f} pps/CPU-s ({py_fwd} in {py_cpu:.2f} s), "
          f"native {nat_pps:,.0f} pps/CPU-s ({nat_fwd} in {nat_cpu:.2f} s), ratio {nat_pps / py_pps:.1f}x")
    speedup_report(f"forward 1.2KB SRTP 1→{fanout} (CPU s/packet)", 1 / py_pps, 1 / nat_pps,
                   target=10 if fanout == 1 else None)


def test_bandwidth_estimation_cost_per_forwarded_packet(benchmark, speedup_report):
    """1→50 on the native plane, subscribers without transport-cc (the baseline) and with it
    (stamping, each estimator's send history, the allocation at each poll), same run, alternated
    so drift on a shared machine hits both."""
    runs: dict[bool, list[tuple[float, int, float]]] = {False: [], True: []}

    def run() -> None:
        for _ in range(2):
            for twcc in (False, True):
                runs[twcc].append(native_rate(50, transport_cc=twcc))

    benchmark.pedantic(run, rounds=1, iterations=1)
    base = sum(r[2] for r in runs[False]) / sum(r[1] for r in runs[False])  # CPU s per packet
    with_bwe = sum(r[2] for r in runs[True]) / sum(r[1] for r in runs[True])
    assert all(r[1] > 0 for rs in runs.values() for r in rs)
    extra = with_bwe / base - 1
    benchmark.extra_info.update({"fanout": 50, "cpu_us_per_packet_without": round(base * 1e6, 3),
                                 "cpu_us_per_packet_with_transport_cc": round(with_bwe * 1e6, 3),
                                 "extra_cpu_per_packet": round(extra, 3)})
    print(f"\n1→50 per forwarded packet: {base * 1e6:.3f} µs without transport-cc, {with_bwe * 1e6:.3f} µs "
          f"with it ({extra:+.1%}; target under +15 %)")
    speedup_report("1→50 with bandwidth estimation (CPU s/packet)", base, with_bwe)


# --- the whole server, 1→1: WHIP publisher and WHEP viewer are aiortc peers in child processes ----

STACK_PACKETS = 60_000


def _silent_video() -> Any:
    from aiortc import MediaStreamTrack

    class Silent(MediaStreamTrack):
        kind = "video"

        async def recv(self) -> Any:  # never yields a frame: no encoder is created
            await asyncio.Event().wait()

    return Silent()


async def _negotiate(pc: Any, url: str, token: str) -> None:
    import aiohttp
    from aiortc import RTCSessionDescription

    from mediasrv.media.host_addresses import configure_host_addresses

    configure_host_addresses(["127.0.0.1"])  # aioice leaves loopback out on its own
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http, http.post(
        url, data=pc.localDescription.sdp,
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    ) as r:
        if r.status != 201:
            raise RuntimeError(f"{url}: {r.status} {await r.text()}")
        answer = await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    for _ in range(400):
        if pc.connectionState == "connected":
            return
        await asyncio.sleep(0.025)
    raise RuntimeError(f"{url}: not connected ({pc.connectionState})")


async def _viewer_main(url: str, token: str, events: Any) -> None:
    from aiortc import RTCPeerConnection

    from mediasrv.media import aiortc_glue

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await _negotiate(pc, url, token)
    received = 0

    async def count(data: bytes, arrival_time_ms: int) -> None:  # no depacketizing, no decoding
        nonlocal received
        received += 1

    aiortc_glue.intercept_rtp(pc.getTransceivers()[0].receiver.transport, count)
    events.put("viewer ready")
    await asyncio.Event().wait()  # runs until the parent terminates it


def _viewer(url: str, token: str, events: Any) -> None:
    import uvloop

    uvloop.run(_viewer_main(url, token, events))


async def _publisher_main(url: str, token: str, events: Any, go: Any) -> None:
    from aiortc import RTCPeerConnection

    from mediasrv.media import aiortc_glue

    pc = RTCPeerConnection()
    tr = pc.addTransceiver(_silent_video(), direction="sendonly")
    await _negotiate(pc, url, token)
    codecs = aiortc_glue.negotiated_codecs(tr)
    pt = next(c.payloadType for c in codecs if c.mimeType.lower() == "video/vp8")
    ssrc = aiortc_glue.sender_ssrc(tr.sender)
    dtls = tr.sender.transport
    events.put("publisher ready")
    await asyncio.get_running_loop().run_in_executor(None, go.get)
    events.put("publishing")
    for seq in range(STACK_PACKETS):
        descriptor = b"\x10\x00" if seq == 0 else b"\x00\x01"
        header = struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, (seq // 4) * 3000, ssrc)
        await aiortc_glue.send_srtp(dtls, header + descriptor + bytes(PACKET_SIZE - 12 - len(descriptor)))
        if seq % 64 == 0:
            await asyncio.sleep(0)  # let RTCP and consent checks through
    events.put("sent")
    await asyncio.sleep(1.0)
    await pc.close()


def _publisher(url: str, token: str, events: Any, go: Any) -> None:
    import uvloop

    uvloop.run(_publisher_main(url, token, events, go))


async def _wait_event(events: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = events.get_nowait()
        except queue.Empty:
            await asyncio.sleep(0.02)
            continue
        if got == what:
            return
    raise RuntimeError(f"child never reported {what!r}")


async def _stack_rate(datapath: str, data_dir: Path) -> tuple[float, int, float]:
    from aiohttp import web

    from mediasrv.api import appkeys as keys
    from mediasrv.app import create_app
    from mediasrv.auth import mint_token
    from mediasrv.config import load_settings, prepare_data_dir

    settings = load_settings(env={}, data_dir=data_dir, datapath=datapath, media_workers=1)
    prepare_data_dir(settings)
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    ctx = multiprocessing.get_context("spawn")
    events, go = ctx.Queue(), ctx.Queue()

    def token(identity: str, role: str) -> str:
        return mint_token(settings.api_secret, identity=identity, role=role, room="bench", ttl_s=600)

    viewer = ctx.Process(target=_viewer, args=(f"{url}/whep/bench/cam", token("viewer", "observer"), events))
    publisher = ctx.Process(target=_publisher, args=(f"{url}/whip/bench", token("cam", "clinician"), events, go))
    try:
        publisher.start()
        await _wait_event(events, "publisher ready")
        viewer.start()
        await _wait_event(events, "viewer ready")
        manager = runner.app[keys.ROOMS]
        room = manager.get("bench")
        router = room.router
        for _ in range(200):  # the viewer's subscription is forwarding once its transport is up
            if any(s.active for p in room.participants.values() for s in p.subscriptions.values()):
                break
            await asyncio.sleep(0.05)
        go.put("go")
        await _wait_event(events, "publishing")

        def cpu() -> float:
            plane = manager.plane
            workers = sum(plane.native.stats()["worker_cpu_seconds"]) if plane is not None else 0.0
            return time.thread_time() + workers

        cpu0, out0 = cpu(), router.stats()["rtp_packets_out"]
        await _wait_event(events, "sent", timeout=120)
        last = -1
        while (now := router.stats()["rtp_packets_out"]) != last:  # until the server is drained
            last = now
            await asyncio.sleep(0.3)
        used = cpu() - cpu0
        forwarded = router.stats()["rtp_packets_out"] - out0
        return forwarded / used, forwarded, used
    finally:
        for p in (publisher, viewer):
            if p.pid is not None:
                p.terminate()
                p.join(5)
        await runner.cleanup()


def stack_rate(datapath: str, data_dir: Path) -> tuple[float, int, float]:
    import uvloop

    return uvloop.run(_stack_rate(datapath, data_dir))


def test_whole_server_1_to_1_aiortc_path_vs_native_plane(benchmark, speedup_report, tmp_path):
    """The issue's baseline: the skeleton's aiortc-hooked path, through the real server."""
    result: dict[str, tuple[float, int, float]] = {}

    def run() -> None:
        result["python"] = stack_rate("python", tmp_path / "py")
        result["native"] = stack_rate("native", tmp_path / "native")

    benchmark.pedantic(run, rounds=1, iterations=1)
    (py_pps, py_fwd, py_cpu), (nat_pps, nat_fwd, nat_cpu) = result["python"], result["native"]
    assert py_fwd > 0 and nat_fwd > 0
    benchmark.extra_info.update({
        "python_pps_per_cpu_s": round(py_pps), "native_pps_per_cpu_s": round(nat_pps),
        "python_forwarded": py_fwd, "native_forwarded": nat_fwd, "ratio": round(nat_pps / py_pps, 1),
    })
    print(f"\nwhole server 1→1: aiortc path {py_pps:,.0f} pps/CPU-s ({py_fwd} in {py_cpu:.2f} s), "
          f"native {nat_pps:,.0f} pps/CPU-s ({nat_fwd} in {nat_cpu:.2f} s), ratio {nat_pps / py_pps:.1f}x")
    speedup_report("whole server 1→1, aiortc path vs native (CPU s/pkt)", 1 / py_pps, 1 / nat_pps, target=10)
