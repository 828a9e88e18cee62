"""Forwarding through a TURN relay vs direct UDP: server CPU per forwarded packet, same run.

The whole server 1→1 on the native datapath, twice: a WHIP publisher and a WHEP viewer (aiortc peers
in child processes) first reach the media port directly over UDP, then both with
`iceTransportPolicy: relay` through a real coturn (the config `mediasrv turn-config` renders, relaying
UDP on loopback). A relayed peer's packets arrive at the one UDP port from coturn's relay address and
are handed over to the native plane like any other, so the server's cost per packet should not
change; coturn's own CPU per packet (read from /proc) is reported beside it, as what the relay hop
costs the operator. Nothing asserts on timing. Run inside `unshare -n` (loopback ICE, coturn on 443):
  unshare -n -- bash -c 'ip link set lo up && exec .venv/bin/python -m pytest \
      benchmarks/test_bench_turn.py --benchmark-only -s'
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.test_bench_forwarding import PACKET_SIZE, _negotiate, _silent_video, _wait_event

pytest.importorskip("mediasrv_native")
if not shutil.which("turnserver") and not Path("/usr/bin/turnserver").exists():
    pytest.skip("coturn not installed (scripts/bootstrap.sh with MEDIASRV_BOOTSTRAP_TEST=1)", allow_module_level=True)

PACKETS = 40_000
SECRET = "bench-turn-secret-0123456789abcdef0123456789"


def _config(ice: list[dict[str, Any]] | None) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    if not ice:
        return RTCConfiguration()
    return RTCConfiguration(iceServers=[RTCIceServer(urls=s["urls"], username=s["username"],
                                                     credential=s["credential"]) for s in ice],
                            iceTransportPolicy=RTCIceTransportPolicy.RELAY)


async def _viewer_main(url: str, token: str, ice: Any, events: Any) -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection(_config(ice))
    pc.addTransceiver("video", direction="recvonly")
    await _negotiate(pc, url, token)
    events.put("viewer ready")
    await asyncio.Event().wait()


def _viewer(url: str, token: str, ice: Any, events: Any) -> None:
    import uvloop

    uvloop.run(_viewer_main(url, token, ice, events))


async def _publisher_main(url: str, token: str, ice: Any, events: Any, go: Any) -> None:
    from aiortc import RTCPeerConnection

    from mediasrv.media import aiortc_glue

    pc = RTCPeerConnection(_config(ice))
    tr = pc.addTransceiver(_silent_video(), direction="sendonly")
    await _negotiate(pc, url, token)
    pt = next(c.payloadType for c in aiortc_glue.negotiated_codecs(tr) if c.mimeType.lower() == "video/vp8")
    ssrc = aiortc_glue.sender_ssrc(tr.sender)
    dtls = tr.sender.transport
    events.put("publisher ready")
    await asyncio.get_running_loop().run_in_executor(None, go.get)
    events.put("publishing")
    for seq in range(PACKETS):
        descriptor = b"\x10\x00" if seq == 0 else b"\x00\x01"
        header = struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, (seq // 4) * 3000, ssrc)
        await aiortc_glue.send_srtp(dtls, header + descriptor + bytes(PACKET_SIZE - 12 - len(descriptor)))
        if seq % 32 == 0:
            await asyncio.sleep(0.001)  # a paced sender: the relay's socket buffers are the kernel's default
    events.put("sent")
    await asyncio.sleep(1.0)
    await pc.close()


def _publisher(url: str, token: str, ice: Any, events: Any, go: Any) -> None:
    import uvloop

    uvloop.run(_publisher_main(url, token, ice, events, go))


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(mode: str, data_dir: Path) -> dict[str, float]:
    from aiohttp import web

    from mediasrv.api import appkeys as keys
    from mediasrv.app import create_app
    from mediasrv.auth import mint_token
    from mediasrv.config import load_settings, prepare_data_dir
    from mediasrv.media.turn_credentials import issue
    from tests.turn_relay import Coturn

    settings = load_settings(env={}, data_dir=data_dir, media_workers=1, turn_secret=SECRET,
                             turn_urls=["turn:127.0.0.1:3478?transport=udp"])
    prepare_data_dir(settings)
    relay = Coturn(settings, listen="127.0.0.1", workdir=data_dir / "coturn").start() if mode == "turn" else None
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    ctx = multiprocessing.get_context("spawn")
    events, go = ctx.Queue(), ctx.Queue()

    def token(identity: str, role: str) -> str:
        return mint_token(settings.api_secret, identity=identity, role=role, room="bench", ttl_s=600)

    def ice(identity: str) -> Any:
        cred = issue(settings, identity, int(time.time()) + 600, time.time())
        return [cred.ice_server()] if relay is not None and cred is not None else None

    publisher = ctx.Process(target=_publisher, args=(f"{url}/whip/bench", token("cam", "clinician"), ice("cam"),
                                                     events, go))
    viewer = ctx.Process(target=_viewer, args=(f"{url}/whep/bench/cam", token("viewer", "observer"), ice("viewer"),
                                               events))
    try:
        publisher.start()
        await _wait_event(events, "publisher ready")
        viewer.start()
        await _wait_event(events, "viewer ready")
        manager = runner.app[keys.ROOMS]
        room = manager.get("bench")
        router = room.router
        for _ in range(200):
            if any(s.active for p in room.participants.values() for s in p.subscriptions.values()):
                break
            await asyncio.sleep(0.05)
        from mediasrv.media.candidate_stats import count_peers

        classes = {k: n for k, n in count_peers(t.pc for t in room.transports.values()).items() if n}
        handed_over = all(t.handed_over for t in room.transports.values())
        go.put("go")
        await _wait_event(events, "publishing")

        def cpu() -> float:
            plane = manager.plane
            workers = sum(plane.native.stats()["worker_cpu_seconds"]) if plane is not None else 0.0
            return time.thread_time() + workers

        relay_pid = relay.proc.pid if relay is not None and relay.proc is not None else None
        cpu0, out0 = cpu(), router.stats()["rtp_packets_out"]
        relay0 = _proc_cpu(relay_pid) if relay_pid else 0.0
        await _wait_event(events, "sent", timeout=180)
        last = -1
        while (now := router.stats()["rtp_packets_out"]) != last:
            last = now
            await asyncio.sleep(0.3)
        used = cpu() - cpu0
        forwarded = router.stats()["rtp_packets_out"] - out0
        relay_used = (_proc_cpu(relay_pid) - relay0) if relay_pid else 0.0
        return {"forwarded": forwarded, "server_cpu_s": used, "relay_cpu_s": relay_used,
                "handed_over": float(handed_over), "classes": classes}  # type: ignore[dict-item]
    finally:
        for p in (publisher, viewer):
            if p.pid is not None:
                p.terminate()
                p.join(5)
        await runner.cleanup()
        if relay is not None:
            relay.stop()


def test_forwarding_through_turn_vs_direct_udp(benchmark, speedup_report, tmp_path):
    import uvloop

    result: dict[str, dict[str, Any]] = {}

    def run() -> None:
        result["direct"] = uvloop.run(_run("direct", tmp_path / "direct"))
        result["turn"] = uvloop.run(_run("turn", tmp_path / "turn"))

    benchmark.pedantic(run, rounds=1, iterations=1)
    direct, turn = result["direct"], result["turn"]
    assert direct["forwarded"] > 0 and turn["forwarded"] > 0
    assert turn["handed_over"] and ("relay", "udp") in turn["classes"], turn["classes"]
    per_direct = direct["server_cpu_s"] / direct["forwarded"]
    per_turn = turn["server_cpu_s"] / turn["forwarded"]
    relay_per = turn["relay_cpu_s"] / turn["forwarded"]
    benchmark.extra_info.update({
        "direct_server_us_per_pkt": round(per_direct * 1e6, 2), "turn_server_us_per_pkt": round(per_turn * 1e6, 2),
        "coturn_us_per_forwarded_pkt": round(relay_per * 1e6, 2), "ratio_turn_over_direct": round(per_turn / per_direct, 2),
        "direct_forwarded": direct["forwarded"], "turn_forwarded": turn["forwarded"],
    })
    print(f"\nserver CPU per forwarded packet: direct UDP {per_direct * 1e6:.2f} us ({direct['forwarded']} pkts), "
          f"through TURN {per_turn * 1e6:.2f} us ({turn['forwarded']} pkts), ratio {per_turn / per_direct:.2f}; "
          f"coturn {relay_per * 1e6:.2f} us per forwarded packet (both legs relayed); classes {turn['classes']}")
    speedup_report("server CPU/pkt, TURN relay vs direct UDP", per_turn, per_direct)
