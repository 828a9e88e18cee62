"""Hand a connected aiortc peer's datapath to the native client pump.

aiortc did ICE and DTLS; from here the pump owns the UDP socket (a duplicate descriptor) and the
SRTP keys, and asyncio stops reading the socket. STUN and DTLS datagrams the pump receives come back
here and are fed to aioice's protocol object, so consent checks and close_notify still work.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

# (key length, salt length) per OpenSSL SRTP profile name (RFC 5764, RFC 7714).
KEY_LENGTHS = {
    "SRTP_AES128_CM_SHA1_80": (16, 14),
    "SRTP_AES128_CM_SHA1_32": (16, 14),
    "SRTP_AEAD_AES_128_GCM": (16, 12),
    "SRTP_AEAD_AES_256_GCM": (32, 12),
}
CONTROL_POLL_S = 0.05


class HandoverError(RuntimeError):
    """The peer is not in a state whose datapath can be taken over."""


@dataclass
class SrtpKeys:
    profile: str
    tx_key: bytes
    tx_salt: bytes
    rx_key: bytes
    rx_salt: bytes


def srtp_keys(dtls: Any) -> SrtpKeys:
    """Split the DTLS-SRTP exporter output (RFC 5764 4.2); the DTLS role says which half we send with."""
    ssl = dtls._ssl
    profile = ssl.get_selected_srtp_profile().decode()
    if profile not in KEY_LENGTHS:
        raise HandoverError(f"unsupported SRTP profile {profile!r}")
    kl, sl = KEY_LENGTHS[profile]
    m = ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (kl + sl))
    client = (m[:kl], m[2 * kl: 2 * kl + sl])
    server = (m[kl: 2 * kl], m[2 * kl + sl:])
    tx, rx = (client, server) if dtls._role == "client" else (server, client)
    return SrtpKeys(profile, tx[0], tx[1], rx[0], rx[1])


@dataclass
class HandedOver:
    peer_id: int
    pump: Any
    relay: asyncio.Task[None]

    async def release(self) -> None:
        self.relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.relay
        self.pump.remove_peer(self.peer_id)


def dtls_transport(pc: RTCPeerConnection) -> Any:
    for t in pc.getTransceivers():
        if t.sender.transport is not None:
            return t.sender.transport
    raise HandoverError("peer connection has no DTLS transport")


async def hand_over(pc: RTCPeerConnection, pump: Any) -> HandedOver:
    """Give the pump `pc`'s socket and keys; returns the peer id and the control relay task."""
    loop = asyncio.get_running_loop()
    if not hasattr(loop, "_remove_reader"):
        raise HandoverError("the load generator needs asyncio's selector event loop (not uvloop)")
    dtls = dtls_transport(pc)
    if dtls.state != "connected":
        raise HandoverError(f"DTLS transport is {dtls.state}, not connected")
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None:
        raise HandoverError("ICE has no nominated pair")
    protocol = pair.protocol
    sock = protocol.transport.get_extra_info("socket")
    keys = srtp_keys(dtls)
    host, port = pair.remote_candidate.host, pair.remote_candidate.port
    # From now on only the pump reads this socket; Python keeps sending STUN/DTLS on it.
    loop._remove_reader(sock.fileno())
    peer_id = pump.add_peer(sock.fileno(), host, port, keys.profile, keys.tx_key, keys.tx_salt,
                            keys.rx_key, keys.rx_salt)
    relay = loop.create_task(_relay_control(pump, peer_id, protocol))
    return HandedOver(peer_id, pump, relay)


async def _relay_control(pump: Any, peer_id: int, protocol: Any) -> None:
    while True:
        await asyncio.sleep(CONTROL_POLL_S)
        try:
            datagrams = pump.take_control(peer_id)
        except KeyError:
            return
        for data, addr in datagrams:
            protocol.datagram_received(data, addr)
