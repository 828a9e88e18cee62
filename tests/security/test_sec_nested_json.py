"""Deeply nested JSON (small body, huge depth) is a 400 / protocol error, never a 500 or a dead session."""

from __future__ import annotations

DEEP = "[" * 20_000 + "]" * 20_000


async def test_http_json_bodies_nested_too_deep_are_400(srv) -> None:
    admin = ("ops", "admin")
    for path in ("/v1/vitals", "/v1/rooms", "/v1/tokens"):
        r = await srv.request("POST", path, who=admin, data='{"a":' * 5_000 + "1" + "}" * 5_000,
                              headers={"Content-Type": "application/json"})
        assert r.status == 400, path
        assert (await r.json())["error"]["code"] == "invalid_json"


async def test_room_protocol_nested_json_is_an_error_event_and_the_session_goes_on(srv) -> None:
    assert srv.session is not None
    ws = await srv.session.ws_connect(f"/rooms/r1/ws?access_token={srv.token('pat', 'patient', 'r1')}")
    await ws.send_json({"type": "join", "request_id": "j"})
    assert (await ws.receive_json())["type"] == "joined"
    await ws.send_str(DEEP)
    err = await ws.receive_json()
    assert (err["type"], err["code"]) == ("error", "invalid_json")
    await ws.send_json({"type": "ping", "request_id": "p"})
    assert (await ws.receive_json()) == {"type": "pong", "request_id": "p"}
    await ws.close()
