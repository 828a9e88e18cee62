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

The figure of merit is the ratio (recorded in extra_info and the end-of-run table); nothing asserts
on timing. Run:
  .venv/bin/python -m pytest loadtest/benchmarks/test_bench_forwarding.py --benchmark-only -s
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import struct
import time
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


def _router(fanout: int) -> Any:
    router = mediasrv_native.Router(seed=1)
    router.add_publisher(PUB, 0xAAAA_0001, {})
    router.add_track(TRACK, PUB, "video", "0", VP8, [PUB_SSRC])
    for i in range(fanout):
        router.add_subscription(100 + i, TRACK, 2 + i, 0x5000_0000 + i, VP8, {})
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


def native_rate(fanout: int) -> tuple[float, int, float]:
    """(forwarded packets per CPU-second, forwarded, CPU seconds) of the native plane."""
    pub_key, pub_salt = _keys()
    rounds = ROUNDS[fanout]
    packets = _packets(PER_ROUND * rounds, pub_key, pub_salt)
    sinks = [_sink() for _ in range(fanout)]
    sender = _udp()
    plane = mediasrv_native.MediaPlane(["127.0.0.1"], 0, 1)
    try:
        router = _router(fanout)
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
