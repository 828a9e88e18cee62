"""Forwarding cost over ICE-TCP against direct UDP, in the same run, on the same native plane.

One room, one publisher -> SUBSCRIBERS subscribers, all handed over with known SRTP keys (what the
server does after DTLS): once with every peer on UDP, once with every peer on an ICE-TCP connection
(RFC 4571 frames; each connection authenticated by a Binding request first, as a browser's is).
The publisher sends RATE_PPS SRTP packets a second of PAYLOAD bytes, one send per packet in both
cases (a browser writes each packet on its own); the subscribers read everything. Server CPU per
forwarded packet = CPU time of the plane's one worker thread (it reads, unprotects, routes,
protects and writes) / packets sent to subscribers, each transport alternated ROUNDS times. Nothing
asserts on timing; run it the way the other benchmarks are run:
  unshare -n -- bash -c 'ip link set lo up && exec .venv/bin/python -m pytest \
      benchmarks/test_bench_ice_tcp.py --benchmark-only -s'
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import threading
import time
from typing import Any

import pytest
from aioice import stun

from mediasrv.media.ice_tcp import frame

mediasrv_native = pytest.importorskip("mediasrv_native")

PROFILE = "SRTP_AEAD_AES_128_GCM"
KEY_LEN, SALT_LEN = mediasrv_native.srtp_key_lengths(PROFILE)
PASSWORD = "bench-ice-password-22chars"
SUBSCRIBERS = 4
RATE_PPS = 4000
PAYLOAD = 1100
DURATION_S = 3.0
ROUNDS = 2
SSRC = 0x1CE7CB
CODEC = [(111, "opus", 48000, None)]


class Peer:
    """A remote endpoint on UDP or on an ICE-TCP connection, with the far side's SRTP context."""

    def __init__(self, plane: Any, tcp: bool, ufrag: str) -> None:
        self.tcp = tcp
        self.our = os.urandom(KEY_LEN), os.urandom(SALT_LEN)
        self.theirs = os.urandom(KEY_LEN), os.urandom(SALT_LEN)
        self.srtp = mediasrv_native.SrtpSession(PROFILE, *self.our, *self.theirs)
        if tcp:
            [(self.socket, host, port)] = plane.tcp_sockets()
            plane.register_ice_session(self.socket, ufrag, PASSWORD)
            self.sock = socket.create_connection((host, port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
            msg.attributes["USERNAME"] = f"{ufrag}:bench"
            msg.add_message_integrity(PASSWORD.encode())
            before = plane.stats()["to_python"]
            self.sock.sendall(frame(bytes(msg)))
            while plane.stats()["to_python"] == before:
                time.sleep(0.005)
            plane.take_datagrams()
            self.target: Any = None
        else:
            self.socket = 0
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.target = tuple(plane.sockets()[0])
        self.received_bytes = 0

    def register(self, plane: Any, transport: int, room: int) -> None:
        plane.register_peer(transport, room, self.socket, *self.sock.getsockname(), PROFILE,
                            *self.theirs, *self.our)

    def send(self, datagram: bytes) -> None:
        if self.tcp:
            self.sock.sendall(frame(datagram))
        else:
            self.sock.sendto(datagram, self.target)

    def drain(self, stop: threading.Event) -> None:
        buf = bytearray(1 << 16)
        self.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                self.received_bytes += self.sock.recv_into(buf)
            except (TimeoutError, OSError):
                continue


def _run(plane: Any, room: int, tcp: bool) -> dict[str, float]:
    router = mediasrv_native.Router(seed=room)
    pub_id = room * 100
    router.add_publisher(pub_id, 0xAA00 + room, {})
    router.add_track(pub_id, pub_id, "audio", "0", CODEC, [SSRC])
    plane.attach_room(room, router)
    publisher = Peer(plane, tcp, f"p{room}x")
    publisher.register(plane, pub_id, room)
    subs = []
    for i in range(SUBSCRIBERS):
        sub = Peer(plane, tcp, f"s{room}x{i}")
        router.add_subscription(pub_id + 50 + i, pub_id, pub_id + 1 + i, 0x5000 + 16 * room + i, CODEC, {})
        sub.register(plane, pub_id + 1 + i, room)
        subs.append(sub)
    packets = [publisher.srtp.protect_rtp(struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, seq * 960, SSRC)
                                          + bytes(PAYLOAD)) for seq in range(1, int(RATE_PPS * DURATION_S) + 1)]
    stop = threading.Event()
    readers = [threading.Thread(target=s.drain, args=(stop,), daemon=True) for s in subs]
    for r in readers:
        r.start()
    cpu0 = plane.stats()["worker_cpu_seconds"][0]
    out0 = sum(plane.peer_stats(pub_id + 1 + i)["rtp_out"] for i in range(SUBSCRIBERS))
    start = time.monotonic()
    burst = 20
    for n in range(0, len(packets), burst):
        for p in packets[n:n + burst]:
            publisher.send(p)
        delay = start + (n + burst) / RATE_PPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    time.sleep(0.5)  # let the plane finish and its CPU figure update
    cpu = plane.stats()["worker_cpu_seconds"][0] - cpu0
    forwarded = sum(plane.peer_stats(pub_id + 1 + i)["rtp_out"] for i in range(SUBSCRIBERS)) - out0
    stop.set()
    for r in readers:
        r.join()
    framed = len(packets[0]) + (2 if tcp else 0)
    delivered = sum(s.received_bytes for s in subs) / framed
    for peer in [publisher, *subs]:
        peer.sock.close()
    plane.detach_room(room)
    return {"sent": len(packets), "forwarded": forwarded, "delivered": delivered, "cpu_s": cpu,
            "us_per_forwarded": 1e6 * cpu / forwarded if forwarded else float("nan")}


def test_forwarding_cost_over_ice_tcp_vs_udp(benchmark):
    results: dict[str, list[dict[str, float]]] = {"udp": [], "tcp": []}

    def run() -> None:
        plane = mediasrv_native.MediaPlane(["127.0.0.1"], 0, 1, tcp_port=0)
        try:
            room = 1
            for _ in range(ROUNDS):
                for kind in ("udp", "tcp"):
                    results[kind].append(_run(plane, room, kind == "tcp"))
                    room += 1
            assert plane.stats()["dropped"]["tcp_write_overflow"] == 0
        finally:
            plane.close()

    benchmark.pedantic(run, rounds=1, iterations=1)
    summary = {}
    for kind, runs in results.items():
        expected = sum(r["sent"] for r in runs) * SUBSCRIBERS
        summary[kind] = {
            "us_per_forwarded": statistics.median(r["us_per_forwarded"] for r in runs),
            "forwarded_ratio": sum(r["forwarded"] for r in runs) / expected,
            "delivered_ratio": sum(r["delivered"] for r in runs) / expected,
        }
    ratio = summary["tcp"]["us_per_forwarded"] / summary["udp"]["us_per_forwarded"]
    benchmark.extra_info.update(summary)
    benchmark.extra_info["tcp_over_udp_cost"] = ratio
    print(f"\n1 -> {SUBSCRIBERS} at {RATE_PPS} pps, {PAYLOAD}-byte payloads, one worker thread:")
    for kind, s in summary.items():
        print(f"  {kind}: {s['us_per_forwarded']:.2f} us server CPU per forwarded packet,"
              f" forwarded {100 * s['forwarded_ratio']:.1f}%, delivered {100 * s['delivered_ratio']:.1f}%")
    print(f"  ICE-TCP / UDP cost per forwarded packet: {ratio:.2f}x")
    for s in summary.values():
        assert s["forwarded_ratio"] > 0.95
