"""TURN credentials: format, expiry, HMAC; how they reach clients (joined, /v1/ice-servers, WHIP/WHEP
Link headers); no TURN configured changes nothing; `mediasrv turn-config` output."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from pathlib import Path

import aiohttp
import pytest

from mediasrv.auth import mint_token
from mediasrv.cli import main as cli_main
from mediasrv.config import ConfigError, load_settings
from mediasrv.media.coturn_config import render
from mediasrv.media.turn_credentials import issue, pseudonym
from tests.conftest import start_server

SECRET = "turn-unit-secret-0123456789abcdef0123456789"
URLS = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"]


def _settings(tmp_path: Path, **kw):
    return load_settings(env={}, data_dir=tmp_path / "d", **{"turn_urls": URLS, "turn_secret": SECRET, **kw})


def test_credential_format_and_hmac(tmp_path: Path) -> None:
    now = 1_800_000_000
    cred = issue(_settings(tmp_path, turn_ttl_s=600), "patient-7", now + 3600, now)
    assert cred is not None
    expiry, who = cred.username.split(":")
    assert int(expiry) == now + 600 == cred.expires
    # The identity never appears in the username (coturn logs it): a stable keyed pseudonym instead.
    assert "patient" not in cred.username and who == pseudonym(SECRET, "patient-7")
    assert who != pseudonym(SECRET, "patient-8") and who != pseudonym("another-secret" * 3, "patient-7")
    expected = base64.b64encode(hmac.new(SECRET.encode(), cred.username.encode(), hashlib.sha1).digest()).decode()
    assert cred.password == expected
    assert cred.ice_server() == {"urls": URLS, "username": cred.username, "credential": expected}


def test_credential_never_outlives_the_token(tmp_path: Path) -> None:
    now = 1_800_000_000
    cred = issue(_settings(tmp_path, turn_ttl_s=3600), "nurse", now + 90, now)
    assert cred is not None and cred.expires == now + 90


def test_no_turn_configured_means_no_credentials(tmp_path: Path) -> None:
    assert issue(load_settings(env={}, data_dir=tmp_path / "d"), "x", 2**31, 0) is None
    assert issue(load_settings(env={}, data_dir=tmp_path / "d", turn_secret=SECRET), "x", 2**31, 0) is None


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _settings(tmp_path, turn_urls=["stun:x:3478"])
    with pytest.raises(ConfigError):
        _settings(tmp_path, turn_secret="short")
    with pytest.raises(ConfigError):  # URLs without a secret: clients would get nothing usable
        load_settings(env={}, data_dir=tmp_path / "d", turn_urls=URLS)
    with pytest.raises(ConfigError):
        _settings(tmp_path, turn_ttl_s=5)
    s = load_settings(env={"MEDIASRV_TURN_URLS": ",".join(URLS), "MEDIASRV_TURN_SECRET": SECRET},
                      data_dir=tmp_path / "d")
    assert s.turn_urls == URLS


def test_link_headers_follow_rfc_9725(tmp_path: Path) -> None:
    cred = issue(_settings(tmp_path), "cam", int(time.time()) + 600, time.time())
    assert cred is not None
    links = cred.link_headers()
    assert len(links) == 2
    pattern = re.compile(r'^<(turns?:[^>]+)>; rel="ice-server"; username="([^"]+)"; credential="([^"]+)"; '
                         r'credential-type="password"$')
    for url, link in zip(URLS, links, strict=True):
        m = pattern.match(link)
        assert m and m.group(1) == url and m.group(2) == cred.username and m.group(3) == cred.password


async def _get_ice(url: str, token: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/ice-servers", headers=headers) as r:
        return r.status, await r.json()


async def test_ice_servers_endpoint(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data", turn_urls=URLS, turn_secret=SECRET, turn_ttl_s=600)
    try:
        status, body = await _get_ice(srv.url, None)
        assert status == 401
        assert (await _get_ice(srv.url, "garbage"))[0] == 401
        forged = mint_token("x" * 40, identity="p", role="patient", room="r")
        assert (await _get_ice(srv.url, forged))[0] == 401
        expired = mint_token(srv.settings.api_secret, identity="p", role="patient", room="r", ttl_s=10,
                             now=time.time() - 100)
        assert (await _get_ice(srv.url, expired))[0] == 401
        # Any valid token, any role (a messaging or admin token too).
        for token in (srv.token("p", "patient", "r", ttl_s=120), srv.token("admin", "admin")):
            status, body = await _get_ice(srv.url, token)
            assert status == 200
            (server,) = body["iceServers"]
            assert server["urls"] == URLS
            assert body["expires"] == int(server["username"].split(":")[0])
        status, body = await _get_ice(srv.url, srv.token("p", "patient", "r", ttl_s=120))
        assert body["expires"] <= time.time() + 121  # not past the token
    finally:
        await srv.runner.cleanup()


async def test_without_turn_ice_servers_is_empty(server) -> None:
    status, body = await _get_ice(server.url, server.token("p", "patient", "r"))
    assert (status, body) == (200, {"iceServers": [], "expires": None})


async def _joined(srv, token: str) -> dict:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{srv.url}/rooms/ward/ws") as ws:
        await ws.send_json({"type": "join", "token": token, "request_id": 1})
        while True:
            msg = await ws.receive_json(timeout=10)
            if msg["type"] == "joined":
                return msg


async def test_joined_carries_ice_servers(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data", turn_urls=URLS, turn_secret=SECRET)
    try:
        joined = await _joined(srv, srv.token("dr", "clinician", "ward", ttl_s=300))
        (server,) = joined["iceServers"]
        assert server["urls"] == URLS and int(server["username"].split(":")[0]) <= time.time() + 301
    finally:
        await srv.runner.cleanup()


async def test_joined_without_turn_has_empty_ice_servers(server) -> None:
    assert (await _joined(server, server.token("dr", "clinician", "ward")))["iceServers"] == []


def test_turn_config_command(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MEDIASRV_TURN_SECRET", SECRET)
    monkeypatch.setenv("MEDIASRV_MEDIA_BIND_ADDRESSES", "198.51.100.20,0.0.0.0")
    monkeypatch.setenv("MEDIASRV_TURN_TLS_CERT", "/etc/ssl/turn.pem")
    assert cli_main(["turn-config", "--data-dir", str(tmp_path / "d"), "--listening-ip", "198.51.100.21"]) == 0
    out = capsys.readouterr().out
    lines = set(out.splitlines())
    for line in ("use-auth-secret", f"static-auth-secret={SECRET}", "listening-port=3478", "tls-listening-port=443",
                 "cert=/etc/ssl/turn.pem", "realm=mediasrv", "no-tcp-relay", "no-multicast-peers",
                 "denied-peer-ip=127.0.0.0-127.255.255.255", "denied-peer-ip=10.0.0.0-10.255.255.255",
                 "allowed-peer-ip=198.51.100.20", "listening-ip=198.51.100.21", "no-cli"):
        assert line in lines, line
    assert "allowed-peer-ip=0.0.0.0" not in lines and "allow-loopback-peers" not in lines
    assert any(line.startswith("user-quota=") for line in lines)


def test_shipped_coturn_config_is_the_rendered_one(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "deploy" / "coturn" / "turnserver.conf"
    settings = load_settings(env={}, data_dir=tmp_path / "d", media_bind_addresses=["203.0.113.10"])
    assert shipped.read_text() == render(settings)


async def _whip(srv, room: str, token: str):
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as s, s.post(
            f"{srv.url}/whip/{room}", data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) as r:
        return pc, r.status, r.headers.getall("Link", [])


async def test_whip_and_whep_answers_carry_link_headers(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data", turn_urls=URLS, turn_secret=SECRET)
    try:
        pc, status, links = await _whip(srv, "studio", srv.token("cam", "clinician", "studio", ttl_s=200))
        assert status == 201 and len(links) == 2
        assert all('rel="ice-server"' in link and 'credential-type="password"' in link for link in links)
        expiry = int(re.search(r'username="(\d+):', links[0]).group(1))
        assert expiry <= time.time() + 201
        from aiortc import RTCPeerConnection

        viewer = RTCPeerConnection()
        viewer.addTransceiver("video", direction="recvonly")
        await viewer.setLocalDescription(await viewer.createOffer())
        async with aiohttp.ClientSession() as s, s.post(
                f"{srv.url}/whep/studio/cam", data=viewer.localDescription.sdp,
                headers={"Content-Type": "application/sdp",
                         "Authorization": f"Bearer {srv.token('nurse', 'observer', 'studio')}"}) as r:
            assert r.status == 201
            assert len(r.headers.getall("Link", [])) == 2
        await viewer.close()
        await pc.close()
    finally:
        await srv.runner.cleanup()


async def test_without_turn_whip_has_no_link_headers(server) -> None:
    pc, status, links = await _whip(server, "studio", server.token("cam", "clinician", "studio"))
    assert status == 201 and links == []
    await pc.close()
