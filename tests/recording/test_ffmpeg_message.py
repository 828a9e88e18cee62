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
    # One attachment: the sender's audio and video in one playable file.
    (att,) = message["attachments"]
    assert att["state"] == "ready", att
    assert att["content_type"] == "video/x-matroska" and att["filename"] == "recorded-message.mkv"
    assert sorted(att["media"]["codecs"]) == ["h264", "opus"], att["media"]
    status, data = await _get(server, att["download_url"], recipient)
    assert status == 200
    with av.open(io.BytesIO(data)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert container.duration is not None, "the file states its duration"
        assert 4.0 < container.duration / 1e6 < 8.0, container.duration
        decoded = {"video": 0, "audio": 0}
        for packet in container.demux():
            decoded[packet.stream.type] += len(packet.decode())
    assert decoded["video"] > 50 and decoded["audio"] > 100, decoded
