"""Garbage at the media port during a visit: what each dropped datagram costs the server, and whether
the visit beside it notices. Same run, same server: a visit alone first, then the same visit with a
flood of one kind at the one UDP media port.

A separate sender process sends FLOOD_PPS datagrams a second from 64 source addresses that never
took part in ICE (127.0.x.y, all local inside the namespace):

- media_unknown_source: SRTP-shaped datagrams (first byte 0x80), dropped by the Rust worker.
- dtls_unknown_source: DTLS-shaped (first byte 22), dropped by the Rust worker.
- stun_unknown_ufrag: well-formed Binding requests naming a session that does not exist; parsed and
  dropped by the Python demultiplexer (`unknown_source`).
- stun_bad_integrity: Binding requests naming a connected session's ufrag (read from its SDP
  answer, as an on-path attacker could) with a wrong MESSAGE-INTEGRITY (`stun_integrity`).

Server CPU per garbage datagram = (CPU in the flooded window - the visit's own CPU at the rate of
the window alone) / datagrams sent in it. The visit is 1 publisher -> 1 viewer (audio + 1 Mbit/s
video) from the load generator; its loss and delivered packets a second are reported beside the
no-flood figures. Nothing asserts on timing; run it the way the other benchmarks are run:
  unshare -n -- bash -c 'ip link set lo up && exec .venv/bin/python -m pytest \
      benchmarks/test_bench_flood.py --benchmark-only -s'
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mediasrv_native")

from aioice import stun  # noqa: E402
from aiortc import RTCPeerConnection  # noqa: E402

FLOOD_PPS = 20_000
SOURCES = 64
DURATION_S = 6.0
# Each kind and the drop reason its datagrams must be counted under.
KINDS = {"media_unknown_source": "unknown_source", "dtls_unknown_source": "unknown_source",
         "stun_unknown_ufrag": "unknown_source", "stun_bad_integrity": "stun_integrity"}


def _stun(username: str, password: bytes | None) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["ICE-CONTROLLING"] = 1
    if password is not None:
        msg.add_message_integrity(password)
    msg.add_fingerprint()
    return bytes(msg)


def _payloads(kind: str, ufrag: str) -> list[bytes]:
    """A few distinct datagrams of one kind, cycled by the sender."""
    if kind == "media_unknown_source":
        return [b"\x80\x60" + os.urandom(198) for _ in range(16)]
    if kind == "dtls_unknown_source":
        return [b"\x16\xfe\xfd" + os.urandom(97) for _ in range(16)]
    if kind == "stun_unknown_ufrag":
        return [_stun(f"{secrets.token_hex(4)}:peer", b"not-the-password") for _ in range(16)]
    return [_stun(f"{ufrag}:peer{i}", b"not-the-password-%d" % i) for i in range(16)]


def _flood(target: tuple[str, int], payloads: list[bytes], pps: int, stop: Any, sent: Any) -> None:
    socks = []
    for i in range(SOURCES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.{100 + i // 200}.{2 + i % 200}", 0))
        s.setblocking(False)
        socks.append(s)
    per_tick, tick = max(1, pps // 100), 0.01
    n, next_t = 0, time.monotonic()
    while not stop.is_set():
        for _ in range(per_tick):
            try:
                socks[n % SOURCES].sendto(payloads[n % len(payloads)], target)
            except OSError:
                pass  # a full send buffer: that datagram is simply not sent (and not counted)
            else:
                n += 1
        next_t += tick
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sent.value = n
    for s in socks:
        s.close()


async def _session_ufrag(url: str, secret: str) -> tuple[str, RTCPeerConnection]:
    """A connected WHIP session: its ufrag is what a spoofed check would name."""
    import aiohttp
    from aiortc import RTCSessionDescription

    from mediasrv.auth import mint_token
    from mediasrv.loadtest.signaling import local_offer
    from mediasrv.loadtest.visit import SilentTrack, wait_connected
    from mediasrv.media.host_addresses import configure_host_addresses

    configure_host_addresses(["127.0.0.1"])  # aioice skips loopback by itself
    pc = RTCPeerConnection()
    pc.addTransceiver(SilentTrack("audio"), direction="sendonly")
    offer = await local_offer(pc)
    token = mint_token(secret, identity="flood-victim", role="patient", room="flood-room", ttl_s=600)
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/whip/flood-room", data=offer.encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}) as r:
        answer = await r.text()
        assert r.status == 201, answer
    match = re.search(r"a=ice-ufrag:(\S+)", answer)
    assert match
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await wait_connected(pc)
    return match.group(1), pc


async def _drops(url: str, secret: str) -> dict[str, float]:
    import aiohttp

    from mediasrv.auth import mint_token

    token = mint_token(secret, identity="bench", role="admin", ttl_s=600)
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
    out: dict[str, float] = {}
    for m in re.finditer(r'^mediasrv_media_datagrams_dropped_total\{reason="([a-z_]+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


async def _measure(data_dir: Path) -> dict[str, Any]:
    from mediasrv.loadtest.runner import LoadOptions, run_load
    from mediasrv.loadtest.servers import free_port, local_server

    media_port = free_port()
    os.environ["MEDIASRV_MEDIA_UDP_PORT"] = str(media_port)
    os.environ["MEDIASRV_MEDIA_WORKERS"] = "1"
    results: dict[str, Any] = {}
    try:
        async with local_server("mediasrv", data_dir) as target:
            assert target.api_secret
            ufrag, victim = await _session_ufrag(target.url, target.api_secret)
            opts = LoadOptions(rooms=1, publishers_per_room=1, subscribers_per_room=1,
                               duration_s=DURATION_S, ramp_s=0.0, progress=False)
            results["none"] = await run_load(opts, target)
            ctx = multiprocessing.get_context("spawn")
            for i, kind in enumerate(KINDS):
                stop, sent = ctx.Event(), ctx.Value("q", 0)
                before = await _drops(target.url, target.api_secret)
                sender = ctx.Process(target=_flood, args=(("127.0.0.1", media_port), _payloads(kind, ufrag),
                                                          FLOOD_PPS, stop, sent), daemon=True)
                t0 = time.monotonic()
                sender.start()
                opts.seed = 2 + i
                report = await run_load(opts, target)
                stop.set()
                await asyncio.to_thread(sender.join, 10)
                elapsed = time.monotonic() - t0
                after = await _drops(target.url, target.api_secret)
                report["flood_sent"] = sent.value
                report["flood_pps"] = sent.value / elapsed
                report["drops"] = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                results[kind] = report
            await victim.close()
    finally:
        for k in ("MEDIASRV_MEDIA_UDP_PORT", "MEDIASRV_MEDIA_WORKERS"):
            os.environ.pop(k, None)
    return results


def _summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    base = results["none"]
    base_rate = base["server_cpu_s_steady"] / base["steady_s"]
    base_pps = base["forwarded_packets_steady"] / base["steady_s"]
    rows = []
    for kind in KINDS:
        r = results[kind]
        garbage = r["flood_pps"] * r["steady_s"]
        extra_cpu = r["server_cpu_s_steady"] - base_rate * r["steady_s"]
        rows.append({
            "kind": kind,
            "flood_pps": round(r["flood_pps"]),
            "server_us_per_garbage_datagram": 1e6 * extra_cpu / garbage if garbage else None,
            "server_cpu_pct": 100 * r["server_cpu_s_steady"] / r["steady_s"],
            "visit_delivered_ratio": (r["forwarded_packets_steady"] / r["steady_s"]) / base_pps,
            "visit_loss_pct": r["loss_pct"],
            "drops": {k: v for k, v in r["drops"].items() if v},
        })
    return rows


def test_media_port_flood_cost_and_visit_beside_it(benchmark, tmp_path):
    results: dict[str, Any] = {}

    def run() -> None:
        results.update(asyncio.run(_measure(tmp_path / "srv")))

    benchmark.pedantic(run, rounds=1, iterations=1)
    base = results["none"]
    assert base["setup_failures"] == 0 and base["forwarded_packets_steady"] > 0
    rows = _summary(results)
    benchmark.extra_info["no_flood"] = {"server_cpu_pct": 100 * base["server_cpu_s_steady"] / base["steady_s"],
                                        "loss_pct": base["loss_pct"]}
    benchmark.extra_info["floods"] = rows
    print(f"\nno flood: server cpu {benchmark.extra_info['no_flood']['server_cpu_pct']:.1f}%"
          f"  loss {base['loss_pct']:.2f}%")
    for row in rows:
        print(f"{row['kind']:<22} {row['flood_pps']:>6} pps  {row['server_us_per_garbage_datagram']:6.2f} us/datagram"
              f"  server cpu {row['server_cpu_pct']:5.1f}%  visit delivered x{row['visit_delivered_ratio']:.3f}"
              f"  loss {row['visit_loss_pct']:.2f}%  drops {row['drops']}")
    # The flood was dropped under the reason of its kind (and no session took it as its own).
    for row in rows:
        assert row["drops"].get(KINDS[row["kind"]], 0) > 0.5 * row["flood_pps"], row
