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

from mediasrv.media import aiortc_glue
from mediasrv.media.aiortc_glue import SrtpKeys

CONTROL_POLL_S = 0.05


class HandoverError(RuntimeError):
    """The peer is not in a state whose datapath can be taken over."""


def srtp_keys(dtls: Any) -> SrtpKeys:
    """The keys the pump sends and receives with, from the peer's DTLS session."""
    try:
        keys = aiortc_glue.dtls_srtp_keys(dtls)
    except ValueError as exc:  # a profile the native SRTP does not implement
        raise HandoverError(str(exc)) from None
    if keys is None:
        raise HandoverError("DTLS session not established")
    return keys


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
    if not aiortc_glue.can_take_over_sockets():
        raise HandoverError("the load generator needs asyncio's selector event loop (not uvloop)")
    dtls = dtls_transport(pc)
    if dtls.state != "connected":
        raise HandoverError(f"DTLS transport is {dtls.state}, not connected")
    pair = aiortc_glue.nominated_pair(dtls)
    if pair is None:
        raise HandoverError("ICE has no nominated pair")
    protocol = pair.protocol
    keys = srtp_keys(dtls)
    host, port = pair.remote_candidate.host, pair.remote_candidate.port
    # From now on only the pump reads this socket; Python keeps sending STUN/DTLS on it.
    sock = aiortc_glue.take_over_socket(pair)
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
