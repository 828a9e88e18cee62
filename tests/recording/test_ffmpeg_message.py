"""A patient leaves a video message by publishing with ffmpeg's WHIP muxer; the recipient gets a
playable message when the publisher ends."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import av
import pytest

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


async def _get(server, path, token):
    async with aiohttp.ClientSession() as s, \
            s.get(server.url + path, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else await r.read())


async def test_ffmpeg_whip_message_becomes_playable(server):
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    sender = server.token("pat-m", "patient")  # messaging token: no room claim
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "warning", "-re",
        "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", "6", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast",
        "-tune", "zerolatency", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p",
        "-c:a", "libopus", "-ar", "48000", "-ac", "2",
        "-f", "whip", "-authorization", sender, f"{server.url}/whip/messages/dr-inbox",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")

    recipient = server.token("dr-inbox", "clinician")

    async def ready_message():
        status, inbox = await _get(server, "/v1/messages", recipient)
        assert status == 200
        items = inbox["messages"]
        if items and items[0]["attachments"] and all(
                a["state"] in ("ready", "rejected") for a in items[0]["attachments"]):
            return items[0]
        return None

    message = None
    for _ in range(60):  # bounded: at most ~30 s
        message = await ready_message()
        if message:
            break
        await asyncio.sleep(0.5)
    assert message is not None, "no recorded message reached the inbox"
    assert message["sender"] == "pat-m"
    kinds = {}
    for att in message["attachments"]:
        assert att["state"] == "ready", att
        status, data = await _get(server, att["download_url"], recipient)
        assert status == 200
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams[0]
            kinds[stream.type] = sum(1 for _ in container.decode(stream))
            duration = float(stream.duration * stream.time_base) if stream.duration else \
                container.duration / 1e6
            assert 4.0 < duration < 8.0, duration
    assert kinds.get("video", 0) > 50 and kinds.get("audio", 0) > 100, kinds
