"""Janus 1.1.2 (Debian) as a comparison target: started locally with the VideoRoom plugin and the
HTTP transport only, and a signaling dialect for its REST API (publishers `joinandconfigure` with
an offer; subscribers `join` and answer Janus's offer, then `start`).

Janus refuses loopback interfaces for ICE, so inside the private namespace the harness puts
127.0.0.2 on a veth (`lgjanus0`) and lets Janus gather only there.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from mediasrv.loadtest.runner import Target
from mediasrv.loadtest.servers import free_port, stop_process, wait_http
from mediasrv.loadtest.signaling import Session, SignalingError, local_offer

JANUS_ADDRESS = "127.0.0.2"
VETH = "lgjanus0"
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
EVENT_TIMEOUT_S = 20.0


class JanusVideoRoom:
    """One Janus session per peer connection; rooms are created on first use."""

    name = "janus"

    def __init__(self, url: str) -> None:
        self.api = url.rstrip("/") + "/janus"
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.rooms: dict[str, int] = {}
        self.feeds: dict[tuple[str, str], int] = {}  # (room, identity) -> publisher feed id
        self._room_lock = asyncio.Lock()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets.token_hex(6)}
        async with self.http.post(f"{self.api}{path}", json=body) as r:
            reply = await r.json(content_type=None)
        if reply.get("janus") == "error":
            raise SignalingError(f"janus {body.get('janus')}: {reply.get('error')}")
        return reply

    async def _event(self, session: int, want: str) -> dict[str, Any]:
        """Long-poll the session until a plugin event carrying `want` (or a JSEP) arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVENT_TIMEOUT_S
        while loop.time() < deadline:
            async with self.http.get(f"{self.api}/{session}?maxev=10") as r:
                events = await r.json(content_type=None)
            for ev in events if isinstance(events, list) else [events]:
                data = ev.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise SignalingError(f"janus videoroom: {data['error']}")
                if data.get("videoroom") == want or (want == "jsep" and "jsep" in ev):
                    return ev
        raise SignalingError(f"janus: no {want!r} event within {EVENT_TIMEOUT_S:.0f} s")

    async def _handle(self) -> tuple[int, int]:
        session = (await self._post("", {"janus": "create"}))["data"]["id"]
        handle = (await self._post(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]
        return session, handle

    async def _room_id(self, session: int, handle: int, room: str) -> int:
        async with self._room_lock:
            if room not in self.rooms:
                number = zlib.crc32(room.encode()) & 0x3FFFFFFF or 1
                reply = await self._post(f"/{session}/{handle}", {"janus": "message", "body": {
                    "request": "create", "room": number, "publishers": 16, "bitrate": 4_000_000,
                    "audiocodec": "opus", "videocodec": "vp8", "permanent": False}})
                data = reply.get("plugindata", {}).get("data", {})
                if data.get("videoroom") != "created" and data.get("error_code") != 427:  # 427: exists
                    raise SignalingError(f"janus create room: {data}")
                self.rooms[room] = number
            return self.rooms[room]

    async def publish(self, pc: RTCPeerConnection, room: str, identity: str) -> Session:
        session, handle = await self._handle()
        number = await self._room_id(session, handle, room)
        offer = await local_offer(pc)
        await self._post(f"/{session}/{handle}", {"janus": "message", "body": {
            "request": "joinandconfigure", "room": number, "ptype": "publisher", "display": identity,
            "audio": True, "video": True}, "jsep": {"type": "offer", "sdp": offer}})
        ev = await self._event(session, "jsep")
        feed = ev["plugindata"]["data"].get("id")
        if feed is None:
            joined = await self._event(session, "joined")
            feed = joined["plugindata"]["data"]["id"]
        self.feeds[(room, identity)] = feed
        await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "answer"))
        return Session(extra={"session": session, "handle": handle})

    async def subscribe(self, pc: RTCPeerConnection, room: str, viewer: str, target: str) -> Session:
        feed = self.feeds.get((room, target))
        if feed is None:
            raise SignalingError(f"no Janus feed for {target!r} in {room!r}")
        session, handle = await self._handle()
        await self._post(f"/{session}/{handle}", {"janus": "message", "body": {
            "request": "join", "room": self.rooms[room], "ptype": "subscriber",
            "streams": [{"feed": feed}]}})
        ev = await self._event(session, "jsep")
        await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._post(f"/{session}/{handle}", {"janus": "message", "body": {"request": "start"},
                                                 "jsep": {"type": "answer", "sdp": pc.localDescription.sdp}})
        return Session(extra={"session": session, "handle": handle})

    async def close(self, session: Session) -> None:
        sid = session.extra.get("session")
        if sid is not None:
            with contextlib.suppress(aiohttp.ClientError, SignalingError):
                await self._post(f"/{sid}", {"janus": "destroy"})

    async def aclose(self) -> None:
        await self.http.close()


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@contextlib.contextmanager
def janus_address() -> Any:
    """127.0.0.2 on a veth, for Janus's ICE; removed again if we created it."""
    if JANUS_ADDRESS in _ip("-o", "addr", "show").stdout:
        yield
        return
    steps = [("link", "add", VETH, "type", "veth", "peer", "name", VETH + "p"),
             ("addr", "add", f"{JANUS_ADDRESS}/32", "dev", VETH),
             ("link", "set", VETH, "up"), ("link", "set", VETH + "p", "up")]
    for step in steps:
        done = _ip(*step)
        if done.returncode != 0:
            _ip("link", "del", VETH)
            raise RuntimeError(f"cannot set up {JANUS_ADDRESS} for Janus (needs root inside "
                               f"`unshare -n`): ip {' '.join(step)}: {done.stderr.strip()}")
    try:
        yield
    finally:
        _ip("link", "del", VETH)


def write_config(folder: Path, http_port: int) -> None:
    plugins, transports = folder / "plugins", folder / "transports"
    plugins.mkdir(parents=True, exist_ok=True)
    transports.mkdir(exist_ok=True)
    # Only the plugin and transport we use: faster start, nothing else listening.
    (plugins / "libjanus_videoroom.so").symlink_to(LIB / "plugins" / "libjanus_videoroom.so")
    (transports / "libjanus_http.so").symlink_to(LIB / "transports" / "libjanus_http.so")
    (folder / "janus.jcfg").write_text(f"""general: {{
  configs_folder = "{folder}"
  plugins_folder = "{plugins}"
  transports_folder = "{transports}"
  events_folder = "{folder / 'none'}"
  loggers_folder = "{folder / 'none'}"
  debug_level = 3
  session_timeout = 0
}}
media: {{
  rtp_port_range = "30000-40000"
}}
nat: {{
  ice_enforce_list = "{VETH}"
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
  json = "plain"
  base_path = "/janus"
  http = true
  port = {http_port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{
  admin_http = false
}}
""")


@contextlib.asynccontextmanager
async def local_janus(workdir: Path | None = None) -> AsyncIterator[Target]:
    binary = shutil.which("janus")
    if binary is None:
        raise RuntimeError("Janus is not installed: `apt-get install janus` (Debian 1.1.2) for the comparison")
    tmp = tempfile.TemporaryDirectory(prefix="loadtest-janus-") if workdir is None else None
    base = Path(tmp.name) if tmp else workdir
    assert base is not None
    port = free_port()
    write_config(base / "conf", port)
    log_path = base / "janus.log"
    with janus_address():
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([binary, "-F", str(base / "conf"), "-C", str(base / "conf" / "janus.jcfg")],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_http(f"{url}/janus/info", proc, log_path)
            yield Target(name="janus", url=url, pid=proc.pid, make_signaling=lambda: JanusVideoRoom(url),
                         client_addresses=(JANUS_ADDRESS,))
        finally:
            stop_process(proc)
            if tmp:
                tmp.cleanup()
