"""The shipped coturn config with a real coturn and a real TURN client (aioice's): mediasrv's
credentials work, expired or forged ones are refused, and the relay reaches only the media address.

The media address is 127.0.0.3 (the only allowed peer); the HTTP API and everything else on loopback
must stay out of reach. coturn listens on 127.0.0.1 (3478 UDP/TCP, 443 TLS).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from mediasrv.config import load_settings
from mediasrv.media.turn_credentials import issue, turn_password
from tests.turn_relay import Coturn

SECRET = "turn-test-secret-0123456789abcdef0123456789"
MEDIA = "127.0.0.3"
TURN = "127.0.0.1"


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    settings = load_settings(env={}, data_dir=tmp_path / "data", media_bind_addresses=[MEDIA],
                             turn_urls=[f"turn:{TURN}:3478"], turn_secret=SECRET)
    relay = Coturn(settings, listen=TURN, workdir=tmp_path / "coturn").start()
    relay.settings = settings  # type: ignore[attr-defined]
    try:
        yield relay
    finally:
        relay.stop()


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait((data, addr))


@pytest.fixture
async def media_socket() -> AsyncIterator[tuple[asyncio.DatagramTransport, _Sink]]:
    """A UDP socket on the media address, standing in for the media port."""
    transport, sink = await asyncio.get_running_loop().create_datagram_endpoint(_Sink, local_addr=(MEDIA, 0))
    try:
        yield transport, sink
    finally:
        transport.close()


async def _allocate(username: str, password: str, transport: str = "udp", port: int = 3478,
                    tls: ssl.SSLContext | None = None) -> Any:
    relayed, _ = await asyncio.wait_for(create_turn_endpoint(
        asyncio.DatagramProtocol, (TURN, port), username, password, transport=transport, ssl=tls), 10)
    return relayed


def _credential(relay: Coturn, identity: str = "patient-7", ttl_left: int = 600) -> tuple[str, str]:
    cred = issue(relay.settings, identity, int(time.time()) + ttl_left, time.time())  # type: ignore[attr-defined]
    assert cred is not None
    return cred.username, cred.password


async def test_credential_allocates_and_relays_to_the_media_address(coturn, media_socket) -> None:
    sock, sink = media_socket
    username, password = _credential(coturn)
    relayed = await _allocate(username, password)
    try:
        relay_addr = relayed.get_extra_info("sockname")
        assert relay_addr[0] == TURN
        await relayed._TurnTransport__inner_protocol.send_data(b"hello media", sock.get_extra_info("sockname"))
        data, src = await asyncio.wait_for(sink.got.get(), 5)
        # A relayed peer's packets reach the media port from coturn's relay address.
        assert data == b"hello media" and tuple(src) == tuple(relay_addr)
    finally:
        relayed.close()


async def test_credential_over_tls_on_443(coturn, media_socket) -> None:
    ctx = ssl.create_default_context(cafile=str(coturn.ca_pem))
    username, password = _credential(coturn)
    relayed = await _allocate(username, password, transport="tcp", port=443, tls=ctx)
    relayed.close()
    # And a client that does not trust the certificate's issuer does not get a session.
    with pytest.raises(ssl.SSLCertVerificationError):
        await _allocate(username, password, transport="tcp", port=443, tls=ssl.create_default_context())


async def test_expired_credential_is_refused(coturn) -> None:
    username = f"{int(time.time()) - 5}:someone"
    with pytest.raises(stun.TransactionFailed) as err:
        await _allocate(username, turn_password(SECRET, username))
    assert err.value.response.attributes["ERROR-CODE"][0] == 401


async def test_forged_credentials_are_refused(coturn) -> None:
    username, password = _credential(coturn)
    with pytest.raises(stun.TransactionFailed):  # signed with another secret
        await _allocate(username, turn_password("not-the-secret-" * 3, username))
    # A later expiry on a valid username needs the secret too: the old password does not carry over.
    later = f"{int(time.time()) + 86400}:{username.split(':', 1)[1]}"
    with pytest.raises(stun.TransactionFailed):
        await _allocate(later, password)


async def test_credential_stops_working_at_its_expiry(coturn) -> None:
    """Valid until its expiry, refused for any new allocation after it. (coturn does not cut an
    allocation made before the expiry: it keeps the key it verified; docs/deploy.md says so.)"""
    username, password = _credential(coturn, ttl_left=2)
    (await _allocate(username, password)).close()
    await asyncio.sleep(3)
    with pytest.raises(stun.TransactionFailed) as err:
        await _allocate(username, password)
    assert err.value.response.attributes["ERROR-CODE"][0] == 401


@pytest.mark.parametrize("peer", [(TURN, 8080), ("127.0.0.1", 3478), ("127.0.0.2", 5000), ("10.1.2.3", 5000),
                                  ("192.168.1.1", 5000), ("224.0.0.251", 5353), ("169.254.169.254", 80)])
async def test_relay_refuses_every_peer_but_the_media_address(coturn, media_socket, peer) -> None:
    username, password = _credential(coturn)
    relayed = await _allocate(username, password)
    inner = relayed._TurnTransport__inner_protocol
    try:
        with pytest.raises(stun.TransactionFailed) as err:
            await inner.channel_bind(0x4000, peer)
        assert err.value.response.attributes["ERROR-CODE"][0] == 403
        # ...while the media address on the same allocation is permitted.
        await inner.channel_bind(0x4001, media_socket[0].get_extra_info("sockname"))
    finally:
        relayed.close()


def test_shipped_config_is_what_coturn_ran(coturn) -> None:
    text = coturn.config_path.read_text()
    assert "use-auth-secret" in text and f"static-auth-secret={SECRET}" in text
    assert f"allowed-peer-ip={MEDIA}" in text and "no-tcp-relay" in text
