"""Room WebSocket rate limit: a flooding participant is refused, counted and finally disconnected."""

from __future__ import annotations

import aiohttp
import pytest

from mediasrv.api import ratelimit
from mediasrv.api.ratelimit import RATE_LIMITED, MessageRateLimit
from mediasrv.api.room_protocol import CLOSE_RATE_LIMITED


def test_bucket_admits_a_burst_then_the_rate() -> None:
    limit = MessageRateLimit(rate_per_s=2.0, burst=3, close_after=10, now=100.0)
    assert [limit.admit(100.0) for _ in range(4)] == [True, True, True, False]
    assert limit.admit(100.5)  # 0.5 s at 2/s refilled one token
    assert not limit.admit(100.5)
    assert [limit.admit(102.0) for _ in range(4)] == [True, True, True, False]  # refill capped at burst


def test_strikes_are_forgiven_over_time_and_a_flood_exhausts_them() -> None:
    limit = MessageRateLimit(rate_per_s=1.0, burst=1, close_after=3, now=0.0)
    assert limit.admit(0.0)
    assert not limit.admit(0.0) and not limit.admit(0.0)
    assert not limit.exhausted
    assert limit.admit(2.0)  # two seconds: one token back and both strikes forgiven
    assert limit.strikes == 0
    for _ in range(3):
        limit.admit(2.0)
    assert limit.exhausted


def test_a_clock_stepping_back_mints_no_tokens() -> None:
    limit = MessageRateLimit(rate_per_s=1.0, burst=1, close_after=5, now=10.0)
    assert limit.admit(10.0)
    assert not limit.admit(5.0) and not limit.admit(10.5)


def test_zero_rate_is_unlimited_and_bad_parameters_are_refused() -> None:
    limit = MessageRateLimit(rate_per_s=0.0, burst=1, close_after=1, now=0.0)
    assert all(limit.admit(0.0) for _ in range(1000))
    with pytest.raises(ValueError):
        MessageRateLimit(rate_per_s=-1.0, burst=1, close_after=1, now=0.0)
    with pytest.raises(ValueError):
        MessageRateLimit(rate_per_s=1.0, burst=0, close_after=1, now=0.0)


async def _metric(session: aiohttp.ClientSession, url: str, token: str, name: str) -> float:
    async with session.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_chat_flood_is_refused_with_rate_limited_then_closed_with_4429(server, monkeypatch) -> None:
    srv = server
    # A refill of one message per 1000 s and no forgiveness: however slow the machine, nothing
    # refills while the test runs. Sessions read the settings when they open.
    monkeypatch.setattr(ratelimit, "STRIKES_FORGIVEN_PER_S", 0.0)
    srv.settings.room_ws_messages_per_s = 0.001
    srv.settings.room_ws_burst = 3
    srv.settings.room_ws_close_after_refused = 3
    admin = srv.token("ops", "admin")
    session = aiohttp.ClientSession()
    try:
        refused_before = await _metric(session, srv.url, admin, "mediasrv_room_messages_rate_limited_total")
        closed_before = RATE_LIMITED["closed"]
        listener = await session.ws_connect(f"{srv.url}/rooms/r1/ws")
        await listener.send_json({"type": "join", "token": srv.token("dr", "clinician", "r1")})
        assert (await listener.receive_json())["type"] == "joined"
        ws = await session.ws_connect(f"{srv.url}/rooms/r1/ws")
        await ws.send_json({"type": "join", "token": srv.token("pat", "patient", "r1")})  # message 1
        assert (await ws.receive_json())["type"] == "joined"
        assert (await listener.receive_json())["type"] == "participant_joined"
        for i in range(4):  # messages 2, 3 pass; 4 and 5 are refused
            await ws.send_json({"type": "chat", "text": f"hello {i}", "request_id": f"c{i}"})
        seen = [await ws.receive_json() for _ in range(4)]
        assert [e["type"] for e in seen[:2]] == ["chat", "chat"]
        assert [(e["type"], e["code"], e["request_id"]) for e in seen[2:]] == [
            ("error", "rate_limited", "c2"), ("error", "rate_limited", "c3")]
        # the other participant got only the chats that were handled
        got = [await listener.receive_json() for _ in range(2)]
        assert [e["text"] for e in got] == ["hello 0", "hello 1"]
        await ws.send_json({"type": "ping"})  # the third refused message in a row closes the socket
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == CLOSE_RATE_LIMITED
        left = await listener.receive_json()
        assert (left["type"], left["identity"]) == ("participant_left", "pat")
        refused_after = await _metric(session, srv.url, admin, "mediasrv_room_messages_rate_limited_total")
        assert refused_after - refused_before == 3
        assert RATE_LIMITED["closed"] - closed_before == 1
        assert await _metric(session, srv.url, admin, "mediasrv_room_rate_limit_disconnects_total") >= 1
    finally:
        await session.close()


async def test_default_limits_let_a_normal_session_through(server) -> None:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(f"{server.url}/rooms/r1/ws")
        await ws.send_json({"type": "join", "token": server.token("dr", "clinician", "r1")})
        assert (await ws.receive_json())["type"] == "joined"
        for i in range(server.settings.room_ws_burst - 1):
            await ws.send_json({"type": "ping", "request_id": str(i)})
            assert (await ws.receive_json())["type"] == "pong"
    finally:
        await session.close()


def test_rate_limit_settings_are_validated() -> None:
    from mediasrv.config import ConfigError, load_settings

    s = load_settings(env={"MEDIASRV_ROOM_WS_MESSAGES_PER_S": "5", "MEDIASRV_ROOM_WS_BURST": "10"})
    assert (s.room_ws_messages_per_s, s.room_ws_burst) == (5.0, 10)
    for key, value in (("ROOM_WS_MESSAGES_PER_S", "-1"), ("ROOM_WS_MESSAGES_PER_S", "nan"),
                       ("ROOM_WS_BURST", "0"), ("ROOM_WS_CLOSE_AFTER_REFUSED", "0")):
        with pytest.raises(ConfigError):
            load_settings(env={f"MEDIASRV_{key}": value})
