"""Helpers for the control API tests: a real server on 127.0.0.1 over a temporary data directory."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer

from mediasrv.app import create_app
from mediasrv.auth import mint_token
from mediasrv.cli import listen_http
from mediasrv.config import Settings, prepare_data_dir

TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class Server:
    """A running mediasrv; `restart()` stops it and starts a new app on the same data dir and port."""

    settings: Settings
    server: TestServer | None = None
    session: aiohttp.ClientSession | None = None
    port: int | None = None
    apps: list[web.Application] = field(default_factory=list)
    host: str = "127.0.0.1"

    async def start(self) -> None:
        # Bound before the app starts, as `mediasrv serve` does: a restart takes its old port back,
        # which the new app's ephemeral ICE-TCP listener could otherwise be handed at startup.
        (sock,) = listen_http(self.host, self.port or 0)
        self.server = TestServer(create_app(self.settings), host=self.host, port=sock.getsockname()[1],
                                 socket_factory=lambda *_: sock)
        await self.server.start_server()
        self.port = self.server.port
        self.session = aiohttp.ClientSession(base_url=self.url)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.server is not None:
            await self.server.close()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def app(self) -> web.Application:
        assert self.server is not None
        return self.server.app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token(self, identity: str, role: str, room: str | None = None, ttl_s: int = 3600,
              now: float | None = None) -> str:
        return mint_token(self.settings.api_secret, identity=identity, role=role, room=room,
                          ttl_s=ttl_s, now=now)

    def auth(self, identity: str, role: str, room: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(identity, role, room)}"}

    async def request(self, method: str, path: str, *, who: tuple[str, str] | None = None,
                      headers: dict[str, str] | None = None, **kw: Any) -> aiohttp.ClientResponse:
        assert self.session is not None
        h = dict(headers or {})
        if who is not None:
            h.update(self.auth(*who))
        resp = await self.session.request(method, path, headers=h, **kw)
        await resp.read()
        return resp

    async def send_message(self, sender: tuple[str, str], recipient: str, subject: str = "hello",
                           body: str = "text") -> dict[str, Any]:
        resp = await self.request("POST", "/v1/messages", who=sender,
                                  json={"recipient": recipient, "subject": subject, "body": body})
        assert resp.status == 201, await resp.text()
        return await resp.json()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    settings = Settings(data_dir=data_dir, retention_purge_interval_s=0, **overrides)
    prepare_data_dir(settings)
    return settings


def tus_metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def checksum(algo: str, data: bytes) -> str:
    return f"{algo} {base64.b64encode(hashlib.new(algo, data).digest()).decode()}"


async def create_upload(srv: Server, who: tuple[str, str], message_id: str, length: int,
                        content_type: str = "application/octet-stream",
                        filename: str = "file.bin") -> aiohttp.ClientResponse:
    return await srv.request("POST", "/v1/uploads/", who=who, headers={
        **TUS, "Upload-Length": str(length),
        "Upload-Metadata": tus_metadata(message=message_id, filename=filename, content_type=content_type),
    })


async def upload_bytes(srv: Server, who: tuple[str, str], message_id: str, data: bytes,
                       content_type: str, filename: str = "file.bin") -> str:
    """Upload in one creation-with-upload request; returns the upload path."""
    resp = await srv.request("POST", "/v1/uploads/", who=who, data=data, headers={
        **TUS, "Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream",
        "Upload-Metadata": tus_metadata(message=message_id, filename=filename, content_type=content_type),
    })
    assert resp.status == 201, await resp.text()
    assert resp.headers["Upload-Offset"] == str(len(data))
    return resp.headers["Location"]


def make_media(fmt: str, vcodec: str, acodec: str, seconds: float = 2.0) -> bytes:
    """A short recording made with PyAV: a moving gradient plus a 440 Hz tone."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        video = out.add_stream(vcodec, rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream(acodec, rate=48000)
        audio.layout = "mono"
        frames = int(seconds * 25)
        for i in range(frames):
            img = np.zeros((120, 160, 3), np.uint8)
            img[:, :, 0] = (np.arange(160) + i * 4) % 256
            img[:, :, 1] = 128
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        n = audio.codec_context.frame_size or 1024
        pts = 0
        while pts < seconds * 48000:
            t = (np.arange(n) + pts) / 48000
            samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, pts
            for packet in audio.encode(frame):
                out.mux(packet)
            pts += n
        for packet in audio.encode():
            out.mux(packet)
    return buf.getvalue()
