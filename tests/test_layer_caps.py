"""set_max_resolution over the room protocol: validated, remembered per viewer and track, and handed
to the router when the subscription is active (the layer switching itself is tested in Rust and with
browsers in tests/browser/test_simulcast.py)."""

from __future__ import annotations

import aiohttp

from mediasrv.rooms.models import Track


async def _join(server, room, identity, role):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{server.url}/rooms/{room}/ws")
    await ws.send_json({"type": "join", "token": server.token(identity, role, room), "request_id": "j"})
    return session, ws, await ws.receive_json()


async def test_caps_are_checked_and_kept(server):
    s, ws, joined = await _join(server, "caps", "viewer", "observer")
    assert joined["type"] == "joined"
    room = server.rooms.get("caps")
    for bad in ({"track": 3, "height": 0}, {"track": 3, "height": 5000}, {"track": 3, "height": "360"},
                {"track": 3, "height": True}, {"track": "3", "height": 360}):
        await ws.send_json({"type": "set_max_resolution", "request_id": "b", **bad})
        err = await ws.receive_json()
        assert (err["type"], err["code"], err["request_id"]) == ("error", "invalid_message", "b"), bad
    await ws.send_json({"type": "set_max_resolution", "request_id": "u", "track": 999, "height": 360})
    err = await ws.receive_json()
    assert (err["code"], err["request_id"]) == ("unknown_track", "u")

    # A track of the room (no media needed): the cap is kept for the viewer, and lifted with null.
    track = Track(id=4242, owner="someone", kind="video", source="camera", mid="1",
                  transport=None)  # type: ignore[arg-type]
    room.tracks[track.id] = track
    await ws.send_json({"type": "set_max_resolution", "request_id": "ok", "track": 4242, "height": 360})
    assert await ws.receive_json() == {"type": "max_resolution_set", "request_id": "ok", "track": 4242,
                                       "height": 360}
    assert room.participants["viewer"].max_heights == {4242: 360}
    await ws.send_json({"type": "set_max_resolution", "request_id": "n", "track": 4242, "height": None})
    assert (await ws.receive_json())["height"] is None
    assert room.participants["viewer"].max_heights == {}
    del room.tracks[track.id]
    await s.close()
